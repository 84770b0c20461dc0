"""Where the data comes from: the shipped MNIST copy, tensorflow-datasets, and no data at all."""

import dataclasses
import gzip
import hashlib
import os
import time

import numpy as np
import pytest

from configs import default
from digits_jax import idx
from digits_jax import input_pipeline as ip


def test_shipped_mnist_files_are_the_canonical_ones():
  folder = ip.SHIPPED_MNIST
  assert not idx.missing_files(folder)
  for stem, expected in ip.DATASETS['mnist'].checksums.items():
    with gzip.open(os.path.join(folder, stem + '.gz'), 'rb') as f:
      assert hashlib.md5(f.read()).hexdigest() == expected, stem
  with open(os.path.join(folder, 'README.md')) as f:
    readme = f.read()
  assert 'LeCun' in readme and 'Cortes' in readme and 'CC BY-SA 3.0' in readme


def test_auto_finds_the_shipped_mnist_after_the_configured_folders(monkeypatch, tiny_data):
  mnist = ip.DATASETS['mnist']
  monkeypatch.delenv(mnist.env_var, raising=False)
  monkeypatch.setitem(ip.DATASETS, 'mnist', dataclasses.replace(
      mnist, folders=('/nonexistent/mnist', ip.SHIPPED_MNIST)))
  config = default.get_config()
  assert ip.resolve_source(config) == ('idx', ip.SHIPPED_MNIST)
  monkeypatch.setenv(mnist.env_var, tiny_data)
  assert ip.resolve_source(config) == ('idx', tiny_data)  # The environment comes first,
  config.data_dir = '/elsewhere'
  assert ip.resolve_source(config) == ('idx', '/elsewhere')  # and config.data_dir before it.
  config.data_source = 'tfds'
  assert ip.resolve_source(config) == ('tfds', None)


@pytest.mark.slow
def test_tfds_path_through_load(monkeypatch):
  """The real `load` on tfds's mock data: no network, but tfds's builder code runs (its
  imports included, e.g. importlib_resources, tensorflow/datasets#11212)."""
  tfds = pytest.importorskip('tensorflow_datasets')
  monkeypatch.setattr(ip, 'can_connect', lambda url: True)  # The mock downloads nothing.
  config = default.get_config('fashion_mnist')
  config.data_source, config.validation_split = 'tfds', 0.25
  with tfds.testing.mock_data(num_examples=40):
    data = ip.load(config)
  assert data.source == 'tensorflow-datasets fashion_mnist'
  assert data.train_images.shape == (30, 28, 28) and data.train_images.dtype == np.uint8
  assert data.val_images.shape == (10, 28, 28) and data.test_images.shape == (40, 28, 28)
  assert data.train_labels.dtype == np.int32 and 0 <= data.test_labels.min()
  assert data.test_labels.max() <= 9 and data.class_names[0] == 'T-shirt/top'


def test_no_data_is_one_paragraph_naming_three_ways(monkeypatch, tmp_path):
  pytest.importorskip('tensorflow_datasets')
  from tensorflow_datasets.core import constants  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(constants, 'DATA_DIR', str(tmp_path))  # Nothing prepared there.
  monkeypatch.setattr(ip, 'can_connect', lambda url: False)  # As offline.
  config = default.get_config('fashion_mnist')
  config.data_source = 'tfds'
  start = time.perf_counter()
  with pytest.raises(idx.DataError) as e:
    ip.load(config)
  assert time.perf_counter() - start < 30
  message = str(e.value)
  assert '\n' not in message and 'cannot reach' in message
  for way in ('(1) point config.data_dir or $DIGITS_JAX_FASHION_MNIST_DIR',
              '(2) install Debian', 'apt-get install dataset-fashion-mnist',
              '(3) run once with network access'):
    assert way in message


def test_can_connect_gives_up_on_a_closed_port():
  assert not ip.can_connect('http://127.0.0.1:9/', timeout=5)


def test_shipped_files_are_declared_package_data():
  """A non-editable install (a wheel) carries the files only if pyproject declares them."""
  import fnmatch  # pylint: disable=g-import-not-at-top
  tomllib = pytest.importorskip('tomllib')  # Python >= 3.11.
  with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), 'pyproject.toml'),
            'rb') as f:
    globs = tomllib.load(f)['tool']['setuptools']['package-data']['digits_jax']
  for name in os.listdir(ip.SHIPPED_MNIST):
    assert any(fnmatch.fnmatch(f'datasets/mnist/{name}', g) for g in globs), name
