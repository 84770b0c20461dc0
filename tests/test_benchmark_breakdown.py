"""The benchmark's kernel breakdown (issue 23): the harness compiles against the kernel's
current source with the kernel's flags, and its phases account for a step."""

import json
import os
import platform
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ('input', 'forward', 'loss', 'backward', 'adam', 'wait')


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ('x86_64', 'AMD64'),
                    reason='the harness times phases with the x86 cycle counter')
def test_breakdown_phases_add_up_to_a_step_and_floors_are_measured():
  proc = subprocess.run(
      [sys.executable, 'benchmarks/breakdown.py', '--configs=v6', '--threads=2',
       '--steps=1024'], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  rows = [json.loads(l[len('RESULT '):]) for l in proc.stdout.splitlines()
          if l.startswith('RESULT ')]
  assert [(r['config'], r['threads'], r['layers'], r['batch']) for r in rows] == [
      ('v6', 2, '784,150,10', 5)]
  row = rows[0]
  assert row['params'] == 784 * 150 + 150 + 150 * 10 + 10
  assert row['steps_per_epoch'] == 9360 and row['steps'] == 1024
  # Per-thread phases share the same clock as the step: together they are the step.
  assert sum(row[p] for p in PHASES) == pytest.approx(row['us_per_step'], rel=0.1)
  assert all(row[p] >= 0 for p in PHASES) and row['adam'] > 0 and row['forward'] > 0
  # The exact update costs at least its memory traffic; the matmul floors count the
  # multiply-adds of batches of 5 sparse MNIST images (about a fifth of 784 x 150 x 5).
  assert 0 < row['floor_adam_mem'] <= row['floor_adam'] * 1.1
  assert 0.1 * 784 * 150 * 5 < row['forward_madds'] < 0.4 * 784 * 150 * 5
