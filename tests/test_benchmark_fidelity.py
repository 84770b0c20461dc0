"""The benchmark's fidelity section from recorded seeds (nothing trained): both spreads,
the Welch difference with its interval, and the verdict."""

import json
import os
import subprocess
import sys

import pytest

from digits_jax import stats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = [0.9786, 0.9781, 0.9762]
KERAS = [0.9708, 0.9753, 0.9741]


def lines(program, accs, epochs=10, config='default'):
  return ''.join(json.dumps({'program': program, 'config': config, 'dataset': 'mnist',
                             'epochs': epochs, 'seed': s, 'test_accuracy': a,
                             'train_seconds': 1.0 + s}) + '\n' for s, a in enumerate(accs))


@pytest.mark.slow
def test_fidelity_table_from_recorded_seeds(tmp_path):
  keras, ours = tmp_path / 'keras.jsonl', tmp_path / 'ours.jsonl'
  # Keras's lines from keras_lab.py; another config's and other epochs' lines are ignored.
  keras.write_text(lines('keras', KERAS) + lines('keras', [0.5], epochs=3)
                   + lines('keras', [0.5], config='v1'))
  ours.write_text(lines('digits_jax', OURS))
  proc = subprocess.run(
      [sys.executable, 'benchmarks/benchmark.py', '--sections=fidelity', '--configs=default',
       '--seeds=3', f'--keras_results={tmp_path}/keras*', f'--jax_results={ours}'],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  w = stats.welch([100 * x for x in OURS], [100 * x for x in KERAS])
  row = [l for l in proc.stdout.splitlines() if l.lstrip().startswith('default ')]
  assert len(row) == 1, proc.stdout
  assert row[0].split() == [
      'default', '3', '97.76', '+-', '0.13', '3', '97.34', '+-', '0.23', '+0.42',
      f'[{w["ci95"][0]:+.2f},', f'{w["ci95"][1]:+.2f}]', f'{w["p_value"]:.3f}',
      f'{w["p_value"]:.3f}',  # Holm over one config: the same p.
      'inconclusive', '2.00', '2.00']
  assert 'default: ours 0.9786 0.9781 0.9762; Keras (seeds 0,1,2) 0.9708 0.9753 0.9741' in (
      proc.stdout)


def test_fidelity_refuses_a_pattern_matching_nothing(tmp_path):
  proc = subprocess.run(
      [sys.executable, 'benchmarks/benchmark.py', '--sections=fidelity',
       f'--keras_results={tmp_path}/none*'],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode != 0
  assert f"--keras_results: no file matches '{tmp_path}/none*'" in proc.stderr
  assert 'Traceback' not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize('dataset, title', [('mnist', 'MNIST'),
                                            ('fashion_mnist', 'Fashion-MNIST')])
def test_readme_fidelity_table_is_what_the_recorded_runs_give(dataset, title):
  """benchmarks/README.md's ten-config table of each dataset is rebuilt, number for number,
  from the records."""
  records = os.path.join(REPO, 'benchmarks', 'records', f'fidelity_{dataset}_')
  proc = subprocess.run(
      [sys.executable, 'benchmarks/benchmark.py', '--sections=fidelity', '--seeds=5',
       f'--dataset={dataset}', '--configs=default,v1,v2,v3,v4,v5,v6,v7,v8,v9',
       f'--keras_results={records}keras.jsonl', f'--jax_results={records}digits_jax.jsonl'],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  printed = {t[0]: t for t in (l.split() for l in proc.stdout.splitlines())
             if len(t) > 15 and t[0] in ('default',) + tuple(f'v{i}' for i in range(1, 10))}
  with open(os.path.join(REPO, 'benchmarks', 'README.md')) as f:
    readme = f.read()
  heading = f"### Against the lab's Keras program, with both spreads ({title}, 5 seeds)"
  section = readme.split(heading)[1].split('\n## ')[0].split('\n### ')[0]
  rows = [[c.strip() for c in l.strip('|').split('|')] for l in section.splitlines()
          if l.startswith('| v') or l.startswith('| default')]
  assert len(rows) == 10
  for row in rows:
    t = printed[row[0]]
    assert row[1:] == [t[1], ' '.join(t[2:5]), t[5], ' '.join(t[6:9]), ' '.join(t[9:12]),
                       t[12], t[13], t[14]], row[0]
