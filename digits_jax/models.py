"""The networks, chosen by name (`config.model`), and the facts every other module reads.

MODELS is the only list of models: each entry is a Flax module class built from the config
by its `from_config`, declaring a short `describe()` ('128', 'conv 32-64, dense 128'), its
`activation` and the config fields that size it (SIZE_FIELDS). Parameter counts, the
Keras-like summary, the one-line architecture and memory estimates are derived from the
module itself (`jax.eval_shape` of its init and apply: shapes only, no compute), so a new
model gets them all by being registered. See docs/models.md.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
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
OUTPUT_ACTIVATION = 'softmax'  # Models return logits; the loss and predictions apply it.


class Flatten(nn.Module):
  """(N, ...) -> (N, features). A layer of its own, without parameters, so that the
  summary lists it as Keras does."""

  @nn.compact
  def __call__(self, x):
    return x.reshape((x.shape[0], -1))


class MaxPool(nn.Module):
  """Non-overlapping max pooling over `window` x `window` pixels (Keras MaxPooling2D)."""
  window: int = 2

  @nn.compact
  def __call__(self, x):
    return nn.max_pool(x, (self.window,) * 2, strides=(self.window,) * 2)


class Conv(nn.Module):
  """A 3x3 convolution, stride 1, same padding (Keras Conv2D(f, 3, padding='same')), as one
  matrix product over the 9 shifted copies of the input (im2col). Why not nn.Conv: inside
  the training loop's lax.scan, XLA:CPU ran nn.Conv's convolutions ~7x slower per example
  than this product (0.53 vs 3.8 ms of CPU for conv 16-32, batch 64; /tmp bench, noisy).
  Its parameters are nn.Conv's: kernel [3, 3, in, out] and bias [out]."""
  features: int
  kernel_init: Any = nn.initializers.glorot_uniform()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    rows, cols, channels = x.shape[1:]
    kernel = self.param('kernel', self.kernel_init, (3, 3, channels, self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate([padded[:, i:i + rows, j:j + cols, :]
                               for i in range(3) for j in range(3)], axis=-1)
    kernel = kernel.reshape(9 * channels, self.features).astype(self.dtype)
    return patches.astype(self.dtype) @ kernel + bias.astype(self.dtype)


class MLP(nn.Module):
  """The lab's network: Flatten -> N x (Dense + activation) -> Dense(10), returning logits."""
  hidden_sizes: Sequence[int]
  num_classes: int = NUM_CLASSES
  kernel_init: str = 'glorot_uniform'
  activation: str = 'relu'  # A name of ACTIVATIONS, looked up when the model is applied.
  dtype: Any = jnp.float32  # Computation dtype; parameters are always float32.
  dropout_rate: float = 0.0  # Dropout after each hidden activation, in training only.

  SIZE_FIELDS = ('hidden_units', 'num_hidden_layers')  # Config fields that set its size.

  @classmethod
  def from_config(cls, config):
    """The MLP that `config` describes (hidden_units x num_hidden_layers)."""
    return cls(hidden_sizes=(int(config.hidden_units),) * int(config.num_hidden_layers),
               kernel_init=config.kernel_init, activation=config.activation,
               dtype=jnp.dtype(config.compute_dtype), dropout_rate=float(config.dropout_rate))

  def describe(self):
    """The hidden widths, e.g. '128' or '256 x 256'."""
    return ' x '.join(str(s) for s in self.hidden_sizes)

  @nn.compact
  def __call__(self, x, train=False):
    """Logits of `x`; `train` turns dropout on (it then needs a 'dropout' rng)."""
    x = Flatten(name='flatten')(x).astype(self.dtype)  # 28x28 -> 784.
    init, act = KERNEL_INITS[self.kernel_init], ACTIVATIONS[self.activation]
    for i, units in enumerate(self.hidden_sizes):
      x = act(nn.Dense(units, dtype=self.dtype, kernel_init=init, name=layer_name(i))(x))
      if self.dropout_rate:  # (None at 0: the lab's network and its summary unchanged.)
        x = nn.Dropout(self.dropout_rate, deterministic=not train, name=f'dropout_{i}')(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=init,
                 name=layer_name(len(self.hidden_sizes)))(x)
    return x.astype(jnp.float32)


class CNN(nn.Module):
  """A small convolutional network: per entry of `features` a 3x3 Conv (same padding) +
  activation + 2x2 max-pool, then Flatten -> Dense(dense_units) + activation -> Dense(10)."""
  features: Sequence[int] = (32, 64)
  dense_units: int = 128
  num_classes: int = NUM_CLASSES
  kernel_init: str = 'glorot_uniform'
  activation: str = 'relu'
  dtype: Any = jnp.float32
  dropout_rate: float = 0.0  # Dropout after the hidden Dense layer, in training only.

  SIZE_FIELDS = ('cnn.features', 'cnn.dense_units')
  MAX_LAYERS = 4  # Its 2x2 max-pools halve 28 to 14, 7, 3, 1: a fifth leaves no pixel.

  @classmethod
  def from_config(cls, config):
    """The CNN of `config.cnn` (features, dense_units)."""
    return cls(features=tuple(int(f) for f in config.cnn.features),
               dense_units=int(config.cnn.dense_units), kernel_init=config.kernel_init,
               activation=config.activation, dtype=jnp.dtype(config.compute_dtype),
               dropout_rate=float(config.dropout_rate))

  def describe(self):
    """The conv channels and dense width, e.g. 'conv 32-64, dense 128'."""
    return f'conv {"-".join(str(f) for f in self.features)}, dense {self.dense_units}'

  @nn.compact
  def __call__(self, x, train=False):
    """Logits of `x`; `train` turns dropout on (it then needs a 'dropout' rng)."""
    x = x.reshape((x.shape[0], *INPUT_SHAPE, 1)).astype(self.dtype)  # One grey channel.
    init, act = KERNEL_INITS[self.kernel_init], ACTIVATIONS[self.activation]
    for i, features in enumerate(self.features):
      x = act(Conv(features, kernel_init=init, dtype=self.dtype, name=f'conv_{i}')(x))
      x = MaxPool(name=f'pool_{i}')(x)
    x = Flatten(name='flatten')(x)
    x = act(nn.Dense(self.dense_units, dtype=self.dtype, kernel_init=init, name='dense_0')(x))
    if self.dropout_rate:
      x = nn.Dropout(self.dropout_rate, deterministic=not train, name='dropout_0')(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=init, name='dense_1')(x)
    return x.astype(jnp.float32)


MODELS = {'mlp': MLP, 'cnn': CNN}  # config.model -> its module class.


def create_model(config):
  """Builds the network `config.model` names, from the config's fields."""
  return MODELS[config.model].from_config(config)


def layer_name(i):
  """The name of the MLP's i-th Dense layer (0 = the first hidden layer)."""
  return f'dense_{i}'


def dense_layers(params):
  """The Dense layers' parameters ({'kernel', 'bias'}) of an MLP param tree, input to output."""
  return [params[layer_name(i)] for i in range(len(params))]


def from_dense_layers(layers):
  """The MLP param tree of `dense_layers`' list (the inverse of `dense_layers`)."""
  return {layer_name(i): layer for i, layer in enumerate(layers)}


# ------------------------------------------------------------ facts derived from the model


def _example_input():
  return jnp.zeros((1, *INPUT_SHAPE), jnp.float32)


@functools.lru_cache(maxsize=64)
def param_shapes(model):
  """The model's parameter tree as shapes (jax.ShapeDtypeStruct leaves); computes nothing."""
  return jax.eval_shape(model.init, jax.random.key(0), _example_input())['params']


def count_params(params):
  """The number of parameters (scalars) in a parameter tree, of arrays or of shapes."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


@functools.lru_cache(maxsize=64)
def layers(model):
  """The model's layers (its direct submodules) in call order, as
  [(name, type name, output shape without the batch axis, parameter count)]."""
  kinds = {}

  def capture(module, method):  # Called as each submodule returns: records call order.
    top = method == '__call__' and len(module.scope.path) == 1
    if top:
      kinds[module.scope.path[0]] = type(module).__name__
    return top

  apply = functools.partial(model.apply, capture_intermediates=capture,
                            mutable=['intermediates'])
  params = param_shapes(model)
  _, state = jax.eval_shape(apply, {'params': params}, _example_input())
  outputs = state['intermediates']
  return tuple((name, kind, tuple(outputs[name]['__call__'][0].shape[1:]),
                count_params(params.get(name, {}))) for name, kind in kinds.items())


def layer_activations(model):
  """{layer name: activation} of the layers with parameters: the model's activation after
  each but the last, whose logits get the output activation."""
  weighted = [name for name, _, _, n in layers(model) if n]
  return {name: model.activation if name != weighted[-1] else OUTPUT_ACTIVATION
          for name in weighted}


def activation_bytes(model):
  """Bytes of one example's layer outputs (float32): what training keeps per example."""
  return sum(int(np.prod(shape)) for _, _, shape, _ in layers(model)) * 4


def architecture(model):
  """The model in one line, e.g. 'Flatten → Dense(128, relu) → Dense(10, softmax)'."""
  acts = layer_activations(model)
  return ' → '.join(f'{kind}({shape[-1]}, {acts[name]})' if name in acts else kind
                    for name, kind, shape, _ in layers(model))


def summary(model, name='mlp'):
  """The model's layers as a Keras `model.summary()`-like table (a string)."""
  acts = layer_activations(model)
  rows = [(f'{layer} ({kind}{", " + acts[layer] if layer in acts else ""})',
           f'(None, {", ".join(str(d) for d in shape)})', n)
          for layer, kind, shape, n in layers(model)]
  total = count_params(param_shapes(model))
  line = '=' * 66
  out = [f'Model: "{name}" ({type(model).__name__}: {model.describe()})', line,
         f'{"Layer (type)":<32}{"Output Shape":<20}{"Param #":>14}', line]
  out += [f'{layer:<32}{shape:<20}{params:>14,}' for layer, shape, params in rows]
  out += [line, f'Total params: {total:,} ({total * 4 / 1024:.2f} KB)',
          f'Trainable params: {total:,}', 'Non-trainable params: 0', line]
  return '\n'.join(out)
