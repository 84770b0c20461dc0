"""TensorBoard summaries of a run, written per epoch while it trains (tensorboardX).

  tensorboard --logdir runs   # every run's workdir/tensorboard, side by side, live

Why tensorboardX: a maintained writer of TensorBoard's event files that needs neither
TensorFlow nor hand-built protobuf metadata, so writing summaries imports no TensorFlow
(and prints none of its start-up lines). Viewing them needs the `tensorboard` package,
a dependency of digits_jax.

A run opens one `RunWriter` when training starts: it replaces any older event files with
the epochs already done (a resumed run gets one clean curve), adds each epoch's scalars
as the epoch ends (so a run can be watched while it trains), and at the end the test
scalars and the saved figures. `write_run_summaries` rebuilds the same file for any
finished run from its history.csv, results.json and PNGs.

A many-seed run writes one TensorBoard run per seed, tensorboard/seed_<seed>/ (their
curves overlay), and tensorboard/mean/ (the mean over the seeds still training at each
epoch, and the mean test values); the images, which show replica 0, go with its seed.
"""

import glob
import math
import os

import numpy as np

from digits_jax import figures
from digits_jax import results as results_lib
from digits_jax import train_state as ts

LOGDIR = 'tensorboard'
# Where each split's values go: history.csv / results.json prefix -> tag folder.
EPOCH_TAGS = {'': 'train', 'val_': 'validation'}
TEST_TAGS = {'test_': 'test'}
# Figure key (figures.FILES) -> image tag.
IMAGES = {'samples': 'images/samples', 'misclassified': 'images/misclassified',
          'confusion': 'images/confusion'}


def scalars(prefixes):
  """{column or results.json key: tag} of every declared metric (train_state.METRICS)
  under `prefixes` ({prefix: tag folder}), e.g. {'val_loss': 'validation/loss'}."""
  return {prefix + name: f'{folder}/{name}' for prefix, folder in prefixes.items()
          for name in ts.metric_names()}


MEAN = 'mean'  # A many-seed run's folder of the mean over its seeds.


def seed_folder(seed):
  """The sub-folder of tensorboard/ holding one seed's curves in a many-seed run."""
  return f'seed_{seed}'


def _mean_record(records):
  """The mean over `records` (the seeds still training at that epoch) of every metric."""
  columns = [c for c in scalars(EPOCH_TAGS) if all(c in r for r in records)]
  return {'epoch': records[0]['epoch'],
          **{c: float(np.mean([r[c] for r in records])) for c in columns}}


class RunWriter:
  """The event files of one run in workdir/tensorboard, written as the run goes.

  One seed: one event file in tensorboard/ itself. Many seeds: one run per seed in
  tensorboard/seed_<seed>/ (TensorBoard overlays their curves) and their mean, over the
  seeds still training at each epoch, in tensorboard/mean/.
  """

  def __init__(self, workdir, history=(), seeds=(None,)):
    """Opens new event files (removing older ones) holding the epochs of `history` (every
    seed's rows); `seeds`: the run's seeds (ts.seeds_of(config))."""
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self.workdir = workdir
    self.logdir = os.path.join(workdir, LOGDIR)
    self.seeds = list(seeds)
    for pattern in ('', seed_folder('*'), MEAN):  # Rewritten from the history, so a
      for old in glob.glob(os.path.join(self.logdir, pattern, 'events.out.tfevents.*')):
        os.remove(old)  # rerun never doubles points.
    folders = ({None: ''} if len(self.seeds) < 2 else
               {**{s: seed_folder(s) for s in self.seeds}, MEAN: MEAN})
    self._writers = {key: SummaryWriter(os.path.join(self.logdir, folder), flush_secs=5)
                     for key, folder in folders.items()}
    for epoch in sorted({h['epoch'] for h in history}):
      self.epoch([h for h in history if h['epoch'] == epoch], flush=False)
    self._flush()

  def _flush(self):
    for writer in self._writers.values():
      writer.flush()

  def _add(self, key, record):
    """One point per tag at step = epoch (a run without validation has none there, an
    older run none of a metric declared since)."""
    for column, tag in scalars(EPOCH_TAGS).items():
      if column in record and not math.isnan(record[column]):
        self._writers[key].add_scalar(tag, record[column], record['epoch'])

  def epoch(self, records, flush=True):
    """An epoch's records, one per replica (None for a seed stopped early)."""
    shown = [r for r in records if r is not None]
    if not shown:
      return
    if len(self.seeds) < 2:
      self._add(None, shown[0])
    else:
      for record in shown:
        self._add(record['seed'], record)
      self._add(MEAN, _mean_record(shown))
    if flush:
      self._flush()

  def _test_scalars(self, res, step):
    """test/<metric> per seed (from per_seed) and their mean; one seed: results.json's."""
    for key, tag in scalars(TEST_TAGS).items():
      if len(self.seeds) < 2:
        if key in res:  # An older run has none of a metric declared since.
          self._writers[None].add_scalar(tag, res[key], step)
        continue
      values = res['per_seed'].get(key)
      if values:
        for seed, value in zip(self.seeds, values):
          self._writers[seed].add_scalar(tag, value, step)
        self._writers[MEAN].add_scalar(tag, float(np.mean(values)), step)

  def finish(self, res, step):
    """The test scalars and the saved figures (replica 0's: its run), at the last epoch;
    closes the files."""
    self._test_scalars(res, step)
    from PIL import Image  # pylint: disable=g-import-not-at-top
    for key, tag in IMAGES.items():
      path = os.path.join(self.workdir, figures.FILES[key])
      if os.path.exists(path):
        with Image.open(path) as image:
          pixels = np.asarray(image.convert('RGB'))
        self._writers[self.seeds[0]].add_image(tag, pixels, step, dataformats='HWC')
    self.close()

  def close(self):
    for writer in self._writers.values():
      writer.close()


def write_run_summaries(workdir):
  """Rewrites TensorBoard's event file of a finished run from its saved results.

  Scalars per epoch (step = epoch): train/<metric> and validation/<metric> of every
  declared metric (train_state.METRICS) from history.csv; test/<metric> at the last
  epoch when results.json exists; the sample, misclassified and confusion figures as images.
  A many-seed run: one folder per seed and their mean (RunWriter).

  Args:
    workdir: a run's folder holding at least history.csv.

  Returns:
    The log folder.
  """
  history = results_lib.read_history(workdir, all_seeds=True)
  seeds = list(dict.fromkeys(h.get('seed') for h in history)) or [None]
  writer = RunWriter(workdir, history, seeds if len(seeds) > 1 else [None])
  res_path = os.path.join(workdir, results_lib.FILES['results'])
  if history and os.path.exists(res_path):
    writer.finish(results_lib.read_json(res_path), max(h['epoch'] for h in history))
  else:
    writer.close()
  return writer.logdir
