"""The shared fixture: a tiny, learnable IDX dataset (the helpers are in helpers.py); and
one JAX compilation cache for the whole session, its subprocesses included."""

import os
import shutil
import tempfile

import pytest

from helpers import write_tiny_dataset

_OWN_CACHE = []  # The session's cache folder, when this file made it.


def pytest_configure(config):
  """Points JAX's persistent compilation cache at a fresh folder for the session (unless the
  environment names one): dozens of tests start `digits_jax.main` in a subprocess that
  compiles the same tiny steps again; with the cache only the first one compiles. Set
  before any test module imports JAX; children inherit it through the environment."""
  del config
  if 'JAX_COMPILATION_CACHE_DIR' in os.environ:
    return
  _OWN_CACHE.append(tempfile.mkdtemp(prefix='digits_jax_tests_jax_cache_'))
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _OWN_CACHE[0]
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')


def pytest_unconfigure(config):
  del config
  for folder in _OWN_CACHE:
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
  """A folder with the four IDX files of a 600/200-image learnable dataset."""
  return write_tiny_dataset(str(tmp_path_factory.mktemp('tiny_idx')))
