"""Keras's habits over epochs: keep the best one, stop when validation stops improving.

`config.restore_best` is Keras's `ModelCheckpoint(monitor='val_accuracy', mode='max',
save_best_only=True)` followed by loading that checkpoint: the test set is evaluated with
the parameters of the epoch with the highest validation accuracy (the first such epoch,
as Keras saves only on a strict improvement). `config.early_stopping_patience` is
`EarlyStopping(monitor='val_accuracy', patience=N)`: training stops after N epochs
without a strictly better validation accuracy (0 = off).

Both decisions are pure functions of the accuracy log, which every checkpoint holds, so a
resumed run takes them exactly as an uninterrupted one; the best parameters themselves
are saved in each checkpoint beside the state (checkpoint.py).
"""

import math


def best_record(history):
  """The first epoch record with the highest validation accuracy, or None (no validation)."""
  best = None
  for record in history:
    if math.isfinite(record['val_accuracy']) and (
        best is None or record['val_accuracy'] > best['val_accuracy']):
      best = record
  return best


def last_is_best(history):
  """Whether the last epoch improved on every epoch before it (Keras would save it)."""
  best = best_record(history)
  return bool(history) and best is history[-1]


def stopped_early(history, patience):
  """Whether EarlyStopping with this patience stops after the last epoch of `history`."""
  best = best_record(history)
  return bool(patience) and best is not None and history[-1]['epoch'] - best['epoch'] >= patience


def summary(history, *, restore_best, patience, num_epochs):
  """The fields results.json records about both (see the module docstring)."""
  best = best_record(history)
  stopped = stopped_early(history, patience) and len(history) < num_epochs
  return {'restore_best': bool(restore_best),
          'evaluated_epoch': (best['epoch'] if restore_best and best else
                              history[-1]['epoch'] if history else 0),
          'early_stopping_patience': int(patience),
          'stopped_early_at_epoch': history[-1]['epoch'] if stopped else None,
          'epochs_trained': len(history)}
