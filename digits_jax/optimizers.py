"""Optimizers by name: the registry, and how a config's fields become an optimizer.

`config.optimizer` names an entry of `OPTIMIZERS`: the lab's `keras_adam` (the default)
or an optax optimizer (`sgd`, `adamw`, `rmsprop`, ...). Its hyperparameters are the config
fields that its signature names: `--config.optimizer=sgd --config.momentum=0.9` calls
`optax.sgd(learning_rate=..., momentum=0.9, nesterov=False)`. Which fields those can be is
derived, not listed: every config field that some registered optimizer's signature names
(`hyperparameter_fields`). A field that the chosen optimizer does not take must keep its
default (else `problems` says so), so that no setting is silently ignored.

Importable without TensorFlow. Adding an optimizer is one entry of `OPTIMIZERS`: a
function of keyword hyperparameters returning an `optax.GradientTransformation`.
"""

import functools
import inspect
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class KerasAdamState(NamedTuple):
  count: jax.Array  # Steps taken.
  mu: optax.Updates  # First moments.
  nu: optax.Updates  # Second moments.


def keras_adam(learning_rate, b1=0.9, b2=0.999, eps=1e-7):
  """Adam exactly as Keras applies it: p -= lr_t * m / (sqrt(v) + eps).

  lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t) folds both bias corrections into one scalar,
  so epsilon is added to the uncorrected sqrt(v) (optax.adam adds it to the corrected
  one: the two differ by eps * sqrt(1 - b2^t)). One divide per parameter instead of
  three also makes the step cheaper wherever the update is memory- or ALU-bound.
  """
  def init(params):
    zeros = lambda: jax.tree.map(jnp.zeros_like, params)
    return KerasAdamState(jnp.zeros([], jnp.int32), zeros(), zeros())

  def update(grads, state, params=None):
    del params
    count = state.count + 1
    t = count.astype(jnp.float32)
    lr_t = learning_rate * jnp.sqrt(1 - b2**t) / (1 - b1**t)
    mu = jax.tree.map(lambda m, g: m + (g - m) * (1 - b1), state.mu, grads)
    nu = jax.tree.map(lambda v, g: v + (g * g - v) * (1 - b2), state.nu, grads)
    updates = jax.tree.map(lambda m, v: -lr_t * m / (jnp.sqrt(v) + eps), mu, nu)
    return updates, KerasAdamState(count, mu, nu)

  return optax.GradientTransformation(init, update)


# optax's optimizers that take a learning rate and plain numbers only. (noisy_sgd is left
# out: its `seed` parameter would take config.seed, which seeds the run, not the noise.)
_OPTAX = ('adabelief', 'adadelta', 'adafactor', 'adagrad', 'adam', 'adamax', 'adamaxw',
          'adamw', 'adan', 'amsgrad', 'fromage', 'lamb', 'lars', 'lion', 'nadam', 'nadamw',
          'novograd', 'radam', 'rmsprop', 'sgd', 'sign_sgd', 'sm3', 'yogi')

# The registry: the only list of optimizers (validation's allowed names come from it).
OPTIMIZERS = {
    'keras_adam': keras_adam,  # The lab's default: Keras's Adam update rule, bit for bit.
    'optax_adam': optax.adam,  # The name older configs use for optax.adam.
    **{name: getattr(optax, name) for name in _OPTAX if hasattr(optax, name)},
}


@functools.lru_cache(maxsize=None)
def parameters(name):
  """The hyperparameter names the registered optimizer `name` takes (its signature)."""
  return tuple(inspect.signature(OPTIMIZERS[name]).parameters)


def hyperparameter_fields(config):
  """The config fields that are some registered optimizer's hyperparameter, in config order."""
  named = {p for name in OPTIMIZERS for p in parameters(name)}
  return [field for field in config.keys() if field in named]


def hyperparameters(config):
  """{parameter: value} of the config's optimizer: the fields its signature names."""
  return {p: config[p] for p in parameters(config['optimizer']) if p in config}


def fields(config):
  """The config's optimizer as a hashable value: (name, sorted hyperparameter items)."""
  return config.optimizer, tuple(sorted(hyperparameters(config).items()))


def build(optimizer_fields):
  """The optax transformation of `fields(config)`."""
  name, items = optimizer_fields
  return OPTIMIZERS[name](**dict(items))


def create_optimizer(config):
  """The optimizer `config.optimizer` names, with its hyperparameters from the config."""
  return build(fields(config))


def describe(config):
  """One line naming the optimizer of a config (a ConfigDict, or config.json's dict) and
  its hyperparameters, e.g. 'sgd (learning_rate=0.01, momentum=0.9, nesterov=False)'."""
  items = ', '.join(f'{k}={v!r}' for k, v in hyperparameters(config).items())
  return f'{config["optimizer"]} ({items})'


def problems(config, defaults):
  """Problems with the optimizer fields: an unknown name, or a hyperparameter field changed
  from its default (`defaults`: configs/default.py's config) that the optimizer does not take."""
  name = config.get('optimizer')
  if not isinstance(name, str) or name not in OPTIMIZERS:
    return [f'config.optimizer={name!r}: use one of {", ".join(OPTIMIZERS)}.']
  return _value_problems(config) + _ignored(config, name, defaults)


def _value_problems(config):
  """Problems with the values of the hyperparameter fields added with the registry."""
  out = []
  for field in ('momentum', 'weight_decay'):
    value = config.get(field)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
      out.append(f'config.{field}={value!r}: must be a number >= 0 (0 = none).')
  if not isinstance(config.get('nesterov'), bool):
    out.append(f'config.nesterov={config.get("nesterov")!r}: must be True or False.')
  return out


def _ignored(config, name, defaults):
  """A problem if a hyperparameter field left its default but `name` does not take it."""
  taken = parameters(name)
  ignored = [f for f in hyperparameter_fields(config)
             if f not in taken and f in defaults and config[f] != defaults[f]]
  if not ignored:
    return []
  takers = [n for n in OPTIMIZERS if set(ignored) <= set(parameters(n))][:4]
  return [f'config.optimizer={name!r} takes no {", ".join(ignored)} (its hyperparameters: '
          f'{", ".join(p for p in taken if p in defaults)}): leave '
          f'{"it" if len(ignored) == 1 else "them"} at the default'
          + (f', or choose an optimizer that takes {"it" if len(ignored) == 1 else "them"} '
             f'(e.g. {", ".join(takers)}).' if takers else '.')]


def slots(config):
  """Parameter-sized arrays the config's optimizer keeps (keras_adam 2, sgd 0, with
  momentum 1): what its state adds to memory and checkpoints, per parameter. Traced
  abstractly (jax.eval_shape), so it computes nothing."""
  probe = {'w': jax.ShapeDtypeStruct((1024,), jnp.float32)}
  state = jax.eval_shape(create_optimizer(config).init, probe)
  return sum(int(x.size) for x in jax.tree.leaves(state)) // 1024
