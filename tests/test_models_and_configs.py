"""Every config loads and matches the SPEC's table; exact parameter counts of every network;
models by name, and the facts (summary, counts, descriptions) derived from the model."""

import importlib
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from digits_jax import models
from digits_jax import results as results_lib
from digits_jax import train_state as ts
from digits_jax import validation
from digits_jax import workdir as workdir_lib
from helpers import REPO, run_main

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
  model = models.create_model(config)
  assert actual == models.count_params(models.param_shapes(model)) == TABLE[name][-1]
  assert f'Total params: {actual:,} ' in models.summary(model, name)


def test_summary_lists_layers_and_total():
  text = models.summary(models.create_model(load('default')), 'default')
  assert text.startswith('Model: "default" (MLP: 128)')
  rows = [line.split() for line in text.splitlines()[4:7]]
  assert rows == [['flatten', '(Flatten)', '(None,', '784)', '0'],
                  ['dense_0', '(Dense,', 'relu)', '(None,', '128)', '100,480'],
                  ['dense_1', '(Dense,', 'softmax)', '(None,', '10)', '1,290']]
  assert 'Total params: 101,770' in text


@pytest.mark.parametrize('model', sorted(models.MODELS))
def test_summary_says_the_configs_activation(model):
  """The summary reads the activation from the module built from the config (it once said
  relu after a tanh edit); the parameter counts do not change with it."""
  config = load('default')
  config.model, config.activation = model, 'tanh'
  built = models.create_model(config)
  text, arch = models.summary(built), models.architecture(built)
  assert 'dense_0 (Dense, tanh)' in text and 'relu' not in text and 'relu' not in arch
  width = config.hidden_units if model == 'mlp' else config.cnn.dense_units
  assert arch.endswith(f'Dense({width}, tanh) → Dense(10, softmax)')
  config.activation = 'relu'
  relu = models.create_model(config)
  assert models.count_params(models.param_shapes(relu)) == models.count_params(
      models.param_shapes(built))


def test_a_newly_registered_activation_shows_in_the_summary(monkeypatch):
  monkeypatch.setitem(models.ACTIVATIONS, 'swish', nn.swish)
  model = models.MLP((32, 16), activation='swish')
  assert 'dense_1 (Dense, swish)' in models.summary(model)
  assert models.architecture(model) == ('Flatten → Dense(32, swish) → Dense(16, swish) → '
                                        'Dense(10, softmax)')


def cnn_params(features, dense, channels=1, side=28):
  """The CNN's parameter count by hand: 3x3 convs with biases, each pool halving the side."""
  total = 0
  for f in features:
    total += (9 * channels + 1) * f
    channels, side = f, side // 2
  return total + (side * side * channels + 1) * dense + (dense + 1) * 10


@pytest.mark.parametrize('features, dense, expected', [
    ((32, 64), 128, 421_642), ((16, 32), 64, 105_866), ((4,), 8, 6_410),
    ((2, 2, 2), 5, 251)])
def test_exact_cnn_parameter_count(features, dense, expected):
  config = load('default')
  config.model, config.cnn.features, config.cnn.dense_units = 'cnn', features, dense
  state = jax.eval_shape(lambda: ts.create_train_state(config, jax.random.key(0)))
  actual = sum(x.size for x in jax.tree.leaves(state.params))
  assert actual == cnn_params(features, dense) == expected
  assert models.count_params(models.param_shapes(models.create_model(config))) == expected


def test_conv_is_flax_conv_with_same_padding():
  """models.Conv (a product over shifted copies, fast inside lax.scan on CPU) computes
  nn.Conv(f, (3, 3), padding='SAME') from the same parameters."""
  x = jax.random.uniform(jax.random.key(0), (2, 9, 7, 3))
  params = models.Conv(5).init(jax.random.key(1), x)
  reference = nn.Conv(5, (3, 3), padding='SAME')
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(
      jnp.shape, reference.init(jax.random.key(1), x))
  got, want = models.Conv(5).apply(params, x), reference.apply(params, x)
  assert got.shape == (2, 9, 7, 5)
  assert float(jnp.abs(got - want).max()) < 1e-5


def test_cnn_summary_is_its_layers():
  config = load('cnn')
  model = models.create_model(config)
  text = models.summary(model, 'cnn')
  names = [line.split()[0] for line in text.splitlines()[4:-5]]
  assert names == ['conv_0', 'pool_0', 'conv_1', 'pool_1', 'flatten', 'dense_0', 'dense_1']
  f0, f1 = config.cnn.features
  assert f'(None, 28, 28, {f0})' in text and f'(None, 7, 7, {f1})' in text
  assert f'(None, {7 * 7 * f1})' in text
  assert model.describe() == f'conv {f0}-{f1}, dense {config.cnn.dense_units}'
  assert models.architecture(model).startswith(f'Conv({f0}, relu) → MaxPool → Conv({f1}, relu)')


def test_cnn_config_loads_and_validates():
  config = load('cnn')
  assert (config.name, config.model, config.dataset) == ('cnn', 'cnn', 'mnist')
  assert validation.check_fields(config) == []
  assert load('cnn', 'fashion_mnist').dataset == 'fashion_mnist'


def test_a_cnn_run_resumes_under_its_own_config():
  """config.json turns config.cnn's tuple into a list inside a dict: still the same config."""
  config = load('cnn')
  saved = json.loads(json.dumps(config.to_dict()))
  assert workdir_lib.changed_fields(saved, config.to_dict()) == []
  config.cnn.features = (32, 32)
  assert workdir_lib.changed_fields(saved, config.to_dict()) == [
      "cnn: {'dense_units': 128, 'features': [32, 64]} -> "
      "{'dense_units': 128, 'features': (32, 32)}"]


def test_models_describe_themselves():
  config = load('v1')
  assert models.create_model(config).describe() == '256 x 256'
  assert models.create_model(load('default')).describe() == '128'


def test_model_names_come_from_the_registry():
  config = load('default')
  config.model = 'resnet'
  problems = validation.check_fields(config)
  assert problems == [f'config.model=\'resnet\': unknown model; use one of '
                      f'{", ".join(models.MODELS)}.']
  config.model, config.cnn.features = 'cnn', (8, 8, 8, 8, 8)
  assert 'config.cnn.features=(8, 8, 8, 8, 8): must be a tuple of 1 to 4' in ' '.join(
      validation.check_fields(config))


def test_memory_estimates_count_the_tree_and_replicas():
  """Training memory: params x 16 bytes and two float32 copies of every layer's outputs
  per example of the larger batch, per replica; a checkpoint: params x 12 per replica."""
  config = load('default')
  batch = max(config.batch_size, config.eval_batch_size)
  one = 101_770 * 16 + batch * (784 + 128 + 10) * 4 * 2
  assert validation.training_bytes(config) == one
  config.num_seeds = 3
  assert validation.training_bytes(config) == 3 * one
  assert validation.checkpoint_bytes(config) == 3 * 101_770 * 12
  config.model = 'cnn'
  model = models.create_model(config)
  assert validation.training_bytes(config) == 3 * (
      421_642 * 16 + batch * models.activation_bytes(model) * 2)


@pytest.mark.slow  # A subprocess that imports TensorFlow and compiles a CNN: ~10 s.
def test_cnn_trains_through_the_real_entry_point(tiny_data, tmp_path):
  """A tiny CNN, end to end: the summary, results.json's model fields and the report."""
  workdir = str(tmp_path / 'run')
  proc = run_main(tiny_data, workdir, model='cnn', write_report=True,
                  **{'cnn.features': '(4,)', 'cnn.dense_units': 8})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'conv_0 (Conv, relu)' in proc.stdout and 'Total params: 6,410' in proc.stdout
  res = results_lib.read_json(os.path.join(workdir, 'results.json'))
  assert (res['model'], res['model_description'], res['num_params']) == (
      'cnn', 'conv 4, dense 8', 6_410)
  assert res['model_architecture'].startswith('Conv(4, relu) → MaxPool → Flatten')
  assert res['test_accuracy'] > 0.5  # The tiny data's classes are visible patches.
  with open(os.path.join(workdir, 'report.html'), encoding='utf-8') as f:
    page = f.read()
  assert 'conv 4, dense 8' in page and 'conv_0 (Conv, relu)' in page
  assert 'drawing pad runs fully connected networks (MLPs) only' in page
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    assert json.load(f)['cnn'] == {'features': [4], 'dense_units': 8}
  image = tmp_path / 'dark_stroke.png'
  Image.fromarray(np.pad(np.full((40, 30), 20, np.uint8), 60, constant_values=240)).save(image)
  proc = subprocess.run([sys.executable, '-m', 'digits_jax.predict', f'--workdir={workdir}',
                         str(image), '--json'], cwd=REPO, capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert sum(json.loads(proc.stdout)['probabilities']) == pytest.approx(1, abs=1e-5)


@pytest.mark.slow  # Imports Keras (and TensorFlow): seconds.
def test_keras_initialisation_and_logits():
  model = models.MLP((8, 8))
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28)))['params']
  assert sorted(params) == ['dense_0', 'dense_1', 'dense_2']
  assert all(float(jnp.abs(params[k]['bias']).sum()) == 0 for k in params)  # Keras: zeros.
  limit = (6 / (784 + 8)) ** 0.5  # glorot_uniform bound of the first layer.
  assert float(jnp.abs(params['dense_0']['kernel']).max()) <= limit
  assert model.apply({'params': params}, jnp.ones((3, 28, 28))).shape == (3, 10)
