"""TensorBoard summaries of a run, written from its saved result files after training.

  tensorboard --logdir=runs   # every run's workdir/tensorboard, side by side

Why `tf.summary`: TensorFlow is already a dependency (tf.data and tensorflow-datasets in the
input pipeline), and its writer makes exactly the event files TensorBoard reads, so no new
package (clu, tensorboardX) is needed. It is imported lazily, only here, with GPUs hidden
from it so that JAX keeps the accelerator's memory; where TensorFlow cannot be imported the
run still finishes and only the summaries are skipped, with a warning. Recent TensorFlow
wheels no longer install the `tensorboard` package that `tf.summary.scalar`/`image` need,
so the summaries go through the core `tf.summary.write` with the scalar and image plugins'
metadata (the same records those functions write): writing needs no `tensorboard`,
viewing them does (`pip install tensorboard`).

Like the figures, the summaries are drawn from history.csv and the saved PNGs, not inside
the training loop: a resumed run gets one clean, complete curve (the old event files are
replaced), and the summaries of any finished run can be rewritten at any time.
"""

import glob
import math
import os
import struct

from absl import logging

from digits_jax import figures
from digits_jax import input_pipeline
from digits_jax import results as results_lib

LOGDIR = 'tensorboard'
# history.csv column -> scalar tag.
SCALARS = {'loss': 'train/loss', 'accuracy': 'train/accuracy',
           'val_loss': 'validation/loss', 'val_accuracy': 'validation/accuracy'}
TEST_SCALARS = {'test_loss': 'test/loss', 'test_accuracy': 'test/accuracy'}
DATA_CLASS_SCALAR, DATA_CLASS_BLOB_SEQUENCE = 1, 3  # tensorflow/core/framework/summary.proto
# Figure key (figures.FILES) -> image tag.
IMAGES = {'samples': 'images/samples', 'misclassified': 'images/misclassified',
          'confusion': 'images/confusion'}


def _import_tensorflow():
  """TensorFlow with its GPUs hidden, or None (with a warning) if it is not installed."""
  try:
    return input_pipeline.tensorflow()
  except ImportError as e:
    logging.warning('TensorBoard summaries skipped: TensorFlow cannot be imported (%s).', e)
    return None


def _metadata(tf, plugin, data_class):
  """SummaryMetadata as TensorBoard's plugins write it (plugin content: version 0, empty)."""
  meta = tf.compat.v1.SummaryMetadata()
  meta.plugin_data.plugin_name = plugin
  meta.data_class = data_class
  return meta


def _write_scalars(tf, history, res):
  """One point per epoch per tag (NaN validation values of a run without one are left out)."""
  meta = _metadata(tf, 'scalars', DATA_CLASS_SCALAR)
  scalar = lambda tag, value, step: tf.summary.write(
      tag, tf.constant(value, tf.float32), step=step, metadata=meta)
  for h in history:
    for column, tag in SCALARS.items():
      if not math.isnan(h[column]):
        scalar(tag, h[column], h['epoch'])
  if history and res:
    for key, tag in TEST_SCALARS.items():
      scalar(tag, res[key], history[-1]['epoch'])


def _write_images(tf, workdir, step):
  """The saved figure PNGs as image summaries: [width, height, png] strings, as TensorBoard's."""
  meta = _metadata(tf, 'images', DATA_CLASS_BLOB_SEQUENCE)
  for key, tag in IMAGES.items():
    path = os.path.join(workdir, figures.FILES[key])
    if os.path.exists(path):
      with open(path, 'rb') as f:
        png = f.read()
      width, height = struct.unpack('>II', png[16:24])  # The IHDR chunk.
      tf.summary.write(tag, tf.constant([str(width), str(height), png], tf.string),
                       step=step, metadata=meta)


def write_run_summaries(workdir):
  """Writes TensorBoard event files to workdir/tensorboard from the run's saved results.

  Scalars per epoch (step = epoch): train/loss, train/accuracy, validation/loss,
  validation/accuracy from history.csv; test/loss and test/accuracy at the last epoch
  when results.json exists; the sample, misclassified and confusion figures as images.

  Args:
    workdir: a run's folder holding at least history.csv.

  Returns:
    The log folder, or None when TensorFlow is not available.
  """
  tf = _import_tensorflow()
  if tf is None:
    return None
  logdir = os.path.join(workdir, LOGDIR)
  for old in glob.glob(os.path.join(logdir, 'events.out.tfevents.*')):
    os.remove(old)  # Rewritten whole from history.csv, so a rerun never doubles points.
  history = results_lib.read_history(workdir)
  res_path = os.path.join(workdir, results_lib.FILES['results'])
  res = results_lib.read_json(res_path) if os.path.exists(res_path) else None
  writer = tf.summary.create_file_writer(logdir)
  with writer.as_default():
    _write_scalars(tf, history, res)
    _write_images(tf, workdir, history[-1]['epoch'] if history else 0)
  writer.close()
  return logdir
