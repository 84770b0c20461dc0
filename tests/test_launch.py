"""Dry runs of the launch scripts: the commands they would run, and nothing run.

Each script runs in a subprocess with a clean environment whose PATH starts with
stubs of gcloud, sbatch, srun, pip and python3 that leave a marker file if
called, so a dry run that ran anything fails the test. Needs bash only: no
gcloud, SLURM, GPU or network.
"""

import os
import pathlib
import re
import shlex
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / 'launch'
GPU = LAUNCH / 'gpu_single_host.sh'
TPU = LAUNCH / 'tpu_vm.sh'
SLURM = LAUNCH / 'slurm_gpu.sbatch'
SWEEP = LAUNCH / 'slurm_sweep.sbatch'
LOCAL = LAUNCH / 'local_slurm.sh'
SCRIPTS = [GPU, TPU, SLURM, SWEEP]
ALL_SCRIPTS = SCRIPTS + [LOCAL]  # local_slurm.sh takes a command (start, stop), no dry run.
STUBS = ['gcloud', 'sbatch', 'srun', 'pip', 'pip3', 'python', 'python3', 'nvidia-smi']

pytestmark = pytest.mark.skipif(shutil.which('bash') is None, reason='needs bash')


@pytest.fixture
def sandbox(tmp_path):
  """A clean environment, with stubs that record any real command run."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  marker = tmp_path / 'ran'
  for name in STUBS:
    stub = bin_dir / name
    stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{marker}"\nexit 97\n')
    stub.chmod(0o755)
  env = {
      'PATH': f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
      'HOME': str(tmp_path / 'home'),
      'LANG': 'C.UTF-8',
  }
  yield tmp_path, env
  assert not marker.exists(), f'a dry run ran: {marker.read_text()}'


def launch(sandbox, script, *args, **env):
  """Runs `script args` with extra env; returns the CompletedProcess.

  Also checks that the run created no file or folder in the sandbox.
  """
  tmp_path, base_env = sandbox
  before = sorted(tmp_path.rglob('*'))
  result = subprocess.run(
      ['bash', str(script), *args], env={**base_env, **env}, cwd=tmp_path,
      capture_output=True, text=True, timeout=30, check=False)
  assert sorted(tmp_path.rglob('*')) == before
  return result


def commands(result):
  """Parses the `+ cmd` lines of a successful dry run into argv lists."""
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines and all(line.startswith('+ ') for line in lines), result.stdout
  return [shlex.split(line[2:]) for line in lines]


def find(cmds, *words):
  """The commands that contain all of `words`, in order of appearance."""
  return [c for c in cmds if all(w in c for w in words)]


def trainer_args(cmd):
  """The trainer's own flags in a command that runs digits_jax.main."""
  i = cmd.index('digits_jax.main')
  assert cmd[i - 1] == '-m' and re.search(r'python[0-9.]*$', cmd[i - 2]), cmd
  return cmd[i + 1:]


def remote(cmd):
  """The words of the remote command of a `gcloud ... ssh --command CMD`."""
  return shlex.split(cmd[cmd.index('--command') + 1])


# --- every script ---


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda p: p.name)
def test_unknown_option_fails_clearly(sandbox, script):
  result = launch(sandbox, script, '--dry-run', '--no-such-option')
  assert result.returncode != 0
  assert "unknown option '--no-such-option'" in result.stderr
  assert not result.stdout


@pytest.mark.parametrize('script', ALL_SCRIPTS, ids=lambda p: p.name)
def test_help_prints_header(sandbox, script):
  result = launch(sandbox, script, '--help')
  assert result.returncode == 0
  assert 'Usage:' in result.stdout and 'Examples:' in result.stdout
  assert not [line for line in result.stdout.splitlines()
              if line.startswith(('#', 'set '))]


@pytest.mark.parametrize('script', ALL_SCRIPTS, ids=lambda p: p.name)
def test_script_is_executable_strict_bash(script):
  text = script.read_text()
  assert text.startswith('#!/usr/bin/env bash\n')
  assert 'set -euo pipefail' in text
  assert os.access(script, os.X_OK)
  subprocess.run(['bash', '-n', str(script)], check=True)


@pytest.mark.skipif(shutil.which('shellcheck') is None, reason='no shellcheck')
def test_shellcheck_clean():
  subprocess.run(['shellcheck', *map(str, ALL_SCRIPTS), str(LAUNCH / '_lib.sh')], check=True)


@pytest.mark.parametrize('script,args,env', [
    (TPU, ['delete'], dict(TPU_NAME='t', ZONE='z')),
    (SLURM, ['--config.num_epochs=1'], dict(NODES='2')),
], ids=['tpu', 'slurm'])
def test_real_run_executes_what_dry_run_prints(tmp_path, script, args, env):
  """Without --dry-run, run() executes exactly the printed command."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  log = tmp_path / 'argv'
  for name in ['gcloud', 'sbatch']:
    stub = bin_dir / name
    stub.write_text(f'#!/bin/sh\nprintf "%s\\0" "$(basename "$0")" "$@" > "{log}"\n')
    stub.chmod(0o755)
  env = {'PATH': f'{bin_dir}{os.pathsep}{os.environ["PATH"]}',
         'HOME': str(tmp_path), **env}
  dry = commands(subprocess.run(
      ['bash', str(script), '--dry-run', *args], env=env, capture_output=True,
      text=True, timeout=30, check=False))
  real = subprocess.run(['bash', str(script), *args], env=env,
                        capture_output=True, text=True, timeout=30, check=False)
  assert real.returncode == 0, real.stderr
  assert not real.stdout  # commands are logged on stderr when they run
  assert log.read_text().split('\0')[:-1] == dry[0]


# --- one GPU host ---


def test_gpu_dry_run(sandbox):
  tmp_path, _ = sandbox
  venv = tmp_path / 'venv'
  cmds = commands(launch(
      sandbox, GPU, '--dry-run', '--config.num_epochs=3', '--',
      '--config.batch_size=64', VENV=str(venv), WORKDIR=str(tmp_path / 'wd')))
  assert cmds[0] == ['python3', '-m', 'venv', str(venv)]
  py = f'{venv}/bin/python'
  assert [py, '-m', 'pip', 'install', '-e', '.'] in cmds
  assert [py, '-m', 'pip', 'install', '-U', 'jax[cuda12]'] in cmds
  assert not find(cmds, 'jax[cuda13]')
  assert ['export', 'XLA_PYTHON_CLIENT_PREALLOCATE=false'] in cmds
  assert cmds[-1][0] == py
  assert trainer_args(cmds[-1]) == [
      '--config=configs/v6.py', f'--workdir={tmp_path}/wd',
      '--config.num_epochs=3', '--config.batch_size=64']
  assert not venv.exists()


def test_gpu_env_settings(sandbox):
  tmp_path, _ = sandbox
  cmds = commands(launch(
      sandbox, GPU, DRY_RUN='1', CUDA='13', MEM_FRACTION='0.5',
      CONFIG='configs/v1.py:fashion_mnist', VENV=str(tmp_path / 'v')))
  assert find(cmds, 'jax[cuda13]') and not find(cmds, 'jax[cuda12]')
  assert ['export', 'XLA_PYTHON_CLIENT_MEM_FRACTION=0.5'] in cmds
  assert not find(cmds, 'export', 'XLA_PYTHON_CLIENT_PREALLOCATE=false')
  assert trainer_args(cmds[-1]) == [
      '--config=configs/v1.py:fashion_mnist', '--workdir=runs/v1_fashion_mnist']


def test_gpu_reuses_venv_and_skips_install(sandbox):
  tmp_path, _ = sandbox
  py = tmp_path / 'v' / 'bin' / 'python'
  py.parent.mkdir(parents=True)
  py.write_text('#!/bin/sh\nexit 97\n')
  py.chmod(0o755)
  cmds = commands(launch(
      sandbox, GPU, '--dry-run', VENV=str(tmp_path / 'v'), SKIP_INSTALL='1'))
  assert not find(cmds, 'venv') and not find(cmds, 'pip')
  assert cmds[-1][0] == str(py)


def test_gpu_setup_only_does_not_train(sandbox):
  tmp_path, _ = sandbox
  cmds = commands(launch(
      sandbox, GPU, '--dry-run', '--setup-only', VENV=str(tmp_path / 'v')))
  assert find(cmds, 'jax[cuda12]')
  assert not find(cmds, 'digits_jax.main')


def test_gpu_rejects_unknown_cuda(sandbox):
  result = launch(sandbox, GPU, '--dry-run', CUDA='11')
  assert result.returncode != 0 and 'CUDA must be 12 or 13' in result.stderr


# --- Cloud TPU ---

TPU_ENV = dict(TPU_NAME='my-tpu', ZONE='us-central2-b', PROJECT='my-proj',
               VERSION='tpu-ubuntu2204-base')


def test_tpu_pod_slice_dry_run(sandbox):
  cmds = commands(launch(
      sandbox, TPU, '--dry-run', 'all', '--', '--config.num_epochs=1',
      ACCELERATOR_TYPE='v4-32', **TPU_ENV))
  where = ['--zone=us-central2-b', '--project=my-proj']
  tpu = ['gcloud', 'compute', 'tpus', 'tpu-vm']
  assert cmds[0] == [*tpu, 'create', 'my-tpu', *where,
                     '--accelerator-type=v4-32', '--version=tpu-ubuntu2204-base']
  copy, = find(cmds, 'scp', '--worker=all')
  assert copy[:5] == [*tpu, 'scp'] and '--recurse' in copy
  assert {'pyproject.toml', 'digits_jax', 'configs'} <= set(copy)
  assert copy[-1] == 'my-tpu:digits_jax/'
  ssh = find(cmds, 'ssh', '--worker=all', *where)
  install, = [c for c in ssh if 'jax[tpu]' in remote(c)]
  assert 'pip install -e . ' in ' '.join(remote(install))
  train, = [c for c in ssh if 'digits_jax.main' in remote(c)]
  assert trainer_args(remote(train)) == [
      '--config=configs/v6.py', '--workdir=runs/v6_mnist', '--distributed',
      '--config.num_epochs=1']
  fetch, = find(cmds, 'scp', '--worker=0')
  assert fetch[-2:] == ['my-tpu:digits_jax/runs/v6_mnist', 'runs/']
  assert cmds[-1] == [*tpu, 'delete', 'my-tpu', *where, '--quiet']
  order = [cmds.index(c) for c in (cmds[0], copy, install, train, fetch)]
  assert order == sorted(order)


@pytest.mark.parametrize('accelerator,multihost,distributed', [
    ('v5litepod-8', 'auto', False), ('v5litepod-16', 'auto', True),
    ('v4-8', 'auto', False), ('v6e-8', '1', True), ('v5p-64', '0', False)])
def test_tpu_distributed_only_on_several_hosts(
    sandbox, accelerator, multihost, distributed):
  cmds = commands(launch(sandbox, TPU, '--dry-run', 'train',
                         ACCELERATOR_TYPE=accelerator, MULTIHOST=multihost))
  train, = cmds
  assert ('--distributed' in trainer_args(remote(train))) == distributed


def test_tpu_keep_and_shared_workdir(sandbox):
  tmp_path, _ = sandbox
  local_dir = tmp_path / 'fetched'
  result = launch(sandbox, TPU, 'all', DRY_RUN='1', KEEP='1', SPOT='1',
                  WORKDIR='/mnt/gcs/v6', LOCAL_DIR=str(local_dir))
  cmds = commands(result)
  assert '--spot' in cmds[0]
  assert not find(cmds, 'delete')
  assert 'KEEP=1' in result.stderr
  assert ['mkdir', '-p', str(local_dir)] in cmds
  fetch, = find(cmds, '--worker=0')
  assert fetch[-2].endswith(':/mnt/gcs/v6') and fetch[-1] == f'{local_dir}/'


def test_tpu_single_step(sandbox):
  cmds = commands(launch(sandbox, TPU, 'delete', '--dry-run', **TPU_ENV))
  assert cmds == [['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', 'my-tpu',
                   '--zone=us-central2-b', '--project=my-proj', '--quiet']]


def test_tpu_unknown_step_fails(sandbox):
  result = launch(sandbox, TPU, '--dry-run', 'launch')
  assert result.returncode != 0 and "unknown step 'launch'" in result.stderr


def test_tpu_rejects_bad_multihost(sandbox):
  result = launch(sandbox, TPU, '--dry-run', MULTIHOST='yes')
  assert result.returncode != 0 and 'MULTIHOST must be' in result.stderr


# --- SLURM ---


def test_slurm_submit_dry_run(sandbox):
  cmds = commands(launch(sandbox, SLURM, '--dry-run', '--config.num_epochs=2',
                         NODES='3', GPUS_PER_NODE='8', PARTITION='gpu'))
  sbatch, = cmds
  assert sbatch[0] == 'sbatch'
  for opt in ['--nodes=3', '--ntasks-per-node=8', '--gres=gpu:8',
              '--partition=gpu', f'--chdir={ROOT}']:
    assert opt in sbatch
  i = sbatch.index(str(SLURM))
  assert sbatch[i + 1:] == ['--', '--config.num_epochs=2']


def test_slurm_submit_to_a_cpu_cluster(sandbox):
  """GPUS_PER_NODE=0: no --gres, TASKS_PER_NODE processes per node, CPUS_PER_TASK each."""
  sbatch, = commands(launch(sandbox, SLURM, '--dry-run', NODES='1', GPUS_PER_NODE='0',
                            TASKS_PER_NODE='2', CPUS_PER_TASK='1', LOG_DIR='/tmp/logs'))
  assert [a for a in sbatch if a.startswith('--gres')] == ['--gres=none']  # Not the header's.
  for opt in ['--nodes=1', '--ntasks-per-node=2', '--cpus-per-task=1',
              '--output=/tmp/logs/slurm-%x-%j.out']:
    assert opt in sbatch
  gpu, = commands(launch(sandbox, SLURM, '--dry-run', GPUS_PER_NODE='2', TASKS_PER_NODE='5'))
  assert '--ntasks-per-node=2' in gpu and '--cpus-per-task=8' in gpu  # One task per GPU.
  bad = launch(sandbox, SLURM, '--dry-run', GPUS_PER_NODE='none')
  assert bad.returncode == 2 and "GPUS_PER_NODE must be a number" in bad.stderr


def test_job_steps_keep_the_jobs_cpus_per_task(sandbox):
  """srun (SLURM 22.05) no longer inherits --cpus-per-task: the scripts pass the job's."""
  job = commands(launch(sandbox, SLURM, DRY_RUN='1', SLURM_JOB_ID='42',
                        SLURM_CPUS_PER_TASK='3'))[-1]
  cell, = find(commands(launch(sandbox, SWEEP, '--step=cell', DRY_RUN='1', SLURM_JOB_ID='7',
                               SLURM_ARRAY_TASK_ID='0', SLURM_CPUS_PER_TASK='3')), 'srun')
  for srun in (job, cell):
    assert srun[:2] == ['srun', '--cpus-per-task=3']
  plain = commands(launch(sandbox, SLURM, DRY_RUN='1', SLURM_JOB_ID='42'))[-1]
  assert not [a for a in plain if a.startswith('--cpus-per-task')]


def test_slurm_job_dry_run(sandbox):
  cmds = commands(launch(sandbox, SLURM, '--', '--config.batch_size=8',
                         DRY_RUN='1', SLURM_JOB_ID='42',
                         CONFIG='configs/v6.py:fashion_mnist'))
  assert ['export', 'XLA_PYTHON_CLIENT_PREALLOCATE=false'] in cmds
  srun = cmds[-1]
  assert srun[0] == 'srun'
  assert trainer_args(srun) == [
      '--config=configs/v6.py:fashion_mnist', '--workdir=runs/v6_fashion_mnist',
      '--distributed', '--config.batch_size=8']


@pytest.mark.parametrize('config, workdir', [('', 'runs/v6_mnist'),
                                             ('configs/v1.py', 'runs/v1_mnist'),
                                             ('configs/v2.py:fashion_mnist',
                                              'runs/v2_fashion_mnist')])
def test_default_workdir_is_the_trainers(sandbox, config, workdir):
  """runs/<name>_<dataset>, as `python -m digits_jax.main` picks without --workdir."""
  env = {'CONFIG': config} if config else {}
  gpu = commands(launch(sandbox, GPU, '--dry-run', VENV='', **env))[-1]
  job = commands(launch(sandbox, SLURM, DRY_RUN='1', SLURM_JOB_ID='42', **env))[-1]
  for cmd in (gpu, job):
    assert f'--workdir={workdir}' in trainer_args(cmd)


def test_slurm_job_finds_the_helpers_from_a_copy(sandbox, tmp_path):
  """sbatch runs a copy of the script elsewhere: the helpers come from $SLURM_SUBMIT_DIR."""
  spool = tmp_path / 'spool'
  spool.mkdir()
  copy = spool / 'slurm_script'
  shutil.copy(SLURM, copy)
  cmds = commands(launch(sandbox, copy, '--dry-run', SLURM_JOB_ID='42',
                         SLURM_SUBMIT_DIR=str(ROOT)))
  assert cmds[-1][0] == 'srun' and '--workdir=runs/v6_mnist' in cmds[-1]


def test_slurm_header():
  lines = SLURM.read_text().splitlines()
  opts = {line.split()[1].split('=')[0] for line in lines if line.startswith('#SBATCH')}
  assert {'--nodes', '--ntasks-per-node', '--gres', '--time'} <= opts
  assert '--gpus-per-task' not in opts  # JAX wants every task to see all GPUs


# --- SLURM sweep ---


def sweep_args(cmd):
  """The sweep's own flags in a command that runs digits_jax.sweep."""
  i = cmd.index('digits_jax.sweep')
  assert cmd[i - 1] == '-m' and re.search(r'python[0-9.]*$', cmd[i - 2]), cmd
  return cmd[i + 1:]


def test_slurm_sweep_dry_run_one_array_task_per_cell(sandbox):
  cmds = commands(launch(sandbox, SWEEP, '--dry-run', '--configs=default,v6,v7',
                         '--datasets=mnist,fashion_mnist', '--num_seeds=3', '--',
                         '--override=num_epochs=2', PARTITION='gpu', GPUS_PER_NODE='2'))
  array, gather = find(cmds, 'sbatch')
  assert '--array=0-5' in array and '--gres=gpu:2' in array and '--partition=gpu' in array
  assert array[array.index(str(SWEEP)) + 1] == '--step=cell'
  assert '--dependency=afterany:<array-job-id>' in gather
  assert gather[gather.index(str(SWEEP)) + 1] == '--step=gather'
  assert not [a for a in gather if a.startswith('--gres')]
  tasks = [sweep_args(c) for c in find(cmds, 'srun') if '--report_only' not in c]
  cells = [(a[0], a[1]) for a in tasks]
  assert cells == [(f'--configs={c}', f'--datasets={d}') for d in ('mnist', 'fashion_mnist')
                   for c in ('default', 'v6', 'v7')]
  assert all(a[2:] == ['--num_seeds=3', '--sweep_dir=runs/sweep', '--nosweep_report',
                       '--override=num_epochs=2'] for a in tasks)
  last, = find(cmds, 'srun', '--report_only')
  assert sweep_args(last) == ['--sweep_dir=runs/sweep', '--report_only',
                              '--override=num_epochs=2']
  assert cmds[-1] == last


@pytest.mark.parametrize('task,cell', [('0', ('default', 'mnist')),
                                       ('11', ('v1', 'fashion_mnist'))])
def test_slurm_sweep_array_task_runs_its_cell(sandbox, task, cell):
  cmds = commands(launch(sandbox, SWEEP, '--step=cell', DRY_RUN='1', SLURM_JOB_ID='7',
                         SLURM_ARRAY_TASK_ID=task,
                         SWEEP_DIR='/shared/sweep'))
  assert ['export', 'XLA_PYTHON_CLIENT_PREALLOCATE=false'] in cmds
  srun, = find(cmds, 'srun')
  assert sweep_args(srun)[:4] == [f'--configs={cell[0]}', f'--datasets={cell[1]}',
                                  '--num_seeds=5', '--sweep_dir=/shared/sweep']


def test_slurm_sweep_rejects_bad_task_and_seeds(sandbox):
  result = launch(sandbox, SWEEP, '--step=cell', '--datasets=mnist', DRY_RUN='1',
                  SLURM_JOB_ID='7', SLURM_ARRAY_TASK_ID='10')
  assert result.returncode != 0 and "array task '10': no such cell (0..9)" in result.stderr
  assert not result.stdout
  result = launch(sandbox, SWEEP, '--dry-run', '--num_seeds=0')
  assert result.returncode != 0 and '--num_seeds must be a positive integer' in result.stderr


def test_slurm_sweep_on_a_cpu_cluster(sandbox):
  """GPUS_PER_NODE=0 asks for no GPU anywhere; CPUS_PER_TASK sizes the array's tasks only."""
  cmds = commands(launch(sandbox, SWEEP, '--dry-run', '--configs=v2,v3', '--datasets=mnist',
                         '--num_seeds=2', GPUS_PER_NODE='0', CPUS_PER_TASK='1',
                         LOG_DIR='/tmp/logs'))
  array, gather = find(cmds, 'sbatch')
  assert not [a for a in array + gather if a.startswith('--gres')]
  assert '--cpus-per-task=1' in array and '--cpus-per-task=1' in gather
  assert '--output=/tmp/logs/slurm-%x-%A_%a.out' in array
  assert '--output=/tmp/logs/slurm-%x-%j.out' in gather
  default, _ = find(commands(launch(sandbox, SWEEP, '--dry-run')), 'sbatch')
  assert '--cpus-per-task=8' in default and '--gres=gpu:1' in default
  header = [l for l in SWEEP.read_text().splitlines() if l.startswith('#SBATCH')]
  assert not [l for l in header if '--gres' in l or '--cpus-per-task' in l]  # Both jobs read it.


def test_local_slurm_needs_root_and_says_so(sandbox):
  """Exit status 3 and the reason where SLURM cannot start, for callers that skip on it."""
  tmp_path, env = sandbox
  fake_id = tmp_path / 'bin' / 'id'
  fake_id.write_text('#!/bin/sh\necho 1000\n')
  fake_id.chmod(0o755)
  result = launch(sandbox, LOCAL, 'start', SLURM_DIR=str(tmp_path / 'nothing'))
  assert result.returncode == 3
  assert 'SLURM cannot start here: it needs root' in result.stderr
  bad = launch(sandbox, LOCAL, 'restart')
  assert bad.returncode == 2 and "unknown command 'restart'" in bad.stderr


def test_slurm_sweep_default_cells_are_the_sweeps(sandbox):
  """The script's default configs and datasets are those of `python -m digits_jax.sweep`."""
  from digits_jax import sweep  # pylint: disable=g-import-not-at-top
  cmds = commands(launch(sandbox, SWEEP, '--dry-run'))
  array, _ = find(cmds, 'sbatch')
  assert f'--configs={sweep.DEFAULT_CONFIGS}' in array
  assert f'--datasets={sweep.DEFAULT_DATASETS}' in array


def test_slurm_sweep_real_submit_chains_the_gather_job(tmp_path):
  """Without --dry-run: the printed sbatch lines run, the second after the first's job id."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  log = tmp_path / 'argv'
  stub = bin_dir / 'sbatch'
  stub.write_text(f'#!/bin/sh\nprintf "%s\\0" sbatch "$@" >> "{log}"\n'
                  'printf "%s\\n" "4242;cluster"\n')
  stub.chmod(0o755)
  env = {'PATH': f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', 'HOME': str(tmp_path)}
  args = ['--configs=default', '--datasets=mnist']
  dry = commands(subprocess.run(['bash', str(SWEEP), '--dry-run', *args], env=env,
                                capture_output=True, text=True, timeout=30, check=False))
  real = subprocess.run(['bash', str(SWEEP), *args], env=env, capture_output=True, text=True,
                        timeout=30, check=False)
  assert real.returncode == 0, real.stderr
  words = log.read_text().split('\0')[:-1]
  second = words.index('sbatch', 1)
  assert words[:second] == dry[0]
  expected = [w.replace('<array-job-id>', '4242') for w in dry[1]]
  assert words[second:] == expected
