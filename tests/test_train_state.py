"""The steps: known-answer metrics, a step lowers the loss, scan == single steps, masking."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from digits_jax import models
from digits_jax import optimizers
from digits_jax import train_state as ts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**kw):
  config = default.get_config()
  config.hidden_units = 32
  config.update(kw)
  return config


def _batch(n, seed=0, pad=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n + pad, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, n + pad).astype(np.int32)
  return {'image': jnp.asarray(images), 'label': jnp.asarray(labels),
          'mask': jnp.asarray(np.arange(n + pad) < n)}


def test_known_answer_metrics():
  logits = jnp.log(jnp.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4],
                              [0.5, 0.25, 0.25]]))
  labels = jnp.array([0, 2, 2, 1])
  mask = jnp.array([True, True, True, False])  # The last row is padding.
  m = ts.compute_metrics(logits, labels, mask)
  expected = -(np.log(0.7) + np.log(0.1) + np.log(0.4))
  np.testing.assert_allclose(float(m['loss']), expected, rtol=1e-6)
  assert float(m['correct']) == 2.0 and float(m['count']) == 3.0


def test_preprocess_scales_to_unit_interval():
  x = ts.preprocess(jnp.array([0, 51, 255], jnp.uint8))
  np.testing.assert_allclose(np.asarray(x), [0.0, 0.2, 1.0], rtol=1e-7)


def test_one_step_lowers_the_loss():
  state = ts.create_train_state(_config(), jax.random.key(0))
  batch = _batch(64)
  before = ts.eval_step(state, batch)
  state, metrics = ts.train_step(state, batch)
  after = ts.eval_step(state, batch)
  np.testing.assert_allclose(float(metrics['loss']), float(before['loss']), rtol=1e-5)
  assert float(after['loss']) < float(before['loss'])
  assert int(state.step) == 1


def test_scanned_steps_equal_single_steps():
  config = _config()
  k, b = 6, 16
  batches = [_batch(b, seed=s) for s in range(k)]
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *batches)
  single = ts.create_train_state(config, jax.random.key(1))
  sums = []
  for batch in batches:
    single, m = ts.train_step(single, batch)
    sums.append(m)
  scanned, scan_sums = ts.train_steps(ts.create_train_state(config, jax.random.key(1)), stacked)
  jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-7),
               single.params, scanned.params)
  total = jax.tree.map(lambda *x: sum(float(v) for v in x), *sums)
  for key in total:
    np.testing.assert_allclose(float(scan_sums[key]), total[key], rtol=1e-5)


def test_indexed_steps_equal_fed_steps():
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (100, 28, 28), dtype=np.uint8))
  labels = jnp.asarray(rng.integers(0, 10, 100).astype(np.int32))
  index = jnp.asarray(rng.integers(0, 100, (5, 8)).astype(np.int32))
  mask = jnp.asarray(rng.random((5, 8)) < 0.8)
  fed = {'image': images[index], 'label': labels[index], 'mask': mask}
  a, ma = ts.train_steps(ts.create_train_state(_config(), jax.random.key(2)), fed)
  b, mb = ts.train_steps_indexed(ts.create_train_state(_config(), jax.random.key(2)),
                                 images, labels, index, mask)
  close = lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-8)
  jax.tree.map(close, a.params, b.params)  # Other programs, so equal up to rounding.
  jax.tree.map(close, ma, mb)


def test_padding_is_exactly_masked_out():
  config = _config()
  batch = _batch(5)
  padded = _batch(5, pad=3)
  padded = {k: v.at[:5].set(batch[k]) if k != 'mask' else v for k, v in padded.items()}
  a, ma = ts.train_step(ts.create_train_state(config, jax.random.key(3)), batch)
  b, mb = ts.train_step(ts.create_train_state(config, jax.random.key(3)), padded)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-8),
               a.params, b.params)
  assert float(mb['count']) == 5.0
  np.testing.assert_allclose(float(ma['loss']), float(mb['loss']), rtol=1e-6)


def test_optimizer_has_keras_defaults():
  config = default.get_config()
  assert (config.learning_rate, config.b1, config.b2, config.eps) == (1e-3, 0.9, 0.999, 1e-7)


def test_predict_returns_probabilities():
  state = ts.create_train_state(_config(), jax.random.key(0))
  probs = ts.predict(state, _batch(4)['image'])
  np.testing.assert_allclose(np.asarray(probs.sum(-1)), np.ones(4), rtol=1e-6)


def test_model_and_train_state_import_without_tensorflow():
  code = ('import sys; sys.modules["tensorflow"] = None; sys.modules["tensorflow_datasets"] = None\n'
          'import jax\n'
          'from configs import default\n'
          'from digits_jax import train_state, models, checkpoint, parallel, idx\n'
          'state = train_state.create_train_state(default.get_config(), jax.random.key(0))\n'
          'print("ok", int(state.step))\n')
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True,
                       check=False)
  assert out.returncode == 0, out.stderr
  assert 'ok 0' in out.stdout


def test_keras_adam_matches_keras_update_rule():
  params = {'w': jnp.array([0.5, -1.0, 2.0])}
  grads = [np.array([0.1, -0.2, 0.0]), np.array([0.3, 0.1, -0.5]), np.array([-0.2, 0.0, 0.4])]
  tx = ts.keras_adam(1e-2, b1=0.9, b2=0.999, eps=1e-7)
  state = tx.init(params)
  p, m, v = np.array([0.5, -1.0, 2.0]), np.zeros(3), np.zeros(3)
  for t, g in enumerate(grads, start=1):  # keras.optimizers.Adam.update_step, in numpy.
    updates, state = tx.update({'w': jnp.asarray(g, jnp.float32)}, state)
    params = {'w': params['w'] + updates['w']}
    lr = 1e-2 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
    m += (g - m) * (1 - 0.9)
    v += (g * g - v) * (1 - 0.999)
    p -= lr * m / (np.sqrt(v) + 1e-7)
  np.testing.assert_allclose(np.asarray(params['w']), p, rtol=1e-6)


@pytest.mark.parametrize('optimizer', ['keras_adam', 'optax_adam'])
def test_both_optimizers_train(optimizer):
  state = ts.create_train_state(_config(optimizer=optimizer), jax.random.key(0))
  batch = _batch(32)
  before = float(ts.eval_step(state, batch)['loss'])
  state, _ = ts.train_step(state, batch)
  assert float(ts.eval_step(state, batch)['loss']) < before


def test_bfloat16_compute_keeps_float32_parameters():
  state = ts.create_train_state(_config(compute_dtype='bfloat16'), jax.random.key(0))
  state, metrics = ts.train_step(state, _batch(16))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))
  assert np.isfinite(float(metrics['loss']))


def _assert_same_leaves(a, b):
  """Equal arrays, bit for bit (states from separate create calls differ in their tx)."""
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def _indexed_data(num_images=120, steps=5, batch=8, replicas=3):
  rng = np.random.default_rng(4)
  images = jnp.asarray(rng.integers(0, 256, (num_images, 28, 28), dtype=np.uint8))
  labels = jnp.asarray(rng.integers(0, 10, num_images).astype(np.int32))
  index = jnp.asarray(rng.integers(0, num_images, (replicas, steps, batch)).astype(np.int32))
  mask = jnp.asarray(rng.random((replicas, steps, batch)) < 0.9)
  return images, labels, index, mask


def test_stacked_states_are_the_single_seed_states():
  config = _config()
  stacked = ts.create_train_states(config, [5, 6, 7])
  assert ts.num_replicas(stacked) == 3
  for k, seed in enumerate([5, 6, 7]):
    single = ts.create_train_state(config, jax.random.key(seed))
    _assert_same_leaves(ts.replica(stacked, k), single)


@pytest.mark.parametrize('kernel_init', sorted(models.KERNEL_INITS))
def test_fast_compiled_init_gives_the_op_by_op_parameters(kernel_init):
  """Init compiled with less backend optimisation (INIT_COMPILER_OPTIONS) must give the
  bits of the op-by-op flax init, which the configs' recorded accuracies come from."""
  config = _config(num_hidden_layers=2, kernel_init=kernel_init)
  model, tx = models.create_model(config), ts.create_optimizer(config)
  want = ts._init(model, tx, jax.random.key(7))  # pylint: disable=protected-access
  _assert_same_leaves(ts.create_train_state(config, jax.random.key(7)), want)


def test_stacked_replica_k_trains_as_its_single_seed_run():
  config = _config()
  images, labels, index, mask = _indexed_data()
  stacked, sums = ts.train_steps_indexed_stacked(ts.create_train_states(config, [3, 4, 5]),
                                                 images, labels, index, mask)
  assert sums['loss'].shape == (3,)
  batch = _batch(16, seed=9)
  evals = ts.eval_step_stacked(stacked, batch)
  metrics, probs = ts.eval_and_predict_stacked(stacked, batch)
  assert probs.shape == (3, 16, 10)
  np.testing.assert_array_equal(np.asarray(ts.predict_stacked(stacked, batch['image'])), probs)
  for k, seed in enumerate([3, 4, 5]):
    single, single_sums = ts.train_steps_indexed(
        ts.create_train_state(config, jax.random.key(seed)), images, labels, index[k], mask[k])
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    jax.tree.map(close, ts.replica(stacked, k).params, single.params)
    jax.tree.map(close, ts.replica(sums, k), single_sums)
    close(ts.replica(evals, k)['loss'], ts.eval_step(single, batch)['loss'])
    close(ts.replica(metrics, k)['loss'], evals['loss'][k])
  # The replicas are distinct models, not one model three times.
  losses = np.asarray(evals['loss'])
  assert len(set(losses.tolist())) == 3


def test_one_replica_computes_exactly_the_unstacked_step():
  config = _config()
  images, labels, index, mask = _indexed_data(replicas=1)
  stacked, sums = ts.train_steps_indexed_stacked(ts.create_train_states(config, [2]),
                                                 images, labels, index, mask)
  single, single_sums = ts.train_steps_indexed(ts.create_train_state(config, jax.random.key(2)),
                                               images, labels, index[0], mask[0])
  _assert_same_leaves(ts.replica(stacked, 0), single)
  jax.tree.map(np.testing.assert_array_equal, ts.replica(sums, 0), single_sums)
  batch = _batch(16, seed=1)
  np.testing.assert_array_equal(np.asarray(ts.eval_and_predict_stacked(stacked, batch)[1][0]),
                                np.asarray(ts.eval_and_predict(single, batch)[1]))


def test_fed_stacked_steps_equal_indexed_stacked_steps():
  config = _config()
  images, labels, index, mask = _indexed_data(replicas=2)
  fed = {'image': images[index], 'label': labels[index], 'mask': mask}
  a, ma = ts.train_steps_stacked(ts.create_train_states(config, [0, 1]), fed)
  b, mb = ts.train_steps_indexed_stacked(ts.create_train_states(config, [0, 1]),
                                         images, labels, index, mask)
  close = lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-8)
  jax.tree.map(close, a.params, b.params)
  jax.tree.map(close, ma, mb)


def test_seeds_of_config():
  assert ts.seeds_of(_config(seed=4, num_seeds=3)) == [4, 5, 6]
  assert ts.seeds_of(_config(seed=2)) == [2]


# ---------------------------------------------------------------- optimizers by name


def test_the_hyperparameter_fields_are_derived_from_the_registry_and_the_config():
  assert optimizers.hyperparameter_fields(default.get_config()) == [
      'b1', 'b2', 'eps', 'learning_rate', 'momentum', 'nesterov', 'weight_decay']
  assert optimizers.hyperparameters(_config()) == {
      'learning_rate': 1e-3, 'b1': 0.9, 'b2': 0.999, 'eps': 1e-7}
  assert optimizers.hyperparameters(_config(optimizer='sgd', momentum=0.9)) == {
      'learning_rate': 1e-3, 'momentum': 0.9, 'nesterov': False}


@pytest.mark.parametrize('name', sorted(optimizers.OPTIMIZERS))
def test_every_registered_optimizer_builds_from_the_config_and_updates(name):
  config = _config(optimizer=name)
  params = {'w': jnp.ones((4, 3)), 'b': jnp.zeros(3)}
  tx = optimizers.create_optimizer(config)
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  assert all(np.isfinite(np.asarray(u)).all() for u in jax.tree.leaves(updates))
  assert optimizers.problems(config, default.get_config()) == []


def test_sgd_with_momentum_is_optax_sgd_with_the_config_values():
  config = _config(optimizer='sgd', learning_rate=0.05, momentum=0.9)
  state = ts.create_train_state(config, jax.random.key(0))
  batches = [_batch(16, seed=s) for s in (1, 2)]
  tx = optax.sgd(0.05, momentum=0.9)
  params = jax.tree.map(jnp.copy, state.params)  # train_step donates the state's.
  opt_state = tx.init(params)
  for batch in batches:
    state, _ = ts.train_step(state, batch)
    grads = jax.grad(lambda p: ts.compute_metrics(  # pylint: disable=cell-var-from-loop
        state.apply_fn({'params': p}, ts.preprocess(batch['image'])), batch['label'],
        batch['mask'])['loss'] / 16)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               state.params, params)
  assert optimizers.describe(config) == (
      'sgd (learning_rate=0.05, momentum=0.9, nesterov=False)')


def test_a_hyperparameter_the_optimizer_does_not_take_is_refused_not_ignored():
  defaults = default.get_config()
  [problem] = optimizers.problems(_config(optimizer='adam', momentum=0.9), defaults)
  assert "config.optimizer='adam' takes no momentum" in problem and 'sgd)' in problem
  [problem] = optimizers.problems(_config(optimizer='adamm'), defaults)
  assert "config.optimizer='adamm'" in problem and 'keras_adam, optax_adam, ' in problem
  assert optimizers.problems(_config(optimizer='adamw', weight_decay=1e-4), defaults) == []
  assert optimizers.problems(_config(optimizer='sgd', momentum=-1.0), defaults) == [
      'config.momentum=-1.0: must be a number >= 0 (0 = none).']


def test_optimizer_state_slots():
  assert optimizers.slots(_config()) == 2
  assert optimizers.slots(_config(optimizer='sgd')) == 1  # momentum 0.0 keeps a trace.
  assert optimizers.slots(_config(optimizer='sign_sgd')) == 0


# ---------------------------------------------------------------- dropout


def test_dropout_trains_with_a_mask_and_evaluates_deterministically():
  config = _config(dropout_rate=0.5)
  state = ts.create_train_state(config, jax.random.key(0))
  images = ts.preprocess(_batch(8)['image'])
  apply = lambda **kw: np.asarray(state.apply_fn({'params': state.params}, images, **kw))
  key = lambda step: {'dropout': ts.dropout_key(state.replace(step=step))}
  np.testing.assert_array_equal(apply(), apply())  # Evaluation: no randomness.
  assert not np.allclose(apply(train=True, rngs=key(0)), apply())
  np.testing.assert_array_equal(apply(train=True, rngs=key(0)), apply(train=True, rngs=key(0)))
  assert not np.allclose(apply(train=True, rngs=key(0)), apply(train=True, rngs=key(1)))
  plain = ts.create_train_state(_config(), jax.random.key(0))
  np.testing.assert_array_equal(  # Rate 0: training mode is the plain network.
      np.asarray(plain.apply_fn({'params': plain.params}, images, train=True, rngs=key(0))),
      np.asarray(plain.apply_fn({'params': plain.params}, images)))


def test_dropout_keys_come_from_seed_and_step():
  state = ts.create_train_state(_config(dropout_rate=0.5), jax.random.key(3))
  want = jax.random.fold_in(jax.random.fold_in(jax.random.key(3), ts.DROPOUT_STREAM), 7)
  np.testing.assert_array_equal(jax.random.key_data(ts.dropout_key(state.replace(step=7))),
                                jax.random.key_data(want))


def test_with_dropout_stacked_replica_k_trains_as_its_single_seed_run():
  config = _config(dropout_rate=0.3)
  images, labels, index, mask = _indexed_data()
  stacked, _ = ts.train_steps_indexed_stacked(ts.create_train_states(config, [3, 4, 5]),
                                              images, labels, index, mask)
  for k, seed in enumerate([3, 4, 5]):
    single, _ = ts.train_steps_indexed(
        ts.create_train_state(config, jax.random.key(seed)), images, labels, index[k], mask[k])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 ts.replica(stacked, k).params, single.params)
  # Dropout did change training: the same seed without dropout ends elsewhere.
  plain, _ = ts.train_steps_indexed(ts.create_train_state(_config(), jax.random.key(3)),
                                    images, labels, index[0], mask[0])
  assert not np.allclose(plain.params['dense_0']['kernel'],
                         ts.replica(stacked, 0).params['dense_0']['kernel'])
