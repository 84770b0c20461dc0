"""Every config loads and matches the SPEC's table; exact parameter counts of every network."""

import importlib

import jax
import jax.numpy as jnp
import pytest

from digits_jax import models
from digits_jax import train_state as ts
from digits_jax import validation

# SPEC table 1: images shown, hidden units, hidden layers, epochs, batch, validation,
# test images to recognise, misclassified to show; and the exact parameter count.
TABLE = {
    'v1': (30, 256, 2, 3, 30, 0.10, (5, 25, 7), 10, 269_322),
    'v2': (35, 64, 1, 5, 25, 0.12, (8, 12, 35), 12, 50_890),
    'v3': (40, 32, 2, 7, 42, 0.15, (14, 20, 39), 15, 26_506),
    'v4': (45, 512, 1, 9, 15, 0.17, (30, 20, 40), 20, 407_050),
    'v5': (55, 300, 2, 12, 20, 0.18, (25, 17, 50), 22, 328_810),
    'v6': (60, 150, 1, 14, 5, 0.22, (22, 11, 59), 3, 119_260),
    'v7': (65, 400, 2, 6, 35, 0.25, (33, 44, 55), 7, 478_410),
    'v8': (70, 100, 1, 8, 28, 0.27, (11, 22, 44), 9, 79_510),
    'v9': (75, 450, 2, 2, 12, 0.30, (70, 50, 45), 6, 560_710),
    'default': (25, 128, 1, 10, 32, 0.20, (1,), 5, 101_770),
}


def load(name, arg=None):
  return importlib.import_module(f'configs.{name}').get_config(arg)


@pytest.mark.parametrize('name', sorted(TABLE))
def test_config_matches_table(name):
  show, units, layers, epochs, batch, val, indices, wrong, _ = TABLE[name]
  config = load(name)
  got = (config.num_show, config.hidden_units, config.num_hidden_layers, config.num_epochs,
         config.batch_size, config.validation_split, tuple(config.test_indices),
         config.num_misclassified_show)
  assert got == (show, units, layers, epochs, batch, val, indices, wrong)
  assert config.name == name and config.dataset == 'mnist'
  assert validation.check_fields(config) == []


@pytest.mark.parametrize('name', sorted(TABLE))
def test_fashion_mnist_argument(name):
  assert load(name, 'fashion_mnist').dataset == 'fashion_mnist'


@pytest.mark.parametrize('name', sorted(TABLE))
def test_exact_parameter_count(name):
  config = load(name)
  state = jax.eval_shape(lambda: ts.create_train_state(config, jax.random.key(0)))
  actual = sum(x.size for x in jax.tree.leaves(state.params))
  assert actual == models.count_params(models.hidden_sizes(config)) == TABLE[name][-1]


def test_summary_lists_layers_and_total():
  text = models.summary((128,))
  assert '(None, 784)' in text and '(None, 128)' in text and '(None, 10)' in text
  assert '100,480' in text and '1,290' in text and 'Total params: 101,770' in text


@pytest.mark.slow  # Imports Keras (and TensorFlow): seconds.
def test_keras_initialisation_and_logits():
  model = models.MLP((8, 8))
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28)))['params']
  assert sorted(params) == ['dense_0', 'dense_1', 'dense_2']
  assert all(float(jnp.abs(params[k]['bias']).sum()) == 0 for k in params)  # Keras: zeros.
  limit = (6 / (784 + 8)) ** 0.5  # glorot_uniform bound of the first layer.
  assert float(jnp.abs(params['dense_0']['kernel']).max()) <= limit
  assert model.apply({'params': params}, jnp.ones((3, 28, 28))).shape == (3, 10)
