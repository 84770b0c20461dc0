"""The shared fixture: a tiny, learnable IDX dataset (the helpers are in helpers.py)."""

import pytest

from helpers import write_tiny_dataset


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
  """A folder with the four IDX files of a 600/200-image learnable dataset."""
  return write_tiny_dataset(str(tmp_path_factory.mktemp('tiny_idx')))
