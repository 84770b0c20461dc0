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


class RunWriter:
  """The event file of one run in workdir/tensorboard, written as the run goes."""

  def __init__(self, workdir, history=()):
    """Opens a new event file (removing older ones) holding the epochs of `history`."""
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self.workdir = workdir
    self.logdir = os.path.join(workdir, LOGDIR)
    for old in glob.glob(os.path.join(self.logdir, 'events.out.tfevents.*')):
      os.remove(old)  # Rewritten from the history, so a rerun never doubles points.
    self._writer = SummaryWriter(self.logdir, flush_secs=5)
    for record in history:
      self.epoch(record, flush=False)
    self._writer.flush()

  def epoch(self, record, flush=True):
    """One point per tag at step = epoch (a run without validation has none there, an
    older run none of a metric declared since)."""
    for column, tag in scalars(EPOCH_TAGS).items():
      if column in record and not math.isnan(record[column]):
        self._writer.add_scalar(tag, record[column], record['epoch'])
    if flush:
      self._writer.flush()

  def finish(self, res, step):
    """The test scalars and the saved figures, at the last epoch; closes the file."""
    for key, tag in scalars(TEST_TAGS).items():
      if key in res:  # An older run has none of a metric declared since.
        self._writer.add_scalar(tag, res[key], step)
    from PIL import Image  # pylint: disable=g-import-not-at-top
    for key, tag in IMAGES.items():
      path = os.path.join(self.workdir, figures.FILES[key])
      if os.path.exists(path):
        with Image.open(path) as image:
          pixels = np.asarray(image.convert('RGB'))
        self._writer.add_image(tag, pixels, step, dataformats='HWC')
    self.close()

  def close(self):
    self._writer.close()


def write_run_summaries(workdir):
  """Rewrites TensorBoard's event file of a finished run from its saved results.

  Scalars per epoch (step = epoch): train/<metric> and validation/<metric> of every
  declared metric (train_state.METRICS) from history.csv; test/<metric> at the last
  epoch when results.json exists; the sample, misclassified and confusion figures as images.

  Args:
    workdir: a run's folder holding at least history.csv.

  Returns:
    The log folder.
  """
  history = results_lib.read_history(workdir)
  history = [h for h in history if h.get('seed') == history[0].get('seed')]  # Replica 0's.
  writer = RunWriter(workdir, history)
  res_path = os.path.join(workdir, results_lib.FILES['results'])
  if history and os.path.exists(res_path):
    writer.finish(results_lib.read_json(res_path), history[-1]['epoch'])
  else:
    writer.close()
  return writer.logdir
