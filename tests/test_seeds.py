"""Many seeds in one run: replica k is the run with seed S + k; per-seed outputs; one seed as before."""

import json
import os

import jax
import numpy as np
import pytest

from helpers import tiny_config
from digits_jax import checkpoint
from digits_jax import cpu_kernel
from digits_jax import results
from digits_jax import train
from digits_jax import train_state as ts
from digits_jax import workdir as workdir_lib

SEED = 2
# 480 training images in batches of 24: an epoch of 20 steps.
SHORT = dict(num_epochs=1, batch_size=24, steps_per_call=8)


def _run(data_dir, workdir, **overrides):
  config = tiny_config(data_dir, **{**SHORT, 'seed': SEED, **overrides})
  state = train.train_and_evaluate(config, str(workdir))
  return state, results.read_json(os.path.join(workdir, results.FILES['results']))


@pytest.fixture(scope='module', params=['off', 'auto'], ids=['xla', 'kernel'])
def three_and_singles(request, tiny_data, tmp_path_factory):
  """A num_seeds=3 run and the three single-seed runs with seeds SEED..SEED+2."""
  root = tmp_path_factory.mktemp(f'seeds_{request.param}')
  many = _run(tiny_data, root / 'many', num_seeds=3, cpu_kernel=request.param)
  singles = [_run(tiny_data, root / f'seed{k}', seed=SEED + k, cpu_kernel=request.param)
             for k in range(3)]
  return request.param, root, many, singles


def test_replica_k_is_the_run_with_seed_s_plus_k(three_and_singles):
  kernel, _, (state, res), singles = three_and_singles
  assert res['seeds'] == [SEED, SEED + 1, SEED + 2]
  assert res['timings']['step_impl'] == ('kernel' if kernel == 'auto' else 'xla_scan')
  if kernel == 'auto':  # Where the CPUs allow, the replicas ran one per thread.
    threads = res['timings']['kernel_threads']
    assert res['timings']['kernel_layout'] == cpu_kernel.default_layout(3, threads)
  assert ts.num_replicas(state) == 3
  exact = kernel == 'auto'  # The kernel runs each replica through the single-seed program.
  for k, (single_state, single_res) in enumerate(singles):
    assert res['timings']['step_impl'] == single_res['timings']['step_impl']
    if exact:
      assert res['per_seed']['test_loss'][k] == single_res['test_loss']
    else:
      assert res['per_seed']['test_loss'][k] == pytest.approx(single_res['test_loss'],
                                                               rel=1e-5)
    assert res['per_seed']['misclassified_count'][k] == single_res['misclassified_count']
    for got, want in zip(jax.tree.leaves(ts.replica(state, k).params),
                         jax.tree.leaves(ts.replica(single_state, 0).params)):
      np.testing.assert_allclose(got, want, rtol=0 if exact else 1e-5,
                                 atol=0 if exact else 1e-6)
  # The replicas are different models: own initialisation, own shuffles.
  assert len(set(res['per_seed']['test_loss'])) == 3


def test_many_seed_outputs(three_and_singles):
  _, root, (_, res), singles = three_and_singles
  workdir = root / 'many'
  assert res['test_accuracy'] == res['per_seed']['test_accuracy'][0]  # Replica 0 on top.
  assert res['test_loss'] == singles[0][1]['test_loss'] or res['test_loss'] == pytest.approx(
      singles[0][1]['test_loss'], rel=1e-5)
  assert set(res['per_seed']) == set(results.per_seed_fields())
  assert all(len(v) == 3 for v in res['per_seed'].values())
  acc = np.asarray(res['per_seed']['test_accuracy'])
  summary = res['summary']['test_accuracy']
  assert summary['n'] == 3 and summary['mean'] == pytest.approx(acc.mean())
  assert summary['std'] == pytest.approx(acc.std(ddof=1))
  assert summary['ci95'][0] <= summary['mean'] <= summary['ci95'][1]
  rows = results.read_history(workdir, all_seeds=True)
  assert [(r['seed'], r['epoch']) for r in rows] == [(SEED + k, 1) for k in range(3)]
  assert results.read_history(workdir) == rows[:1]  # Readers of one run see replica 0.
  with open(workdir / results.FILES['history']) as f:
    assert f.readline().startswith('seed,epoch,')
  preds = results.read_predictions(workdir, replica=None)
  assert preds['probabilities'].shape == (3, 200, 10) and list(preds['seeds']) == res['seeds']
  for k in range(3):
    single = results.read_predictions(root / f'seed{k}')
    np.testing.assert_allclose(preds['probabilities'][k], single['probabilities'],
                               rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(results.read_predictions(workdir)['predicted'],
                                preds['predicted'][0])
  assert len(results.read_csv(workdir / results.FILES['misclassified_list'])) == (
      res['misclassified_count'])
  assert os.path.getsize(workdir / 'curves.png') > 0


def test_one_seed_outputs_keep_their_layout(three_and_singles):
  _, root, _, singles = three_and_singles
  workdir = root / 'seed0'
  res = singles[0][1]
  assert res['seeds'] == [SEED]
  assert res['per_seed']['test_loss'] == [res['test_loss']]
  assert res['summary']['test_accuracy'] == {
      'mean': res['test_accuracy'], 'std': 0.0, 'n': 1, 'min': res['test_accuracy'],
      'max': res['test_accuracy'], 'ci95': None}
  with open(workdir / results.FILES['history']) as f:
    assert f.readline().strip() == ','.join(results.history_fields())  # No seed column.
  preds = results.read_predictions(workdir, replica=None)
  assert sorted(preds) == ['labels', 'predicted', 'probabilities']
  assert preds['probabilities'].shape == (200, 10)


def test_load_trained_returns_the_stacked_state(three_and_singles, tiny_data):
  _, root, (state, _), _ = three_and_singles
  config, loaded, progress = checkpoint.load_trained(str(root / 'many'))
  assert config.num_seeds == 3 and progress['epoch'] == 1
  assert ts.num_replicas(loaded) == 3
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(jax.device_get(state))):
    np.testing.assert_array_equal(a, b)
  from digits_jax import idx  # pylint: disable=g-import-not-at-top
  images, _ = idx.load_split(tiny_data, 'test')
  probs = np.asarray(ts.predict(ts.replica(loaded, 1), images))
  np.testing.assert_allclose(
      probs, results.read_predictions(str(root / 'many'), replica=1)['probabilities'],
      rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_workdir_of_other_num_seeds_is_refused(tiny_data, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1, num_seeds=2), workdir)
  with pytest.raises(workdir_lib.WorkdirMismatchError, match='num_seeds: 2 -> 3'):
    train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1, num_seeds=3), workdir)


@pytest.mark.slow
def test_a_run_from_before_num_seeds_resumes_as_one_seed(tiny_data, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1), workdir)
  path = os.path.join(workdir, results.FILES['config'])
  old = results.read_json(path)
  del old['num_seeds']  # As config.json was written before the field existed.
  results.write_text(path, json.dumps(old))
  state = train.train_and_evaluate(tiny_config(tiny_data, num_epochs=2), workdir)
  assert int(ts.replica(state, 0).step) == 2 * 15


@pytest.mark.slow
def test_tf_data_feeding_trains_the_replicas_alike(tiny_data, tmp_path):
  runs = [_run(tiny_data, tmp_path / str(on_device), num_seeds=2, cpu_kernel='off',
               data_on_device=on_device)[0] for on_device in (True, False)]
  for a, b in zip(jax.tree.leaves(runs[0].params), jax.tree.leaves(runs[1].params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)  # Same batches, other programs.
  assert not np.allclose(*(np.asarray(jax.tree.leaves(runs[0].params)[0])[k] for k in (0, 1)))
