"""A full disk or an unwritable folder: one paragraph naming the folder, the free space
and the fix; nothing half-written; the rerun resumes to exactly the uninterrupted result.

The real thing needs a small tmpfs (root only, skipped elsewhere); the paragraph is also
checked everywhere with a write that raises ENOSPC in-process.
"""

import errno
import os
import subprocess

import jax
import numpy as np
import pytest

from helpers import run_outcome, run_main, tiny_config
from digits_jax import checkpoint
from digits_jax import figures
from digits_jax import results
from digits_jax import storage
from digits_jax import train

TMPFS_SIZE = 4 << 20  # Above the up-front check's estimate for the tiny run (2.1 MB).


@pytest.fixture
def small_disk(tmp_path):
  """A 4 MB tmpfs, unmounted afterwards; skips the test where mounting is not allowed."""
  mount = tmp_path / 'disk'
  mount.mkdir()
  cmd = ['mount', '-t', 'tmpfs', '-o', f'size={TMPFS_SIZE}', 'tmpfs', str(mount)]
  if os.geteuid() != 0 or subprocess.run(cmd, capture_output=True, check=False).returncode:
    pytest.skip('mounting a tmpfs needs root')
  yield str(mount)
  subprocess.run(['umount', str(mount)], check=False)


def _fill(folder):
  """Fills the file system of `folder` to the last byte with folder/filler."""
  with open(os.path.join(folder, 'filler'), 'wb') as f:
    try:
      while True:
        f.write(b'\0' * 65536)
        f.flush()
    except OSError as e:
      assert e.errno == errno.ENOSPC



@pytest.fixture(scope='module')
def reference(tiny_data, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('uninterrupted') / 'run')
  train.train_and_evaluate(tiny_config(tiny_data, num_epochs=3), workdir)
  return run_outcome(workdir)


# Where the disk fills up: (module, function) whose call fills it first.
STAGES = {
    'second checkpoint': (checkpoint.Checkpointer, 'save', 2),
    'result files': (results, 'write_predictions', 1),
    'figures': (figures, 'draw_all', 1),
}


@pytest.mark.slow
@pytest.mark.parametrize('stage', STAGES)
def test_disk_full_ends_in_one_paragraph_and_the_rerun_resumes(
    stage, small_disk, tiny_data, reference, monkeypatch):
  workdir = os.path.join(small_disk, 'run')
  owner, name, nth = STAGES[stage]
  real, calls = getattr(owner, name), []

  def filling_first(*args, **kwargs):
    calls.append(1)
    if len(calls) == nth:
      _fill(small_disk)
    return real(*args, **kwargs)

  monkeypatch.setattr(owner, name, filling_first)
  config = tiny_config(tiny_data, num_epochs=3, checkpoint_min_interval_seconds=0)
  with pytest.raises(storage.StorageError) as e:  # (A save after every epoch.)
    train.train_and_evaluate(config, workdir)
  message = str(e.value)
  assert message.startswith(f'could not write to {workdir}') and '\n' not in message
  assert 'no space left on device' in message and 'free of 4.0 MB' in message
  assert 'free some space there' in message and 'rerun the same command' in message
  leftovers = [n for _, dirs, files in os.walk(workdir) for n in dirs + files
               if n.startswith('.') or checkpoint.TMP_MARK in n]
  assert not leftovers  # Nothing half-written.
  monkeypatch.undo()
  os.remove(os.path.join(small_disk, 'filler'))
  train.train_and_evaluate(config, workdir)
  outcome = run_outcome(workdir)
  assert outcome[0] == reference[0]
  jax.tree.map(np.testing.assert_array_equal, outcome[1], reference[1])
  np.testing.assert_array_equal(outcome[2], reference[2])


@pytest.mark.slow
def test_entry_point_says_one_paragraph_on_a_full_disk_then_resumes(small_disk, tiny_data):
  workdir = os.path.join(small_disk, 'run')
  # 16 kept checkpoints of 230 KB each cannot fit in 3 MB: a save fails mid-run.
  subprocess.run(['mount', '-o', 'remount,size=3m', small_disk], check=True)
  many = dict(num_epochs=16, max_checkpoints_to_keep=16, checkpoint_min_interval_seconds=0)
  proc = run_main(tiny_data, workdir, **many)
  assert proc.returncode == 1
  *before, last = proc.stderr.splitlines()
  assert last.startswith(f'error: could not write to {workdir}: no space left on device')
  # One paragraph: no traceback, no error logged (a loaded machine may log orbax's
  # warning that a save waited for the previous one).
  assert all(line.startswith('W') for line in before), proc.stderr[-3000:]
  subprocess.run(['mount', '-o', 'remount,size=16m', small_disk], check=True)
  proc = run_main(tiny_data, workdir, **many)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Resumed from the checkpoint at step' in proc.stdout


def test_a_write_failing_for_space_is_explained_in_one_paragraph(
    tiny_data, tmp_path, monkeypatch):
  def full(path, data):
    del data
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

  monkeypatch.setattr(results, 'write_bytes', full)
  workdir = str(tmp_path / 'run')
  with pytest.raises(storage.StorageError, match=(
      f'^could not write to {workdir}: no space left on device \\(.* free of .*\\). '
      'Nothing was half-written.*free some space there or choose another --workdir, then '
      'rerun the same command: it resumes from its last checkpoint.$')) as e:
    train.train_and_evaluate(tiny_config(tiny_data), workdir)
  assert e.value.errno == errno.ENOSPC and e.value.folder == workdir


def test_an_unwritable_folder_is_explained_with_its_fix(tmp_path):
  exc = RuntimeError('commit failed')
  exc.__cause__ = PermissionError(errno.EACCES, 'Permission denied',
                                  str(tmp_path / 'run' / 'checkpoints' / '30.tmp' / 'x'))
  (tmp_path / 'run' / 'checkpoints').mkdir(parents=True)
  with pytest.raises(storage.StorageError, match=(
      f'could not write to {tmp_path}/run/checkpoints: permission denied .* make it writable '
      r'\(chmod u\+w\) or choose another --workdir')):
    with storage.explained(str(tmp_path / 'run')):
      raise exc


def test_atomic_write_leaves_the_old_file_and_no_temporary_on_failure(tmp_path, monkeypatch):
  path = tmp_path / 'results.json'
  results.write_json(str(path), {'a': 1})

  def no_space(fd):
    del fd
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(results.os, 'fsync', no_space)
  with pytest.raises(OSError):
    results.write_json(str(path), {'a': 2})
  monkeypatch.undo()
  assert results.read_json(str(path)) == {'a': 1}
  assert os.listdir(tmp_path) == ['results.json']
