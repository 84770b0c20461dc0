"""Keras's habits over epochs: keep the best one, stop when validation stops improving.

`config.restore_best` is Keras's `ModelCheckpoint(monitor='val_accuracy', mode='max',
save_best_only=True)` followed by loading that checkpoint: the test set is evaluated with
the parameters of the epoch with the highest validation accuracy (the first such epoch,
as Keras saves only on a strict improvement). `config.early_stopping_patience` is
`EarlyStopping(monitor='val_accuracy', patience=N)`: training stops after N epochs
without a strictly better validation accuracy (0 = off).

Every decision is a pure function of a seed's accuracy log, which every checkpoint holds,
so a resumed run takes them exactly as an uninterrupted one. In a many-seed run each
replica decides alone: a replica that stops gets no more history records and keeps the
parameters it stopped with, exactly its one-seed run; the program trains on (its other
replicas need the steps) until every replica has stopped. The parameters each replica
will be evaluated with ("kept") are saved in each checkpoint beside the state.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


def best_record(history):
  """The first epoch record with the highest validation accuracy, or None (no validation)."""
  best = None
  for record in history:
    if math.isfinite(record['val_accuracy']) and (
        best is None or record['val_accuracy'] > best['val_accuracy']):
      best = record
  return best


def stopped_early(history, patience):
  """Whether EarlyStopping with this patience stops after the last epoch of `history`."""
  best = best_record(history)
  return bool(patience) and best is not None and history[-1]['epoch'] - best['epoch'] >= patience


def of_seed(history, seed):
  """One seed's records of a run's history (a one-seed run's records carry no 'seed')."""
  return [h for h in history if h.get('seed', seed) == seed]


def active(history, seeds, patience):
  """Per seed, whether it still trains (early stopping has not stopped it)."""
  return [not stopped_early(of_seed(history, s), patience) for s in seeds]


def uses_kept(config):
  """Whether the run evaluates kept parameters rather than its last state's."""
  return bool(config.restore_best or config.early_stopping_patience)


def initial_kept(config, params):
  """A copy of the initial (replica-stacked) parameters if the run keeps any, else None."""
  return jax.tree.map(jnp.copy, params) if uses_kept(config) else None


def to_keep(records, history, *, restore_best):
  """Per replica, whether its parameters after this epoch are the ones to keep.

  `records` are this epoch's records, one per replica (None for a stopped one):
  with restore_best, a replica keeps the parameters of its best epoch; else those of its
  last recorded epoch (where early stopping leaves them).
  """
  return np.array([r is not None and (not restore_best or
                                      best_record(of_seed(history, r.get('seed'))) is r)
                   for r in records])


@jax.jit
def keep(mask, params, kept):
  """`params` where `mask` (one bool per replica) is set, else `kept`, as new arrays."""
  pick = lambda p, k: jnp.where(mask.reshape((-1,) + (1,) * (p.ndim - 1)), p, k)
  return jax.tree.map(pick, params, kept)


def summary(history, *, restore_best, patience, num_epochs):
  """The fields results.json records about one seed (see the module docstring)."""
  best = best_record(history)
  stopped = stopped_early(history, patience) and history[-1]['epoch'] < num_epochs
  return {'evaluated_epoch': (best['epoch'] if restore_best and best else
                              history[-1]['epoch'] if history else 0),
          'stopped_early_at_epoch': history[-1]['epoch'] if stopped else None,
          'epochs_trained': len(history)}
