"""Data parallelism on forced CPU devices and across two processes equals one device."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import REPO, TINY_FLAGS, config_flags, epoch_seconds, write_tiny_dataset
from digits_jax import checkpoint
from digits_jax import results

# Trains the tiny config in a fresh process with N forced devices; prints params and log.
TRAIN_SNIPPET = r'''
import json, sys, jax, numpy as np
sys.path.insert(0, "tests")
from helpers import tiny_config
from digits_jax import train
data_dir, workdir, batch, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
config = tiny_config(data_dir, batch_size=batch, **json.loads(extra))
state = train.train_and_evaluate(config, workdir)
flat = {"/".join(str(k.key) for k in path): np.asarray(v).tolist()
        for path, v in jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))}
print("RESULT" + json.dumps({"devices": jax.device_count(), "params": flat}))
'''


def _env(devices):
  return {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', 'JAX_PLATFORMS': 'cpu',
          'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'}


def _train_on(devices, data_dir, workdir, batch, **overrides):
  out = subprocess.run([sys.executable, '-c', TRAIN_SNIPPET, data_dir, workdir, str(batch),
                        json.dumps(overrides)],
                       cwd=REPO, env=_env(devices), capture_output=True, text=True,
                       timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  line = [l for l in out.stdout.splitlines() if l.startswith('RESULT')][-1]
  result = json.loads(line[len('RESULT'):])
  assert result['devices'] == devices
  return result['params'], results.read_history(workdir), out.stdout


def _assert_close(a, b):
  (pa, ha), (pb, hb) = a, b
  assert pa.keys() == pb.keys()
  for k in pa:
    np.testing.assert_allclose(np.asarray(pa[k]), np.asarray(pb[k]), rtol=2e-5, atol=2e-6)
  for ra, rb in zip(ha, hb):
    for key in ('loss', 'accuracy', 'val_loss', 'val_accuracy'):
      assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('batch', [32, 5])
def test_four_devices_equal_one(tiny_data, tmp_path, batch):
  one = _train_on(1, tiny_data, str(tmp_path / 'one'), batch)
  four = _train_on(4, tiny_data, str(tmp_path / 'four'), batch)
  _assert_close(one[:2], four[:2])
  if batch == 5:
    assert 'Batch 5 padded to 8 (a multiple of 4 devices)' in four[2]


@pytest.mark.slow
def test_replicas_sharded_on_four_devices_equal_one_device(tiny_data, tmp_path):
  flags = dict(num_epochs=1, cpu_kernel='off')  # All through the XLA scan.
  one = _train_on(1, tiny_data, str(tmp_path / 'one'), 6, num_seeds=4, **flags)
  four = _train_on(4, tiny_data, str(tmp_path / 'four'), 6, num_seeds=4, **flags)
  assert "mesh {'replica': 4, 'data': 1}" in four[2]
  assert all(np.shape(v)[0] == 4 for v in four[0].values())  # Four replicas came back.
  _assert_close(one[:2], four[:2])
  mixed = _train_on(4, tiny_data, str(tmp_path / 'mixed'), 6, num_seeds=2, **flags)
  assert "mesh {'replica': 2, 'data': 2}" in mixed[2]  # Replicas and batches both split.
  first_two = {k: np.asarray(v)[:2] for k, v in one[0].items()}
  _assert_close((first_two, one[1]), mixed[:2])


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


# The trainer's default outputs, which TINY_FLAGS turn off: a multi-process run must write
# them too (process 0 alone, after training) and still end.
DEFAULT_OUTPUTS = dict(tensorboard=True, write_report=True)
# Every file and folder a finished run writes (report.html last, by process 0 alone).
OUTPUTS = ('checkpoints', 'config.json', 'confusion.png', 'curves.png', 'history.csv',
           'misclassified.csv', 'misclassified.png', 'model_summary.txt', 'predictions.npz',
           'recognized.png', 'report.html', 'results.json', 'samples.png', 'tensorboard')
HANG_SECONDS = 300  # A finished tiny run ends in seconds; one that hangs fails here.


def _start_two(data_dir, workdir, **overrides):
  """Starts the real entry point as two processes of 2 CPU devices each, default outputs on."""
  port = _free_port()
  procs = []
  for pid in range(2):
    cmd = [sys.executable, '-u', '-m', 'digits_jax.main', '--config=configs/default.py',
           f'--workdir={workdir}', '--distributed', f'--coordinator_address=localhost:{port}',
           '--num_processes=2', f'--process_id={pid}',
           *config_flags(**{**TINY_FLAGS, **DEFAULT_OUTPUTS, 'data_dir': data_dir,
                            **overrides})]
    procs.append(subprocess.Popen(cmd, cwd=REPO, env=_env(2), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  return procs


def _finish(procs, timeout=HANG_SECONDS):
  """Each process's (stdout, stderr); kills them all and fails if any runs past `timeout`."""
  deadline = time.monotonic() + timeout
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=max(deadline - time.monotonic(), 1)))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      tails = [q.communicate()[1][-1500:] for q in procs]
      pytest.fail(f'the processes did not end within {timeout}s (a hang); stderr: {tails}')
  return outs


@pytest.mark.slow
def test_signal_to_one_process_stops_all_and_they_resume(tmp_path):
  data_dir = write_tiny_dataset(str(tmp_path / 'data'), num_train=1200)
  flags = dict(num_epochs=3, batch=2, steps_per_call=8)
  reference = _train_on(1, data_dir, str(tmp_path / 'single'), **flags)  # Same batches.
  workdir = str(tmp_path / 'multi')
  procs = _start_two(data_dir, workdir, num_epochs=3, batch_size=2, steps_per_call=8)
  for line in procs[0].stdout:
    if line.startswith('Epoch 1/3 - loss'):
      time.sleep(epoch_seconds(line) / 3)
      procs[1].send_signal(signal.SIGTERM)  # Only process 1 hears it.
      break
  outs = _finish(procs)
  assert [p.returncode for p in procs] == [143, 143], outs[0][1][-2000:] + outs[1][1][-2000:]
  assert "another process's stop signal received: saved a checkpoint" in outs[0][1]
  procs = _start_two(data_dir, workdir, num_epochs=3, batch_size=2, steps_per_call=8)
  outs = _finish(procs)
  assert [p.returncode for p in procs] == [0, 0], outs[0][1][-3000:]
  assert not set(OUTPUTS) - set(os.listdir(workdir))
  assert 'Resumed from the checkpoint' in outs[0][0]
  _, state, _ = checkpoint.load_trained(workdir)
  import jax  # pylint: disable=g-import-not-at-top
  flat = {'/'.join(str(k.key) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))}
  _assert_close((flat, results.read_history(workdir)), reference[:2])


@pytest.mark.slow
def test_two_processes_equal_one(tiny_data, tmp_path):
  reference = _train_on(1, tiny_data, str(tmp_path / 'single'), 5)
  workdir = str(tmp_path / 'multi')
  procs = _start_two(tiny_data, workdir, batch_size=5)
  outs = _finish(procs)
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert 'Devices: 4 x cpu (cpu), 2 process(es)' in outs[0][0]
  # Gloo's lines come from its own threads and may be cut in two ('[Gloo] Rank ' ending one
  # line, '3 is connected to 3 peer ranks. ...' starting the next: failed once in CI).
  gloo = lambda l: l.startswith('[Gloo]') or 'connected to' in l and 'peer ranks' in l
  own_lines = [l for l in outs[1][0].splitlines() if l.strip() and not gloo(l)]
  assert own_lines == []  # Process 1 prints nothing (Gloo's own lines aside).
  _, state, _ = checkpoint.load_trained(workdir)
  import jax  # pylint: disable=g-import-not-at-top
  flat = {'/'.join(str(k.key) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))}
  _assert_close((flat, results.read_history(workdir)), reference[:2])
  res = results.read_json(os.path.join(workdir, 'results.json'))
  assert res['devices']['processes'] == 2
  assert not set(OUTPUTS) - set(os.listdir(workdir))  # Every output, the report's too.
  with open(os.path.join(workdir, 'report.html'), encoding='utf-8') as f:
    assert 'id="digits-jax-model"' in f.read()  # The pad read the trained weights.
