"""Keras's validation split, the per-epoch shuffles and the masked batches."""

import dataclasses

import numpy as np
import pytest

from configs import default
from digits_jax import input_pipeline as ip

SPLITS = (0.1, 0.12, 0.15, 0.17, 0.18, 0.2, 0.22, 0.25, 0.27, 0.3)


@pytest.mark.slow  # Imports Keras (and TensorFlow): seconds.
@pytest.mark.parametrize('split', SPLITS)
def test_split_matches_keras(split):
  array_slicing = pytest.importorskip(
      'keras.src.trainers.data_adapters.array_slicing')
  x = np.arange(60_000)
  (train,), (val,) = array_slicing.train_validation_split((x,), split)
  cut = ip.split_at(60_000, split)
  np.testing.assert_array_equal(np.asarray(train), x[:cut])
  np.testing.assert_array_equal(np.asarray(val), x[cut:])


def test_split_holds_out_the_last_fraction(tiny_data):
  config = default.get_config()
  config.data_dir, config.verify_checksums, config.validation_split = tiny_data, False, 0.25
  data = ip.load(config)
  assert len(data.train_labels) == 450 and len(data.val_labels) == 150
  from digits_jax import idx  # pylint: disable=g-import-not-at-top
  images, labels = idx.load_split(tiny_data, 'train')
  np.testing.assert_array_equal(data.val_images, images[450:])
  np.testing.assert_array_equal(data.train_labels, labels[:450])


def test_epoch_plan_keeps_the_partial_batch_and_masks_padding():
  index, mask = ip.epoch_plan(103, 10, 12, seed=0, epoch=0)
  assert index.shape == mask.shape == (11, 12)
  assert mask[:, 10:].sum() == 0  # Device padding columns.
  assert mask[-1].sum() == 3  # The final partial batch of 3 is kept.
  assert sorted(index[mask]) == list(range(103))  # Every example exactly once.


def test_epoch_plan_is_reproducible_and_reshuffled():
  a, _ = ip.epoch_plan(100, 10, 10, seed=3, epoch=1)
  b, _ = ip.epoch_plan(100, 10, 10, seed=3, epoch=1)
  c, _ = ip.epoch_plan(100, 10, 10, seed=3, epoch=2)
  d, _ = ip.epoch_plan(100, 10, 10, seed=4, epoch=1)
  np.testing.assert_array_equal(a, b)
  assert (a != c).any() and (a != d).any()


def test_blocks_cover_the_range():
  assert ip.blocks(0, 10, 4) == [(0, 4), (4, 8), (8, 10)]
  assert ip.blocks(8, 10, 4) == [(8, 10)]
  assert ip.padded_batch_size(5, 4) == 8 and ip.padded_batch_size(32, 4) == 32


def test_eval_batches_cover_every_example_once():
  images = np.arange(25 * 28 * 28, dtype=np.uint8).reshape(25, 28, 28)
  labels = np.arange(25) % 10
  batches = list(ip.eval_batches(images, labels, 8, multiple=4))
  assert all(len(b['mask']) == 8 for b in batches)
  assert sum(b['mask'].sum() for b in batches) == 25
  got = np.concatenate([b['label'][b['mask']] for b in batches])
  np.testing.assert_array_equal(got, labels)


def test_tf_feeder_yields_the_planned_batches(tiny_data):
  from digits_jax import idx  # pylint: disable=g-import-not-at-top
  images, labels = idx.load_split(tiny_data, 'train')
  index, mask = ip.epoch_plan(len(labels), 32, 32, seed=0, epoch=0)
  block_list = ip.blocks(0, len(index), 8)
  got = list(ip.tf_block_feeder(images, labels, index, mask, block_list, slice(0, 32)))
  assert [len(b['mask']) for b in got] == [e - s for s, e in block_list]
  np.testing.assert_array_equal(got[0]['image'], images[index[:8]])
  np.testing.assert_array_equal(got[-1]['mask'], mask[block_list[-1][0]:])


def test_unknown_idx_folder_without_fallback_is_an_error(monkeypatch, tmp_path):
  config = default.get_config()
  config.data_source = 'idx'
  monkeypatch.delenv('DIGITS_JAX_MNIST_DIR', raising=False)
  monkeypatch.setitem(ip.DATASETS, 'mnist', dataclasses.replace(ip.DATASETS['mnist'],
                                                            folders=(str(tmp_path),)))
  from digits_jax import idx  # pylint: disable=g-import-not-at-top
  with pytest.raises(idx.DataError, match='DIGITS_JAX_MNIST_DIR'):
    ip.resolve_source(config)


def test_env_var_names_the_folder(monkeypatch, tiny_data):
  config = default.get_config()
  monkeypatch.setenv('DIGITS_JAX_MNIST_DIR', tiny_data)
  assert ip.resolve_source(config) == ('idx', tiny_data)
