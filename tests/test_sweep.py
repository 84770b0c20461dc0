"""The sweep on tiny data: three configs trained, a rerun skips them, an interrupted run
resumes from its checkpoint, and the comparison table holds each run's own numbers."""

import contextlib
import csv
import io
import os
import re
import shutil
import subprocess
import sys

import pytest

from digits_jax import report
from digits_jax import results as results_lib
from digits_jax import sweep
from digits_jax import train
from digits_jax import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ('default', 'v1', 'v2')


def tiny_overrides(data_dir, num_epochs=2):
  """--override strings that shrink the lab's configs to the tiny data."""
  return [f'data_dir={data_dir}', 'verify_checksums=false', 'hidden_units=16',
          f'num_epochs={num_epochs}', 'num_show=4', 'num_misclassified_show=2',
          'progress_bar=false', 'tensorboard=false']


def quiet(fn, *args, **kwargs):
  """Calls fn, returning (its result, what it printed)."""
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    result = fn(*args, **kwargs)
  return result, out.getvalue()


@pytest.fixture(scope='module')
def swept(tiny_data, tmp_path_factory):
  """A sweep of three configs where v1 was interrupted after its first epoch."""
  sweep_dir = str(tmp_path_factory.mktemp('sweep'))
  v1_dir = os.path.join(sweep_dir, 'v1_mnist')
  # The interrupted run: one epoch finished and checkpointed, results.json not yet written.
  config = sweep.apply_overrides(sweep.load_config('v1', 'mnist'),
                                 tiny_overrides(tiny_data, num_epochs=2))
  config.num_epochs = 1
  quiet(train.train_and_evaluate, config, v1_dir)
  os.remove(os.path.join(v1_dir, 'results.json'))
  first_epoch = results_lib.read_history(v1_dir)
  status, log = quiet(sweep.run_sweep, CONFIGS, ['mnist'], sweep_dir, tiny_overrides(tiny_data))
  return {'dir': sweep_dir, 'status': status, 'log': log, 'v1_first_epoch': first_epoch,
          'data': tiny_data}


def workdir(swept, name):
  return os.path.join(swept['dir'], f'{name}_mnist')


def test_each_config_runs_in_its_own_workdir(swept):
  assert swept['status'] == {workdir(swept, 'default'): 'trained',
                             workdir(swept, 'v1'): 'resumed',
                             workdir(swept, 'v2'): 'trained'}
  for name in CONFIGS:
    res = results_lib.read_json(os.path.join(workdir(swept, name), 'results.json'))
    assert (res['name'], res['dataset'], res['num_epochs']) == (name, 'mnist', 2)
    assert len(results_lib.read_history(workdir(swept, name))) == 2


def test_interrupted_run_resumes_from_its_checkpoint(swept):
  history = results_lib.read_history(workdir(swept, 'v1'))
  assert history[:1] == swept['v1_first_epoch']  # Same seconds too: epoch 1 was not redone.
  steps_per_epoch = -(-540 // 30)  # 600 images less 10% validation, batch 30.
  assert f'Resumed from the checkpoint at step {steps_per_epoch} (epoch 1 done)' in swept['log']
  assert swept['log'].count('Resumed from the checkpoint') == 1
  assert 'Epoch 1/2' not in swept['log'].split('resuming v1')[1].split('[sweep]')[0]


def test_comparison_table_holds_each_runs_results(swept):
  with open(os.path.join(swept['dir'], 'comparison.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
  assert tuple(rows[0]) == report.COMPARISON_FIELDS
  assert [r['variant'] for r in rows] == list(CONFIGS)
  for row in rows:
    res = results_lib.read_json(os.path.join(workdir(swept, row['variant']), 'results.json'))
    assert row['dataset'] == res['dataset']
    assert row['hidden_sizes'] == 'x'.join(map(str, res['hidden_sizes']))
    for field, key in (('params', 'num_params'), ('epochs', 'num_epochs'),
                       ('batch', 'batch_size'), ('misclassified', 'misclassified_count')):
      assert int(row[field]) == res[key], field
    for field in ('validation_split', 'best_val_accuracy', 'final_val_accuracy',
                  'test_accuracy', 'test_loss'):
      assert float(row[field]) == res[field], field
    assert float(row['train_seconds']) == res['timings']['train_seconds']
  md = open(os.path.join(swept['dir'], 'comparison.md')).read()
  assert '\n| default | mnist | 16 | 12,730 | 2 | 32 | 20% |' in md
  assert '\n| v1 | mnist | 16x16 | 13,002 | 2 | 30 | 10% |' in md


def test_sweep_report(swept):
  text = open(os.path.join(swept['dir'], report.REPORT), encoding='utf-8').read()
  assert tuple(re.findall(r'<h2>(.*?)</h2>', text)) == report.SWEEP_SECTIONS
  srcs = re.findall(r'<img [^>]*src="([^"]*)"', text)
  assert len(srcs) == 2 and all(s.startswith('data:image/png;base64,') for s in srcs)
  assert all(f'>{name}<' in text for name in CONFIGS)


def test_rerun_skips_finished_runs(swept):
  mtimes = {n: os.stat(os.path.join(workdir(swept, n), 'results.json')).st_mtime_ns
            for n in CONFIGS}
  cmd = [sys.executable, '-m', 'digits_jax.sweep', f'--configs={",".join(CONFIGS)}',
         '--datasets=mnist', f'--sweep_dir={swept["dir"]}']
  cmd += [f'--override={o}' for o in tiny_overrides(swept['data'])]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                        check=False, env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.count('skipped.') == 3, proc.stdout
  assert '3 runs: 0 trained, 0 resumed, 3 skipped, 0 failed' in proc.stdout
  assert 'Epoch ' not in proc.stdout
  assert mtimes == {n: os.stat(os.path.join(workdir(swept, n), 'results.json')).st_mtime_ns
                    for n in CONFIGS}


def test_a_changed_setting_is_not_skipped(swept, tmp_path, monkeypatch):
  sweep_dir = str(tmp_path / 'copy')
  shutil.copytree(swept['dir'], sweep_dir)
  saved = os.path.join(sweep_dir, 'v2_mnist', 'config.json')
  results_lib.write_json(saved, {**results_lib.read_json(saved), 'test_indices': [4]})
  calls = []
  monkeypatch.setattr(train, 'train_and_evaluate', lambda c, w: calls.append((c.name, w)))
  status, _ = quiet(sweep.run_sweep, CONFIGS, ['mnist'], sweep_dir,
                    tiny_overrides(swept['data']))
  assert calls == [('v2', os.path.join(sweep_dir, 'v2_mnist'))]
  assert sorted(status.values()) == ['resumed', 'skipped', 'skipped']


def test_bad_override_fails_before_any_training(tmp_path, monkeypatch):
  monkeypatch.setattr(train, 'train_and_evaluate', lambda *a: pytest.fail('trained'))
  with pytest.raises(sweep.SweepError, match='no field'):
    sweep.run_sweep(CONFIGS, ['mnist'], str(tmp_path), ['no_such_field=1'])
  with pytest.raises(sweep.SweepError, match='expected int'):
    sweep.run_sweep(CONFIGS, ['mnist'], str(tmp_path), ['num_epochs=1.5'])
  with pytest.raises(sweep.SweepError, match='unknown dataset'):
    sweep.run_sweep(CONFIGS, ['mnist'], str(tmp_path), ['v2:num_epochs=1'])
  with pytest.raises(sweep.SweepError, match='no file'):
    sweep.run_sweep(['v99'], ['mnist'], str(tmp_path))
  assert os.listdir(tmp_path) == []


def test_overrides_take_the_fields_type():
  config = sweep.load_config('v6', 'fashion_mnist')
  sweep.apply_overrides(config, ['num_epochs=3', 'learning_rate=1e-2', 'progress_bar=False',
                                 'test_indices=(1, 2)', 'kernel_init=lecun_normal',
                                 'validation_split=0', 'mnist:batch_size=7',
                                 'fashion_mnist:hidden_units=20'])
  assert config.num_epochs == 3 and isinstance(config.num_epochs, int)
  assert config.learning_rate == 0.01 and config.validation_split == 0.0
  assert isinstance(config.validation_split, float)
  assert config.progress_bar is False and config.test_indices == (1, 2)
  assert config.kernel_init == 'lecun_normal'
  assert config.batch_size == 5 and config.hidden_units == 20  # mnist: override not applied.
  assert sweep.apply_overrides(sweep.load_config('v1', 'mnist'),
                               ['test_indices=4']).test_indices == (4,)


def test_a_failed_run_does_not_stop_the_others(tmp_path, monkeypatch, tiny_data):
  calls = []

  def fake_train(config, workdir):
    calls.append(config.name)
    if config.name == 'v1':
      raise workdir_lib.WorkdirMismatchError(f'{workdir} holds a run of a different config')

  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  with pytest.raises(sweep.SweepError, match='v1_mnist: failed: .* different config'):
    quiet(sweep.run_sweep, CONFIGS, ['mnist'], str(tmp_path), tiny_overrides(tiny_data))
  assert calls == list(CONFIGS)
  assert os.path.exists(tmp_path / report.REPORT)  # Written before the error is raised.
