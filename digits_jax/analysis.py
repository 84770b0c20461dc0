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
  return input_pipeline.order_key(dataset)


def confused_pairs(cm, names, top=3):
  """The `top` largest off-diagonal cells: (count, true name, predicted name, share of true)."""
  cells = [(int(cm[t, p]), t, p) for t in range(len(names)) for p in range(len(names))
           if t != p and cm[t, p] > 0]
  cells.sort(key=lambda x: (-x[0], x[1], x[2]))
  return [(n, names[t], names[p], n / max(int(cm[t].sum()), 1)) for n, t, p in cells[:top]]


def overfitting_start(history):
  """The epoch from which validation loss stays above its minimum for good (the epoch
  after its last lowest point), or None when it is lowest at the last epoch.

  Returns:
    (lowest record, first record after it, last record) or None.
  """
  lowest = min(history, key=lambda h: (h['val_loss'], -h['epoch']))  # The last minimum.
  after = [h for h in history if h['epoch'] > lowest['epoch']]
  return (lowest, after[0], history[-1]) if after else None


def overfitting_sentence(history):
  """The overfitting conclusion in one sentence (history: epochs with validation)."""
  found = overfitting_start(history)
  if found is None:
    return (f'No sign of overfitting: validation loss was lowest at the last epoch, '
            f'{history[-1]["epoch"]} ({history[-1]["val_loss"]:.4f}).')
  lowest, first, last = found
  rise = last['val_loss'] - lowest['val_loss']
  train = (f', while training loss fell from {lowest["loss"]:.4f} to {last["loss"]:.4f}'
           if last['loss'] < lowest['loss'] else '')
  return (f'Overfitting from epoch {first["epoch"]}: validation loss was lowest at epoch '
          f'{lowest["epoch"]} ({lowest["val_loss"]:.4f}) and stayed above it from then on, '
          f'ending {rise:.4f} higher (+{rise / max(lowest["val_loss"], 1e-12):.0%}) at epoch '
          f'{last["epoch"]}{train}.')


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
  return out + [overfitting_sentence(valid)]


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
