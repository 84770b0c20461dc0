"""One run per workdir: a second run stops at once, a dead run's lock is taken over,
fewer epochs than trained are refused, and --fresh moves only the run's own files."""

import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from helpers import REPO, TINY_FLAGS, config_flags, run_main, tiny_config
from digits_jax import checkpoint
from digits_jax import results
from digits_jax import train
from digits_jax import workdir as workdir_lib

HOLD_LOCK = ('import sys, time\n'
             'from digits_jax import workdir\n'
             'with workdir.WorkdirLock(sys.argv[1]):\n'
             '  print("locked", flush=True)\n'
             '  time.sleep(600)\n')


def _hold_lock(workdir):
  """A process holding the workdir's lock, once it says so."""
  proc = subprocess.Popen([sys.executable, '-c', HOLD_LOCK, workdir], cwd=REPO,
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == 'locked'
  return proc


def _start(data_dir, workdir, **overrides):
  flags = config_flags(**{**TINY_FLAGS, 'data_dir': data_dir, **overrides})
  return subprocess.Popen(
      [sys.executable, '-m', 'digits_jax.main', '--config=configs/default.py',
       f'--workdir={workdir}', *flags], cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True, env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})


def _outcome(workdir):
  history = [{k: v for k, v in h.items() if k != 'seconds'}
             for h in results.read_history(workdir)]
  _, state, _ = checkpoint.load_trained(workdir)
  return history, jax.device_get(state.params), results.read_predictions(workdir)['probabilities']


@pytest.mark.slow
def test_two_runs_started_together_one_stops_at_once_the_other_is_unmixed(tiny_data, tmp_path):
  workdir = str(tmp_path / 'shared')
  procs = {batch: _start(tiny_data, workdir, batch_size=batch) for batch in (32, 64)}
  done = {}
  for batch, proc in procs.items():
    out, err = proc.communicate(timeout=300)
    done[batch] = (proc.returncode, out, err)
  winners = [b for b, (code, _, _) in done.items() if code == 0]
  assert len(winners) == 1, {b: err[-2000:] for b, (_, _, err) in done.items()}
  (loser,) = set(done) - set(winners)
  code, _, err = done[loser]
  # The loser sees the winner's record, or the lock taken before the record is written.
  assert code == 1 and err.startswith((f'error: workdir {workdir} is in use by process ',
                                       f'error: workdir {workdir} is in use by another '
                                       'process (just starting)')), err
  assert err.count('\n') == 1 and 'choose another --workdir' in err
  winner = winners[0]
  assert results.read_json(os.path.join(workdir, 'results.json'))['batch_size'] == winner
  assert results.read_json(os.path.join(workdir, 'config.json'))['batch_size'] == winner
  alone = str(tmp_path / 'alone')
  assert run_main(tiny_data, alone, batch_size=winner).returncode == 0
  mixed, reference = _outcome(workdir), _outcome(alone)
  assert mixed[0] == reference[0]
  jax.tree.map(np.testing.assert_array_equal, mixed[1], reference[1])
  np.testing.assert_array_equal(mixed[2], reference[2])


def test_a_held_lock_refuses_at_once_and_writes_nothing(tiny_data, tmp_path):
  workdir = str(tmp_path / 'run')
  holder = _hold_lock(workdir)
  try:
    with pytest.raises(workdir_lib.WorkdirInUseError,
                       match=f'workdir {workdir} is in use by process {holder.pid} on .* since'):
      train.train_and_evaluate(tiny_config(tiny_data), workdir)
  finally:
    holder.kill()
    holder.wait()
  assert os.listdir(workdir) == [workdir_lib.LOCK_FILE]  # The killed holder's, nothing more.


@pytest.mark.slow
def test_the_lock_of_a_run_that_died_is_taken_over(tiny_data, tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  holder = _hold_lock(workdir)
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  orphan = os.path.join(workdir, '.history.csv.k2j4l8')  # A write the kill cut short.
  open(orphan, 'w').close()
  train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1), workdir)
  assert f'Took over the lock of process {holder.pid}' in capsys.readouterr().out
  assert os.path.exists(os.path.join(workdir, 'results.json'))
  assert not os.path.exists(orphan)
  assert not os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))  # Released.
  train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1), workdir)  # Released.
  assert 'Took over' not in capsys.readouterr().out


def test_fewer_epochs_than_trained_are_refused(tiny_data, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(tiny_data, num_epochs=2), workdir)
  before = results.read_json(os.path.join(workdir, 'results.json'))
  with pytest.raises(workdir_lib.WorkdirMismatchError, match=(
      'has trained 2 epochs, more than config.num_epochs=1. Pass --config.num_epochs=2 '
      r'\(or more\) to continue it, or --fresh')):
    train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1), workdir)
  assert results.read_json(os.path.join(workdir, 'results.json')) == before


def test_fresh_moves_only_the_runs_own_files_even_from_the_current_folder(
    tiny_data, tmp_path, monkeypatch):
  folder = tmp_path / 'project'
  folder.mkdir()
  monkeypatch.chdir(folder)
  (folder / 'notes.txt').write_text('mine')
  (folder / 'data').mkdir()
  train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1), '.')
  before = results.read_json('results.json')
  train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1, hidden_units=8), '.',
                           fresh=True)
  assert os.getcwd() == str(folder)  # The current folder itself never moves.
  assert (folder / 'notes.txt').read_text() == 'mine' and (folder / 'data').is_dir()
  assert results.read_json('results.json')['num_params'] == 6_370
  (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith('project.old-')]
  assert results.read_json(str(aside / 'results.json')) == before
  assert not (aside / 'notes.txt').exists() and not (aside / 'data').exists()
  assert (aside / 'checkpoints').is_dir()


def test_config_is_checked_and_written_under_the_lock_before_the_kernel_build(
    tiny_data, tmp_path, monkeypatch):
  workdir = str(tmp_path / 'run')
  real, seen = train.steps_lib.build, {}

  def build(impl, config):
    seen['config.json'] = os.path.exists(os.path.join(workdir, 'config.json'))
    seen['locked'] = os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))
    return real(impl, config)

  monkeypatch.setattr(train.steps_lib, 'build', build)
  train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1), workdir)
  assert seen == {'config.json': True, 'locked': True}


def test_a_symlinked_lock_is_refused_and_its_target_untouched(tmp_path):
  """Issue 21 item 12: the lock record is never written through a link out of the workdir."""
  outside = tmp_path / 'precious.txt'
  outside.write_text('keep me\n')
  workdir = tmp_path / 'run'
  workdir.mkdir()
  os.symlink(outside, workdir / workdir_lib.LOCK_FILE)
  with pytest.raises(workdir_lib.UnsafeWorkdirError, match=r'\.lock is a symbolic link \(to '
                     f"'{outside}'\\); .* Remove the link"):
    with workdir_lib.WorkdirLock(str(workdir)):
      pytest.fail('locked')
  assert outside.read_text() == 'keep me\n' and os.path.islink(workdir / workdir_lib.LOCK_FILE)
