"""Result files: written atomically (temporary file, then rename) by process 0 only.

A crash never leaves a half-written file: readers see the old version or the new one.
"""

import csv
import io
import json
import os
import tempfile

import numpy as np

HISTORY_FIELDS = ('epoch', 'loss', 'accuracy', 'val_loss', 'val_accuracy', 'seconds')
# results.json's per_seed lists: one value per seed, in the order of its 'seeds'.
PER_SEED_FIELDS = ('test_accuracy', 'test_loss', 'misclassified_count', 'best_epoch',
                   'final_val_accuracy')
FILES = {
    'config': 'config.json',
    'summary': 'model_summary.txt',
    'history': 'history.csv',
    'predictions': 'predictions.npz',
    'misclassified_list': 'misclassified.csv',
    'results': 'results.json',
}


def write_bytes(path, data):
  """Writes `data` to `path` atomically."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.')
  try:
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


class DamagedFileError(ValueError):
  """A file the run reads back is not what was written (e.g. truncated JSON)."""


def read_json(path):
  """A JSON file's content; raises DamagedFileError naming the file if it does not parse."""
  with open(path) as f:
    text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise DamagedFileError(
        f'{path} is damaged or truncated ({e.msg} at line {e.lineno}, column {e.colno}; '
        f'{len(text):,} characters).') from None


def write_csv(path, fields, rows):
  """Writes dict rows as CSV with a header."""
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=fields, lineterminator='\n')
  writer.writeheader()
  writer.writerows(rows)
  write_text(path, buf.getvalue())


def read_csv(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def write_history(workdir, history):
  """The per-epoch accuracy log, history.csv (rewritten whole after each epoch).

  Records of a many-seed run carry a 'seed' and become one row per seed per epoch, with
  a leading `seed` column; a one-seed run's file has no such column (as before).
  """
  fields = (('seed',) if history and 'seed' in history[0] else ()) + HISTORY_FIELDS
  write_csv(os.path.join(workdir, FILES['history']), fields,
            [{k: h[k] for k in fields} for h in history])


def read_history(workdir, all_seeds=False):
  """history.csv as a list of dicts of numbers.

  A many-seed run's file holds every seed's rows; unless `all_seeds`, only the first
  seed's (replica 0, which results.json's top-level fields describe) are returned.
  """
  rows = read_csv(os.path.join(workdir, FILES['history']))
  rows = [{k: (int(v) if k in ('epoch', 'seed') else float(v)) for k, v in r.items()}
          for r in rows]
  if rows and 'seed' in rows[0] and not all_seeds:
    rows = [r for r in rows if r['seed'] == rows[0]['seed']]
  return rows


def write_predictions(workdir, probabilities, labels, seeds=None):
  """All test predictions: probabilities [T, 10], true and predicted labels.

  With `seeds` (a many-seed run), `probabilities` is [S, T, 10] and 'predicted' [S, T],
  one row per seed, and the file also holds 'seeds' [S].
  """
  buf = io.BytesIO()
  extra = {} if seeds is None else {'seeds': np.asarray(seeds, np.int64)}
  np.savez_compressed(buf, probabilities=probabilities.astype(np.float32),
                      labels=labels.astype(np.int32),
                      predicted=probabilities.argmax(-1).astype(np.int32), **extra)
  write_bytes(os.path.join(workdir, FILES['predictions']), buf.getvalue())


def read_predictions(workdir, replica=0):
  """predictions.npz as a dict of arrays.

  A many-seed run's file has a leading seed axis; by default only replica 0's
  predictions are returned (the one-seed layout); `replica=None` returns the file as is.
  """
  with np.load(os.path.join(workdir, FILES['predictions'])) as f:
    preds = {k: f[k] for k in f.files}
  if 'seeds' in preds and replica is not None:
    preds = {'probabilities': preds['probabilities'][replica],
             'predicted': preds['predicted'][replica], 'labels': preds['labels']}
  return preds


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
