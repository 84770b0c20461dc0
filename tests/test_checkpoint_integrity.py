"""Damaged checkpoints: each kind is moved aside and the run resumes from the newest
intact one to exactly the undamaged results, or stops with one clear line."""

import glob
import json
import os
import shutil

import jax
import numpy as np
import pytest

from helpers import run_outcome, run_main, tiny_config
from digits_jax import checkpoint
from digits_jax import train

LATEST, PREVIOUS = 45, 30  # Steps of the two kept checkpoints of a 3-epoch tiny run.


def _biggest_data_file(step_dir):
  files = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(step_dir, 'state'))
           for name in names]
  return max(files, key=os.path.getsize)


def _truncate(step_dir):
  path = _biggest_data_file(step_dir)
  os.truncate(path, os.path.getsize(path) // 2)


def _overwrite(relative, content):
  def damage(step_dir):
    with open(os.path.join(step_dir, relative), 'wb') as f:
      f.write(content)
  return damage


def _remove(relative):
  return lambda step_dir: shutil.rmtree(os.path.join(step_dir, relative))


def _empty(step_dir):
  shutil.rmtree(step_dir)
  os.mkdir(step_dir)


def _flip(num_bytes):
  def damage(step_dir):
    path = _biggest_data_file(step_dir)
    with open(path, 'r+b') as f:
      data = bytearray(f.read())
      middle = len(data) // 2
      for i in range(middle, middle + num_bytes):
        data[i] ^= 0x10
      f.seek(0)
      f.write(data)
  return damage


def _flip_progress(step_dir):  # A digit of the accuracy log changes; the JSON still parses.
  path = os.path.join(step_dir, 'progress', 'metadata')
  with open(path) as f:
    text = f.read()
  at = text.index('"accuracy": 0.') + len('"accuracy": 0.')
  with open(path, 'w') as f:
    f.write(text[:at] + str((int(text[at]) + 1) % 10) + text[at + 1:])


DAMAGE = {
    'truncated data file': _truncate,
    'garbage array metadata': _overwrite(os.path.join('state', '_METADATA'), b'\0garbage{'),
    'garbage progress record': _overwrite(os.path.join('progress', 'metadata'), b'{"epoch": 3,'),
    'missing progress/': _remove('progress'),
    'missing state/': _remove('state'),
    'empty step folder': _empty,
    'one flipped bit': _flip(1),
    '64 flipped bytes': _flip(64),
    'changed digit in the progress record': _flip_progress,
}



@pytest.fixture(scope='module')
def finished(tiny_data, tmp_path_factory):
  """A finished 3-epoch run and its outcome."""
  workdir = str(tmp_path_factory.mktemp('intact') / 'run')
  train.train_and_evaluate(
      tiny_config(tiny_data, num_epochs=3, checkpoint_min_interval_seconds=0), workdir)
  assert sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints'))) == [
      PREVIOUS, LATEST]
  return workdir, run_outcome(workdir)


def _damaged_copy(finished, tmp_path, damage, steps=(LATEST,)):
  workdir = str(tmp_path / 'run')
  shutil.copytree(finished[0], workdir)
  for step in steps:
    damage(os.path.join(workdir, 'checkpoints', str(step)))
  return workdir


@pytest.mark.slow
@pytest.mark.parametrize('kind', DAMAGE)
def test_damaged_latest_checkpoint_falls_back_to_identical_results(
    kind, finished, tiny_data, tmp_path, capsys):
  workdir = _damaged_copy(finished, tmp_path, DAMAGE[kind])
  train.train_and_evaluate(
      tiny_config(tiny_data, num_epochs=3, checkpoint_min_interval_seconds=0), workdir)
  out = capsys.readouterr().out
  assert f'The checkpoint at step {LATEST} ' in out and 'moved it aside to' in out
  assert f'Resumed from the checkpoint at step {PREVIOUS}' in out
  moved = glob.glob(os.path.join(workdir, checkpoint.DAMAGED_DIR, f'{LATEST}-*'))
  assert len(moved) == 1  # Kept for inspection, not deleted.
  history, params, probabilities = run_outcome(workdir)
  assert history == finished[1][0]
  jax.tree.map(np.testing.assert_array_equal, params, finished[1][1])
  np.testing.assert_array_equal(probabilities, finished[1][2])


def test_intact_checkpoint_verifies_and_a_damaged_one_is_refused_by_load_trained(
    finished, tmp_path):
  _, state, progress = checkpoint.load_trained(finished[0])
  assert int(state.step[0]) == LATEST and progress['epoch'] == 3
  assert checkpoint.CHECKSUM_KEY not in progress
  workdir = _damaged_copy(finished, tmp_path, DAMAGE['one flipped bit'])
  with pytest.raises(checkpoint.DamagedCheckpointError, match='does not match its checksum'):
    checkpoint.load_trained(workdir)
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', str(LATEST)))  # Moved nothing.


@pytest.mark.slow
def test_no_intact_checkpoint_stops_with_one_line_and_moves_all_aside(
    finished, tiny_data, tmp_path):
  workdir = _damaged_copy(finished, tmp_path, DAMAGE['truncated data file'],
                          steps=(PREVIOUS, LATEST))
  proc = run_main(tiny_data, workdir, num_epochs=3)
  assert proc.returncode == 1
  assert proc.stderr.startswith('error: no checkpoint in') and 'Traceback' not in proc.stderr
  assert 'Rerun the same command to train anew' in proc.stderr
  assert len(os.listdir(os.path.join(workdir, checkpoint.DAMAGED_DIR))) == 2
  assert not checkpoint.has_checkpoint(workdir)


def test_the_saved_state_keeps_the_format_older_checkpoints_have(tiny_data, tmp_path):
  """A checkpoint's state is flax's TrainState (step, params, opt_state) as before the
  dropout key existed: a checkpoint saved by an earlier release restores (fields the
  state gains, such as its `rng`, come from the config, not from the checkpoint)."""
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1, dropout_rate=0.5), workdir)
  [step_dir] = glob.glob(os.path.join(workdir, checkpoint.CHECKPOINT_DIR, '*'))
  with open(os.path.join(step_dir, 'state', '_METADATA')) as f:
    keys = json.load(f)['tree_metadata']
  assert {eval(k)[0] for k in keys} == {'step', 'params', 'opt_state'}  # pylint: disable=eval-used
