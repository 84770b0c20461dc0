"""Bad inputs are refused before any training, naming the field, the value and the fix."""

import gzip
import re
import os
import shutil

import pytest

from helpers import tiny_config, write_tiny_dataset
from digits_jax import idx
from digits_jax import results
from digits_jax import train
from digits_jax import validation
from digits_jax import workdir as workdir_lib

CASES = [
    ({'batch_size': 0}, 'config.batch_size=0: must be an integer >= 1'),
    ({'batch_size': -3}, 'config.batch_size=-3: must be an integer >= 1'),
    ({'num_epochs': 0}, 'config.num_epochs=0: must be an integer >= 1'),
    ({'validation_split': 1.5}, 'config.validation_split=1.5: must be a number in [0.0, 1.0)'),
    ({'validation_split': 1.0}, 'config.validation_split=1.0: must be a number in [0.0, 1.0)'),
    ({'validation_split': -0.1}, 'config.validation_split=-0.1'),
    ({'hidden_units': 0}, 'config.hidden_units=0: must be an integer >= 1'),
    ({'num_hidden_layers': 0}, 'config.num_hidden_layers=0: must be an integer >= 1'),
    ({'test_indices': (10_000,)}, 'outside the test set; indices must be in [0, 199]'),
    ({'test_indices': (200,)}, '[200] outside the test set'),
    ({'test_indices': (-1,)}, 'indices must be >= 0'),
    ({'dataset': 'cifar10'}, "config.dataset='cifar10': unknown dataset; use one of mnist"),
    ({'data_source': 'web'}, "config.data_source='web': use one of auto, idx, tfds"),
    ({'learning_rate': 0.0}, 'config.learning_rate=0.0: must be a number in (0.0, inf)'),
    ({'learning_rate': -1.0}, 'config.learning_rate=-1.0'),
    ({'b1': 1.0}, 'config.b1=1.0: must be a number in [0.0, 1.0)'),
    ({'eps': 0.0}, 'config.eps=0.0'),
    ({'compute_dtype': 'float16'}, "config.compute_dtype='float16': use one of float32"),
    ({'num_show': -1}, 'config.num_show=-1: must be an integer >= 0'),
    ({'num_misclassified_show': -2}, 'config.num_misclassified_show=-2'),
    ({'steps_per_call': 0}, 'config.steps_per_call=0'),
    ({'eval_batch_size': 0}, 'config.eval_batch_size=0'),
    ({'kernel_init': 'ones'}, "config.kernel_init='ones'"),
    ({'cpu_kernel': 'fast'}, "config.cpu_kernel='fast': use auto"),
    ({'max_checkpoints_to_keep': 0}, 'config.max_checkpoints_to_keep=0'),
    ({'data_dir': '/nonexistent/mnist'}, "config.data_dir='/nonexistent/mnist': no such folder"),
    ({'seed': 2**64 + 1}, 'the seeds run to 18446744073709551617, past 9223372036854775807'),
    ({'seed': 2**63 - 1, 'num_seeds': 2}, 'config.seed=9223372036854775807 with '
     'config.num_seeds=2: the seeds run to 9223372036854775808'),
]


@pytest.mark.parametrize('overrides, message', CASES, ids=[str(c[0]) for c in CASES])
def test_bad_config_is_refused_before_training(tiny_data, tmp_path, overrides, message):
  workdir = tmp_path / 'run'
  with pytest.raises(validation.ConfigError) as e:
    overrides = dict(overrides)
    config = tiny_config(overrides.pop('data_dir', tiny_data), **overrides)
    train.train_and_evaluate(config, str(workdir))
  assert message in str(e.value)
  assert not workdir.exists()  # Nothing was trained or written.


def test_all_problems_are_reported_at_once(tiny_data, tmp_path):
  config = tiny_config(tiny_data, batch_size=0, num_epochs=0, dataset='svhn')
  with pytest.raises(validation.ConfigError) as e:
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  text = str(e.value)
  assert 'batch_size=0' in text and 'num_epochs=0' in text and "'svhn'" in text


def test_folder_missing_a_file(tiny_data, tmp_path):
  folder = shutil.copytree(tiny_data, tmp_path / 'data')
  os.remove(folder / 't10k-labels-idx1-ubyte.gz')
  with pytest.raises(validation.ConfigError, match='missing t10k-labels-idx1-ubyte.gz'):
    train.train_and_evaluate(tiny_config(str(folder)), str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_env_var_folder_is_named_in_the_error(tmp_path, monkeypatch):
  monkeypatch.setenv('DIGITS_JAX_MNIST_DIR', str(tmp_path / 'nowhere'))
  with pytest.raises(validation.ConfigError, match=r'\$DIGITS_JAX_MNIST_DIR=.*no such folder'):
    train.train_and_evaluate(tiny_config(''), str(tmp_path / 'run'))


def test_corrupt_data_file_names_the_file(tmp_path):
  folder = write_tiny_dataset(str(tmp_path / 'data'))
  path = os.path.join(folder, 'train-images-idx3-ubyte.gz')
  with gzip.open(path, 'rb') as f:
    data = f.read()
  with gzip.open(path, 'wb') as f:
    f.write(data[:5000])
  with pytest.raises(idx.DataError, match='train-images-idx3-ubyte.gz.*truncated'):
    train.train_and_evaluate(tiny_config(folder), str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_remote_workdir_is_refused_with_advice(tiny_data):
  with pytest.raises(validation.ConfigError, match='mount the bucket'):
    train.train_and_evaluate(tiny_config(tiny_data), 'gs://bucket/run')


def test_workdir_under_a_file_is_refused(tiny_data, tmp_path):
  (tmp_path / 'file').write_text('x')
  with pytest.raises(validation.ConfigError, match='is a file, not a folder'):
    train.train_and_evaluate(tiny_config(tiny_data), str(tmp_path / 'file' / 'run'))


def test_workdir_of_another_config_is_refused_then_moved_aside(tiny_data, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1), workdir)
  before = results.read_json(os.path.join(workdir, 'results.json'))
  with pytest.raises(workdir_lib.WorkdirMismatchError, match=r'hidden_units: 16 -> 8.*--fresh'):
    train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1, hidden_units=8), workdir)
  assert results.read_json(os.path.join(workdir, 'results.json')) == before  # Untouched.
  train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1, hidden_units=8), workdir,
                           fresh=True)
  assert results.read_json(os.path.join(workdir, 'results.json'))['num_params'] == 6_370
  aside = [p for p in os.listdir(tmp_path) if p.startswith('run.old-')]
  assert len(aside) == 1
  assert results.read_json(os.path.join(tmp_path, aside[0], 'results.json')) == before


FLOAT32_CASES = [
    ({'eps': 1e-50}, 'config.eps=1e-50: float32, in which training computes, cannot hold it'),
    ({'learning_rate': 1e-46}, 'config.learning_rate=1e-46: float32'),
    ({'learning_rate': 1e39}, 'config.learning_rate=1e+39: float32'),
    ({'hidden_units': 10**7}, 'config.hidden_units=10000000: the 7,950,000,010 parameters, '
     'with batches of'),
    # Issue 21 item 6 and 10: the field behind the memory is named, replicas counted.
    ({'batch_size': 10**9}, 'config.batch_size=1000000000: the 12,730 parameters, with '
     'batches of 1,000,000,000 examples, need'),
    ({'num_seeds': 10**6}, 'config.num_seeds=1000000: the 12,730 parameters x 1000000 '
     'replicas'),
]


@pytest.mark.parametrize('overrides, message', FLOAT32_CASES,
                         ids=[str(c[0]) for c in FLOAT32_CASES])
def test_what_float32_or_the_device_cannot_hold_is_refused_before_anything_is_written(
    tiny_data, tmp_path, overrides, message):
  workdir = tmp_path / 'run'
  with pytest.raises(validation.ConfigError, match=re.escape(message)):
    train.train_and_evaluate(tiny_config(tiny_data, num_hidden_layers=1, **overrides),
                             str(workdir))
  assert not workdir.exists()


def test_empty_test_set_is_refused_before_training(tmp_path):
  folder = write_tiny_dataset(str(tmp_path / 'data'), num_test=0)
  with pytest.raises(validation.ConfigError, match='the test set holds no images'):
    train.train_and_evaluate(tiny_config(folder, test_indices=()), str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_workdir_name_longer_than_the_file_system_allows(tiny_data, tmp_path):
  workdir = tmp_path / ('r' * 300)
  with pytest.raises(validation.ConfigError, match='is 300 bytes long; this file system '
                     'allows 255.*Choose a shorter --workdir'):
    train.train_and_evaluate(tiny_config(tiny_data), str(workdir))


def test_too_little_free_space_is_refused_up_front(tiny_data, tmp_path, monkeypatch):
  real = validation.shutil.disk_usage
  monkeypatch.setattr(validation.shutil, 'disk_usage',
                      lambda p: real(p)._replace(free=1 << 20))
  with pytest.raises(validation.ConfigError, match=r'has 1\.0 MB free, but one checkpoint '
                     r'and the result files need about 2\.1 MB; free some space'):
    train.train_and_evaluate(tiny_config(tiny_data), str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_truncated_workdir_config_names_the_file(tiny_data, tmp_path):
  workdir = tmp_path / 'run'
  train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1), str(workdir))
  path = workdir / 'config.json'
  path.write_text(path.read_text()[:100])
  with pytest.raises(results.DamagedFileError, match=f'{re.escape(str(path))} is damaged or '
                     'truncated'):
    train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1), str(workdir))
