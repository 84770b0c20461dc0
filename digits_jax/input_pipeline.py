"""Input: the datasets (one record each in DATASETS), read from IDX folders or
tensorflow-datasets, Keras's split, batches.

The split and the per-epoch shuffles are plain numpy and fully determined by the config's
seed, so one-device, many-device, many-host, resumed and tf.data-fed runs all see the same
batches. TensorFlow is imported only where it is used (tfds, the tf.data feeder).
"""

import contextlib
import dataclasses
import math
import os
import socket
import threading
import urllib.parse

import numpy as np

from digits_jax import idx

SOURCES = ('auto', 'idx', 'tfds')  # config.data_source: see resolve_source.
# MNIST's four canonical IDX files ship inside the package (see its README for the licence).
SHIPPED_MNIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'datasets', 'mnist')


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Everything about one dataset (config.dataset names it): one record in DATASETS.

  The data comes from an IDX folder (config.data_dir, then $DIGITS_JAX_<NAME>_DIR, then
  `folders` in order) or from tensorflow-datasets (`tfds_name`); see resolve_source.
  """
  name: str  # config.dataset, e.g. 'fashion_mnist'.
  title: str  # For pages and plots, e.g. 'Fashion-MNIST'.
  subject: str  # What the images show, for the report: 'clothing items'.
  item: str  # One of them, for the drawing pad: 'a clothing item'.
  class_names: tuple  # One per label, in label order.
  folders: tuple  # IDX folders tried, in order, when none is named.
  checksums: dict  # MD5 of each uncompressed IDX file (config.verify_checksums); {}: none.
  tfds_name: str  # tensorflow-datasets' name ('' when it has none).
  preparation: str  # preprocess.PREPARATIONS key: how predict and the pad prepare a photo.
  local_copy_hint: str  # The second of the three ways to get it, named when none worked.

  @property
  def env_var(self):
    """The environment variable naming its IDX folder, e.g. DIGITS_JAX_MNIST_DIR."""
    return f'DIGITS_JAX_{self.name.upper()}_DIR'


# MD5s: MNIST's from its distribution's README, Fashion-MNIST's measured on Debian's
# dataset-fashion-mnist (a copy of the upstream zalandoresearch repository). Compressed
# files differ between mirrors, so they are not used.
DATASETS = {d.name: d for d in (
    Dataset(
        name='mnist', title='MNIST', subject='handwritten digits', item='a digit',
        class_names=tuple(str(i) for i in range(10)),
        folders=('/usr/share/datasets/mnist', SHIPPED_MNIST),
        checksums={'train-images-idx3-ubyte': '6bbc9ace898e44ae57da46a324031adb',
                   'train-labels-idx1-ubyte': 'a25bea736e30d166cdddb491f175f624',
                   't10k-images-idx3-ubyte': '2646ac647ad5339dbf082846283269ea',
                   't10k-labels-idx1-ubyte': '27ae3e4e09519cfbb04c329615203637'},
        tfds_name='mnist', preparation='digit',
        local_copy_hint=('use config.data_source=auto (the default), which reads the copy '
                         f'shipped in {SHIPPED_MNIST} (reinstall digits_jax if it is '
                         'missing)')),
    Dataset(
        name='fashion_mnist', title='Fashion-MNIST', subject='clothing items',
        item='a clothing item',
        class_names=('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
                     'Shirt', 'Sneaker', 'Bag', 'Ankle boot'),
        folders=('/usr/share/datasets/fashion-mnist',),
        checksums={'train-images-idx3-ubyte': 'f4a8712d7a061bf5bd6d2ca38dc4d50a',
                   'train-labels-idx1-ubyte': '9018921c3c673c538a1fc5bad174d6f9',
                   't10k-images-idx3-ubyte': '8181f5470baa50b63fa0f6fddb340f0a',
                   't10k-labels-idx1-ubyte': '15d484375f8d13e6eb1aabb0c3f46965'},
        tfds_name='fashion_mnist', preparation='fashion',
        local_copy_hint=("install Debian's package (apt-get install dataset-fashion-mnist), "
                         'found by itself in /usr/share/datasets/fashion-mnist')),
)}


def dataset(name):
  """The record of the dataset called `name` (validation has checked that it exists)."""
  return DATASETS[name]


def title(name):
  """The dataset's title ('Fashion-MNIST'); an unknown name (an old run's) as it is."""
  return DATASETS[name].title if name in DATASETS else name


def order_key(name):
  """Sort key: the datasets in DATASETS order, then others (old runs') by name."""
  names = list(DATASETS)
  return (names.index(name) if name in names else len(names), name)


PROBE_SECONDS = 15  # How long to wait for tfds's download server before giving up.


@dataclasses.dataclass(frozen=True)
class Data:
  """The three splits as uint8 images [N, 28, 28] and int32 labels [N]."""
  train_images: np.ndarray
  train_labels: np.ndarray
  val_images: np.ndarray
  val_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  class_names: tuple
  source: str  # Human-readable origin, e.g. 'IDX files in /usr/share/datasets/fashion-mnist'.


def resolve_source(config):
  """Where the data will come from: ('idx', folder) or ('tfds', None).

  config.data_dir, then $DIGITS_JAX_<DATASET>_DIR, then the known local folders (for
  MNIST last the copy shipped in the package); with data_source 'auto' tfds is the
  fallback, with 'idx' a missing folder is an error.
  """
  if config.data_source == 'tfds':
    return 'tfds', None
  record = dataset(config.dataset)
  named = config.data_dir or os.environ.get(record.env_var, '')
  if named:
    return 'idx', named
  for folder in record.folders:
    if not idx.missing_files(folder):
      return 'idx', folder
  if config.data_source == 'idx' or not record.tfds_name:
    raise idx.DataError(
        f'config.data_source={config.data_source} but no IDX folder for {config.dataset} '
        f'was given or found: set config.data_dir or ${record.env_var} to a folder holding '
        f'the four IDX files (tried {", ".join(record.folders) or "no known folder"}).')
  return 'tfds', None


def split_at(num_examples, validation_split):
  """Index where Keras's `validation_split` cuts: the last fraction becomes validation."""
  return int(math.floor(num_examples * (1.0 - validation_split)))


def tensorflow():
  """Imports TensorFlow for tf.data/tfds, hiding GPUs from it so JAX keeps their memory.

  Its start-up lines are silenced first: oneDNN's notice (only TF_ENABLE_ONEDNN_OPTS=0
  stops it in TF 2.21; tf.data's gathers do not use oneDNN) and the CPU-feature notice.
  """
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TF's devices are already initialised (and so already hidden).
    pass
  return tf


def no_data_error(name, reason):
  """The one-paragraph DataError naming the three ways to get dataset `name`."""
  record = dataset(name)
  return idx.DataError(
      f'cannot get {name}: {reason}. Get the data one of three ways: (1) point '
      f'config.data_dir or ${record.env_var} at a folder holding the four IDX files '
      '(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, '
      f't10k-labels-idx1-ubyte.gz); (2) {record.local_copy_hint}; (3) run once with '
      'network access (config.data_source=tfds or auto), so that tensorflow-datasets '
      'downloads and prepares it in ~/tensorflow_datasets ($TFDS_DATA_DIR) for later '
      'offline runs.')


def can_connect(url, timeout=PROBE_SECONDS):
  """Whether a TCP connection to `url`'s host opens within `timeout` seconds.

  Run in a thread so that a hanging DNS lookup is bounded too: without this check
  tensorflow-datasets retries an unreachable server for minutes before it fails.
  """
  parts = urllib.parse.urlsplit(url)
  port = parts.port or (443 if parts.scheme == 'https' else 80)
  ok = []

  def probe():
    try:
      socket.create_connection((parts.hostname, port), timeout=timeout).close()
      ok.append(True)
    except OSError:
      pass

  thread = threading.Thread(target=probe, daemon=True)
  thread.start()
  thread.join(timeout)
  return bool(ok)


@contextlib.contextmanager
def _absl_errors_only():
  """Hides tfds's absl warnings about a dataset not prepared yet (this module says it)."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  level = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(level)


def _tfds_builder(name):
  """tensorflow-datasets' builder of dataset `name`, prepared (downloaded) if need be.

  Whether it can be downloaded is asked before TensorFlow is imported, so that a run
  without data stops within seconds.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    with _absl_errors_only():
      builder = tfds.builder(dataset(name).tfds_name)
      prepared = builder.is_prepared()
  except ImportError as e:  # E.g. tensorflow/datasets#11212: importlib_resources.
    raise no_data_error(name, f'tensorflow-datasets cannot be imported ({e}); '
                        'reinstall digits_jax (pip install -e .)') from None
  url = getattr(type(builder), 'URL', '') or ''
  if not prepared and url and not can_connect(url):
    raise no_data_error(
        name, f'no local IDX folder was found and tensorflow-datasets cannot reach '
        f'{urllib.parse.urlsplit(url).hostname} to download it (no network?)')
  tensorflow()
  if not prepared:
    try:
      builder.download_and_prepare()
    except Exception as e:  # pylint: disable=broad-except
      first = str(e).strip().splitlines()[0] if str(e).strip() else ''
      raise no_data_error(name, 'tensorflow-datasets could not download it '
                          f'({type(e).__name__}: {first[:200]})') from None
  return builder


def _load_tfds(builder, split):
  """One split as numpy, read in chunks (batch_size=-1 relies on the split's recorded
  size, which tfds's mock data lacks)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  chunks = list(tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True).batch(8192)))
  images = np.concatenate([c[0] for c in chunks]) if chunks else np.zeros((0, 28, 28, 1))
  labels = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros((0,))
  return images.reshape(-1, 28, 28).astype(np.uint8), labels


def load(config):
  """Loads the config's dataset and splits training/validation as Keras does."""
  kind, folder = resolve_source(config)
  record = dataset(config.dataset)
  if kind == 'idx':
    checksums = record.checksums if config.verify_checksums else None
    train, test = (idx.load_split(folder, split, checksums, record.name)
                   for split in ('train', 'test'))
    source = f'IDX files in {os.path.abspath(folder)}'
  else:
    builder = _tfds_builder(config.dataset)
    train, test = _load_tfds(builder, 'train'), _load_tfds(builder, 'test')
    source = f'tensorflow-datasets {record.tfds_name}'
  (train_images, train_labels), (test_images, test_labels) = train, test
  cut = split_at(len(train_images), config.validation_split)
  as_int = lambda a: np.asarray(a, np.int32)
  return Data(train_images[:cut], as_int(train_labels[:cut]), train_images[cut:],
              as_int(train_labels[cut:]), test_images, as_int(test_labels),
              record.class_names, source)


def padded_batch_size(batch_size, num_devices):
  """The batch size rounded up to a multiple of the device count (padding is masked)."""
  return -(-batch_size // num_devices) * num_devices


def steps_per_epoch(num_examples, batch_size):
  """Optimizer steps in one epoch; the final partial batch counts, as in Keras."""
  return -(-num_examples // batch_size)


def epoch_plan(num_examples, batch_size, padded_batch, seed, epoch):
  """The examples of every step of one epoch, as an index and a mask [steps, padded_batch].

  A fresh permutation per epoch from (seed, epoch), so any epoch can be rebuilt on
  resume. Row s holds batch s; the final partial batch and the per-device padding are
  filled with index 0 and mask False.
  """
  perm = np.random.default_rng([seed, epoch]).permutation(num_examples).astype(np.int32)
  steps = steps_per_epoch(num_examples, batch_size)
  index = np.zeros(steps * batch_size, np.int32)
  index[:num_examples] = perm
  mask = np.arange(steps * batch_size) < num_examples
  index, mask = index.reshape(steps, batch_size), mask.reshape(steps, batch_size)
  pad = ((0, 0), (0, padded_batch - batch_size))
  return np.pad(index, pad), np.pad(mask, pad)


def blocks(start, stop, size):
  """Splits steps [start, stop) into consecutive (begin, end) blocks of at most `size`."""
  return [(b, min(b + size, stop)) for b in range(start, stop, size)]


def eval_batches(images, labels, batch_size, multiple=1):
  """Every example once, in batches padded (mask False) to a fixed, device-divisible size."""
  batch_size = padded_batch_size(min(batch_size, max(len(images), 1)), multiple)
  for begin in range(0, len(images), batch_size):
    n = min(batch_size, len(images) - begin)
    pad = batch_size - n
    yield {
        'image': np.pad(images[begin:begin + n], ((0, pad), (0, 0), (0, 0))),
        'label': np.pad(labels[begin:begin + n], (0, pad)),
        'mask': np.arange(batch_size) < n,
    }


def tf_block_feeder(images, labels, index, mask, block_list, columns):
  """A tf.data pipeline yielding the host batches of each block, prefetched in threads.

  Args:
    images, labels: the training split (host numpy).
    index, mask: the epoch plan from `epoch_plan`.
    block_list: (begin, end) step ranges from `blocks`.
    columns: slice of the batch this process feeds (its share on many hosts).

  Returns:
    An iterator of dicts 'image' uint8 [K, b, 28, 28], 'label' [K, b], 'mask' [K, b].
  """
  tf = tensorflow()
  index, mask = index[:, columns], mask[:, columns]
  images_t, labels_t = tf.constant(images), tf.constant(labels)
  bounds = np.asarray(block_list, np.int64).reshape(-1, 2)

  def gather(bound):
    rows = tf.range(bound[0], bound[1])
    idx_block = tf.gather(tf.constant(index), rows)
    return {'image': tf.gather(images_t, idx_block), 'label': tf.gather(labels_t, idx_block),
            'mask': tf.gather(tf.constant(mask), rows)}

  ds = tf.data.Dataset.from_tensor_slices(bounds).map(
      gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(2).as_numpy_iterator()
