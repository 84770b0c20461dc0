#!/usr/bin/env bash
# The sweep's time outside training and compiling, per cell (issue 22 item 9): short cells,
# cell outputs drawn at the end in parallel (default) and after each cell, alternated.
# Usage: benchmarks/sweep_overhead.sh [repeats]   (prints one line per sweep)
set -euo pipefail
repeats=${1:-2}
out=$(mktemp -d)
for i in $(seq "$repeats"); do
  for mode in --outputs_at_end --nooutputs_at_end; do
    rm -rf "$out/sw"
    python -m digits_jax.sweep --configs=default,v1,v2,v3,v8 --datasets=mnist --num_seeds=1 \
      --override=num_epochs=1 --sweep_dir="$out/sw" "$mode" > "$out/log" 2>&1
    line=$(grep 'wall time' "$out/log")
    python - "$mode" "$line" <<'PY'
import re, sys
wall, train, comp = map(float, re.findall(r'([\d.]+) s', sys.argv[2])[:3])
print(f'{sys.argv[1]:20s} wall {wall:5.1f} s  train {train:4.1f} s  compile {comp:4.1f} s  '
      f'outside: {(wall - train - comp) / 5:.2f} s per cell')
PY
  done
done
