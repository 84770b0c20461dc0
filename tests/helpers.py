"""Test helpers: a tiny, learnable IDX dataset, configs that train on it in seconds, and a
way to run the real entry point on it. Tests import these from here (`from helpers import
...`); conftest.py only turns the dataset into the `tiny_data` fixture."""

import os
import shutil
import subprocess
import sys

import numpy as np

from digits_jax import idx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_TRAIN, NUM_TEST = 600, 200
BROWSER = shutil.which('chromium') or shutil.which('chromium-browser')


def make_images(labels, rng):
  """Images whose class is visible: a bright 7x7 patch at a class-dependent spot, plus noise."""
  images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
  for i, c in enumerate(labels):
    r, col = 3 + 7 * (c // 4), 3 + 6 * (c % 4)
    images[i, r:r + 7, col:col + 7] = 255
  return images


def write_tiny_dataset(folder, seed=0, num_train=NUM_TRAIN, num_test=NUM_TEST):
  """Writes a learnable dataset as the four IDX files; returns the folder."""
  rng = np.random.default_rng(seed)
  for split, n in (('train', num_train), ('test', num_test)):
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    idx.write_split(folder, split, make_images(labels, rng), labels)
  return folder


def tiny_config(data_dir, **overrides):
  """The default config shrunk to train on `tiny_data` in well under a second."""
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.data_dir = data_dir
  config.verify_checksums = False
  config.hidden_units = 16
  config.num_epochs = 2
  config.batch_size = 32
  config.steps_per_call = 4
  config.eval_batch_size = 64
  config.num_show = 6
  config.test_indices = (0, 3)
  config.num_misclassified_show = 4
  config.progress_bar = False
  config.tensorboard = False
  config.write_report = False
  config.update(overrides)
  return config


def config_flags(**overrides):
  """`--config.x=y` flags for the tiny config, for running the real entry point."""
  out = []
  for key, value in overrides.items():
    out.append(f'--config.{key}={value}')
  return out


TINY_FLAGS = dict(verify_checksums=False, hidden_units=16, num_epochs=2, batch_size=32,
                  steps_per_call=4, eval_batch_size=64, num_show=6, test_indices='(0,3)',
                  num_misclassified_show=4, progress_bar=False, tensorboard=False,
                  write_report=False)


def run_main(data_dir, workdir, *extra, env=None, timeout=300, **overrides):
  """Runs `python -m digits_jax.main` on the tiny data; returns the CompletedProcess."""
  flags = config_flags(**{**TINY_FLAGS, 'data_dir': data_dir, **overrides})
  cmd = [sys.executable, '-m', 'digits_jax.main', '--config=configs/default.py',
         f'--workdir={workdir}', *flags, *extra]
  full_env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', **(env or {})}
  return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True,
                        timeout=timeout, check=False)


def chromium(*args, user_data_dir):
  """Runs headless Chromium with everything that could reach the network switched off."""
  cmd = [BROWSER, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
         '--no-first-run', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--hide-scrollbars', f'--user-data-dir={user_data_dir}', *args]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def epoch_seconds(line):
  """The seconds of an `Epoch i/n - ... - 12.3s` (or `- 1m01s`) console line."""
  text = line.rsplit(' - ', 1)[1].strip().rstrip('s')
  minutes, _, seconds = text.rpartition('m')
  return 60 * int(minutes or 0) + float(seconds)


def run_outcome(workdir):
  """What a resumed run must reproduce exactly: the accuracy log without timings, the final
  parameters and the test probabilities."""
  import jax  # pylint: disable=g-import-not-at-top
  from digits_jax import checkpoint, results  # pylint: disable=g-import-not-at-top,g-multiple-import
  history = [{k: v for k, v in h.items() if k != 'seconds'}
             for h in results.read_history(workdir)]
  _, state, _ = checkpoint.load_trained(workdir)
  return history, jax.device_get(state.params), results.read_predictions(workdir)['probabilities']
