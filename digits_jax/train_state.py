"""Train state and the pure, jit-compiled steps: what decides the numerics of training.

Importable without TensorFlow:

  from digits_jax import train_state as ts
  state = ts.create_train_state(config, jax.random.key(0))
  state, metrics = ts.train_step(state, batch)  # batch: image uint8/float, label, mask

Several seeds train as one program: `create_train_states(config, seeds)` stacks one state
per seed on a leading replica axis, and the `*_stacked` steps run every replica at once
(vmapped; one replica runs the plain step on the squeezed state, so num_seeds=1 computes
exactly what the unstacked step computes). `replica(state, k)` takes replica k out.

A batch is a dict with 'image' [B, 28, 28] (uint8 0..255 or float already in [0, 1]),
'label' int [B] and 'mask' bool [B]. Masked-out examples (padding of a partial last
batch, or of a batch that does not divide by the device count) add nothing to the loss,
the gradients or the metrics, so a padded step is exactly the unpadded one.
"""

import dataclasses
import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from digits_jax import models
from digits_jax import optimizers

# The optimizers live in optimizers.py; these names stay importable from here.
KerasAdamState, keras_adam = optimizers.KerasAdamState, optimizers.keras_adam
OPTIMIZERS, create_optimizer = optimizers.OPTIMIZERS, optimizers.create_optimizer

DROPOUT_STREAM = 1  # fold_in constant that separates the dropout keys from init's key.


class TrainState(train_state.TrainState):
  """flax's TrainState plus `rng`: the raw data (`jax.random.key_data`) of the key the
  replica was initialised with, `key(seed)`. Training's randomness (dropout) at step t is
  `fold_in(fold_in(key, DROPOUT_STREAM), t)`: a function of (seed, step) alone, so a
  resumed run draws what the uninterrupted one drew, and replica k of num_seeds what the
  run with seed + k draws. Checkpoints do not store it (it is the config's seed); None
  in a state restored for inference."""
  rng: Optional[jax.Array] = None


def _init(model, tx, rng):
  params = model.init(rng, jnp.zeros((1, *models.INPUT_SHAPE), jnp.float32))['params']
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                           rng=jax.random.key_data(rng))


# Initialisation runs once per run, so XLA's full backend optimisation only costs time:
# level 1 compiles it ~4x faster (a sweep pays it per cell) and gives the bits of op-by-op
# execution (level 0 does not: it changes lecun_normal's last bit; tests/test_train_state.py).
INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 1}


@functools.lru_cache(maxsize=32)
def _jitted_init(model, optimizer_fields):
  """`_init` of the model and optimizer jitted as a function of a typed key, one per
  process (so compiled once: a sweep's two datasets share it)."""
  return jax.jit(functools.partial(_init, model, optimizers.build(optimizer_fields)),
                 compiler_options=INIT_COMPILER_OPTIONS)


def _config_init(config, rng):
  """The config's initial state for `rng`; traced as plain ops inside a caller's
  transformation (eval_shape, jit), where compiler options cannot be set."""
  model, optimizer_fields = models.create_model(config), optimizers.fields(config)
  if isinstance(rng, jax.core.Tracer):
    return _init(model, optimizers.build(optimizer_fields), rng)
  return _jitted_init(model, optimizer_fields)(rng)


def create_train_state(config, rng):
  """Initialises the model's parameters and the optimizer state.

  Args:
    config: a config with the model and optimizer fields of configs/default.py.
    rng: a typed `jax.random.key`.

  Returns:
    A flax `TrainState` (step 0).
  """
  return _config_init(config, rng)


def inference_state(config, params, step=0):
  """A TrainState for evaluation and prediction only: the config's model and `params`,
  no optimizer (tx and opt_state None), so weights read back whatever trained them."""
  return TrainState(step=step, apply_fn=models.create_model(config).apply, params=params,
                    tx=None, opt_state=None)


def seeds_of(config):
  """The replicas' seeds: config.seed, config.seed + 1, ..., one per config.num_seeds."""
  return [int(config.seed) + k for k in range(int(config.num_seeds))]


def create_train_states(config, seeds):
  """One train state per seed, stacked on a leading replica axis of len(seeds).

  Replica k is exactly `create_train_state(config, jax.random.key(seeds[k]))`.
  """
  return stack([_config_init(config, jax.random.key(s)) for s in seeds])


def stack(states):
  """Stacks train states of one structure (and one apply_fn / tx) on a new leading axis."""
  leaves = [jax.tree.leaves(s) for s in states]
  return jax.tree.unflatten(jax.tree.structure(states[0]),
                            [jnp.stack(column) for column in zip(*leaves)])


def replica(state, k):
  """Replica k of a stacked state (or of any stacked pytree, e.g. metric sums)."""
  return jax.tree.map(lambda x: x[k], state)


def num_replicas(state):
  """The length of a stacked state's replica axis."""
  return int(jax.tree.leaves(state)[0].shape[0])


def over_replicas(fn, in_axes):
  """`fn(state, *args)` applied to every replica of a stacked state, for use under jit.

  `in_axes` as for `jax.vmap` (0: the argument has a replica axis, None: shared). Many
  replicas are vmapped; a single one runs `fn` itself on the squeezed arguments, so that
  one seed computes exactly what the unstacked functions compute.
  """
  def run(state, *args):
    if num_replicas(state) > 1:
      return jax.vmap(fn, in_axes=in_axes)(state, *args)
    squeezed = [a if ax is None else replica(a, 0) for a, ax in zip(args, in_axes[1:])]
    return jax.tree.map(lambda x: x[None], fn(replica(state, 0), *squeezed))
  return run


def preprocess(images):
  """Scales uint8 pixels to [0, 1] (float input is taken as already scaled)."""
  if jnp.issubdtype(images.dtype, jnp.integer):
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Metric:
  """One per-epoch metric, declared once (METRICS); every output follows the declaration.

  A batch contributes `batch_sum(logits, labels, mask)`, the metric summed over its
  unmasked examples (mask float32 [B], 1 for a real example), kept under `sum_name`;
  the epoch's value is that sum over the epoch divided by the examples counted. Sums (not
  means) so that blocks, devices and epochs combine exactly.
  history.csv has the columns `name` (training) and `val_<name>`, results.json
  `test_<name>` (top level and per seed), TensorBoard `train/<name>`, `validation/<name>`
  and `test/<name>`; the console, curves.png (one panel each) and the report show it.
  """
  name: str  # E.g. 'accuracy'.
  sum_name: str  # Its per-batch sum's key, e.g. 'correct' (saved in checkpoints).
  batch_sum: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
  title: str  # Plot and page title, e.g. 'Accuracy'.
  percent: bool = False  # Shown as a percentage on pages (a fraction in [0, 1]).


def _cross_entropy_sum(logits, labels, mask):
  """Categorical cross-entropy of softmax(logits) against one-hot labels (as Keras's
  `categorical_crossentropy` on a softmax output), summed over the unmasked examples."""
  return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, labels) * mask)


def _correct_sum(logits, labels, mask):
  """Examples whose highest logit is the true class, over the unmasked examples."""
  return jnp.sum((jnp.argmax(logits, -1) == labels).astype(jnp.float32) * mask)


# The per-epoch metrics, in display order. The first is the training loss (its mean is
# what the optimizer minimises). The fused C++ kernel computes the sums of exactly
# ('loss', 'correct', 'count'): see `sum_names`.
METRICS = (
    Metric('loss', 'loss', _cross_entropy_sum, 'Loss'),
    Metric('accuracy', 'correct', _correct_sum, 'Accuracy', percent=True),
)
COUNT = 'count'  # The sum of the mask: the examples counted.


def metric_names():
  """The declared metrics' names, in order, e.g. ('loss', 'accuracy')."""
  return tuple(m.name for m in METRICS)


def sum_names():
  """The keys of a batch's metric sums, e.g. ('loss', 'correct', 'count'): a fast path
  that computes other sums must stand aside."""
  return tuple(m.sum_name for m in METRICS) + (COUNT,)


def zero_sums():
  """Host running sums of an epoch: 0.0 under every key of `sum_names()`."""
  return {k: 0.0 for k in sum_names()}


def epoch_values(sums, prefix=''):
  """{prefix + metric name: its sum / count} from the sums of an epoch (or a split)."""
  return {prefix + m.name: sums[m.sum_name] / sums[COUNT] for m in METRICS}


def compute_metrics(logits, labels, mask):
  """Each declared metric's sum over the unmasked examples, and their 'count'.

  Divide by 'count' to report (`epoch_values`).
  """
  mask = mask.astype(jnp.float32)
  return {**{m.sum_name: m.batch_sum(logits, labels, mask) for m in METRICS},
          COUNT: jnp.sum(mask)}


def dropout_key(state):
  """The typed key of the state's training step: fold_in(key(seed), DROPOUT_STREAM, step)."""
  key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), DROPOUT_STREAM)
  return jax.random.fold_in(key, state.step)


def _train_step(state, batch):
  """One optimizer step on the mean loss of the batch's unmasked examples; the model runs
  in training mode (dropout on, if it has any) with the step's own key."""
  images = preprocess(batch['image'])

  def loss_fn(params):
    logits = state.apply_fn({'params': params}, images, train=True,
                            rngs={'dropout': dropout_key(state)})
    metrics = compute_metrics(logits, batch['label'], batch['mask'])
    return metrics['loss'] / jnp.maximum(metrics[COUNT], 1.0), metrics

  grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads=grads), metrics


def _sum_metrics(a, b):
  return jax.tree.map(jnp.add, a, b)


def _zero_metrics():
  return {k: jnp.zeros(()) for k in sum_names()}


@functools.partial(jax.jit, donate_argnums=0)
def train_step(state, batch):
  """One optimizer step: returns (new state, metric sums of the batch)."""
  return _train_step(state, batch)


def _train_steps(state, batches):
  def body(carry, batch):
    state, sums = carry
    state, metrics = _train_step(state, batch)
    return (state, _sum_metrics(sums, metrics)), None

  (state, sums), _ = jax.lax.scan(body, (state, _zero_metrics()), batches)
  return state, sums


@functools.partial(jax.jit, donate_argnums=0)
def train_steps(state, batches):
  """len(batches) optimizer steps in one call (lax.scan); returns (state, summed metrics).

  `batches` is a batch dict with a leading step axis [K, B, ...]. The result equals K
  calls of `train_step` while paying Python's dispatch cost once.
  """
  return _train_steps(state, batches)


@functools.partial(jax.jit, donate_argnums=0)
def train_steps_stacked(state, batches):
  """`train_steps` for every replica of a stacked state; `batches` [R, K, B, ...]."""
  return over_replicas(_train_steps, (0, 0))(state, batches)


def _train_steps_indexed(state, images, labels, index, mask):
  def body(carry, step):
    state, sums = carry
    idx, m = step
    batch = {'image': jnp.take(images, idx, axis=0), 'label': jnp.take(labels, idx), 'mask': m}
    state, metrics = _train_step(state, batch)
    return (state, _sum_metrics(sums, metrics)), None

  (state, sums), _ = jax.lax.scan(body, (state, _zero_metrics()), (index, mask))
  return state, sums


@functools.partial(jax.jit, donate_argnums=0)
def train_steps_indexed(state, images, labels, index, mask):
  """Like `train_steps`, gathering each batch from a device-resident dataset.

  Args:
    state: the train state (donated).
    images: uint8 [N, 28, 28], the whole training split on the device.
    labels: int [N].
    index: int32 [K, B], the examples of each of the K batches.
    mask: bool [K, B], False for padding.
  """
  return _train_steps_indexed(state, images, labels, index, mask)


@functools.partial(jax.jit, donate_argnums=0)
def train_steps_indexed_stacked(state, images, labels, index, mask):
  """`train_steps_indexed` for every replica of a stacked state: one dataset, each
  replica's own batches (index and mask [R, K, B]); metric sums come back per replica."""
  return over_replicas(_train_steps_indexed, (0, None, None, 0, 0))(
      state, images, labels, index, mask)


def _eval_step(state, batch):
  logits = state.apply_fn({'params': state.params}, preprocess(batch['image']))
  return compute_metrics(logits, batch['label'], batch['mask'])


def _predict(state, images):
  return jax.nn.softmax(state.apply_fn({'params': state.params}, preprocess(images)))


def _eval_and_predict(state, batch):
  logits = state.apply_fn({'params': state.params}, preprocess(batch['image']))
  return compute_metrics(logits, batch['label'], batch['mask']), jax.nn.softmax(logits)


@jax.jit
def eval_step(state, batch):
  """Metric sums (`sum_names()`) of one batch, masked examples excluded."""
  return _eval_step(state, batch)


@jax.jit
def predict(state, images):
  """Softmax probabilities [B, 10] for a batch of images."""
  return _predict(state, images)


@jax.jit
def eval_and_predict(state, batch):
  """Metric sums and probabilities of one batch, in one pass over the network."""
  return _eval_and_predict(state, batch)


@jax.jit
def eval_step_stacked(state, batch):
  """`eval_step` of every replica on one shared batch; sums [R]."""
  return over_replicas(_eval_step, (0, None))(state, batch)


@jax.jit
def predict_stacked(state, images):
  """`predict` of every replica on shared images; probabilities [R, B, 10]."""
  return over_replicas(_predict, (0, None))(state, images)


@jax.jit
def eval_and_predict_stacked(state, batch):
  """`eval_and_predict` of every replica on one shared batch: sums [R], probabilities [R, B, 10]."""
  return over_replicas(_eval_and_predict, (0, None))(state, batch)
