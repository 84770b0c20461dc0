"""What a user sees: no library start-up noise, the kernel build announced, clean stops."""

import os
import signal
import subprocess
import sys

import pytest

from helpers import REPO, TINY_FLAGS, config_flags, write_tiny_dataset
from digits_jax import console
from digits_jax import cpu_kernel

NOISE = ('oneDNN', 'cpu_feature_guard', 'absl::InitializeLog', 'I0000', 'Traceback',
         'rebuild TensorFlow')


def _env():
  """The user's environment: no TensorFlow log settings of ours."""
  return {k: v for k, v in os.environ.items()
          if k not in ('TF_CPP_MIN_LOG_LEVEL', 'TF_ENABLE_ONEDNN_OPTS')}


def _main(*flags):
  return [sys.executable, '-u', '-m', 'digits_jax.main', '--config=configs/default.py', *flags]


def _res(seeds):
  """A results.json of `seeds` (one test image, accuracies .9, .8, ...) for report_test."""
  from digits_jax import stats  # pylint: disable=g-import-not-at-top
  accs, losses = [0.9 - 0.1 * k for k in range(len(seeds))], [0.3 + 0.1 * k for k in
                                                              range(len(seeds))]
  rec = {'index': 4, 'predicted': 1, 'true': 1, 'predicted_name': '1', 'true_name': '1',
         'probabilities': [0.0, 1.0] + [0.0] * 8}
  return {'seeds': seeds, 'test_loss': losses[0], 'test_accuracy': accs[0],
          'num_test': 1000, 'misclassified_count': 100, 'recognized': [rec],
          'per_seed': {'test_loss': losses, 'test_accuracy': accs, 'best_epoch': [2] * len(seeds),
                       'misclassified_count': [100 + 100 * k for k in range(len(seeds))]},
          'summary': {'test_loss': stats.summarize(losses),
                      'test_accuracy': stats.summarize(accs)}}


class _Config:
  num_misclassified_show = 10


def test_one_seed_prints_the_test_lines_as_before(capsys):
  console.report_test(_Config, _res([0]))
  assert capsys.readouterr().out.splitlines() == [
      'Test: loss 0.3000 - accuracy 0.9000 (1,000 images)',
      'Test image 4: predicted 1, true 1 - correct',
      '  probabilities: ' + '  '.join(f'{i}:{float(i == 1):.4f}' for i in range(10)),
      'Misclassified test images: 100 of 1,000 (first 10 drawn).']


def test_many_seeds_label_seed_0_and_give_the_mean_with_its_interval(capsys):
  console.report_test(_Config, _res([3, 4, 5]))
  lines = capsys.readouterr().out.splitlines()
  assert lines[:2] == [
      'Test (seed 3): loss 0.3000 - accuracy 0.9000 (1,000 images)',
      'Test over 3 seeds: loss 0.4000 [0.1516, 0.6484] - accuracy 0.8000 [0.5516, 1.0484] '
      '(mean [95% interval of the mean])']  # t(0.975, 2) * 0.1 / sqrt(3) = 0.2484.
  assert lines[2].startswith('Test image 4 (seed 3): predicted 1, true 1 - correct')
  assert lines[4] == ('Misclassified test images (seed 3): 100 of 1,000 (first 10 drawn); '
                      'per seed: 100, 200, 300 (mean 200.0).')
  assert lines[5].startswith('Seed 3: test loss 0.3000 - accuracy 0.9000')


@pytest.mark.slow
def test_a_run_prints_no_library_start_up_lines(tiny_data, tmp_path):
  # tf.data feeding: TensorFlow is imported, and must stay quiet.
  flags = config_flags(**{**TINY_FLAGS, 'data_dir': tiny_data, 'data_on_device': False})
  proc = subprocess.run(_main(f'--workdir={tmp_path / "run"}', *flags), cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for noise in NOISE:
    assert noise not in proc.stdout + proc.stderr, noise
  assert 'Test image 0: predicted ' in proc.stdout


def test_recognition_lines_name_classes_once():
  rec = {'index': 22, 'predicted': 6, 'true': 6, 'predicted_name': '6', 'true_name': '6',
         'probabilities': [0.1] * 10}
  assert console.recognition_lines(rec).startswith('Test image 22: predicted 6, true 6 - correct')
  rec.update(predicted=9, true=7, predicted_name='Ankle boot', true_name='Sneaker')
  assert 'predicted 9 (Ankle boot), true 7 (Sneaker) - WRONG' in console.recognition_lines(rec)


def test_the_first_kernel_build_is_announced(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv('DIGITS_JAX_KERNEL_CACHE', str(tmp_path))

  def fake_compiler(cmd, **kwargs):
    del kwargs
    if '-o' in cmd:  # A build (else the cache key's `-Q --help=target` query): its output.
      with open(cmd[cmd.index('-o') + 1], 'wb') as f:
        f.write(b'')
    return subprocess.CompletedProcess(cmd, 0, '', '')

  monkeypatch.setattr(cpu_kernel.subprocess, 'run', fake_compiler)
  cpu_kernel.build()
  assert 'Building the fused CPU kernel' in capsys.readouterr().out
  cpu_kernel.build()  # Cached: silent.
  assert capsys.readouterr().out == ''


def _stop(cmd, when, sig, env=None):
  """Runs `cmd`, sends `sig` when a stdout line starts with `when`; (code, out, err)."""
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env or _env())
  out = []
  for line in proc.stdout:
    out.append(line)
    if line.startswith(when):
      proc.send_signal(sig)
      break
  rest, err = proc.communicate(timeout=300)
  return proc.returncode, ''.join(out) + rest, err


@pytest.mark.slow
def test_ctrl_c_in_training_saves_and_exits_130(tmp_path):
  data = write_tiny_dataset(str(tmp_path / 'data'), num_train=3000)
  flags = config_flags(**{**TINY_FLAGS, 'data_dir': data, 'num_epochs': 3, 'batch_size': 2,
                          'steps_per_call': 1})
  code, _, err = _stop(_main(f'--workdir={tmp_path / "run"}', *flags), 'Epoch 1/3',
                       signal.SIGINT)
  assert code == 130, err[-3000:]
  assert 'SIGINT received: saved a checkpoint' in err and 'Traceback' not in err


@pytest.mark.slow
def test_ctrl_c_outside_the_loop_is_one_line(tmp_path):
  """Ctrl-C while the data loads (held there by a slow loader) stops with one line."""
  code = (
      'import signal, sys, time\n'
      # As in a terminal: a shell starts background jobs (nohup, `&`) with SIGINT ignored.
      'signal.signal(signal.SIGINT, signal.default_int_handler)\n'
      'from digits_jax import input_pipeline\n'
      'def slow(config):\n'
      '  print("loading", flush=True)\n'
      '  time.sleep(120)\n'
      'input_pipeline.load = slow\n'
      'from absl import app\n'
      'from digits_jax import main\n'
      'sys.argv = ["main", "--config=configs/default.py", "--workdir=%s"]\n'
      'app.run(main.main, flags_parser=main.parse_flags)\n' % (tmp_path / 'run'))
  rc, _, err = _stop([sys.executable, '-u', '-c', code], 'loading', signal.SIGINT)
  assert rc == 130, err[-3000:]
  assert err.strip().splitlines() == [console.interrupted_line(str(tmp_path / 'run'))]
