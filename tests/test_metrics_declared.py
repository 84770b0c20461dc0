"""Metrics are declared once (train_state.METRICS): a metric added there alone reaches
history.csv, TensorBoard, the console, results.json, curves.png and the report."""

import contextlib
import io
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from digits_jax import figures
from digits_jax import html_page
from digits_jax import results as results_lib
from digits_jax import run_report
from digits_jax import summaries
from digits_jax import train
from digits_jax import train_state as ts
from digits_jax import workdir as workdir_lib
from helpers import tiny_config

event_accumulator = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')


def _top2_sum(logits, labels, mask):
  """Examples whose true class is among the two highest logits, over the unmasked ones."""
  top2 = jax.lax.top_k(logits, 2)[1]
  return jnp.sum(jnp.any(top2 == labels[:, None], axis=-1).astype(jnp.float32) * mask)


TOP2 = ts.Metric('top2_accuracy', 'top2_correct', _top2_sum, 'Top-2 accuracy', percent=True)


@pytest.fixture
def with_top2(monkeypatch):
  """METRICS with top-2 accuracy appended; compiled steps traced before are dropped (the
  declaration is read when a step is traced), before and after."""
  monkeypatch.setattr(ts, 'METRICS', ts.METRICS + (TOP2,))
  jax.clear_caches()
  yield
  monkeypatch.undo()
  jax.clear_caches()


def test_the_declaration_is_what_the_kernel_contract_reads():
  assert ts.metric_names() == ('loss', 'accuracy')
  assert ts.sum_names() == ('loss', 'correct', 'count')  # The C++ kernel's [R, 3] sums.
  assert results_lib.history_fields() == ('epoch', 'loss', 'accuracy', 'val_loss',
                                          'val_accuracy', 'seconds')


def test_a_declared_metric_is_summed_over_unmasked_examples(with_top2):
  logits = jnp.array([[3., 2., 1.], [1., 2., 3.], [3., 1., 2.], [0., 5., 1.]])
  labels = jnp.array([1, 0, 2, 2])  # Ranks 2, 3, 2, and 2 (masked out).
  sums = ts.compute_metrics(logits, labels, jnp.array([True, True, True, False]))
  assert set(sums) == {'loss', 'correct', 'top2_correct', 'count'}
  assert float(sums['top2_correct']) == 2.0 and float(sums['correct']) == 0.0
  values = ts.epoch_values(jax.device_get(sums), prefix='val_')
  assert values['val_top2_accuracy'] == pytest.approx(2 / 3)


@pytest.mark.slow
def test_a_metric_declared_once_reaches_every_output(with_top2, tiny_data, tmp_path):
  workdir = str(tmp_path / 'run')
  config = tiny_config(tiny_data, num_seeds=2, tensorboard=True, write_report=True)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    train.train_and_evaluate(config, workdir)
  history = results_lib.read_history(workdir, all_seeds=True)
  assert len(history) == 4 and all(
      0.0 <= h['top2_accuracy'] <= 1.0 and h['val_top2_accuracy'] >= h['val_accuracy']
      for h in history)
  res = results_lib.read_json(os.path.join(workdir, 'results.json'))
  assert res['test_top2_accuracy'] >= res['test_accuracy']
  assert 'metric sums' in res['timings']['kernel_fallback']  # The C++ kernel stood aside.
  assert len(res['per_seed']['test_top2_accuracy']) == 2
  assert res['summary']['test_top2_accuracy']['n'] == 2
  for run in (summaries.seed_folder(0), summaries.seed_folder(1), summaries.MEAN):
    acc = event_accumulator.EventAccumulator(os.path.join(workdir, summaries.LOGDIR, run))
    acc.Reload()  # One TensorBoard run per seed, and their mean.
    assert {'train/top2_accuracy', 'validation/top2_accuracy',
            'test/top2_accuracy'} <= set(acc.Tags()['scalars']), run
  assert 'top2_accuracy: ' in out.getvalue() and 'val_top2_accuracy: ' in out.getvalue()
  assert f'top2_accuracy {res["test_top2_accuracy"]:.4f}' in out.getvalue()
  with Image.open(os.path.join(workdir, figures.FILES['curves'])) as png:
    assert png.size[0] > 1300  # Three panels of 5 inches at 100 dpi (two: about 1000 px).
  with open(os.path.join(workdir, html_page.REPORT)) as f:
    page = f.read()
  assert page.count('test top2_accuracy') == 2  # Its tile and its per-seed column.
  assert np.isfinite(res['per_seed']['test_top2_accuracy']).all()


@pytest.mark.slow
def test_a_run_made_before_a_metric_was_declared_still_reports(tiny_data, tmp_path,
                                                               monkeypatch):
  workdir = str(tmp_path / 'old')
  with contextlib.redirect_stdout(io.StringIO()):
    train.train_and_evaluate(tiny_config(tiny_data, num_epochs=1), workdir)
  monkeypatch.setattr(ts, 'METRICS', ts.METRICS + (TOP2,))
  os.remove(os.path.join(workdir, figures.FILES['curves']))  # Redrawn from the history.
  with open(run_report.write_run_report(workdir), encoding='utf-8') as f:
    page = f.read()
  assert 'test accuracy' in page and 'top2' not in page
  acc = event_accumulator.EventAccumulator(summaries.write_run_summaries(workdir))
  acc.Reload()
  assert 'test/accuracy' in acc.Tags()['scalars']
  assert not [t for t in acc.Tags()['scalars'] if 'top2' in t]
  try:  # Resuming it with other metrics would leave holes in its history: refused.
    with pytest.raises(workdir_lib.WorkdirMismatchError, match='--fresh'):
      train.train_and_evaluate(tiny_config(tiny_data, num_epochs=2), workdir)
  finally:
    jax.clear_caches()
