"""Configs from any folder, --help (shipped configs, fields, variables) and --dry_run."""

import os
import subprocess
import sys

import pytest

from helpers import REPO
from configs import default
from digits_jax import config_files
from digits_jax import input_pipeline


def _run(cwd, *args):
  """`python -m digits_jax.main ARGS` in `cwd`, with digits_jax and configs importable as
  after `pip install` (the checkout on PYTHONPATH, not the current folder)."""
  env = {**os.environ, 'PYTHONPATH': REPO}
  return subprocess.run([sys.executable, '-m', 'digits_jax.main', *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=120, check=False)


def test_configs_install_with_the_package():
  tomllib = pytest.importorskip('tomllib')  # Python >= 3.11.
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    include = tomllib.load(f)['tool']['setuptools']['packages']['find']['include']
  assert 'configs*' in include
  assert config_files.config_dir() == os.path.join(REPO, 'configs')


@pytest.mark.parametrize('arg', [os.path.join(REPO, 'configs', 'v6.py:fashion_mnist'),
                                 'configs/v6.py:fashion_mnist', 'v6:fashion_mnist'])
def test_config_from_another_folder(tmp_path, arg):
  proc = _run(tmp_path, f'--config={arg}', '--config.num_epochs=3', '--dry_run')
  assert proc.returncode == 0, proc.stderr
  assert '"name": "v6"' in proc.stdout and '"num_epochs": 3' in proc.stdout
  assert f'workdir: {tmp_path / "runs" / "v6_fashion_mnist"}' in proc.stdout
  assert not os.path.exists(tmp_path / 'runs')  # A dry run writes nothing.


def test_default_config_comes_from_the_package(tmp_path):
  proc = _run(tmp_path, '--dry_run')
  assert proc.returncode == 0, proc.stderr
  assert f'config file: {os.path.join(REPO, "configs", "default.py")}' in proc.stdout
  assert 'data: IDX files in' in proc.stdout


def test_unknown_config_is_one_line(tmp_path):
  proc = _run(tmp_path, '--config=v10', '--dry_run')
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr
  assert proc.stderr.strip() == (
      "error: --config: no file 'v10'. Give the path of a config file (a module with "
      'get_config()) or the name of a shipped one: default, v1, v2, v3, v4, v5, v6, v7, v8, v9.')


def test_readme_snippet_runs_as_a_script_elsewhere(tmp_path):
  with open(os.path.join(REPO, 'README.md'), encoding='utf-8') as f:
    readme = f.read()
  snippet = readme.split('## Using the train-state utilities', 1)[1].split('```python\n')[1]
  head = snippet.split('batch = ', 1)[0]  # Imports, config and state: runnable as they are.
  script = tmp_path / 'snippet.py'
  script.write_text(head + 'print(type(state).__name__, config.hidden_units)\n')
  proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                        text=True, timeout=120, check=False, env={**os.environ,
                                                                 'PYTHONPATH': REPO})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.split()[-1] == '128'


def test_help_lists_configs_fields_and_variables(tmp_path):
  proc = _run(tmp_path, '--help')
  assert proc.returncode == 0, proc.stderr
  text = proc.stdout
  for name, doc in config_files.shipped().items():
    assert f'  {name:<8} {doc}' in text
  config = default.get_config()
  docs = dict(config_files.field_docs())
  assert set(docs) == set(config.keys())  # Every field, derived from configs/default.py.
  for name in config.keys():
    assert f'  {name} = {config[name]!r}' in text, name
  assert docs['batch_size'] == 'Global training batch size (the last partial batch is kept).'
  assert docs['cpu_kernel'].startswith('Fused C++ CPU kernel')  # From the lines above it.
  for dataset in input_pipeline.DATASETS:
    assert input_pipeline.DATASETS[dataset].env_var in text
  assert '--dry_run' in text
