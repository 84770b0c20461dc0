"""The fused kernel is a guest: it runs only what its contract lists, and proves itself on
the run's first steps against the model's own step, standing aside (with the reason in the
console and results.json) when a code edit made it wrong."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from digits_jax import cpu_kernel
from digits_jax import models
from digits_jax import parallel
from digits_jax import results
from digits_jax import steps as steps_lib
from digits_jax import train
from digits_jax import train_state as ts
from digits_jax import validation
from helpers import tiny_config


def test_every_config_field_is_implemented_or_neutral():
  fields = set(default.get_config().keys())
  implemented = set(cpu_kernel.IMPLEMENTS)
  assert not implemented & cpu_kernel.NEUTRAL
  assert fields <= implemented | cpu_kernel.NEUTRAL, sorted(
      fields - implemented - cpu_kernel.NEUTRAL)
  assert cpu_kernel.NEUTRAL <= fields  # No stale entry.
  for field in implemented - fields:  # Fields to come: a config without one means this.
    assert cpu_kernel.IMPLEMENTS[field].default is not None, field


def test_a_field_missing_from_a_config_means_its_default():
  old = {k: v for k, v in default.get_config().to_dict().items() if k != 'activation'}
  assert cpu_kernel.unusable_because(ml_collections.ConfigDict(old), parallel.make_mesh()) is None


def test_other_declared_metrics_make_it_stand_aside(monkeypatch):
  assert cpu_kernel.reference_metrics() == ('loss', 'correct', 'count')
  top2 = ts.Metric('top2', 'top2_correct', lambda logits, labels, mask: jnp.sum(mask), 'Top-2')
  monkeypatch.setattr(ts, 'METRICS', ts.METRICS + (top2,))  # A metric declared once.
  why = cpu_kernel.unusable_because(default.get_config(), parallel.make_mesh())
  assert why == ('it computes the metric sums loss, correct, count only, and the train step '
                 'declares loss, correct, top2_correct, count')
  assert steps_lib.select_steps(default.get_config(), parallel.make_mesh()).name == 'xla_scan'


def _state(params, mu):
  opt = ts.KerasAdamState(jnp.zeros([], jnp.int32), mu, mu)
  return ts.TrainState(step=0, apply_fn=None, params=params, tx=None, opt_state=opt)


def test_disagreement_beyond_rounding_only():
  p = {'w': np.linspace(-1, 1, 50, dtype=np.float32)}
  sums = {'loss': np.float32(100), 'correct': np.float32(30), 'count': np.float32(40)}
  near = {'w': p['w'] * np.float32(1 + 1e-6)}
  assert cpu_kernel.disagreement(_state(near, p), sums, _state(p, p), sums) is None
  assert cpu_kernel.disagreement(_state(p, p), {**sums, 'correct': np.float32(31)},
                                 _state(p, p), sums) is None  # One near-tie.
  far = {'w': p['w'] + np.float32(1e-3)}
  assert cpu_kernel.disagreement(_state(far, p), sums, _state(p, p), sums) == (
      'max |kernel - reference| / max |reference|: params 1.0e-03 > 1e-04')
  assert cpu_kernel.disagreement(
      _state(p, p), {**sums, 'loss': np.float32(90), 'correct': np.float32(20)},
      _state(p, p), sums) == 'loss sum 90 vs 100; correct 20 vs 30 of 40 vs 40'
  nan = {'w': p['w'] * np.nan}
  assert 'params nan' in cpu_kernel.disagreement(_state(nan, p), sums, _state(p, p), sums)


@pytest.fixture
def checks(tmp_path, monkeypatch):
  """A fresh memory of passed self-checks; jax's traces forgotten before and after (a
  monkeypatched activation leaves the model's hash unchanged)."""
  monkeypatch.setattr(cpu_kernel, 'checks_dir', lambda: str(tmp_path / 'self-checks'))
  jax.clear_caches()
  yield tmp_path / 'self-checks'
  jax.clear_caches()


def _run(config, workdir):
  state = train.train_and_evaluate(config, str(workdir))
  return state, results.read_json(workdir / results.FILES['results'])['timings']


@pytest.mark.slow
def test_a_code_edit_of_the_activation_falls_back_to_xla(tiny_data, tmp_path, checks,
                                                         monkeypatch, capsys):
  monkeypatch.setitem(models.ACTIVATIONS, 'relu', nn.tanh)  # An edit of models.py.
  config = tiny_config(tiny_data, num_epochs=1)
  assert cpu_kernel.unusable_because(config, parallel.make_mesh()) is None  # Lists can't see it.
  state, timings = _run(config, tmp_path / 'auto')
  assert timings['step_impl'] == 'xla_scan' and timings['kernel_check'] is None
  assert timings['kernel_fallback'].startswith(
      "self-check failed, kernel against the model's own step over 4 steps (max |kernel - "
      'reference| / max |reference|: params ')
  assert 'XLA scan (fused CPU kernel not used: self-check failed' in capsys.readouterr().out
  reference, _ = _run(tiny_config(tiny_data, num_epochs=1, cpu_kernel='off'), tmp_path / 'off')
  jax.tree.map(np.testing.assert_array_equal, state, reference)
  assert not checks.exists() or not list(checks.iterdir())  # A failure is not remembered.
  with pytest.raises(validation.ConfigError, match='cpu_kernel=on, but .*self-check failed'):
    train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1, cpu_kernel='on'),
                             str(tmp_path / 'on'))


@pytest.mark.slow  # Three tiny runs (and two with two seeds), ~5 s each.
@pytest.mark.parametrize('num_seeds', [1, 2])
def test_a_passed_check_changes_nothing_and_is_remembered(tiny_data, tmp_path, checks,
                                                          monkeypatch, num_seeds):
  config = tiny_config(tiny_data, num_epochs=1, cpu_kernel='on', num_seeds=num_seeds)
  first, timings = _run(config, tmp_path / 'first')
  assert (timings['step_impl'], timings['kernel_check']) == ('kernel', 'passed')
  assert len(list(checks.iterdir())) == 1
  again, timings = _run(config, tmp_path / 'again')
  assert (timings['step_impl'], timings['kernel_check']) == ('kernel', 'passed before')
  monkeypatch.setattr(steps_lib.BlockRunner, 'checked', lambda self, state, progress: self)
  unchecked, timings = _run(config, tmp_path / 'unchecked')
  assert timings['kernel_check'] is None
  for other in (again, unchecked):  # The run's state went through the check untouched.
    jax.tree.map(np.testing.assert_array_equal, first, other)


@pytest.mark.parametrize('name', sorted(models.ACTIVATIONS))
def test_the_activation_field_reaches_the_model(name):
  config = default.get_config()
  config.update(dict(hidden_units=8, num_hidden_layers=2, activation=name))
  model = models.create_model(config)
  x = jax.random.uniform(jax.random.key(0), (3, 28, 28))
  params = model.init(jax.random.key(1), x)['params']
  h = x.reshape(3, -1)
  for i in range(2):
    h = models.ACTIVATIONS[name](h @ params[f'dense_{i}']['kernel'] + params[f'dense_{i}']['bias'])
  want = h @ params['dense_2']['kernel'] + params['dense_2']['bias']
  np.testing.assert_allclose(model.apply({'params': params}, x), want, rtol=1e-5, atol=1e-6)
