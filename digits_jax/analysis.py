"""The analysis behind a report's conclusions: plain-text findings computed from results.

Pure functions of the saved numbers (history, confusion matrix); the report pages only
lay the sentences out. The sweep's findings, from tests over seeds, are significance.py's.
"""

import math

from digits_jax import input_pipeline


def pct(x, digits=2):
  """0.97791 -> '97.79%'; None or NaN -> 'n/a'."""
  return 'n/a' if x is None or math.isnan(x) else f'{100 * x:.{digits}f}%'


def dataset_key(dataset):
  """Sort key: the datasets in input_pipeline.DATASETS order, then others by name."""
  order = input_pipeline.DATASETS
  return (order.index(dataset) if dataset in order else len(order), dataset)


def confused_pairs(cm, names, top=3):
  """The `top` largest off-diagonal cells: (count, true name, predicted name, share of true)."""
  cells = [(int(cm[t, p]), t, p) for t in range(len(names)) for p in range(len(names))
           if t != p and cm[t, p] > 0]
  cells.sort(key=lambda x: (-x[0], x[1], x[2]))
  return [(n, names[t], names[p], n / max(int(cm[t].sum()), 1)) for n, t, p in cells[:top]]


def overfitting_epochs(history):
  """Epochs whose validation loss rose while the training loss fell (vs the epoch before)."""
  return [b for a, b in zip(history, history[1:])
          if b['val_loss'] > a['val_loss'] and b['loss'] < a['loss']]


def _history_conclusions(history):
  """Best epoch and the overfitting check, from the per-epoch log."""
  valid = [h for h in history if not math.isnan(h['val_accuracy'])]
  if not valid:
    return ['No validation split was held out (validation_split=0), so there is no best '
            'epoch or overfitting check.']
  best = max(valid, key=lambda h: h['val_accuracy'])
  out = [f'Best epoch: epoch {best["epoch"]} of {len(history)} reached the highest validation '
         f'accuracy, {pct(best["val_accuracy"])} (validation loss {best["val_loss"]:.4f}).']
  if len(valid) < 2:
    return out + ['Only one epoch was trained, so there is no overfitting check.']
  rising = overfitting_epochs(valid)
  if not rising:
    return out + ['No sign of overfitting: validation loss never rose while training loss '
                  'fell.']
  before = {b['epoch']: a for a, b in zip(valid, valid[1:])}
  steps = '; '.join(
      f'epoch {h["epoch"]}: validation loss {before[h["epoch"]]["val_loss"]:.4f} → '
      f'{h["val_loss"]:.4f} while training loss {before[h["epoch"]]["loss"]:.4f} → '
      f'{h["loss"]:.4f}' for h in rising)
  lowest = min(valid, key=lambda h: h['val_loss'])
  return out + [f'Sign of overfitting: validation loss rose while training loss fell at '
                f'epoch(s) {", ".join(str(h["epoch"]) for h in rising)} ({steps}). '
                f'Validation loss was lowest at epoch {lowest["epoch"]} '
                f'({lowest["val_loss"]:.4f}).']


def conclusions(run, cm):
  """Plain-text findings of a run ({'res': results.json, 'history': history.csv}) and its
  test confusion matrix `cm`: the run report's Conclusions."""
  res, history = run['res'], run['history']
  out = _history_conclusions(history)
  pairs = confused_pairs(cm, res['class_names'])
  if pairs:
    out.append('Most confused classes: ' + '; '.join(
        f'true {t} predicted as {p}: {n} time{"s" if n != 1 else ""} ({pct(share, 1)} of class {t})'
        for n, t, p, share in pairs) + '.')
  else:
    out.append('No test image was misclassified.')
  final = history[-1]['val_accuracy'] if history else math.nan
  if math.isnan(final):
    out.append(f'Test accuracy: {pct(res["test_accuracy"])} (no validation accuracy to '
               'compare with).')
  else:
    diff = 100 * (res['test_accuracy'] - final)
    verdict = ('the validation split predicted the test accuracy well' if abs(diff) <= 1 else
               'the validation split is not a close estimate of the test accuracy')
    out.append(f'Test accuracy {pct(res["test_accuracy"])} vs final validation accuracy '
               f'{pct(final)}: {diff:+.2f} percentage points; {verdict}.')
  return out
