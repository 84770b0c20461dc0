"""Reads the canonical MNIST-style IDX files (optionally gzipped) into numpy arrays.

Pure numpy, so the checks run before TensorFlow or JAX is touched. Every problem is
reported as a `DataError` naming the file, what is wrong and how to fix it.
"""

import functools
import gzip
import hashlib
import os

import numpy as np

from digits_jax import errors

# The four files of a split, in the order (images, labels).
FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
SPLIT_SIZES = {'train': 60_000, 'test': 10_000}
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10

class DataError(errors.UserError, ValueError):
  """A data file or folder is missing, truncated, corrupt or of the wrong format."""


def find_file(folder, stem):
  """Returns the path of `stem` or `stem.gz` in `folder`, or raises DataError."""
  for name in (stem + '.gz', stem):
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      return path
  raise DataError(
      f'{folder!r} has no {stem}.gz (or {stem}): an IDX data folder must hold the four '
      'files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, '
      't10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz. Point config.data_dir '
      '(or $DIGITS_JAX_<DATASET>_DIR) at such a folder, or use config.data_source=tfds.')


def missing_files(folder):
  """Returns the names of the four IDX files that `folder` lacks (empty if complete)."""
  missing = []
  for stems in FILES.values():
    for stem in stems:
      if not any(os.path.isfile(os.path.join(folder, stem + ext)) for ext in ('.gz', '')):
        missing.append(stem + '.gz')
  return missing


def _read_bytes(path):
  try:
    if path.endswith('.gz'):
      with gzip.open(path, 'rb') as f:
        return f.read()
    with open(path, 'rb') as f:
      return f.read()
  except (OSError, EOFError, gzip.BadGzipFile) as e:
    raise DataError(f'{path}: cannot be read as {"gzip" if path.endswith(".gz") else "a file"} '
                    f'({e}); the file is truncated or corrupt: download it again.') from e


def parse_idx(data, path, expected_ndim):
  """Parses IDX bytes into a uint8 array, checking magic number, dimensions and length."""
  if len(data) < 4:
    raise DataError(f'{path}: only {len(data)} bytes, too short for an IDX header; '
                    'the file is truncated: download it again.')
  zero, dtype_code, ndim = data[0] << 8 | data[1], data[2], data[3]
  if zero != 0 or dtype_code != 0x08:
    raise DataError(f'{path}: magic number {data[:4].hex()} is not that of an unsigned-byte '
                    'IDX file (0000080N): this is not an IDX file, or it is still compressed '
                    'under a name without .gz.')
  if ndim != expected_ndim:
    raise DataError(f'{path}: IDX file has {ndim} dimensions, expected {expected_ndim} '
                    '(images have 3, labels 1): the images and labels files are swapped '
                    'or the wrong file is in place.')
  header = 4 + 4 * ndim
  if len(data) < header:
    raise DataError(f'{path}: header truncated ({len(data)} bytes); download it again.')
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
  expected = header + int(np.prod(shape))
  if len(data) != expected:
    what = 'truncated' if len(data) < expected else 'longer than its header says'
    raise DataError(f'{path}: {len(data)} bytes but its header {shape} needs {expected}: '
                    f'the file is {what}; download it again.')
  return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _stamp(path):
  """What tells apart versions of a file without reading it: path, inode, size, mtime."""
  info = os.stat(path)
  return os.path.abspath(path), info.st_ino, info.st_size, info.st_mtime_ns


def load_split(folder, split, checksums=None, name='the canonical'):
  """Loads one split ('train' or 'test') of an IDX folder.

  The last few splits loaded are kept (read-only arrays), so a sweep reads and checks
  each file once, not once per run; a file changed since is read again.

  Args:
    folder: directory holding the four IDX files (gzipped or not).
    split: 'train' or 'test'.
    checksums: {file stem: MD5 of the uncompressed file} to verify (a dataset record's,
      input_pipeline.DATASETS); None or {} verifies nothing.
    name: the dataset's name, for the message when a file differs.

  Returns:
    (images uint8 [N, 28, 28], labels uint8 [N]).
  """
  stamps = tuple(_stamp(find_file(folder, stem)) for stem in FILES[split])
  return _load_split(folder, split, tuple(sorted((checksums or {}).items())), name, stamps)


@functools.lru_cache(maxsize=4)  # Train and test of both datasets.
def _load_split(folder, split, checksums, name, stamps):
  """load_split's reading and checking, cached on its arguments and the files' stamps."""
  del stamps  # Only part of the cache key.
  image_stem, label_stem = FILES[split]
  arrays = []
  for stem, ndim in ((image_stem, 3), (label_stem, 1)):
    path = find_file(folder, stem)
    data = _read_bytes(path)
    arrays.append(parse_idx(data, path, ndim))
    expected_md5 = dict(checksums).get(stem)
    if expected_md5:
      md5 = hashlib.md5(data).hexdigest()
      if md5 != expected_md5:
        raise DataError(
            f'{path}: MD5 {md5} differs from the {name} file ({expected_md5}): '
            'the file is corrupt or from another dataset. Download it again, or set '
            'config.verify_checksums=False if you use a modified copy on purpose.')
  images, labels = arrays
  path = find_file(folder, image_stem)
  if images.shape[1:] != IMAGE_SHAPE:
    raise DataError(f'{path}: images are {images.shape[1:]}, expected {IMAGE_SHAPE}.')
  if images.shape[0] != labels.shape[0]:
    raise DataError(f'{path}: {images.shape[0]} images but {labels.shape[0]} labels in '
                    f'{find_file(folder, label_stem)}: the two files do not belong together.')
  if labels.size and labels.max() >= NUM_CLASSES:
    raise DataError(f'{find_file(folder, label_stem)}: label {int(labels.max())} is outside '
                    f'0..{NUM_CLASSES - 1}: the labels file is corrupt.')
  return images, labels


def write_split(folder, split, images, labels, compress=True):
  """Writes arrays as IDX files (used by tests and to export tfds data for offline use)."""
  os.makedirs(folder, exist_ok=True)
  for stem, array in zip(FILES[split], (images, labels)):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b''.join(
        int(d).to_bytes(4, 'big') for d in array.shape)
    opener = gzip.open if compress else open
    with opener(os.path.join(folder, stem + ('.gz' if compress else '')), 'wb') as f:
      f.write(header + array.tobytes())
