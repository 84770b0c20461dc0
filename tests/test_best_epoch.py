"""config.restore_best and config.early_stopping_patience: Keras's semantics, recorded,
resumable, and per replica in a many-seed run."""

import contextlib
import io
import os

import jax
import numpy as np
import pytest

from helpers import tiny_config
from digits_jax import best_epoch
from digits_jax import checkpoint
from digits_jax import parallel
from digits_jax import results
from digits_jax import train
from digits_jax import train_state as ts
from digits_jax import validation

VAL = [0.50, 0.70, 0.70, 0.65, 0.72, 0.72, 0.71, 0.71, 0.90, 0.89]
# Fast enough on the tiny data that validation accuracy saturates and early stopping acts.
# (Seeds 0, 1 and 2 stop after epochs 3, 3 and 4.)
KEEPING = dict(num_epochs=8, restore_best=True, early_stopping_patience=1,
               learning_rate=0.01, hidden_units=8)


def _history(values, seed=None):
  extra = {} if seed is None else {'seed': seed}
  return [{**extra, 'epoch': e, 'val_accuracy': v, 'loss': 1.0, 'accuracy': 0.5,
           'val_loss': 1.0, 'seconds': 1.0} for e, v in enumerate(values, 1)]


def test_best_is_the_first_strict_maximum_as_modelcheckpoint_saves():
  assert best_epoch.best_record(_history(VAL))['epoch'] == 9
  assert best_epoch.best_record(_history(VAL[:4]))['epoch'] == 2  # 0.70 twice: the first.
  assert best_epoch.best_record(_history([float('nan')] * 3)) is None
  history = _history(VAL[:5])
  records = [[r] for r in history]  # One replica: keep the params after epochs 1, 2, 5.
  assert [best_epoch.to_keep(r, history[:n], restore_best=True)[0]
          for n, r in enumerate(records, 1)] == [True, True, False, False, True]
  assert best_epoch.to_keep([None], history, restore_best=False).tolist() == [False]


@pytest.mark.slow
@pytest.mark.parametrize('patience', [1, 2, 3])
def test_early_stopping_stops_where_keras_does(patience):
  keras = pytest.importorskip('keras')

  class Model:
    stop_training = False

  callback = keras.callbacks.EarlyStopping(monitor='val_accuracy', mode='max',
                                           patience=patience)
  callback.set_model(Model())
  callback.on_train_begin()
  keras_stop = None
  for epoch, value in enumerate(VAL):
    callback.on_epoch_end(epoch, {'val_accuracy': value})
    if callback.model.stop_training:
      keras_stop = epoch + 1
      break
  ours = next((n for n in range(1, len(VAL) + 1)
               if best_epoch.stopped_early(_history(VAL[:n]), patience)), None)
  assert ours == keras_stop


def test_each_seed_stops_on_its_own_log():
  history = _history(VAL[:4], seed=5) + _history([0.5, 0.6, 0.7, 0.8], seed=6)
  assert best_epoch.active(history, [5, 6], patience=2) == [False, True]
  assert best_epoch.active(history, [5, 6], patience=0) == [True, True]


def test_keep_picks_replicas_and_copies():
  params = {'w': np.arange(6.0).reshape(3, 2)}
  kept = {'w': -np.ones((3, 2))}
  out = best_epoch.keep(np.array([True, False, True]), params, kept)
  np.testing.assert_array_equal(out['w'], [[0, 1], [-1, -1], [4, 5]])


def test_both_need_a_validation_split():
  config = tiny_config('/nowhere', validation_split=0.0, restore_best=True)
  assert any('config.validation_split > 0' in p for p in validation.check_fields(config))
  config = tiny_config('/nowhere', early_stopping_patience=-1)
  assert any('early_stopping_patience=-1' in p for p in validation.check_fields(config))


def _train(config, workdir):
  with contextlib.redirect_stdout(io.StringIO()) as out:
    state = train.train_and_evaluate(config, workdir)
  return state, out.getvalue()


def _results(workdir):
  return results.read_json(os.path.join(workdir, results.FILES['results']))


def _test_accuracies(state, config):
  """Each replica's test accuracy with `state`'s parameters, evaluated apart from the run."""
  from digits_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  data = input_pipeline.load(config)
  mesh = parallel.make_mesh(ts.num_replicas(state))
  batches = train.device_eval_batches(mesh, data.test_images, data.test_labels, 64)
  return [m['accuracy'] for m in train.evaluate(parallel.place_replicas(state, mesh),
                                                batches)]


@pytest.mark.slow
def test_restore_best_and_early_stopping_end_to_end(tiny_data, tmp_path):
  config = tiny_config(tiny_data, **KEEPING)
  workdir = str(tmp_path / 'run')
  returned, log = _train(config, workdir)
  history = results.read_history(workdir)
  res = _results(workdir)
  best = best_epoch.best_record(history)
  assert res['restore_best'] and res['early_stopping_patience'] == 1
  assert res['evaluated_epoch'] == best['epoch'] == res['best_epoch']
  assert res['epochs_trained'] == len(history) == best['epoch'] + 1 < 8  # Patience 1.
  assert res['stopped_early_at_epoch'] == len(history)
  assert f'Early stopping after epoch {len(history)}' in log
  assert f'Testing the weights of epoch {best["epoch"]}' in log
  assert res['timings']['steps'] == 15 * len(history)  # 480 training images, batch 32.
  # The evaluated parameters are the best epoch's; the run returns them, load_trained too.
  _, state, _ = checkpoint.load_trained(workdir)
  jax.tree.map(np.testing.assert_array_equal, state.params, returned.params)
  assert _test_accuracies(state, config) == [res['test_accuracy']]
  # Rerunning the command trains nothing more and gives the same results.
  _, log = _train(config, workdir)
  assert 'Epoch ' not in log and len(results.read_history(workdir)) == len(history)
  assert _results(workdir)['test_accuracy'] == res['test_accuracy']


@pytest.mark.slow
def test_restore_best_resumes_with_the_best_params(tiny_data, tmp_path):
  """A run extended from a checkpoint evaluates the same best epoch as one run straight."""
  config = tiny_config(tiny_data, num_epochs=4, restore_best=True, learning_rate=0.05)
  _train(config, str(tmp_path / 'straight'))
  short = tiny_config(tiny_data, num_epochs=2, restore_best=True, learning_rate=0.05)
  _train(short, str(tmp_path / 'resumed'))
  _train(config, str(tmp_path / 'resumed'))  # num_epochs may grow: continues from epoch 2.
  a, b = (_results(str(tmp_path / w)) for w in ('straight', 'resumed'))
  assert a['evaluated_epoch'] == b['evaluated_epoch']
  assert a['test_accuracy'] == b['test_accuracy']
  params = [checkpoint.load_trained(str(tmp_path / w))[1].params
            for w in ('straight', 'resumed')]
  jax.tree.map(np.testing.assert_array_equal, *params)


@pytest.mark.slow
def test_replicas_keep_and_stop_like_their_single_seed_runs(tiny_data, tmp_path):
  """num_seeds=3: each replica's history, evaluated epoch, stop and test results are its
  one-seed run's, though the replicas stop at different epochs."""
  many_config = tiny_config(tiny_data, **KEEPING, num_seeds=3, cpu_kernel='off')
  _, log = _train(many_config, str(tmp_path / 'many'))
  many = _results(str(tmp_path / 'many'))
  rows = results.read_history(str(tmp_path / 'many'), all_seeds=True)
  for k in range(3):
    single_dir = str(tmp_path / f'seed{k}')
    _train(tiny_config(tiny_data, **KEEPING, seed=k, cpu_kernel='off'), single_dir)
    single = _results(single_dir)
    for key in results.KEPT_FIELDS + ('best_epoch',):
      assert many['per_seed'][key][k] == single[key], key
    assert many['per_seed']['test_loss'][k] == pytest.approx(single['test_loss'], rel=1e-5)
    # (epoch, val_accuracy) pairs; pytest.approx compares flat sequences, not dicts in a list.
    got = [(r['epoch'], r['val_accuracy']) for r in rows if r['seed'] == k]
    want = [(r['epoch'], r['val_accuracy']) for r in results.read_history(single_dir)]
    assert [e for e, _ in got] == [e for e, _ in want]
    assert [a for _, a in got] == pytest.approx([a for _, a in want], rel=1e-5)
  assert len(set(many['per_seed']['epochs_trained'])) > 1, 'pick data where seeds differ'
  assert 'the other seeds train on' in log
  _, state, _ = checkpoint.load_trained(str(tmp_path / 'many'))
  assert _test_accuracies(state, many_config) == many['per_seed']['test_accuracy']
