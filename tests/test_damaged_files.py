"""Issue 21: every reader survives damage, and every entry point says so in one line.

Each damaged file of a finished tiny run is read by the reader of its kind (results.py),
which returns a value or raises one typed error naming the file and the fix; the entry
points' shared guard (cli.one_line) turns that into `error: ...` and exit status 1. A
report comes from one consistent run or says the run is unfinished.
"""

import errno
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO, tiny_config
from digits_jax import cli
from digits_jax import comparison
from digits_jax import errors
from digits_jax import html_page
from digits_jax import preemption
from digits_jax import run_report
from digits_jax import sweep_report
from digits_jax import sweep
from digits_jax import results
from digits_jax import train


@pytest.fixture(scope='module')
def finished(tiny_data, tmp_path_factory):
  """A finished two-epoch tiny run, with its report (copied by each test that damages it)."""
  workdir = str(tmp_path_factory.mktemp('finished') / 'run')
  train.train_and_evaluate(tiny_config(tiny_data, write_report=True), workdir)
  return workdir


@pytest.fixture
def run(finished, tmp_path):
  """A copy of the finished run to damage."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(finished, workdir)
  return workdir


def exit_line(fn, folder='.'):
  """What an entry point's guard makes of fn()'s failure: (exit status, its text)."""
  previous = signal.getsignal(signal.SIGINT)
  try:
    with pytest.raises(SystemExit) as exited:
      with cli.one_line(folder):
        fn()
  finally:
    signal.signal(signal.SIGINT, previous)
  code = exited.value.code
  return (1, code) if isinstance(code, str) else (code, '')


def truncate(path, fraction=0.5):
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:int(len(data) * fraction)])


def write(path, data):
  with open(path, 'wb') as f:
    f.write(data)


DAMAGE = {
    'results truncated': ('results.json', lambda p: truncate(p)),
    'results random': ('results.json', lambda p: write(p, os.urandom(300))),
    'results a list': ('results.json', lambda p: write(p, b'[1,2,3]')),
    'results without fields': ('results.json', lambda p: write(p, b'{"name": "x"}')),
    'config truncated': ('config.json', lambda p: truncate(p)),
    'config empty': ('config.json', lambda p: write(p, b'')),
    'config a list': ('config.json', lambda p: write(p, b'[]')),
    'history not UTF-8': ('history.csv', lambda p: write(p, b'epoch,loss\n\xff\xfe1,2\n')),
    'history not numbers': ('history.csv', lambda p: write(
        p, b'epoch,loss,accuracy,val_loss,val_accuracy,seconds\n1,a,b,c,d,e\n')),
    'history cut mid-row': ('history.csv', lambda p: truncate(p, 0.6)),
    'predictions truncated': ('predictions.npz', lambda p: truncate(p)),
    'predictions missing': ('predictions.npz', os.remove),
    'results missing': ('results.json', os.remove),
}


@pytest.mark.parametrize('case', list(DAMAGE))
def test_a_damaged_file_is_one_line_naming_it(run, case):
  name, damage = DAMAGE[case]
  damage(os.path.join(run, name))
  code, text = exit_line(lambda: run_report.write_run_report(run), run)
  assert code == 1 and text.startswith('error: ') and '\n' not in text, text
  named = run if case.endswith('missing') and name != 'config.json' else os.path.join(run, name)
  assert named in text and ('Rerun' in text or 'restore it' in text or 'Finish' in text)


def test_readers_raise_their_typed_error(run):
  write(os.path.join(run, 'results.json'), b'[1,2,3]')
  with pytest.raises(errors.DamagedFileError) as raised:
    results.read_results(run)
  assert raised.value.path == os.path.join(run, 'results.json')
  assert 'holds a JSON list, not the dict that was written' in raised.value.problem
  os.remove(os.path.join(run, 'history.csv'))
  with pytest.raises(errors.MissingFileError, match='history.csv is missing'):
    results.read_history(run)


@pytest.mark.slow  # Two reruns: about 7 s on a loaded machine.
def test_a_lost_or_cut_history_is_rebuilt_by_a_rerun(tiny_data, run):
  """Items 2 and 3(a): the accuracy log lives in the checkpoint too."""
  path = os.path.join(run, 'history.csv')
  truncate(path, 0.6)
  train.train_and_evaluate(tiny_config(tiny_data, write_report=True), run)
  assert [h['epoch'] for h in results.read_history(run)] == [1, 2]
  os.remove(path)
  write(os.path.join(run, 'curves.png'), b'')
  train.train_and_evaluate(tiny_config(tiny_data, write_report=True), run)
  assert [h['epoch'] for h in results.read_history(run)] == [1, 2]
  assert run_report.load_run(run)['res']['num_epochs'] == 2


def test_a_killed_extension_is_reported_unfinished(tiny_data, tmp_path, monkeypatch):
  """Item 3(b): results.json of the 1-epoch run, config.json and history of the 3-epoch
  extension that stopped before its results: the report says the run is unfinished."""
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1), workdir)

  def killed(*args, **kwargs):
    raise preemption.StopRequested('killed')
  monkeypatch.setattr(results, 'write_results', killed)
  with pytest.raises(preemption.StopRequested):
    train.train_and_evaluate(tiny_config(tiny_data, num_epochs=3), workdir)
  with pytest.raises(errors.UnfinishedRunError, match=r'holds an unfinished run: results\.json '
                     r'describes 1 epoch\(s\) of 1, but a later run of 3 epochs began since and '
                     r'has reached epoch 3'):
    run_report.load_run(workdir)
  code, text = exit_line(lambda: run_report.write_run_report(workdir), workdir)
  assert code == 1 and 'Rerun its training command to finish it' in text
  assert list(comparison.unreadable_runs(str(tmp_path))) == [workdir]  # Left out of a sweep.
  assert comparison.find_runs(str(tmp_path)) == {}
  assert not sweep.is_finished(tiny_config(tiny_data, num_epochs=3), workdir)  # Redone.


def test_one_damaged_cell_leaves_the_others_report(finished, tmp_path, capsys):
  sweep_dir = tmp_path / 'sweep'
  for cell in ('a_mnist', 'b_mnist'):
    shutil.copytree(finished, sweep_dir / cell)
  truncate(sweep_dir / 'b_mnist' / 'results.json')
  sweep_report.warn_unreadable_runs(str(sweep_dir))
  assert list(comparison.find_runs(str(sweep_dir))) == [str(sweep_dir / 'a_mnist')]
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('warning: left out of the sweep report: '
                                             f'{sweep_dir / "b_mnist" / "results.json"} is '
                                             'damaged or truncated')
  truncate(sweep_dir / 'a_mnist' / 'config.json')
  code, text = exit_line(lambda: sweep_report.warn_unreadable_runs(str(sweep_dir)))
  assert code == 1 and 'no run there can be read' in text


def test_a_read_only_workdir_is_one_line(run, monkeypatch):
  """(As root, chmod cannot make a folder read-only: the write fails as it would.)"""
  os.remove(os.path.join(run, html_page.REPORT))

  def refuse(src, dst):
    raise PermissionError(errno.EROFS, os.strerror(errno.EROFS), dst)
  monkeypatch.setattr(results.os, 'replace', refuse)
  code, text = exit_line(lambda: run_report.write_run_report(run), run)
  assert code == 1 and text.startswith('error: could not write to ') and '\n' not in text
  assert 'read-only file system' in text


def test_a_config_json_that_is_not_an_object_is_refused_by_a_rerun(tiny_data, run):
  write(os.path.join(run, 'config.json'), b'[]')
  with pytest.raises(errors.DamagedFileError, match='config.json holds a JSON list'):
    train.train_and_evaluate(tiny_config(tiny_data, write_report=True), run)


def test_checkpoints_without_config_json_name_the_missing_file(tiny_data, run):
  """Item 6: not 'a different config' with every field None."""
  os.remove(os.path.join(run, 'config.json'))
  with pytest.raises(errors.MissingFileError, match=r'config\.json is missing\. It records '
                     'the config of the run'):
    train.train_and_evaluate(tiny_config(tiny_data, write_report=True), run)


def test_predict_reads_a_damaged_run_as_one_typed_error(run):
  from digits_jax import predict  # pylint: disable=g-import-not-at-top
  write(os.path.join(run, 'config.json'), b'[]')
  with pytest.raises(errors.DamagedFileError, match='config.json holds a JSON list'):
    predict.predict_files(['x.png'], workdir=run)
  os.remove(os.path.join(run, 'config.json'))
  with pytest.raises(errors.MissingFileError, match='holds no trained run'):
    predict.predict_files(['x.png'], workdir=run)


def test_predict_out_on_an_existing_file_still_predicts(finished, tmp_path):
  """Item 9: --out naming a file: each image gets its prediction and one error line."""
  from digits_jax import predict  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = tmp_path / 'digit.png'
  pixels = np.zeros((28, 28), np.uint8)
  pixels[6:22, 12:16] = 255
  Image.fromarray(pixels).save(image)
  out = tmp_path / 'taken'
  out.write_text('mine')
  records, failed = predict.predict_files([str(image)], workdir=finished, out_dir=str(out))
  assert len(records) == 1 and 'figure' not in records[0]
  assert list(failed) == [str(image)] and failed[str(image)].startswith(f'--out: {out}: ')
  assert out.read_text() == 'mine'


def test_ctrl_c_after_the_work_is_ignored(capsys):
  """Item 13: once a command's work is done, Ctrl-C would only break its shutdown."""
  previous = signal.getsignal(signal.SIGINT)
  try:
    with cli.one_line('.'):
      pass
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
  finally:
    signal.signal(signal.SIGINT, previous)


def test_every_user_error_is_one_kind():
  """A new kind of user error needs no entry point edited: each subclasses UserError."""
  from digits_jax import checkpoint, config_files, idx, storage, sweep, validation, workdir  # pylint: disable=g-import-not-at-top,g-multiple-import
  kinds = (validation.ConfigError, idx.DataError, workdir.WorkdirMismatchError,
           workdir.WorkdirInUseError, workdir.UnsafeWorkdirError, train.NonFiniteLossError,
           checkpoint.CheckpointError, results.DamagedFileError, storage.StorageError,
           config_files.ConfigFileError, sweep.SweepError, errors.UnfinishedRunError)
  assert all(issubclass(k, errors.UserError) for k in kinds)
  assert train.USER_ERRORS == (errors.UserError,)


def test_checkpoints_as_a_plain_file_is_refused_before_training(tiny_data, run, capsys):
  """Item 2: one line before any epoch, not an orbax traceback after one."""
  shutil.rmtree(os.path.join(run, 'checkpoints'))
  write(os.path.join(run, 'checkpoints'), b'x')
  with pytest.raises(errors.DamagedFileError, match=r'checkpoints is not a folder'):
    train.train_and_evaluate(tiny_config(tiny_data, write_report=True), run)
  assert 'Epoch' not in capsys.readouterr().out


def test_the_files_listed_are_the_runs_own(tiny_data, tmp_path, capsys):
  """Item 6: a workdir holding the user's files (e.g. --workdir=.) lists only the run's."""
  (tmp_path / 'thesis.tex').write_text('mine')
  train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1), str(tmp_path))
  listed = capsys.readouterr().out.split('Wrote to ')[1].splitlines()[1:]
  assert '  results.json' in listed and '  checkpoints/' in listed
  assert not [n for n in listed if 'thesis' in n]


@pytest.mark.slow  # The real command: a process that imports jax and matplotlib.
def test_the_report_command_on_a_cut_results_json_is_one_line(run):
  """Item 1 as filed: `head -c 500 RUN/results.json > t && mv t RUN/results.json; report`."""
  truncate(os.path.join(run, 'results.json'), 500 / os.path.getsize(
      os.path.join(run, 'results.json')))
  proc = subprocess.run([sys.executable, '-m', 'digits_jax.report', f'--workdir={run}'],
                        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
                        env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})
  assert proc.returncode == 1 and proc.stdout == ''
  assert proc.stderr.startswith(f'error: {run}/results.json is damaged or truncated ('), (
      proc.stderr[-2000:])
  assert proc.stderr.count('\n') == 1
