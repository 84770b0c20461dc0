"""TensorBoard: scalars written per epoch while training, read back as TensorBoard reads them."""

import contextlib
import io
import os
import re
import sys

import numpy as np
import pytest

from digits_jax import figures
from digits_jax import results as results_lib
from digits_jax import summaries
from digits_jax import train
from helpers import tiny_config

event_accumulator = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')


def read_events(logdir):
  """(scalars {tag: [(step, value)]}, images {tag: (width, height)}) as TensorBoard sees them."""
  acc = event_accumulator.EventAccumulator(logdir, size_guidance={'scalars': 0, 'images': 0})
  acc.Reload()
  scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()['scalars']}
  images = {t: (acc.Images(t)[-1].width, acc.Images(t)[-1].height)
            for t in acc.Tags()['images']}
  return scalars, images


@pytest.fixture(scope='module')
def tb_run(tiny_data, tmp_path_factory):
  """A tiny 3-epoch run with TensorBoard on; records the history seen at each epoch write."""
  workdir = str(tmp_path_factory.mktemp('tb') / 'run')
  seen = []
  original = summaries.RunWriter.epoch

  def spy(self, records, flush=True):
    seen.append((records[0]['epoch'], os.path.exists(os.path.join(workdir, 'results.json'))))
    return original(self, records, flush)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(summaries.RunWriter, 'epoch', spy)
    with contextlib.redirect_stdout(io.StringIO()):
      train.train_and_evaluate(tiny_config(tiny_data, num_epochs=3, tensorboard=True),
                               workdir)
  return workdir, seen


def test_scalars_are_written_as_each_epoch_ends(tb_run):
  _, seen = tb_run
  assert seen == [(1, False), (2, False), (3, False)]  # During training, before results.


def test_event_file_matches_the_history_and_results(tb_run):
  workdir, _ = tb_run
  scalars, images = read_events(os.path.join(workdir, summaries.LOGDIR))
  history = results_lib.read_history(workdir)
  for column, tag in summaries.scalars(summaries.EPOCH_TAGS).items():
    assert scalars[tag] == [(h['epoch'], pytest.approx(h[column], rel=1e-6)) for h in history]
  res = results_lib.read_json(os.path.join(workdir, 'results.json'))
  assert scalars['test/accuracy'] == [(3, pytest.approx(res['test_accuracy'], rel=1e-6))]
  assert set(images) == set(summaries.IMAGES.values())
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(os.path.join(workdir, figures.FILES['samples'])) as png:
    assert images['images/samples'] == png.size


def test_rewriting_keeps_one_clean_file_and_imports_no_tensorflow(tb_run):
  workdir, _ = tb_run
  before = read_events(summaries.write_run_summaries(workdir))
  logdir = summaries.write_run_summaries(workdir)  # Rewriting must not double the points.
  assert len([f for f in os.listdir(logdir) if 'tfevents' in f]) == 1
  assert read_events(logdir) == before
  code = ('import sys; from digits_jax import summaries; '
          f'summaries.write_run_summaries({workdir!r}); print("tensorflow" in sys.modules)')
  import subprocess  # pylint: disable=g-import-not-at-top
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert out.stdout.strip() == 'False'


@pytest.mark.slow
def test_a_resumed_run_starts_its_file_from_the_saved_epochs(tmp_path):
  history = [{'epoch': e, 'loss': 1.0 / e, 'accuracy': 0.5, 'val_loss': np.nan,
              'val_accuracy': np.nan, 'seconds': 1.0} for e in (1, 2)]
  os.makedirs(tmp_path / summaries.LOGDIR)
  (tmp_path / summaries.LOGDIR / 'events.out.tfevents.old').write_bytes(b'')
  writer = summaries.RunWriter(str(tmp_path), history)
  writer.epoch([{**history[0], 'epoch': 3, 'loss': 0.25}])
  writer.close()
  assert [f for f in os.listdir(tmp_path / summaries.LOGDIR) if f.endswith('.old')] == []
  scalars, _ = read_events(str(tmp_path / summaries.LOGDIR))
  assert scalars['train/loss'] == [(1, 1.0), (2, 0.5), (3, 0.25)]
  assert 'validation/loss' not in scalars  # No validation split: no NaN points.


def test_every_result_file_is_readable_as_the_umask_allows(tb_run):
  workdir, _ = tb_run
  expected = 0o666 & ~results_lib.current_umask()
  names = [n for n in os.listdir(workdir) if os.path.isfile(os.path.join(workdir, n))]
  assert 'results.json' in names and 'samples.png' in names
  for name in names:
    assert os.stat(os.path.join(workdir, name)).st_mode & 0o777 == expected, name


@pytest.fixture(scope='module')
def seeds_run(tiny_data, tmp_path_factory):
  """A tiny 2-epoch run of seeds 5, 6 and 7 with TensorBoard on, and what it printed."""
  workdir = str(tmp_path_factory.mktemp('tb_seeds') / 'run')
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    train.train_and_evaluate(tiny_config(tiny_data, num_seeds=3, seed=5, tensorboard=True),
                             workdir)
  return workdir, out.getvalue()


def test_many_seeds_get_one_tensorboard_run_per_seed_and_their_mean(seeds_run):
  workdir, _ = seeds_run
  logdir = os.path.join(workdir, summaries.LOGDIR)
  assert sorted(os.listdir(logdir)) == ['mean', 'seed_5', 'seed_6', 'seed_7']  # No events
  history = results_lib.read_history(workdir, all_seeds=True)  # in tensorboard/ itself.
  res = results_lib.read_json(os.path.join(workdir, 'results.json'))
  per_seed = {s: read_events(os.path.join(logdir, f'seed_{s}')) for s in (5, 6, 7)}
  for k, seed in enumerate((5, 6, 7)):
    scalars, images = per_seed[seed]
    own = [h for h in history if h['seed'] == seed]
    assert scalars['train/loss'] == [(h['epoch'], pytest.approx(h['loss'], rel=1e-6))
                                     for h in own]
    assert scalars['test/accuracy'] == [
        (2, pytest.approx(res['per_seed']['test_accuracy'][k], rel=1e-6))]
    assert bool(images) == (seed == 5)  # The figures show replica 0.
  mean, _ = read_events(os.path.join(logdir, 'mean'))
  for epoch in (1, 2):
    values = [h['val_accuracy'] for h in history if h['epoch'] == epoch]
    assert dict(mean['validation/accuracy'])[epoch] == pytest.approx(np.mean(values), rel=1e-6)
  assert mean['test/loss'] == [(2, pytest.approx(res['summary']['test_loss']['mean'],
                                                 rel=1e-6))]
  rebuilt = summaries.write_run_summaries(workdir)  # From the saved files: the same runs.
  assert read_events(os.path.join(rebuilt, 'seed_6'))[0] == per_seed[6][0]
  assert read_events(os.path.join(rebuilt, 'mean'))[0] == mean


def test_many_seeds_label_the_lines_of_seed_0_and_give_the_mean(seeds_run):
  _, out = seeds_run
  assert re.search(r'^Test \(seed 5\): loss \d\.\d{4} - accuracy \d\.\d{4} ', out, re.M)
  assert re.search(r'^Test over 3 seeds: loss [\d.]+ \[[\d.]+, [\d.]+\] - accuracy ', out, re.M)
  assert re.search(r'^Test image 0 \(seed 5\): predicted ', out, re.M)
  assert re.search(r'^Misclassified test images \(seed 5\): [\d,]+ of 200 .*; per seed: ',
                   out, re.M)
  assert not re.search(r'^Test: |^Test image \d+: |^Misclassified test images: ', out, re.M)
