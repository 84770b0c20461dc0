"""config.restore_best and config.early_stopping_patience: Keras's semantics, recorded, resumable."""

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


def _history(values):
  return [{'epoch': e, 'val_accuracy': v, 'loss': 1.0, 'accuracy': 0.5, 'val_loss': 1.0,
           'seconds': 1.0} for e, v in enumerate(values, 1)]


def test_best_is_the_first_strict_maximum_as_modelcheckpoint_saves():
  assert best_epoch.best_record(_history(VAL))['epoch'] == 9
  assert best_epoch.best_record(_history(VAL[:4]))['epoch'] == 2  # 0.70 twice: the first.
  assert best_epoch.best_record(_history([float('nan')] * 3)) is None
  assert [best_epoch.last_is_best(_history(VAL[:n])) for n in range(1, 6)] == [
      True, True, False, False, True]


@pytest.mark.parametrize('patience', [1, 2, 3])
def test_early_stopping_stops_where_keras_does(patience):
  keras = pytest.importorskip('keras')

  class Model:
    stop_training = False

  callback = keras.callbacks.EarlyStopping(monitor='val_accuracy', mode='max',  # As compiled
                                           patience=patience)  # with 'accuracy'.
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


def test_both_need_a_validation_split():
  config = tiny_config('/nowhere', validation_split=0.0, restore_best=True)
  assert any('need config.validation_split > 0' in p for p in validation.check_fields(config))
  config = tiny_config('/nowhere', early_stopping_patience=-1)
  assert any('early_stopping_patience=-1' in p for p in validation.check_fields(config))


def _train(config, workdir):
  with contextlib.redirect_stdout(io.StringIO()) as out:
    state = train.train_and_evaluate(config, workdir)
  return state, out.getvalue()


def _test_accuracy_of(params, config, tiny_data):
  """Test accuracy of `params`, evaluated apart from the run."""
  from digits_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  data = input_pipeline.load(config)
  state = ts.create_train_state(config, jax.random.key(0)).replace(params=params)
  mesh = parallel.make_mesh()
  batches = train.device_eval_batches(mesh, data.test_images, data.test_labels, 64)
  del tiny_data
  return train.evaluate(parallel.replicate(state, mesh), batches)['accuracy']


def test_restore_best_and_early_stopping_end_to_end(tiny_data, tmp_path):
  config = tiny_config(tiny_data, num_epochs=8, restore_best=True, early_stopping_patience=1,
                       learning_rate=0.02)
  workdir = str(tmp_path / 'run')
  _, log = _train(config, workdir)
  history = results.read_history(workdir)
  res = results.read_json(os.path.join(workdir, 'results.json'))
  best = best_epoch.best_record(history)
  assert res['restore_best'] and res['early_stopping_patience'] == 1
  assert res['evaluated_epoch'] == best['epoch'] == res['best_epoch']
  assert res['epochs_trained'] == len(history) == best['epoch'] + 1 < 8  # Patience 1.
  assert res['stopped_early_at_epoch'] == len(history)
  assert f'Early stopping after epoch {len(history)}' in log
  assert f'Restoring the weights of epoch {best["epoch"]}' in log
  # The evaluated parameters are the best epoch's, and load_trained returns them.
  _, state, _ = checkpoint.load_trained(workdir)
  assert _test_accuracy_of(state.params, config, tiny_data) == res['test_accuracy']
  # Rerunning the command trains nothing more and gives the same results.
  _, log = _train(config, workdir)
  assert 'Epoch ' not in log and len(results.read_history(workdir)) == len(history)
  assert results.read_json(os.path.join(workdir, 'results.json'))['test_accuracy'] == (
      res['test_accuracy'])


def test_restore_best_resumes_with_the_best_params(tiny_data, tmp_path):
  """A run extended from a checkpoint evaluates the same best epoch as one run straight."""
  config = tiny_config(tiny_data, num_epochs=4, restore_best=True, learning_rate=0.05)
  _train(config, str(tmp_path / 'straight'))
  short = tiny_config(tiny_data, num_epochs=2, restore_best=True, learning_rate=0.05)
  _train(short, str(tmp_path / 'resumed'))
  _train(config, str(tmp_path / 'resumed'))  # num_epochs may grow: continues from epoch 2.
  a, b = (results.read_json(os.path.join(tmp_path, w, 'results.json'))
          for w in ('straight', 'resumed'))
  assert a['evaluated_epoch'] == b['evaluated_epoch']
  assert a['test_accuracy'] == b['test_accuracy']
  params = [checkpoint.load_trained(str(tmp_path / w))[1].params for w in ('straight', 'resumed')]
  jax.tree.map(np.testing.assert_array_equal, *params)
