r"""The sweep's time outside training and compiling, per cell (issue 22 item 9).

  python benchmarks/sweep_overhead.py                       # the issue's 5 cells, both modes
  python benchmarks/sweep_overhead.py --cells=short --repeats=3
  python benchmarks/sweep_overhead.py --cells=lab --modes=worker

Runs `python -m digits_jax.sweep` on a set of cells, with the drawing worker (the
default) and with --nooutput_worker (each cell draws its own outputs), alternated, and
prints per sweep: its wall time (the sweep's own line: from the first cell's plan to the
last report), the training and compiling seconds of its runs (results.json `timings`),
and what is left per cell, two ways: `outside` = (wall - training - compiling) / cells,
as the issue measured it, and `in cells` = the cells' own seconds less their training and
compiling, per cell (the rest, `fixed`, is the sweep's start of the worker, the drawing
left at the end and the sweep's report). Medians over --repeats at the end.
--pythonpath runs another checkout (e.g. a `git worktree` of an older commit) the same way.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CELLS = {  # The command; the same with 1 epoch; the lab's 20 cells with 1 seed.
    'issue': ['--configs=default,v1,v2,v3,v8', '--datasets=mnist'],
    'short': ['--configs=default,v1,v2,v3,v8', '--datasets=mnist', '--override=num_epochs=1'],
    'lab': [],
}
# 'plain': no flag, the checkout's default (for an older --pythonpath).
MODES = {'worker': ['--output_worker'], 'inline': ['--nooutput_worker'], 'plain': []}
TABLE_ROW = re.compile(r'^(\S+)\s+(\S+)\s+[\d.]+%\s+\d+\s+(trained|resumed)\s+([\d.]+)$')


def run(cells, mode, sweep_dir, pythonpath):
  """One sweep; returns its numbers as a dict."""
  shutil.rmtree(sweep_dir, ignore_errors=True)
  env = dict(os.environ, **({'PYTHONPATH': pythonpath} if pythonpath else {}))
  out = subprocess.run([sys.executable, '-m', 'digits_jax.sweep', '--num_seeds=1',
                        f'--sweep_dir={sweep_dir}', *MODES[mode], *CELLS[cells]],
                       capture_output=True, text=True, env=env, check=True,
                       cwd=pythonpath or REPO).stdout  # (-m puts the cwd first on the path.)
  wall = float(re.search(r'wall time ([\d.]+) s', out).group(1))
  rows = [m.groups() for m in map(TABLE_ROW.match, out.splitlines()) if m]
  timings = [json.load(open(os.path.join(sweep_dir, f'{name}_{dataset}', 'results.json'),
                            encoding='utf-8'))['timings'] for name, dataset, _, _ in rows]
  train = sum(t['train_seconds'] for t in timings)
  compile_ = sum(t['compile_seconds'] for t in timings)
  in_cells = sum(float(r[3]) for r in rows) - train - compile_
  n = len(rows)
  return {'wall': wall, 'train': train, 'compile': compile_,
          'outside': (wall - train - compile_) / n, 'in_cells': in_cells / n,
          'fixed': wall - sum(float(r[3]) for r in rows), 'cells': n}


def line(mode, r):
  return (f'{mode:7s} cells {r["cells"]:2.0f}  wall {r["wall"]:6.1f} s  train {r["train"]:5.1f} s  '
          f'compile {r["compile"]:4.1f} s  outside {r["outside"]:.2f} s/cell  '
          f'(in cells {r["in_cells"]:.2f} s/cell, fixed {r["fixed"]:.1f} s)')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--cells', choices=sorted(CELLS), default='issue')
  parser.add_argument('--modes', default='worker,inline', help='comma-separated: worker, inline, plain')
  parser.add_argument('--repeats', type=int, default=1)
  parser.add_argument('--pythonpath', default='', help='a checkout to run instead')
  args = parser.parse_args()
  modes = [m.strip() for m in args.modes.split(',')]
  results = {m: [] for m in modes}
  with tempfile.TemporaryDirectory() as tmp:
    for _ in range(args.repeats):
      for mode in modes:
        results[mode].append(run(args.cells, mode, os.path.join(tmp, 'sweep'), args.pythonpath))
        print(line(mode, results[mode][-1]), flush=True)
  for mode, rs in results.items():
    print('median ' + line(mode, {k: statistics.median(r[k] for r in rs) for k in rs[0]}))


if __name__ == '__main__':
  main()
