"""Result files: what a run writes, assembled here and written atomically by process 0 only.

A crash never leaves a half-written file: readers see the old version or the new one.
`write_run_files` writes what is known before training, `write_results` what a finished
run measured (results.json with its predictions); outputs.py draws the figures and pages
from those files.
"""

import csv
import datetime
import io
import json
import math
import os
import platform
import tempfile
import zipfile
import zlib

import jax
import numpy as np

from digits_jax import best_epoch
from digits_jax import errors
from digits_jax import models
from digits_jax import optimizers
from digits_jax import parallel
from digits_jax import stats
from digits_jax import train_state as ts

# results.json's per_seed lists (one value per seed, in the order of its 'seeds'): these,
# after test_<metric> for each of train_state.METRICS (`per_seed_fields`).
PER_SEED_OUTCOMES = ('misclassified_count', 'best_epoch', 'final_val_accuracy')
# Added to them, and to the top level, by config.restore_best / early_stopping_patience.
KEPT_FIELDS = ('evaluated_epoch', 'stopped_early_at_epoch', 'epochs_trained')
# What to do about a damaged or missing result file: the run rewrites every one of them.
RERUN = ('Rerun the run\'s training command: a finished run is not retrained, it rewrites its '
         'result files from its last checkpoint (or pass --fresh to start anew).')
FILES = {
    'config': 'config.json',
    'summary': 'model_summary.txt',
    'history': 'history.csv',
    'predictions': 'predictions.npz',
    'misclassified_list': 'misclassified.csv',
    'results': 'results.json',
}


def history_fields():
  """history.csv's columns: the epoch, each declared metric (train_state.METRICS) on the
  training and then the validation data, and the epoch's training seconds."""
  names = ts.metric_names()
  return ('epoch',) + names + tuple('val_' + n for n in names) + ('seconds',)


def test_fields():
  """results.json's test values, one per declared metric: ('test_loss', 'test_accuracy')."""
  return tuple('test_' + n for n in ts.metric_names())


def per_seed_fields():
  """results.json's per_seed lists, without the KEPT_FIELDS of restore_best/early stopping."""
  return test_fields() + PER_SEED_OUTCOMES


def current_umask():
  """The process's umask, read without changing it (os.umask would, for a moment, for
  every thread: orbax writes checkpoints in its own)."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('Umask:'):
          return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o022)  # Not Linux: the classic round trip.
  os.umask(mask)
  return mask


def write_bytes(path, data):
  """Writes `data` to `path` atomically, readable as the umask allows (as open() would)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.')
  try:
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; set it before the rename.
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_text(path, text):
  write_bytes(path, text.encode())


def write_json(path, obj):
  write_text(path, json.dumps(obj, indent=2, allow_nan=False) + '\n')  # Strict JSON.


DamagedFileError = errors.DamagedFileError  # Where callers have always found it.


def read_json(path, *, kind=dict, fix=RERUN):
  """A JSON file's content, which must be a `kind` (a JSON object by default).

  Raises:
    errors.MissingFileError, errors.DamagedFileError: naming the file, with `fix`.
  """
  text = _read_text(path, fix)
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    raise DamagedFileError(path, (
        f'is damaged or truncated ({e.msg} at line {e.lineno}, column {e.colno}; '
        f'{len(text):,} characters)'), fix) from None
  if not isinstance(value, kind):
    raise DamagedFileError(path, f'holds a JSON {type(value).__name__}, not the '
                           f'{kind.__name__} that was written', fix)
  return value


def write_csv(path, fields, rows):
  """Writes dict rows as CSV with a header."""
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=fields, lineterminator='\n')
  writer.writeheader()
  writer.writerows(rows)
  write_text(path, buf.getvalue())


def _read_text(path, fix):
  """A UTF-8 text file's content, or the typed error naming it."""
  if not os.path.isfile(path):
    raise errors.MissingFileError(
        path, 'is missing' if not os.path.lexists(path) else 'is not a regular file', fix)
  try:
    with open(path, encoding='utf-8', newline='') as f:
      return f.read()
  except UnicodeDecodeError as e:
    raise DamagedFileError(path, f'is not UTF-8 text (byte {e.start:,}): damaged', fix) from None


def read_csv(path, fix=RERUN):
  """A CSV file with a header as a list of dicts of text (see _read_text for errors)."""
  rows = list(csv.DictReader(io.StringIO(_read_text(path, fix))))
  if any(None in r or None in r.values() for r in rows):
    raise DamagedFileError(path, 'has a row with too few or too many values (truncated?)',
                           fix)
  return rows


def write_history(workdir, history):
  """The per-epoch accuracy log, history.csv (rewritten whole after each epoch).

  Records of a many-seed run carry a 'seed' and become one row per seed per epoch, with
  a leading `seed` column; a one-seed run's file has no such column (as before).
  """
  fields = (('seed',) if history and 'seed' in history[0] else ()) + history_fields()
  write_csv(os.path.join(workdir, FILES['history']), fields,
            [{k: h[k] for k in fields} for h in history])


def read_history(workdir, all_seeds=False):
  """history.csv as a list of dicts of numbers.

  A many-seed run's file holds every seed's rows; unless `all_seeds`, only the first
  seed's (replica 0, which results.json's top-level fields describe) are returned.
  """
  path = os.path.join(workdir, FILES['history'])
  rows = read_csv(path)
  try:
    rows = [{k: (int(v) if k in ('epoch', 'seed') else float(v)) for k, v in r.items()}
            for r in rows]
  except ValueError as e:
    raise DamagedFileError(path, f'holds a value that is not a number ({e})', RERUN) from None
  # Only the epoch is required: a run made before a metric was declared lacks its columns.
  if not rows or 'epoch' not in rows[0]:
    raise DamagedFileError(path, 'has no rows with an epoch column', RERUN)
  if 'seed' in rows[0] and not all_seeds:
    rows = [r for r in rows if r['seed'] == rows[0]['seed']]
  return rows


def write_predictions(workdir, probabilities, labels, seeds=None):
  """All test predictions: probabilities [T, 10], true and predicted labels.

  With `seeds` (a many-seed run), `probabilities` is [S, T, 10] and 'predicted' [S, T],
  one row per seed, and the file also holds 'seeds' [S].
  """
  buf = io.BytesIO()
  extra = {} if seeds is None else {'seeds': np.asarray(seeds, np.int64)}
  # Not savez_compressed: float probabilities shrink by a fifth for 14 ms a run.
  np.savez(buf, probabilities=probabilities.astype(np.float32),
           labels=labels.astype(np.int32),
           predicted=probabilities.argmax(-1).astype(np.int32), **extra)
  write_bytes(os.path.join(workdir, FILES['predictions']), buf.getvalue())


def read_predictions(workdir, replica=0):
  """predictions.npz as a dict of arrays.

  A many-seed run's file has a leading seed axis; by default only replica 0's
  predictions are returned (the one-seed layout); `replica=None` returns the file as is.
  """
  path = os.path.join(workdir, FILES['predictions'])
  if not os.path.isfile(path):
    raise errors.MissingFileError(path, 'is missing', RERUN)
  try:
    with np.load(path) as f:
      preds = {k: f[k] for k in f.files}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
    raise DamagedFileError(path, f'is damaged or truncated ({type(e).__name__}: {e})',
                           RERUN) from None
  missing = {'probabilities', 'labels', 'predicted'} - set(preds)
  if missing:
    raise DamagedFileError(path, f'lacks {", ".join(sorted(missing))}', RERUN)
  if 'seeds' in preds and replica is not None:
    preds = {'probabilities': preds['probabilities'][replica],
             'predicted': preds['predicted'][replica], 'labels': preds['labels']}
  return preds


CONFIG_FIX = ('It records the config of the run in its folder: restore it, or start that run '
              'anew with --fresh.')
# Fields every results.json has held since the first version; the readers rely on them.
# (The network is described by 'model_description' since models were named, by
# 'hidden_sizes' before: model_description reads either.)
RESULTS_FIELDS = ('name', 'dataset', 'num_epochs', 'test_accuracy', 'num_params',
                  'class_names')


def model_description(res):
  """A run's network as its model described it in results.json ('128', 'conv 32-64, dense
  128'); a run saved before models were named recorded its MLP's hidden widths instead."""
  if 'model_description' in res:
    return res['model_description']
  return ' x '.join(str(s) for s in res.get('hidden_sizes', ['?']))


def read_config(workdir, fix=CONFIG_FIX):
  """config.json as a dict (a JSON object), or the typed error naming it and `fix`."""
  return read_json(os.path.join(workdir, FILES['config']), fix=fix)


def read_results(workdir):
  """results.json as a dict holding at least RESULTS_FIELDS, or the typed error."""
  path = os.path.join(workdir, FILES['results'])
  res = read_json(path)
  missing = [k for k in RESULTS_FIELDS if k not in res]
  if missing:
    raise DamagedFileError(path, f'lacks {", ".join(missing)}', RERUN)
  return res


def epochs_described(res):
  """The epochs trained by the run that results.json describes (early stopping: fewer)."""
  per_seed = res.get('per_seed', {}).get('epochs_trained') or [res.get('epochs_trained')]
  return max(e or res['num_epochs'] for e in per_seed)


def check_one_run(workdir, res, config, history):
  """Raises UnfinishedRunError unless results.json, config.json and history.csv describe
  the same run (a later run begun in the workdir rewrites the last two first)."""
  epochs = max((h['epoch'] for h in history), default=0)
  if config.get('num_epochs', res['num_epochs']) != res['num_epochs'] or (
      epochs > epochs_described(res)):
    raise errors.UnfinishedRunError(workdir, (
        f'holds an unfinished run: results.json describes {epochs_described(res)} epoch(s) of '
        f'{res["num_epochs"]}, but a later run of {config.get("num_epochs")} epochs began '
        f'since and has reached epoch {epochs} (history.csv, config.json)'),
        'Rerun its training command to finish it (it resumes from its last checkpoint), '
        'then ask for the report again.')
  if epochs < epochs_described(res):
    raise DamagedFileError(os.path.join(workdir, FILES['history']), (
        f'holds {epochs} epoch(s) but results.json describes {epochs_described(res)}'), RERUN)


def read_finished(workdir):
  """results.json of the one finished run in `workdir`, checked against its config.json
  and history.csv (check_one_run); the typed error of the first problem found."""
  res = read_results(workdir)
  check_one_run(workdir, res, read_config(workdir), read_history(workdir, all_seeds=True))
  return res


def read_run(workdir):
  """Every saved part of a finished run, from one consistent run: {'workdir', 'res',
  'config', 'summary', 'history' (the first seed's), 'preds' (replica 0's)}.

  Raises:
    errors.MissingFileError: no finished run (no results.json or predictions.npz).
    errors.DamagedFileError, errors.UnfinishedRunError: as the readers and check_one_run.
  """
  for key in ('results', 'predictions'):
    if not os.path.isfile(os.path.join(workdir, FILES[key])):
      raise errors.MissingFileError(workdir, (
          'holds no finished run (results.json and predictions.npz are written at the end '
          'of training)'), 'Finish the run first: rerun its training command.')
  res = read_finished(workdir)
  summary = os.path.join(workdir, FILES['summary'])
  return {'workdir': workdir, 'res': res, 'config': read_config(workdir),
          'summary': _read_text(summary, RERUN) if os.path.isfile(summary) else '',
          'history': read_history(workdir), 'preds': read_predictions(workdir)}


def misclassified(probabilities, labels):
  """Indices of the wrongly recognised test images, in test-set order."""
  return np.flatnonzero(probabilities.argmax(-1) != labels)


def write_misclassified(workdir, probabilities, labels, class_names):
  """misclassified.csv: index, true and predicted class (number and name), confidence."""
  rows = []
  for i in misclassified(probabilities, labels):
    pred = int(probabilities[i].argmax())
    rows.append({'index': int(i), 'true': int(labels[i]), 'predicted': pred,
                 'true_name': class_names[labels[i]], 'predicted_name': class_names[pred],
                 'confidence': f'{probabilities[i, pred]:.6f}'})
  write_csv(os.path.join(workdir, FILES['misclassified_list']),
            ('index', 'true', 'predicted', 'true_name', 'predicted_name', 'confidence'), rows)
  return len(rows)


def recognized(indices, probabilities, labels, class_names):
  """The chosen test images' predictions, as JSON-ready dicts."""
  out = []
  for i in indices:
    p = probabilities[i]
    out.append({'index': int(i), 'true': int(labels[i]), 'predicted': int(p.argmax()),
                'true_name': class_names[labels[i]], 'predicted_name': class_names[p.argmax()],
                'probabilities': [round(float(x), 6) for x in p]})
  return out


def write_run_files(config, workdir):
  """config.json and model_summary.txt, before training starts."""
  if not parallel.is_main_process():
    return
  os.makedirs(workdir, exist_ok=True)
  write_text(os.path.join(workdir, FILES['config']), config.to_json_best_effort(indent=2) + '\n')
  write_text(os.path.join(workdir, FILES['summary']),
             models.summary(models.create_model(config), config.name) + '\n')


def versions():
  """Library versions for results.json."""
  import flax, optax, orbax.checkpoint  # pylint: disable=g-import-not-at-top,multiple-imports
  return {'python': platform.python_version(), 'jax': jax.__version__,
          'jaxlib': getattr(jax.lib, '__version__', jax.__version__),
          'flax': flax.__version__, 'optax': optax.__version__,
          'orbax-checkpoint': getattr(orbax.checkpoint, '__version__', ''),
          'numpy': np.__version__}


def device_description():
  """The devices a run used, for results.json and the console."""
  devices = jax.devices()
  return {'platform': devices[0].platform, 'kind': devices[0].device_kind,
          'count': len(devices), 'processes': jax.process_count()}


def replica_outcome(history, test, probs, labels):
  """One replica's test results and its best and final validation epochs."""
  validated = [h for h in history if math.isfinite(h['val_accuracy'])]  # None if split 0.
  best = max(validated, key=lambda h: h['val_accuracy']) if validated else None
  return {**{'test_' + k: v for k, v in test.items()},
          'misclassified_count': int(len(misclassified(probs, labels))),
          'best_epoch': best['epoch'] if best else None,
          'best_val_accuracy': best['val_accuracy'] if best else None,
          'final_val_accuracy': validated[-1]['val_accuracy'] if validated else None}


def model_fields(config):
  """results.json's description of the network, declared by the model itself: its
  registry name, short description ('128', 'conv 32-64, dense 128'), one-line
  architecture and parameter count (from its parameter tree)."""
  model = models.create_model(config)
  return {'model': config.model, 'model_description': model.describe(),
          'model_architecture': models.architecture(model),
          'num_params': models.count_params(models.param_shapes(model))}


def write_results(config, workdir, *, data, history, tests, probs, timings):
  """Every result file of a finished run (process 0); returns results.json's content.

  `tests` (loss and accuracy) and `probs` [replicas, examples, 10] hold every replica's:
  the top-level fields describe replica 0, `per_seed` and `summary` all of them.
  """
  seeds = [int(config.seed) + k for k in range(len(tests))]
  outcomes = [{**replica_outcome(best_epoch.of_seed(history, seed), test, p, data.test_labels),
               **best_epoch.summary(best_epoch.of_seed(history, seed),
                                    restore_best=config.restore_best,
                                    patience=config.early_stopping_patience,
                                    num_epochs=config.num_epochs)}
              for seed, test, p in zip(seeds, tests, probs)]
  kept_fields = KEPT_FIELDS if best_epoch.uses_kept(config) else ()
  first = outcomes[0]
  res = {
      'name': config.name, 'dataset': config.dataset, 'data_source': data.source,
      **model_fields(config),
      'optimizer': optimizers.describe(config), 'dropout_rate': config.dropout_rate,
      'num_epochs': config.num_epochs, 'batch_size': config.batch_size,
      'validation_split': config.validation_split, 'seed': config.seed,
      'num_train': len(data.train_labels), 'num_val': len(data.val_labels),
      'num_test': len(data.test_labels), **{k: first[k] for k in test_fields()},
      'misclassified_count': first['misclassified_count'],
      'final_val_accuracy': first['final_val_accuracy'],
      'best_val_accuracy': first['best_val_accuracy'], 'best_epoch': first['best_epoch'],
      'restore_best': bool(config.restore_best),
      'early_stopping_patience': int(config.early_stopping_patience),
      **{k: first[k] for k in KEPT_FIELDS},
      'seeds': seeds,
      'per_seed': {k: [o[k] for o in outcomes] for k in per_seed_fields() + kept_fields},
      'summary': {k: stats.summarize([o[k] for o in outcomes]) for k in test_fields()},
      'recognized': recognized(config.test_indices, probs[0], data.test_labels,
                               data.class_names),
      'class_names': list(data.class_names), 'timings': timings,
      'devices': device_description(), 'versions': versions(),
      'finished_at': datetime.datetime.now().isoformat(timespec='seconds'),
  }
  if parallel.is_main_process():
    write_history(workdir, history)  # Rebuilt from the checkpoint's log if it was lost.
    if len(seeds) == 1:
      write_predictions(workdir, probs[0], data.test_labels)
    else:
      write_predictions(workdir, probs, data.test_labels, seeds)
    write_misclassified(workdir, probs[0], data.test_labels, data.class_names)
    write_json(os.path.join(workdir, FILES['results']), res)
  return res
