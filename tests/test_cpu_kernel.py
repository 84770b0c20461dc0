"""The fused CPU kernel: same math as the XLA scan, deterministic, and used only where it applies."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from digits_jax import cpu_kernel
from digits_jax import parallel
from digits_jax import results
from digits_jax import steps as steps_lib
from digits_jax import train
from digits_jax import train_state as ts
from digits_jax import validation
from helpers import tiny_config


def _config(**kw):
  config = default.get_config()
  for field, value in kw.items():  # Fields not in configs/default.py (yet) too.
    config[field] = value
  return config


def _block(config, steps, num_images=300, seed=0, masked_tail=0):
  """Sparse uint8 images (most pixels 0, as in MNIST), labels, and a block's index/mask."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (num_images, 28, 28), dtype=np.uint8)
  images[images < 180] = 0
  labels = rng.integers(0, 10, num_images).astype(np.int32)
  index = rng.integers(0, num_images, (steps, config.batch_size)).astype(np.int32)
  mask = np.ones((steps, config.batch_size), bool)
  if masked_tail:
    mask[-1, -masked_tail:] = False  # A partial last batch.
  return tuple(jnp.asarray(a) for a in (images, labels, index, mask))


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


@pytest.mark.parametrize('kw, masked_tail', [
    (dict(batch_size=5, hidden_units=24), 0),  # Variant 6's shape, smaller.
    (dict(batch_size=7, hidden_units=20, num_hidden_layers=2), 3),
    (dict(batch_size=3, hidden_units=17, num_hidden_layers=3, learning_rate=3e-3), 1),
])
def test_block_equals_xla_scan(kw, masked_tail):
  config = _config(**kw)
  args = _block(config, steps=12, masked_tail=masked_tail)
  want, want_sums = ts.train_steps_indexed(ts.create_train_state(config, jax.random.key(1)), *args)
  got, got_sums = cpu_kernel.train_steps_indexed(
      ts.create_train_state(config, jax.random.key(1)), *args, cpu_kernel.hyperparams(config))
  assert int(got.step) == int(want.step) == 12
  assert int(got.opt_state.count) == int(want.opt_state.count) == 12
  assert float(got_sums['count']) == float(want_sums['count'])
  assert float(got_sums['correct']) == float(want_sums['correct'])
  np.testing.assert_allclose(float(got_sums['loss']), float(want_sums['loss']), rtol=1e-5)
  # Only the order of float additions differs: states agree to rounding, normwise.
  for got_tree, want_tree in ((got.params, want.params), (got.opt_state.mu, want.opt_state.mu),
                              (got.opt_state.nu, want.opt_state.nu)):
    g, w = _flat(got_tree), _flat(want_tree)
    assert np.max(np.abs(g - w)) <= 1e-4 * np.max(np.abs(w)), np.max(np.abs(g - w))
  # ...and training moved them: the comparison is not of two untouched states.
  start = ts.create_train_state(config, jax.random.key(1))
  assert np.max(np.abs(_flat(got.params) - _flat(start.params))) > 1e-3


def test_one_and_two_threads_give_identical_bits():
  config = _config(batch_size=6, hidden_units=40, num_hidden_layers=2)
  args = _block(config, steps=40)
  runs = []
  for threads in (1, 2, 2, 2):
    state = ts.create_train_state(config, jax.random.key(0))
    state, sums = cpu_kernel.train_steps_indexed(state, *args,
                                                 cpu_kernel.hyperparams(config, threads))
    runs.append((_flat(state.params), _flat(state.opt_state.nu), float(sums['loss'])))
  for other in runs[1:]:
    np.testing.assert_array_equal(other[0], runs[0][0])
    np.testing.assert_array_equal(other[1], runs[0][1])
    assert other[2] == runs[0][2]


def test_index_out_of_range_is_an_error():
  config = _config(batch_size=4, hidden_units=8)
  images, labels, index, mask = _block(config, steps=2, num_images=50)
  index = index.at[1, 2].set(50)
  with pytest.raises(Exception, match='out of range'):
    jax.block_until_ready(cpu_kernel.train_steps_indexed(
        ts.create_train_state(config, jax.random.key(0)), images, labels, index, mask,
        cpu_kernel.hyperparams(config)))


@pytest.mark.parametrize('kw, reason', [
    (dict(cpu_kernel='off'), 'config.cpu_kernel is off'),
    (dict(optimizer='optax_adam'), "config.optimizer='keras_adam' only (not 'optax_adam')"),
    (dict(compute_dtype='bfloat16'), "config.compute_dtype='float32' only"),
    (dict(data_on_device=False), 'config.data_on_device=True only'),
    (dict(batch_size=64), 'auto uses it up to batch 32'),
    (dict(activation='tanh'), "config.activation='relu' only (not 'tanh')"),
    (dict(dropout_rate=0.1), 'config.dropout_rate=0 only (not 0.1)'),  # A field to come.
    (dict(model='cnn'), "config.model='mlp' only (not 'cnn')"),
    (dict(label_smoothing=0.1), 'config.label_smoothing is in neither'),  # A new idea.
])
def test_used_only_where_it_applies(kw, reason):
  mesh = parallel.make_mesh()
  assert cpu_kernel.unusable_because(_config(), mesh) is None  # One CPU device: used.
  assert reason in cpu_kernel.unusable_because(_config(**kw), mesh)
  assert steps_lib.select_steps(_config(), mesh) == steps_lib.StepImpl(
      'kernel', threads=cpu_kernel.default_threads(), kernel_layout='lanes')
  chosen = steps_lib.select_steps(_config(**kw), mesh)
  assert chosen.name == ('xla_scan' if kw.get('data_on_device', True) else 'xla_feed')
  assert chosen.threads is None
  if kw.get('cpu_kernel') == 'off':  # Asked for, not a fallback.
    assert chosen.fallback_reason is None
  else:
    assert reason in chosen.fallback_reason


def test_on_forces_it_beyond_the_auto_batch_limit():
  config = _config(batch_size=64, cpu_kernel='on')
  assert cpu_kernel.unusable_because(config, parallel.make_mesh()) is None
  assert steps_lib.select_steps(config, parallel.make_mesh()).name == 'kernel'


def test_selecting_never_builds(monkeypatch):
  def fail():
    raise AssertionError('select_steps built the kernel')
  monkeypatch.setattr(cpu_kernel, 'load', fail)
  monkeypatch.setattr(cpu_kernel, 'build', fail)
  assert steps_lib.select_steps(_config(), parallel.make_mesh()).name == 'kernel'


def test_a_failed_build_under_on_is_a_config_error(monkeypatch):
  def fail():
    raise cpu_kernel.KernelBuildError('no C++ compiler')
  monkeypatch.setattr(cpu_kernel, 'load', fail)
  impl = steps_lib.select_steps(_config(cpu_kernel='on'), parallel.make_mesh())
  with pytest.raises(validation.ConfigError, match='cpu_kernel=on.*no C.. compiler'):
    steps_lib.build(impl, _config(cpu_kernel='on'))


def test_required_but_unusable_stops_before_training(tiny_data, tmp_path):
  config = tiny_config(tiny_data, cpu_kernel='on', optimizer='optax_adam')
  with pytest.raises(validation.ConfigError, match="cpu_kernel=on.*'keras_adam' only"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not list(tmp_path.iterdir())  # Refused before anything was written.


def test_a_failed_build_names_the_compiler_command(monkeypatch, tmp_path):
  monkeypatch.setenv('DIGITS_JAX_KERNEL_CACHE', str(tmp_path))
  monkeypatch.setenv('CXX', 'false')
  with pytest.raises(cpu_kernel.KernelBuildError, match='false .*mlp_adam_cpu.cc'):
    cpu_kernel.build()
  assert not list(tmp_path.iterdir())  # No half-written library is left in the cache.


def test_an_unwritable_cache_names_the_cache_not_the_workdir(monkeypatch, tmp_path):
  """Issue 21 item 6: the cache folder and its variable are named (root ignores modes, so a
  plain file stands where the folder should be)."""
  (tmp_path / 'file').write_text('x')
  monkeypatch.setenv('DIGITS_JAX_KERNEL_CACHE', str(tmp_path / 'file' / 'cache'))
  with pytest.raises(cpu_kernel.KernelBuildError,
                     match='cache folder .*file/cache.* cannot be written.*DIGITS_JAX_KERNEL_CACHE'):
    cpu_kernel.build()


def test_a_build_for_other_cpu_features_is_not_loaded(monkeypatch, tmp_path):
  monkeypatch.setenv('DIGITS_JAX_KERNEL_CACHE', str(tmp_path))
  monkeypatch.setattr(cpu_kernel, 'cpu_features', lambda compiler: 'avx512f avx2 sse4_2')
  other = cpu_kernel.library_path()
  with open(other, 'wb') as f:  # What an AVX-512 machine sharing this home folder built.
    f.write(b'not for this CPU')
  assert cpu_kernel.build() == other  # Same features: the cached build is used.
  monkeypatch.setattr(cpu_kernel, 'cpu_features', lambda compiler: 'avx2 sse4_2')
  assert cpu_kernel.library_path() != other
  monkeypatch.setenv('CXX', 'false')  # The build for this CPU is attempted (and fails here).
  with pytest.raises(cpu_kernel.KernelBuildError, match='false '):
    cpu_kernel.build()
  assert os.listdir(tmp_path) == [os.path.basename(other)]


def test_the_cache_key_holds_this_cpus_features():
  features = cpu_kernel.cpu_features(cpu_kernel._compiler())  # pylint: disable=protected-access
  assert features.strip()
  if os.path.exists('/proc/cpuinfo') and 'sse2' in open('/proc/cpuinfo').read():  # x86-64.
    assert 'msse2' in features or 'sse2' in features


@pytest.mark.slow
def test_auto_falls_back_to_xla_when_the_build_fails(tiny_data, tmp_path, monkeypatch):
  def fail():
    raise cpu_kernel.KernelBuildError('no C++ compiler')
  monkeypatch.setattr(cpu_kernel, 'load', fail)
  train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1), str(tmp_path))
  timings = results.read_json(tmp_path / results.FILES['results'])['timings']
  assert timings['step_impl'] == 'xla_scan' and timings['kernel_threads'] is None
  assert 'no C++ compiler' in timings['kernel_fallback']


def test_training_with_and_without_the_kernel_agrees(tiny_data, tmp_path):
  runs = {}
  for choice in ('on', 'off'):
    workdir = tmp_path / choice
    runs[choice] = train.train_and_evaluate(tiny_config(tiny_data, cpu_kernel=choice),
                                            str(workdir))
    runs[choice + '_history'] = results.read_history(workdir)
    runs[choice + '_by'] = results.read_json(workdir / results.FILES['results'])['timings']
  assert runs['on_by']['step_impl'] == 'kernel' and runs['on_by']['kernel_threads'] >= 1
  assert runs['on_by']['kernel_layout'] == 'lanes' and runs['off_by']['kernel_layout'] is None
  assert runs['off_by']['step_impl'] == 'xla_scan'
  assert runs['off_by']['kernel_threads'] is None and runs['off_by']['kernel_fallback'] is None
  np.testing.assert_allclose(_flat(runs['on'].params), _flat(runs['off'].params), rtol=1e-3,
                             atol=1e-5)
  for a, b in zip(runs['on_history'], runs['off_history']):
    assert a['accuracy'] == pytest.approx(b['accuracy'], abs=1e-3)
    assert a['val_loss'] == pytest.approx(b['val_loss'], rel=1e-3)


def _assert_same_leaves(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope='module')
def three_replicas():
  """A v6-shaped block of three replicas' own batches, and each replica's single run."""
  config = _config(batch_size=5, hidden_units=24)
  images, labels, index, mask = _block(config, steps=10, masked_tail=2)
  rng = np.random.default_rng(1)
  index = jnp.stack([index, jnp.asarray(rng.permutation(np.asarray(index))), index[::-1]])
  mask = jnp.stack([mask, mask[::-1], mask])
  singles = [cpu_kernel.train_steps_indexed(
      ts.create_train_state(config, jax.random.key(k)), images, labels, index[k], mask[k],
      cpu_kernel.hyperparams(config, 2)) for k in range(3)]
  return config, (images, labels, index, mask), singles


# Three replicas on two threads: two at once and the third on its lanes; on one thread, in turn.
@pytest.mark.parametrize('layout', cpu_kernel.LAYOUTS)
@pytest.mark.parametrize('threads', [1, 2, 3])
def test_stacked_kernel_replicas_are_bit_identical_to_single_runs(three_replicas, layout,
                                                                  threads):
  config, (images, labels, index, mask), singles = three_replicas
  hp = cpu_kernel.hyperparams(config, threads, layout)
  stacked, sums = cpu_kernel.train_steps_indexed_stacked(
      ts.create_train_states(config, [0, 1, 2]), images, labels, index, mask, hp)
  for k, (single, single_sums) in enumerate(singles):
    _assert_same_leaves(ts.replica(stacked, k), single)
    jax.tree.map(np.testing.assert_array_equal, ts.replica(sums, k), single_sums)
  assert len({float(loss) for loss in sums['loss']}) == 3  # Three different models.
  one, _ = cpu_kernel.train_steps_indexed_stacked(
      ts.create_train_states(config, [1]), images, labels, index[1:2], mask[1:2], hp)
  _assert_same_leaves(ts.replica(one, 0), ts.replica(stacked, 1))


def test_many_replicas_run_one_per_thread(monkeypatch):
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: set(range(8)))
  assert [cpu_kernel.default_threads(n) for n in (1, 2, 4, 16)] == [2, 2, 4, 8]
  mesh = parallel.make_mesh()
  one = steps_lib.select_steps(_config(), mesh)
  assert (one.threads, one.kernel_layout) == (2, 'lanes')
  assert one.describe() == 'fused CPU kernel (2 thread(s))'
  many = steps_lib.select_steps(_config(num_seeds=4), mesh)
  assert (many.threads, many.replicas, many.kernel_layout) == (4, 4, 'replica_per_thread')
  assert many.describe() == ('fused CPU kernel (4 thread(s), 4 replicas in one call, one per '
                             'thread at a time)')
  assert many.timings() == {'step_impl': 'kernel', 'kernel_threads': 4,
                            'kernel_layout': 'replica_per_thread', 'kernel_fallback': None,
                            'kernel_check': None, 'kernel_check_seconds': None}
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0})  # One CPU: nothing to share.
  alone = steps_lib.select_steps(_config(num_seeds=4), mesh)
  assert (alone.threads, alone.kernel_layout) == (1, 'lanes')
  assert alone.describe() == 'fused CPU kernel (1 thread(s), on each of 4 replicas in turn)'
  assert steps_lib.select_steps(_config(num_seeds=4, cpu_kernel='off'), mesh).timings()[
      'kernel_layout'] is None


def test_the_cache_key_changes_with_the_source(monkeypatch, tmp_path):
  before = cpu_kernel.library_path()
  edited = tmp_path / 'mlp_adam_cpu.cc'
  with open(cpu_kernel.SOURCE) as f:
    edited.write_text(f.read() + '\n// An edit.\n')
  monkeypatch.setattr(cpu_kernel, 'SOURCE', str(edited))
  assert cpu_kernel.library_path() != before
