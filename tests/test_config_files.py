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
@pytest.mark.slow
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
      'get_config()) or the name of a shipped one: cnn, default, v1, v2, v3, v4, v5, v6, v7, '
      'v8, v9.')


@pytest.mark.slow
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


BAD_FILES = {
    'raises': ('def get_config():\n  raise RuntimeError("no such lab")\n',
               'RuntimeError: no such lab'),
    'returns a dict': ('def get_config():\n  return {"a": 1}\n',
                       'its get_config() returned a dict, not an ml_collections.ConfigDict'),
    'has no get_config': ('X = 1\n', "AttributeError: module 'config_config' has no attribute"),
    'raises a ValueError': ('def get_config():\n  raise ValueError("bad width")\n',
                            'ValueError: bad width. A config'),
}


@pytest.mark.parametrize('case', list(BAD_FILES))
def test_a_config_file_that_does_not_load_is_one_line(tmp_path, case):
  """Issue 21 item 5, checked where main checks it (before any flag is defined)."""
  text, message = BAD_FILES[case]
  path = tmp_path / 'bad.py'
  path.write_text(text)
  with pytest.raises(config_files.ConfigFileError) as raised:
    config_files.check_overrides(['main', f'--config={path}'])
  assert str(raised.value).startswith(f"cannot load the --config file '{path}': ")
  assert '\n' not in str(raised.value)
  assert message in str(raised.value) and 'returns an ml_collections.ConfigDict' in str(
      raised.value)


@pytest.mark.parametrize('arg, message', [
    ('--config.colour_scheme=dark', "the config has no field 'colour_scheme'. Run with --help"),
    ('--config.batchsize=3', "no field 'batchsize'. Did you mean \"batch_size\""),
    ('--config.num_epochs.x=3', "no field 'num_epochs.x'")])
def test_an_override_of_no_field_names_the_near_ones(arg, message):
  """Issue 22 item 5: 'no such field', with the near names (difflib)."""
  with pytest.raises(config_files.ConfigFileError, match=f'bad --config override {arg!r}: '):
    config_files.check_overrides(['main', arg])
  with pytest.raises(config_files.ConfigFileError, match=message.replace('.', r'\.')):
    config_files.check_overrides(['main', '--config', 'configs/default.py', arg])
  config_files.check_overrides(['main', '--config.num_epochs=3'])  # A field: no error.


@pytest.mark.parametrize('args, message', [
    pytest.param(('--config.batch_size=0', '--dry_run'), 'config.batch_size=0: must be an '
                 'integer >= 1.', marks=pytest.mark.slow),  # These import jax: 4-9 s loaded.
    pytest.param(('--config=configs/v6.py:cifar', '--dry_run'), "config.dataset='cifar': "
                 'unknown dataset', marks=pytest.mark.slow),
    (('--config.hidden_units=abc',), "error: flag --config.hidden_units=abc: invalid literal "
     "for int() with base 10: 'abc'. See --help"),
    (('extra',), 'error: unexpected arguments: extra. Every setting is a flag'),
    (('--fresh_start',), "error: Unknown command line flag 'fresh_start'"),
    (('--config.colour_scheme=dark',), "error: bad --config override '--config.colour_scheme=dark':"
     " the config has no field 'colour_scheme'."),
    pytest.param(('--config.seed=18446744073709551617', '--dry_run'), 'the seeds run to '
                 '18446744073709551617, past 9223372036854775807', marks=pytest.mark.slow)])
@pytest.mark.slow
def test_dry_run_validates_and_bad_flags_are_one_paragraph(tmp_path, args, message):
  """Issue 22 items 4 and 5, issue 21 item 4: nothing is written, no traceback."""
  proc = _run(tmp_path, f'--workdir={tmp_path / "run"}', *args)
  assert proc.returncode == 1 and proc.stderr.startswith('error: '), proc.stderr[-2000:]
  assert message in proc.stderr and 'Traceback' not in proc.stderr
  assert os.listdir(tmp_path) == []


def test_predict_without_workdir_is_one_line(tmp_path):
  env = {**os.environ, 'PYTHONPATH': REPO}
  proc = subprocess.run([sys.executable, '-m', 'digits_jax.predict', 'x.png'], cwd=tmp_path,
                        env=env, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 1 and proc.stderr == 'error: --workdir is required (see --help).\n'
