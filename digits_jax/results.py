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
FILES = {
    'config': 'config.json',
    'summary': 'model_summary.txt',
    'history': 'history.csv',
    'predictions': 'predictions.npz',
    'misclassified_list': 'misclassified.csv',
    'results': 'results.json',
}


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
  """The per-epoch accuracy log, history.csv (rewritten whole after each epoch)."""
  write_csv(os.path.join(workdir, FILES['history']), HISTORY_FIELDS,
            [{k: h[k] for k in HISTORY_FIELDS} for h in history])


def read_history(workdir):
  """history.csv as a list of dicts of numbers."""
  rows = read_csv(os.path.join(workdir, FILES['history']))
  return [{k: (int(v) if k == 'epoch' else float(v)) for k, v in r.items()} for r in rows]


def write_predictions(workdir, probabilities, labels):
  """All test predictions: probabilities [N, 10], true and predicted labels, confidence."""
  buf = io.BytesIO()
  np.savez_compressed(buf, probabilities=probabilities.astype(np.float32),
                      labels=labels.astype(np.int32),
                      predicted=probabilities.argmax(-1).astype(np.int32))
  write_bytes(os.path.join(workdir, FILES['predictions']), buf.getvalue())


def read_predictions(workdir):
  with np.load(os.path.join(workdir, FILES['predictions'])) as f:
    return {k: f[k] for k in f.files}


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
