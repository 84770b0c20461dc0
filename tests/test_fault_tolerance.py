"""Fault injection: killed runs (of one seed, of three at once, and of three with dropout,
whose keys come from (seed, step)) resume to exactly the uninterrupted result; NaN stops
cleanly."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from helpers import (REPO, TINY_FLAGS, config_flags, epoch_seconds, run_outcome,
                     tiny_config, write_tiny_dataset)
from digits_jax import checkpoint
from digits_jax import results
from digits_jax import steps
from digits_jax import train
from digits_jax import workdir as workdir_lib

# Long enough epochs (2,400 single-step calls) for a signal to land inside epoch 2.
# A checkpoint after every epoch (the default interval would skip those of short epochs), so
# that a kill in epoch 2 resumes from epoch 1's.
LONG = dict(TINY_FLAGS, num_epochs=3, batch_size=2, steps_per_call=1,
            checkpoint_min_interval_seconds=0)


@pytest.fixture(scope='module')
def long_data(tmp_path_factory):
  return write_tiny_dataset(str(tmp_path_factory.mktemp('long')), num_train=6000)


# The variants: (num_seeds, dropout_rate).
VARIANTS = {'one_seed': (1, 0.0), 'three_seeds': (3, 0.0), 'three_seeds_dropout': (3, 0.3)}


def _start(data_dir, workdir, variant):
  num_seeds, dropout_rate = variant
  cmd = [sys.executable, '-u', '-m', 'digits_jax.main', '--config=configs/default.py',
         f'--workdir={workdir}',
         *config_flags(**LONG, data_dir=data_dir, num_seeds=num_seeds,
                       dropout_rate=dropout_rate)]
  return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})


def _run_killed_in_epoch_2(data_dir, workdir, sig, variant):
  """Starts a run and sends `sig` a third of an epoch after epoch 1 is reported."""
  proc = _start(data_dir, workdir, variant)
  for line in proc.stdout:
    if line.startswith('Epoch 1/3 - '):
      time.sleep(epoch_seconds(line) / 3)
      proc.send_signal(sig)
      break
  out, err = proc.communicate(timeout=300)
  return proc.returncode, out, err


def _finish(data_dir, workdir, variant):
  proc = _start(data_dir, workdir, variant)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  return out


def _outcome(workdir):
  """History without timings, final parameters and predictions of a finished run (every
  seed's)."""
  history = [{k: v for k, v in h.items() if k != 'seconds'}
             for h in results.read_history(workdir, all_seeds=True)]
  _, state, _ = checkpoint.load_trained(workdir)
  return history, jax.device_get(state.params), results.read_predictions(workdir, None)


@pytest.fixture(scope='module', params=list(VARIANTS.values()), ids=list(VARIANTS))
def reference(request, long_data, tmp_path_factory):
  """((num_seeds, dropout_rate), the uninterrupted run's outcome)."""
  workdir = str(tmp_path_factory.mktemp('ref') / 'run')
  _finish(long_data, workdir, request.param)
  return request.param, _outcome(workdir)


def _assert_same(a, b):
  assert a[0] == b[0]  # Identical accuracy log, value for value.
  jax.tree.map(np.testing.assert_array_equal, a[1], b[1])  # Bit for bit.
  np.testing.assert_array_equal(a[2]['probabilities'], b[2]['probabilities'])


@pytest.mark.slow
def test_sigterm_saves_then_resume_is_identical(long_data, reference, tmp_path):
  variant, want = reference
  num_seeds = variant[0]
  workdir = str(tmp_path / 'run')
  code, _, err = _run_killed_in_epoch_2(long_data, workdir, signal.SIGTERM, variant)
  assert code == 143, err[-3000:]
  # Sent a third of an epoch into epoch 2; on a loaded machine epoch 2 may end first.
  stopped_in = re.search(r'SIGTERM received: saved a checkpoint .*\(epoch ([23]), step', err)
  assert stopped_in, err[-3000:]
  assert 'Rerun the same command to resume' in err
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  epochs_done = int(stopped_in.group(1)) - 1
  assert len(results.read_history(workdir, all_seeds=True)) == num_seeds * epochs_done
  out = _finish(long_data, workdir, variant)
  assert 'Resumed from the checkpoint' in out and 'steps into the next' in out
  got = _outcome(workdir)
  _assert_same(got, want)
  assert len(got[0]) == 3 * num_seeds and got[2]['probabilities'].ndim == (
      2 if num_seeds == 1 else 3)


@pytest.mark.slow
def test_sigkill_then_resume_is_identical(long_data, reference, tmp_path):
  variant, want = reference
  workdir = str(tmp_path / 'run')
  code, _, _ = _run_killed_in_epoch_2(long_data, workdir, signal.SIGKILL, variant)
  assert code == -signal.SIGKILL
  _finish(long_data, workdir, variant)
  _assert_same(_outcome(workdir), want)


@pytest.mark.slow
def test_same_seed_same_run_other_seed_other_run(tiny_data, tmp_path):
  runs = {}
  for name, seed in (('a', 0), ('b', 0), ('c', 1)):
    state = train.train_and_evaluate(tiny_config(tiny_data, seed=seed), str(tmp_path / name))
    history = [{k: v for k, v in h.items() if k != 'seconds'}
               for h in results.read_history(tmp_path / name)]
    runs[name] = (history, jax.device_get(state.params))
  assert runs['a'][0] == runs['b'][0]
  jax.tree.map(np.testing.assert_array_equal, runs['a'][1], runs['b'][1])
  assert runs['a'][0] != runs['c'][0]


def test_checkpoint_due_every_n_epochs_once_the_interval_has_passed():
  config = tiny_config('unused', checkpoint_every_epochs=2, checkpoint_min_interval_seconds=10)
  assert train.checkpoint_due(config, 2, 10.0) and train.checkpoint_due(config, 4, 60.0)
  assert not train.checkpoint_due(config, 2, 9.9)  # Too soon after the last save.
  assert not train.checkpoint_due(config, 3, 60.0)  # Not an epoch that saves.
  config.checkpoint_min_interval_seconds = 0
  assert train.checkpoint_due(config, 2, 0.0)


@pytest.mark.parametrize('interval, saved_epochs', [(0, [1, 2, 3]), (float('inf'), [3])])
def test_the_interval_skips_saves_but_never_the_last_epoch(tiny_data, tmp_path, monkeypatch,
                                                          interval, saved_epochs):
  saves, real_save = [], checkpoint.Checkpointer.save
  def save(self, step, state, progress, kept_params=None):
    saves.append(progress['epoch'])
    real_save(self, step, state, progress, kept_params)
  monkeypatch.setattr(checkpoint.Checkpointer, 'save', save)
  train.train_and_evaluate(
      tiny_config(tiny_data, num_epochs=3, checkpoint_min_interval_seconds=interval),
      str(tmp_path / 'run'))
  assert saves == saved_epochs


class _Killed(Exception):
  """Stands for a kill: raised once the accuracy log has epochs that no checkpoint has."""


def test_resume_from_a_checkpoint_older_than_the_log_is_identical(tiny_data, tmp_path,
                                                                 monkeypatch):
  """With the interval, a killed run's history.csv runs past its last checkpoint: the
  rerun replays those epochs to exactly the uninterrupted result."""
  config = tiny_config(tiny_data, num_epochs=4)
  train.train_and_evaluate(config, str(tmp_path / 'ref'))
  workdir, real_write = str(tmp_path / 'run'), results.write_history
  def write_history(where, history):
    real_write(where, history)
    if len(history) == 3:
      raise _Killed
  with monkeypatch.context() as patch:
    patch.setattr(train, 'checkpoint_due', lambda config, epoch, seconds: epoch == 1)
    patch.setattr(results, 'write_history', write_history)
    with pytest.raises(_Killed):
      train.train_and_evaluate(config, workdir)
  assert len(results.read_history(workdir)) == 3
  assert checkpoint.Checkpointer(workdir, read_only=True).latest_step() == 15
  train.train_and_evaluate(config, workdir)
  got, want = run_outcome(workdir), run_outcome(str(tmp_path / 'ref'))
  assert got[0] == want[0]
  jax.tree.map(np.testing.assert_array_equal, got[1], want[1])
  np.testing.assert_array_equal(got[2], want[2])


def test_nan_loss_stops_and_keeps_the_last_checkpoint(tiny_data, tmp_path, monkeypatch):
  workdir = str(tmp_path / 'run')
  config = tiny_config(tiny_data, num_epochs=3, checkpoint_min_interval_seconds=0)
  real_run = steps.BlockRunner.run
  calls = {'n': 0}

  def poisoned(self, state, args):
    state, sums = real_run(self, state, args)
    calls['n'] += 1
    if calls['n'] > 6:  # Epoch 1 has 4 blocks: poison epoch 2 after its checkpoint.
      sums = dict(sums, loss=sums['loss'] * np.nan)
    return state, sums

  monkeypatch.setattr(steps.BlockRunner, 'run', poisoned)
  with pytest.raises(train.NonFiniteLossError,
                     match='non-finite.*checkpoints saved before it were kept'):
    train.train_and_evaluate(config, workdir)
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  assert len(results.read_history(workdir)) == 1
  _, state, progress = checkpoint.load_trained(workdir)
  assert progress['epoch'] == 1 and int(state.step[0]) == 15
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state.params)))


def test_a_run_from_before_newer_fields_resumes_at_their_defaults_and_guards_them(
    tiny_data, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1), workdir)
  path = os.path.join(workdir, results.FILES['config'])
  newer = ('dropout_rate', 'momentum', 'nesterov', 'weight_decay')
  old = {k: v for k, v in results.read_json(path).items() if k not in newer}
  results.write_text(path, json.dumps(old))  # As config.json was before those fields.
  with pytest.raises(workdir_lib.WorkdirMismatchError, match=r'dropout_rate: 0.0 -> 0.1\)'):
    train.train_and_evaluate(tiny_config(tiny_data, num_epochs=2, dropout_rate=0.1), workdir)
  state = train.train_and_evaluate(tiny_config(tiny_data, num_epochs=2), workdir)
  assert int(state.step[0]) == 2 * 15
