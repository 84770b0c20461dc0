"""What the user reads: process-0 printing, a Keras-like progress bar and the run's lines."""

import math
import os
import sys
import time

import jax
import numpy as np

from digits_jax import best_epoch
from digits_jax import optimizers
from digits_jax import results as results_lib
from digits_jax import workdir as workdir_lib
from digits_jax import train_state as ts


def say(*args, **kwargs):
  """Prints (flushed) on process 0 only."""
  if jax.process_index() == 0:
    print(*args, **kwargs, flush=True)


def fmt_seconds(s):
  return f'{s:.1f}s' if s < 60 else f'{int(s // 60)}m{int(s % 60):02d}s'


class ProgressBar:
  """`1234/9360 [=====>.....] - 3.2k ex/s - ETA 4.1s`, redrawn in place on a terminal only."""

  def __init__(self, total_steps, batch_size, enabled=True, stream=sys.stdout, width=30):
    self.total, self.batch_size, self.width, self.stream = total_steps, batch_size, width, stream
    self.enabled = enabled and stream.isatty() and jax.process_index() == 0
    self.start = time.perf_counter()
    self.last_draw = 0.0

  def update(self, done, first_done=0):
    """Redraws after `done` of `total` steps (at most ten times a second)."""
    now = time.perf_counter()
    if not self.enabled or (now - self.last_draw < 0.1 and done < self.total):
      return
    self.last_draw = now
    elapsed = now - self.start
    rate = (done - first_done) / elapsed if elapsed > 0 else 0.0
    eta = (self.total - done) / rate if rate > 0 else 0.0
    filled = int(self.width * done / max(self.total, 1))
    bar = '=' * max(filled - 1, 0) + ('>' if filled < self.width else '=') + '.' * (
        self.width - filled)
    self.stream.write(f'\r{done}/{self.total} [{bar[:self.width]}] - '
                      f'{rate * self.batch_size:,.0f} ex/s - ETA {fmt_seconds(eta)}   ')
    self.stream.flush()

  def close(self):
    if self.enabled:
      self.stream.write('\r' + ' ' * (self.width + 60) + '\r')
      self.stream.flush()


def epoch_columns(record):
  """The record's metric columns, as Keras prints them: every declared metric
  (train_state.METRICS), then its `val_` twin unless there was no validation (split 0)."""
  names = ts.metric_names()
  validated = not math.isnan(record['val_' + names[0]])
  return list(names) + ['val_' + n for n in names if validated]


def epoch_line(record, num_epochs):
  """`Epoch 3/14 - loss: 0.1234 - accuracy: 0.9612 - val_loss: ... - 2.1s`, as Keras prints."""
  values = ''.join(f' - {k}: {record[k]:.4f}' for k in epoch_columns(record))
  return f'Epoch {record["epoch"]}/{num_epochs}{values} - {fmt_seconds(record["seconds"])}'


def seeds_epoch_line(records, num_epochs, num_seeds=None):
  """An epoch of a many-seed run: `Epoch 3/14 - 4 seeds - loss: 0.1234 +- 0.0012 - ...`
  (mean +- sample std over the seeds; `2 of 4 seeds` once early stopping stopped some)."""
  def stat(key):
    values = np.array([r[key] for r in records], np.float64)
    spread = f' +- {values.std(ddof=1):.4f}' if len(values) > 1 else ''
    return f'{key}: {values.mean():.4f}{spread}'
  keys = epoch_columns(records[0])
  of = f' of {num_seeds}' if num_seeds and num_seeds != len(records) else ''
  return (f'Epoch {records[0]["epoch"]}/{num_epochs} - {len(records)}{of} seeds - '
          + ' - '.join(stat(k) for k in keys) + f' - {fmt_seconds(records[0]["seconds"])}')


def early_stop_line(history, patience, *, many):
  """What Keras's EarlyStopping says of one seed's `history`, with the numbers behind it."""
  best = best_epoch.best_record(history)
  who = f'Seed {history[-1]["seed"]}: early' if many else 'Early'
  rest = ' (the other seeds train on)' if many else ''
  return (f'{who} stopping after epoch {history[-1]["epoch"]}: validation accuracy has not '
          f'improved for {patience} epoch(s) since epoch {best["epoch"]} '
          f'({best["val_accuracy"]:.4f}){rest}.')


def evaluated_line(res):
  """Which epoch's parameters the test set sees, per seed (restore_best or early stopping),
  from results.json's per_seed values."""
  epochs = res['per_seed']['evaluated_epoch']
  what = ('the best validation accuracy' if res['restore_best'] else
          'where early stopping left them')
  which = (f'epoch {epochs[0]}' if len(epochs) == 1 else
           ', '.join(f'seed {s}: epoch {e}' for s, e in zip(res['seeds'], epochs)))
  return f'Testing the weights of {which} ({what}).'


def _kept_note(per_seed, k):
  """' - tested epoch 4 - stopped after epoch 6' for a run that keeps parameters, else ''."""
  if 'evaluated_epoch' not in per_seed:
    return ''
  stopped = per_seed['stopped_early_at_epoch'][k]
  return (f' - tested epoch {per_seed["evaluated_epoch"][k]}'
          + (f' - stopped after epoch {stopped}' if stopped else ''))


def seed_lines(res):
  """The end of a many-seed run: one line per seed, then mean +- std and the 95% interval."""
  per = res['per_seed']
  tests = lambda k: ' - '.join(f'{n} {per["test_" + n][k]:.4f}' for n in ts.metric_names())
  lines = [f'Seed {seed}: test {tests(k)} - best epoch {per["best_epoch"][k]}'
           + _kept_note(per, k) for k, seed in enumerate(res['seeds'])]
  for key in results_lib.test_fields():
    s = res['summary'][key]
    lines.append(f'{key.replace("_", " ").capitalize()} over {s["n"]} seeds: '
                 f'{s["mean"]:.4f} +- {s["std"]:.4f} (mean +- std; 95% interval of the mean '
                 f'[{s["ci95"][0]:.4f}, {s["ci95"][1]:.4f}])')
  return lines
def class_label(number, name):
  """`6` for a digit (its name is the number), `9 (Ankle boot)` for a named class."""
  return str(number) if str(number) == name else f'{number} ({name})'


def recognition_lines(record, who=''):
  """Lab step 8: the 10 probabilities, the predicted and the true class of one test image
  (`who`: ' (seed 0)' when a many-seed run shows replica 0's)."""
  probs = '  '.join(f'{i}:{p:.4f}' for i, p in enumerate(record['probabilities']))
  mark = 'correct' if record['predicted'] == record['true'] else 'WRONG'
  return (f'Test image {record["index"]}{who}: predicted '
          f'{class_label(record["predicted"], record["predicted_name"])}, true '
          f'{class_label(record["true"], record["true_name"])} - {mark}\n'
          f'  probabilities: {probs}')


def interrupted_line(workdir):
  """What Ctrl-C outside the training loop prints (loading data, compiling, drawing)."""
  return (f'stopped: interrupted (Ctrl-C) outside the training loop; what was saved in '
          f'{workdir} is kept. Rerun the same command to resume.')


def log_start(config, *, mesh, data, padded_batch):
  """Devices, data source and split sizes: the first lines a user reads."""
  d = results_lib.device_description()
  say(f'Devices: {d["count"]} x {d["kind"]} ({d["platform"]}), {d["processes"]} '
      f'process(es); mesh {dict(mesh.shape)}.')
  say(f'Data: {config.dataset} from {data.source}: {len(data.train_labels):,} '
      f'training, {len(data.val_labels):,} validation (last '
      f'{config.validation_split:.0%}), {len(data.test_labels):,} test images.')
  say(f'Optimizer: {optimizers.describe(config)}'
      + (f'; dropout {config.dropout_rate:g} in training.' if config.dropout_rate else '.'))
  if padded_batch != config.batch_size:
    say(f'Batch {config.batch_size} padded to {padded_batch} (a multiple of '
        f'{mesh.devices.size} devices); padded examples are masked out of the loss, '
        'gradients and metrics.')


def resumed_line(step, progress):
  """`Resumed from the checkpoint at step 30 (epoch 2 done).`"""
  return (f'Resumed from the checkpoint at step {step} (epoch {progress.epoch} done'
          + (f', {progress.step_in_epoch} steps into the next' if progress.step_in_epoch
             else '') + ').')


def replica_label(res):
  """' (seed 0)' when a many-seed run's line shows replica 0 only; '' for one seed."""
  seeds = res.get('seeds') or []
  return f' (seed {seeds[0]})' if len(seeds) > 1 else ''


def seeds_mean_line(res):
  """`Test over 3 seeds: loss 0.0947 [0.0619, 0.1274] - accuracy ...`: each test metric's
  mean over the seeds and the 95% interval of that mean (results.json's summary)."""
  parts = []
  for key in results_lib.test_fields():
    s = res['summary'][key]
    parts.append(f'{key[len("test_"):]} {s["mean"]:.4f} [{s["ci95"][0]:.4f}, '
                 f'{s["ci95"][1]:.4f}]')
  return (f'Test over {len(res["seeds"])} seeds: ' + ' - '.join(parts)
          + ' (mean [95% interval of the mean])')


def misclassified_line(config, res):
  """How many test images were misclassified (replica 0's, labelled so, with every seed's
  count and their mean in a many-seed run)."""
  line = (f'Misclassified test images{replica_label(res)}: {res["misclassified_count"]:,} of '
          f'{res["num_test"]:,} (first {config.num_misclassified_show} drawn)')
  counts = res['per_seed'].get('misclassified_count') if len(res['seeds']) > 1 else None
  if counts:
    line += (f'; per seed: {", ".join(f"{c:,}" for c in counts)} '
             f'(mean {float(np.mean(counts)):,.1f})')
  return line + '.'


def report_test(config, res):
  """Lab steps 7-9: test loss and accuracy, the chosen test images, the misclassified count.
  A many-seed run labels those of replica 0 `(seed 0)` and adds the mean over the seeds with
  its 95% interval, then a line per seed. A run that keeps parameters first says which
  epoch's the test set saw."""
  who = replica_label(res)
  if 'evaluated_epoch' in res['per_seed']:
    say(evaluated_line(res))
  tests = ' - '.join(f'{n} {res["test_" + n]:.4f}' for n in ts.metric_names())
  say(f'Test{who}: {tests} ({res["num_test"]:,} images)')
  if who:
    say(seeds_mean_line(res))
  for rec in res['recognized']:
    say(recognition_lines(rec, who))
  say(misclassified_line(config, res))
  if who:
    for line in seed_lines(res):
      say(line)


def list_written(workdir, seconds):
  """The files of a finished run (only its own: a workdir may hold the user's too), and how
  long the whole run took."""
  say(f'Wrote to {os.path.abspath(workdir)} in {fmt_seconds(seconds)}:')
  for name in workdir_lib.own_files(workdir):
    say(f'  {name}{os.sep if os.path.isdir(os.path.join(workdir, name)) else ""}')
