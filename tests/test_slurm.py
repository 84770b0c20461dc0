"""The SLURM scripts on a real one-node cluster (launch/local_slurm.sh), against local runs.

A session fixture starts slurmctld and slurmd through launch/local_slurm.sh and stops them
(by PID) at the end; the tests skip, saying why, where SLURM cannot start (not root, no
slurm-wlm). Every job is tiny (a slice of MNIST, one to three epochs, CPUs only) and
waited for with a time limit, so that a hang fails the test instead of holding it.
"""

import csv
import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import REPO, TINY_FLAGS, config_flags
from digits_jax import checkpoint
from digits_jax import idx
from digits_jax import results
from test_parallel import OUTPUTS, _free_port

pytestmark = pytest.mark.slow

LAUNCH = pathlib.Path(REPO) / 'launch'
BINARIES = ('slurmctld', 'slurmd', 'sbatch', 'salloc', 'srun', 'squeue', 'scancel', 'scontrol')
FINAL = ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY',
         'PREEMPTED', 'BOOT_FAIL', 'DEADLINE')
JOB_SECONDS = 600  # Every job here ends in well under a minute on a quiet machine.
SECONDS_COLUMNS = ('train_seconds', 'train_seconds_per_seed')  # Timings: never equal.


@dataclasses.dataclass
class Cluster:
  env: dict  # For the scripts and the SLURM commands: SLURM_CONF, PYTHON, PYTHONPATH.
  logs: pathlib.Path  # The jobs' slurm-*.out files.

  def run(self, *cmd, env=None, timeout=JOB_SECONDS):
    return subprocess.run([str(c) for c in cmd], cwd=REPO, env={**self.env, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, check=False)

  def log(self, pattern):
    """The text of the newest job output file whose name matches `pattern` (a glob)."""
    files = sorted(self.logs.glob(pattern), key=os.path.getmtime)
    return files[-1].read_text() if files else ''


def _cannot_start():
  """Why SLURM cannot start here, or None."""
  if os.geteuid() != 0:
    return 'the SLURM tests start slurmd, which needs root'
  missing = [b for b in BINARIES if not (shutil.which(b) or os.path.exists(f'/usr/sbin/{b}'))]
  if missing:
    return f'no {", ".join(missing)}: install slurm-wlm (apt-get install slurm-wlm)'
  return None


@pytest.fixture(scope='session')
def cluster(tmp_path_factory):
  """A one-node SLURM cluster of this machine's CPUs, for the session; stopped after it."""
  reason = _cannot_start()
  if reason:
    pytest.skip(reason)
  folder = tmp_path_factory.mktemp('slurm')
  env = {k: v for k, v in os.environ.items() if not k.startswith(('SLURM_', 'XLA_'))}
  env.update(SLURM_DIR=str(folder), SLURMCTLD_PORT=str(_free_port()),
             SLURMD_PORT=str(_free_port()), SLURM_CONF=str(folder / 'slurm.conf'),
             PYTHON=sys.executable, PYTHONPATH=REPO, PYTHONUNBUFFERED='1',
             TF_CPP_MIN_LOG_LEVEL='3', JAX_PLATFORMS='cpu', LOG_DIR=str(folder / 'logs'))
  (folder / 'logs').mkdir()
  start = subprocess.run(['bash', str(LAUNCH / 'local_slurm.sh'), 'start'], env=env,
                         capture_output=True, text=True, timeout=180, check=False)
  if start.returncode == 3:
    pytest.skip(start.stderr.strip())
  try:
    assert start.returncode == 0, start.stderr
    yield Cluster(env=env, logs=folder / 'logs')
  finally:
    stop = subprocess.run(['bash', str(LAUNCH / 'local_slurm.sh'), 'stop'], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert stop.returncode == 0, stop.stderr


@pytest.fixture(scope='module')
def mnist_slice(tmp_path_factory):
  """The first 3000 training and 500 test images of the packaged MNIST, as an IDX folder:
  real digits (accuracies short of 100% after an epoch) that train in seconds."""
  folder = str(tmp_path_factory.mktemp('mnist_slice'))
  source = os.path.join(REPO, 'digits_jax', 'datasets', 'mnist')
  for split, n in (('train', 3000), ('test', 500)):
    images, labels = idx.load_split(source, split)
    idx.write_split(folder, split, np.asarray(images)[:n], np.asarray(labels)[:n])
  return folder


def job_states(cluster, job):
  """{job or array task id: (state, exit code)} of a job (every task of an array)."""
  out = cluster.run('scontrol', 'show', 'job', '-o', job, timeout=60)
  assert out.returncode == 0, out.stderr
  states = {}
  for line in out.stdout.splitlines():
    fields = dict(re.findall(r'(\w+)=(\S*)', line))
    task = (f'{fields["ArrayJobId"]}_{fields["ArrayTaskId"]}' if 'ArrayTaskId' in fields
            else fields['JobId'])
    states[task] = (fields['JobState'], fields['ExitCode'])
  return states


def wait_for(cluster, job, timeout=JOB_SECONDS):
  """Waits until every task of `job` has ended; returns job_states. Fails on a hang."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    states = job_states(cluster, job)
    if states and all(s in FINAL for s, _ in states.values()):
      return states
    time.sleep(1)
  cluster.run('scancel', job, timeout=60)
  pytest.fail(f'job {job} did not end within {timeout}s: {job_states(cluster, job)}')


def sweep_overrides(data_dir, epochs, *extra):
  return [f'--override=num_epochs={epochs}', f'--override=mnist:data_dir={data_dir}',
          '--override=verify_checksums=false', '--override=progress_bar=false', *extra]


def submit_sweep(cluster, sweep_dir, *args):
  """Submits launch/slurm_sweep.sbatch as a login node would: (array id, gathering id)."""
  out = cluster.run('bash', LAUNCH / 'slurm_sweep.sbatch', *args, timeout=120,
                    env=dict(GPUS_PER_NODE='0', CPUS_PER_TASK='1', SWEEP_DIR=str(sweep_dir)))
  assert out.returncode == 0, out.stderr
  array = re.search(r'Submitted job array (\d+)', out.stderr).group(1)
  return array, out.stdout.split()[-1]


def local_sweep(sweep_dir, *args):
  """The same sweep run here, in one process."""
  out = subprocess.run([sys.executable, '-m', 'digits_jax.sweep', f'--sweep_dir={sweep_dir}',
                        *args], cwd=REPO, capture_output=True, text=True, timeout=JOB_SECONDS,
                       env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', 'JAX_PLATFORMS': 'cpu'},
                       check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def read_csv(path, drop=()):
  with open(path, newline='', encoding='utf-8') as f:
    return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def report_without_timings(sweep_dir):
  """The sweep's report.html without its folder and the comparison's 'train s' column."""
  text = (pathlib.Path(sweep_dir) / 'report.html').read_text(encoding='utf-8')
  text = text.replace(os.path.abspath(sweep_dir), '<sweep_dir>')

  def drop_last_cells(table):
    rows = table.group(0)
    if '<th>train s</th></tr>' not in rows:
      return rows
    return re.sub(r'<t[dh][^>]*>[^<]*</t[dh]></tr>', '</tr>', rows)
  return re.sub(r'<table.*?</table>', drop_last_cells, text, flags=re.S)


def test_sweep_on_slurm_equals_the_local_sweep(cluster, mnist_slice, tmp_path):
  args = ['--configs=v2,v3', '--datasets=mnist', '--num_seeds=2']
  overrides = sweep_overrides(mnist_slice, 1)
  array, gather = submit_sweep(cluster, tmp_path / 'slurm', *args, '--', *overrides)
  local_sweep(tmp_path / 'local', *args, *overrides)  # Meanwhile, on the same CPUs.
  assert wait_for(cluster, gather)[gather] == ('COMPLETED', '0:0'), cluster.log('*gather*')
  tasks = wait_for(cluster, array)
  assert sorted(tasks) == [f'{array}_0', f'{array}_1']
  assert all(t == ('COMPLETED', '0:0') for t in tasks.values()), tasks
  slurm, local = tmp_path / 'slurm', tmp_path / 'local'
  rows = read_csv(slurm / 'comparison.csv', SECONDS_COLUMNS)
  assert [r['run'] for r in rows] == ['v2_mnist', 'v3_mnist']
  assert 0.5 < float(rows[0]['test_accuracy_mean']) < 1  # Real learning, not a constant.
  assert rows == read_csv(local / 'comparison.csv', SECONDS_COLUMNS)
  assert read_csv(slurm / 'significance.csv') == read_csv(local / 'significance.csv')
  assert report_without_timings(slurm) == report_without_timings(local)


def trained(workdir):
  """(params as flat numpy arrays, history) of a finished run."""
  import jax  # pylint: disable=g-import-not-at-top
  _, state, _ = checkpoint.load_trained(workdir)
  params = {'/'.join(str(k.key) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))}
  return params, results.read_history(workdir)


def assert_same_run(workdir, reference):
  """Every output is there, from two processes, and the network equals the reference's."""
  assert not set(OUTPUTS) - set(os.listdir(workdir)), os.listdir(workdir)
  res = results.read_json(os.path.join(workdir, 'results.json'))
  assert res['devices']['processes'] == 2
  params, history = trained(workdir)
  assert params.keys() == reference[0].keys()
  for k, v in params.items():
    np.testing.assert_allclose(v, reference[0][k], rtol=1e-6, atol=1e-7)
  keys = ('epoch', 'loss', 'accuracy', 'val_loss', 'val_accuracy')
  assert [r[k] for r in history for k in keys] == pytest.approx(
      [r[k] for r in reference[1] for k in keys], rel=1e-6)


def two_processes_by_hand(workdir, flags):
  """The trainer started by hand as two processes of one CPU device each (as srun's)."""
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if not k.startswith(('SLURM_', 'XLA_'))}
  env.update(TF_CPP_MIN_LOG_LEVEL='3', JAX_PLATFORMS='cpu')
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'digits_jax.main', '--config=configs/default.py',
       f'--workdir={workdir}', '--distributed', f'--coordinator_address=localhost:{port}',
       '--num_processes=2', f'--process_id={i}', *flags], cwd=REPO, env=env,
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    errs = [p.communicate(timeout=JOB_SECONDS)[1] for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert [p.returncode for p in procs] == [0, 0], errs[0][-3000:]


def test_two_process_training_under_salloc_and_sbatch(cluster, tiny_data, tmp_path):
  """launch/slurm_gpu.sbatch in an allocation and as a batch job on a CPU cluster: both
  end by themselves with every output (report.html too) and equal the run by hand."""
  flags = config_flags(**{**TINY_FLAGS, 'tensorboard': True, 'write_report': True,
                          'data_dir': tiny_data})
  two_processes_by_hand(tmp_path / 'by_hand', flags)
  reference = trained(tmp_path / 'by_hand')
  script = LAUNCH / 'slurm_gpu.sbatch'
  run = dict(CONFIG='configs/default.py', WORKDIR=str(tmp_path / 'salloc'))
  out = cluster.run('salloc', '-N1', '-n2', '--cpus-per-task=1', 'bash', script, *flags,
                    env=run)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Devices: 2 x cpu (cpu), 2 process(es)" in out.stdout
  assert_same_run(tmp_path / 'salloc', reference)
  out = cluster.run('bash', script, *flags, timeout=60, env=dict(
      run, WORKDIR=str(tmp_path / 'sbatch'), GPUS_PER_NODE='0', TASKS_PER_NODE='2',
      CPUS_PER_TASK='1', NODES='1'))
  assert out.returncode == 0, out.stderr
  job = re.search(r'Submitted batch job (\d+)', out.stdout).group(1)
  assert wait_for(cluster, job) == {job: ('COMPLETED', '0:0')}, cluster.log(f'*-{job}.out')
  assert_same_run(tmp_path / 'sbatch', reference)


def wait_for_line(cluster, pattern, text, timeout=JOB_SECONDS):
  """Waits until the newest log matching `pattern` holds `text`; fails on a hang."""
  deadline = time.monotonic() + timeout
  while text not in cluster.log(pattern):
    assert time.monotonic() < deadline, f'no {text!r} in {pattern} after {timeout}s'
    time.sleep(0.2)


def per_seed(sweep_dir, cell):
  """What a finished cell measured: per-seed test results and its history, as numbers."""
  res = results.read_json(os.path.join(sweep_dir, cell, 'results.json'))
  history = results.read_history(os.path.join(sweep_dir, cell))
  keys = ('epoch', 'loss', 'accuracy', 'val_loss', 'val_accuracy')
  return ([*res['per_seed']['test_accuracy'], *res['per_seed']['test_loss']],
          [float(r[k]) for r in history for k in keys])


def test_array_task_stopped_mid_run_resumes_to_the_same_result(cluster, mnist_slice,
                                                                  tmp_path):
  args = ['--configs=v2', '--datasets=mnist', '--num_seeds=2', '--',
          *sweep_overrides(mnist_slice, 12, '--override=batch_size=2')]
  sweep_dir = tmp_path / 'slurm'
  array, gather = submit_sweep(cluster, sweep_dir, *args)
  wait_for_line(cluster, f'*-{array}_0.out', 'Epoch 2/12')
  stop = cluster.run('scancel', '--signal=TERM', f'{array}_0', timeout=60)
  assert stop.returncode == 0, stop.stderr
  state, _ = wait_for(cluster, array)[f'{array}_0']
  assert state != 'COMPLETED', cluster.log(f'*-{array}_0.out')
  assert 'saved a checkpoint' in cluster.log(f'*-{array}_0.out')
  assert not (sweep_dir / 'v2_mnist' / 'results.json').exists()
  wait_for(cluster, gather)
  array, gather = submit_sweep(cluster, sweep_dir, *args)  # The same command again.
  local_sweep(tmp_path / 'local', *args[:3], *args[4:])  # Meanwhile, uninterrupted.
  assert wait_for(cluster, array) == {f'{array}_0': ('COMPLETED', '0:0')}
  assert wait_for(cluster, gather) == {gather: ('COMPLETED', '0:0')}
  assert 'Resumed from the checkpoint' in cluster.log(f'*-{array}_0.out')
  resumed = per_seed(sweep_dir, 'v2_mnist')
  for a, b in zip(resumed, per_seed(tmp_path / 'local', 'v2_mnist')):
    assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
