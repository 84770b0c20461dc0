"""The lab's network: Flatten -> N x (Dense + activation) -> Dense(10), and its Keras-style
summary. The hidden activation is config.activation, one of ACTIVATIONS (ReLU by default)."""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

NUM_CLASSES = 10
INPUT_SHAPE = (28, 28)

COMPUTE_DTYPES = ('float32', 'bfloat16')  # Matmul dtypes; parameters stay float32.
KERNEL_INITS = {
    'glorot_uniform': nn.initializers.glorot_uniform(),  # Keras Dense default.
    'lecun_normal': nn.initializers.lecun_normal(),  # Flax Dense default.
}
# Hidden activations by name (config.activation). The fused CPU kernel implements 'relu'
# only (cpu_kernel.IMPLEMENTS); the report's drawing pad implements each of these by name.
ACTIVATIONS = {'relu': nn.relu, 'tanh': nn.tanh, 'sigmoid': nn.sigmoid, 'gelu': nn.gelu}


class MLP(nn.Module):
  """Fully connected classifier returning logits (softmax is applied by the caller)."""
  hidden_sizes: Sequence[int]
  num_classes: int = NUM_CLASSES
  kernel_init: str = 'glorot_uniform'
  dtype: Any = jnp.float32  # Computation dtype; parameters are always float32.
  activation: str = 'relu'  # A name of ACTIVATIONS, looked up when the model is applied.
  dropout_rate: float = 0.0  # Dropout after each hidden activation, in training only.

  @nn.compact
  def __call__(self, x, train=False):
    """Logits of `x`; `train` turns dropout on (it then needs a 'dropout' rng)."""
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)  # Flatten 28x28 -> 784.
    init = KERNEL_INITS[self.kernel_init]
    for i, units in enumerate(self.hidden_sizes):
      dense = nn.Dense(units, dtype=self.dtype, kernel_init=init, name=layer_name(i))
      x = ACTIVATIONS[self.activation](dense(x))
      if self.dropout_rate:  # (None at 0: the lab's network and its summary unchanged.)
        x = nn.Dropout(self.dropout_rate, deterministic=not train, name=f'dropout_{i}')(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=init,
                 name=layer_name(len(self.hidden_sizes)))(x)
    return x.astype(jnp.float32)


def layer_name(i):
  """The name of the MLP's i-th Dense layer (0 = the first hidden layer)."""
  return f'dense_{i}'


def dense_layers(params):
  """The Dense layers' parameters ({'kernel', 'bias'}) of an MLP param tree, input to output."""
  return [params[layer_name(i)] for i in range(len(params))]


def from_dense_layers(layers):
  """The MLP param tree of `dense_layers`' list (the inverse of `dense_layers`)."""
  return {layer_name(i): layer for i, layer in enumerate(layers)}


def hidden_sizes(config):
  """The hidden layer widths a config asks for, e.g. (256, 256) for variant 1."""
  return (int(config.hidden_units),) * int(config.num_hidden_layers)


def create_model(config):
  """Builds the MLP that `config` describes."""
  return MLP(hidden_sizes=hidden_sizes(config), kernel_init=config.kernel_init,
             dtype=jnp.dtype(config.compute_dtype), activation=config.activation,
             dropout_rate=float(config.dropout_rate))


def count_params(sizes, num_inputs=int(np.prod(INPUT_SHAPE)), num_classes=NUM_CLASSES):
  """Parameter count of an MLP with these hidden sizes (weights plus biases)."""
  widths = (num_inputs, *sizes, num_classes)
  return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def summary(sizes, name='mlp', activation='relu'):
  """The network's structure as a Keras `model.summary()`-like table (a string)."""
  widths = (int(np.prod(INPUT_SHAPE)), *sizes, NUM_CLASSES)
  rows = [('flatten (Flatten)', f'(None, {widths[0]})', 0)]
  for i, (fan_in, units) in enumerate(zip(widths[:-1], widths[1:])):
    act = activation if i < len(sizes) else 'softmax'
    rows.append((f'{layer_name(i)} (Dense, {act})', f'(None, {units})', fan_in * units + units))
  total = sum(r[2] for r in rows)
  line = '=' * 66
  out = [f'Model: "{name}"', line,
         f'{"Layer (type)":<32}{"Output Shape":<20}{"Param #":>14}', line]
  out += [f'{layer:<32}{shape:<20}{params:>14,}' for layer, shape, params in rows]
  out += [line, f'Total params: {total:,} ({total * 4 / 1024:.2f} KB)',
          f'Trainable params: {total:,}', 'Non-trainable params: 0', line]
  return '\n'.join(out)
