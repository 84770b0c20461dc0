"""End to end: the real entry point on tiny data writes every result, consistently."""

import contextlib
import csv
import json
import os

import jax
import matplotlib.image
import numpy as np
import pytest

from helpers import NUM_TEST, run_main, tiny_config
from digits_jax import checkpoint
from digits_jax import idx
from digits_jax import input_pipeline
from digits_jax import outputs
from digits_jax import parallel
from digits_jax import results
from digits_jax import train
from digits_jax import train_state as ts

EXPECTED_FILES = ('config.json', 'model_summary.txt', 'history.csv', 'samples.png',
                  'recognized.png', 'misclassified.png', 'misclassified.csv', 'curves.png',
                  'confusion.png', 'predictions.npz', 'results.json', 'checkpoints')


@pytest.fixture(scope='module')
def finished_run(tiny_data, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('e2e') / 'run')
  out = run_main(tiny_data, workdir)
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir, out


def test_console_tells_the_lab_in_order(finished_run):
  _, out = finished_run
  marks = ['Devices:', 'Data: mnist from IDX files', 'Layer (type)', 'Total params: 12,730',
           'Epoch 1/2 - loss:', 'Epoch 2/2 - loss:', 'Test: loss', 'Test image 0: predicted',
           'probabilities: 0:', 'Test image 3:', 'Misclassified test images:', 'Wrote to']
  positions = [out.stdout.find(m) for m in marks]
  assert -1 not in positions, [m for m, p in zip(marks, positions) if p < 0]
  assert positions == sorted(positions)
  assert 'val_accuracy:' in out.stdout


def test_every_output_file_is_written_and_readable(finished_run):
  workdir, _ = finished_run
  for name in EXPECTED_FILES:
    assert os.path.exists(os.path.join(workdir, name)), name
  for name in EXPECTED_FILES:
    if name.endswith('.png'):
      image = matplotlib.image.imread(os.path.join(workdir, name))
      assert image.shape[0] > 50 and image.shape[1] > 50
  assert not [n for n in os.listdir(workdir) if n.startswith('.')]  # No temporary leftovers.
  history = results.read_history(workdir)
  assert [h['epoch'] for h in history] == [1, 2]
  assert history[1]['val_accuracy'] > 0.5  # The tiny data is learnable.
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['hidden_units'] == 16
  with open(os.path.join(workdir, 'model_summary.txt')) as f:
    assert 'Total params: 12,730' in f.read()


def test_results_agree_with_saved_predictions(finished_run):
  workdir, out = finished_run
  res = results.read_json(os.path.join(workdir, 'results.json'))
  preds = results.read_predictions(workdir)
  assert preds['probabilities'].shape == (NUM_TEST, 10)
  np.testing.assert_allclose(preds['probabilities'].sum(-1), 1.0, rtol=1e-5)
  _, labels = idx.load_split(res['data_source'].split(' in ', 1)[1], 'test')
  np.testing.assert_array_equal(preds['labels'], labels)
  wrong = int((preds['probabilities'].argmax(-1) != labels).sum())
  assert res['misclassified_count'] == wrong
  with open(os.path.join(workdir, 'misclassified.csv')) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == wrong
  assert all(int(r['true']) != int(r['predicted']) for r in rows)
  assert f'Misclassified test images: {wrong} of {NUM_TEST}' in out.stdout
  assert res['test_accuracy'] == pytest.approx(1 - wrong / NUM_TEST)
  assert [r['index'] for r in res['recognized']] == [0, 3]
  for key in ('num_params', 'test_loss', 'timings', 'versions', 'best_epoch', 'devices'):
    assert key in res
  assert res['num_params'] == 12_730


def test_checkpoint_restores_the_predictions(finished_run, tiny_data):
  workdir, _ = finished_run
  config, state, progress = checkpoint.load_trained(workdir)
  assert ts.num_replicas(state) == 1
  state = ts.replica(state, 0)
  assert progress['epoch'] == 2 and int(state.step) == 2 * 15
  images, _ = idx.load_split(tiny_data, 'test')
  probs = np.asarray(ts.predict(state, images))
  np.testing.assert_allclose(probs, results.read_predictions(workdir)['probabilities'],
                             rtol=1e-5, atol=1e-6)
  assert config.hidden_units == 16


def test_rerun_of_finished_run_does_not_retrain(finished_run, tiny_data):
  workdir, _ = finished_run
  before = results.read_history(workdir)
  out = run_main(tiny_data, workdir)
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'Resumed from the checkpoint at step 30 (epoch 2 done)' in out.stdout
  assert 'Epoch 1/2' not in out.stdout
  assert results.read_history(workdir) == before


def test_bad_flag_stops_before_training(tiny_data, tmp_path):
  out = run_main(tiny_data, str(tmp_path / 'w'), batch_size=0, validation_split=1.5)
  assert out.returncode != 0
  assert 'config.batch_size=0: must be an integer >= 1' in out.stderr
  assert 'config.validation_split=1.5: must be a number in [0.0, 1.0)' in out.stderr
  assert not os.path.exists(tmp_path / 'w')


@pytest.mark.slow
def test_device_data_and_tf_data_train_identically(tiny_data, tmp_path):
  a = train.train_and_evaluate(tiny_config(tiny_data, data_on_device=True, cpu_kernel='off'),
                               str(tmp_path / 'a'))
  b = train.train_and_evaluate(tiny_config(tiny_data, data_on_device=False),
                               str(tmp_path / 'b'))
  close = lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-8)
  jax.tree.map(close, a.params, b.params)  # Same batches; other programs, so up to rounding.
  assert results.read_history(tmp_path / 'a')[-1]['val_loss'] == pytest.approx(
      results.read_history(tmp_path / 'b')[-1]['val_loss'], rel=1e-6)


def test_only_process_zero_writes_files(tiny_data, tmp_path, monkeypatch):
  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  assert not parallel.is_main_process()
  workdir = tmp_path / 'w'
  os.makedirs(workdir)
  config = tiny_config(tiny_data, checkpoint_every_epochs=100, num_epochs=1)
  monkeypatch.setattr(checkpoint.Checkpointer, 'save', lambda *a, **k: None)
  results.write_run_files(config, str(workdir))
  data = input_pipeline.load(config)
  probs = np.full((len(data.test_labels), 10), 0.1, np.float32)
  results.write_results(config, str(workdir), data=data, history=[],
                        tests=[{'loss': 1.0, 'accuracy': 0.1}], probs=probs[None], timings={})
  outputs.write_outputs(config, str(workdir), data)
  progress = train.Progress(sums=[{'loss': 1.0, 'correct': 1.0, 'count': 2.0}])
  monkeypatch.setattr(train, 'evaluate', lambda *a: [{'loss': 1.0, 'accuracy': 0.5}])
  train.finish_epoch(None, progress, val_batches=[1], config=config, workdir=str(workdir))
  assert os.listdir(workdir) == []


def test_misspelt_override_is_one_clear_line(tiny_data, tmp_path):
  out = run_main(tiny_data, str(tmp_path / 'w'), '--config.batchsize=3')
  assert out.returncode != 0
  assert 'error: bad --config override' in out.stderr and 'Did you mean "batch_size"' in out.stderr
  assert 'Traceback' not in out.stderr


def test_no_validation_split_gives_strict_json(tiny_data, tmp_path, capsys):
  train.train_and_evaluate(tiny_config(tiny_data, validation_split=0.0), str(tmp_path))
  with open(tmp_path / 'results.json') as f:
    res = json.load(f, parse_constant=lambda c: pytest.fail(f'non-standard JSON {c}'))
  assert res['num_val'] == 0 and res['best_val_accuracy'] is None
  assert res['num_train'] == 600
  assert 'Epoch 2/2 - loss:' in capsys.readouterr().out


@pytest.mark.parametrize('cpu_kernel', ['off', 'auto'])
def test_nothing_compiles_while_training_steps_run(tiny_data, tmp_path, cpu_kernel):
  """Issue 22 item 9: a sweep stops its drawing worker inside `while_training` (training
  takes every core), so everything that compiles (the blocks, both block lengths; the
  evaluation) compiles before it is entered, where the worker can use the idle core."""
  compiled, inside, entered = [], [False], []
  listener = lambda event, seconds, **kw: compiled.append((event, inside[0]))
  jax.monitoring.register_event_duration_secs_listener(listener)

  @contextlib.contextmanager
  def while_training():
    inside[0] = True
    entered.append(1)
    try:
      yield
    finally:
      inside[0] = False

  config = tiny_config(tiny_data, cpu_kernel=cpu_kernel, steps_per_call=7, num_epochs=2,
                       hidden_units=24)  # A model of its own: its programs are new here.
  try:
    train.train_and_evaluate(config, str(tmp_path / 'run'), while_training=while_training)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  backend = [inside for event, inside in compiled if event.endswith('backend_compile_duration')]
  assert len(entered) == 2 and backend and not any(backend)
