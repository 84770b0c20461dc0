"""The IDX reader: good files load; corrupt, truncated and wrong files name the file."""

import gzip
import os
import shutil

import numpy as np
import pytest

from digits_jax import idx
from digits_jax import input_pipeline


@pytest.fixture
def folder(tmp_path):
  rng = np.random.default_rng(0)
  for split, n in (('train', 50), ('test', 20)):
    idx.write_split(str(tmp_path), split, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                    rng.integers(0, 10, n).astype(np.uint8))
  return str(tmp_path)


def _rewrite(folder, stem, data):
  with gzip.open(os.path.join(folder, stem + '.gz'), 'wb') as f:
    f.write(data)


def _raw(folder, stem):
  with gzip.open(os.path.join(folder, stem + '.gz'), 'rb') as f:
    return f.read()


def test_round_trip(folder):
  images, labels = idx.load_split(folder, 'train')
  assert images.shape == (50, 28, 28) and images.dtype == np.uint8
  assert labels.shape == (50,) and labels.max() < 10


def test_a_split_is_read_once_until_its_files_change(folder):
  """A sweep's runs share one read of the files; a rewritten file is read again."""
  images, labels = idx.load_split(folder, 'train')
  again = idx.load_split(folder, 'train')
  assert again[0] is images and again[1] is labels
  assert not images.flags.writeable  # Shared, so no run can change another's data.
  idx.write_split(folder, 'train', np.full((7, 28, 28), 3), np.arange(7))
  new_images, new_labels = idx.load_split(folder, 'train')
  assert new_images.shape == (7, 28, 28) and list(new_labels) == list(range(7))


def test_uncompressed_files_load(tmp_path):
  idx.write_split(str(tmp_path), 'test', np.zeros((3, 28, 28)), np.arange(3), compress=False)
  images, labels = idx.load_split(str(tmp_path), 'test')
  assert images.shape == (3, 28, 28) and list(labels) == [0, 1, 2]


@pytest.mark.parametrize('corrupt, message', [
    (lambda d: d[:-100], 'truncated'),
    (lambda d: d + b'\0' * 10, 'longer than its header'),
    (lambda d: b'\x12\x34' + d[2:], 'magic number'),
    (lambda d: d[:3], 'too short'),
])
def test_bad_images_file_names_file_and_problem(folder, corrupt, message):
  stem = 'train-images-idx3-ubyte'
  _rewrite(folder, stem, corrupt(_raw(folder, stem)))
  with pytest.raises(idx.DataError, match=message) as e:
    idx.load_split(folder, 'train')
  assert stem in str(e.value)


def test_truncated_gzip_stream(folder):
  path = os.path.join(folder, 't10k-labels-idx1-ubyte.gz')
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(idx.DataError, match='t10k-labels-idx1-ubyte.gz.*truncated or corrupt'):
    idx.load_split(folder, 'test')


def test_swapped_files_are_detected(folder):
  shutil.copy(os.path.join(folder, 'train-labels-idx1-ubyte.gz'),
              os.path.join(folder, 'train-images-idx3-ubyte.gz'))
  with pytest.raises(idx.DataError, match='1 dimensions, expected 3'):
    idx.load_split(folder, 'train')


def test_label_out_of_range(folder):
  stem = 'train-labels-idx1-ubyte'
  data = bytearray(_raw(folder, stem))
  data[-1] = 12
  _rewrite(folder, stem, bytes(data))
  with pytest.raises(idx.DataError, match='label 12 is outside 0..9'):
    idx.load_split(folder, 'train')


def test_images_and_labels_count_mismatch(folder):
  rng = np.random.default_rng(1)
  idx.write_split(folder, 'test', rng.integers(0, 256, (20, 28, 28)), np.zeros(19))
  with pytest.raises(idx.DataError, match='20 images but 19 labels'):
    idx.load_split(folder, 'test')


def test_missing_file(folder):
  os.remove(os.path.join(folder, 't10k-images-idx3-ubyte.gz'))
  assert idx.missing_files(folder) == ['t10k-images-idx3-ubyte.gz']
  with pytest.raises(idx.DataError, match='no t10k-images-idx3-ubyte.gz'):
    idx.load_split(folder, 'test')


def test_checksum_mismatch_names_file(folder):
  checksums = input_pipeline.DATASETS['mnist'].checksums
  with pytest.raises(idx.DataError, match='MD5 .* differs from the mnist file'):
    idx.load_split(folder, 'train', checksums, 'mnist')
  idx.load_split(folder, 'train', None, 'mnist')
