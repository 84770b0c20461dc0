"""Checkpoints: the only module that calls orbax.

A checkpoint holds the train state (params, optimizer state, step) and a JSON record of
where training stands (epoch, step within it, the accuracy log so far), which is all a
resumed run needs: the shuffles are rebuilt from (seed, epoch). With config.restore_best
it also holds the parameters of the best epoch so far (best_epoch.py).
"""

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from digits_jax import train_state as ts

CHECKPOINT_DIR = 'checkpoints'


class Checkpointer:
  """Saves and restores (state, progress) under workdir/checkpoints, keyed by global step."""

  def __init__(self, workdir, max_to_keep=2):
    self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step, state, progress, best_params=None):
    """Saves asynchronously; `progress` is a JSON-serialisable dict; `best_params`, if
    given, the parameters of the best epoch so far."""
    items = {'state': ocp.args.StandardSave(state), 'progress': ocp.args.JsonSave(progress)}
    if best_params is not None:
      items['best_params'] = ocp.args.StandardSave(best_params)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore_best_params(self, params_like, step=None):
    """The best epoch's parameters saved at `step` (default latest), shaped and sharded like
    `params_like`."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, params_like)
    return self.manager.restore(step, args=ocp.args.Composite(
        best_params=ocp.args.StandardRestore(abstract)))['best_params']

  def restore(self, state_like, step=None):
    """Restores (state, progress) of `step` (default latest) into `state_like`'s structure.

    Arrays come back with `state_like`'s shardings, so a run may resume on another
    number of devices.
    """
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), progress=ocp.args.JsonRestore()))
    return restored['state'], restored['progress']

  def close(self):
    """Waits for pending saves; call before exiting (also after a failure). Idempotent."""
    if self.manager is not None:
      self.manager.wait_until_finished()
      self.manager.close()
      self.manager = None


def has_checkpoint(workdir):
  """Whether `workdir` holds at least one finished checkpoint."""
  directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
  return os.path.isdir(directory) and any(
      name.isdigit() for name in os.listdir(directory))


def load_trained(workdir, step=None):
  """Rebuilds the trained state of a finished (or interrupted) run from its workdir.

  Needs no TensorFlow: reads workdir/config.json and the latest checkpoint. A run with
  config.restore_best comes back with the parameters it was evaluated with (the best
  epoch's); its optimizer state and step are the last epoch's.

  Returns:
    (config, state, progress).
  """
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  state = ts.create_train_state(config, jax.random.key(config.seed))
  checkpointer = Checkpointer(workdir)
  try:
    if checkpointer.latest_step() is None:
      raise FileNotFoundError(f'{workdir} holds no checkpoint under {CHECKPOINT_DIR}/.')
    state, progress = checkpointer.restore(state, step)
    if config.get('restore_best'):
      state = state.replace(params=checkpointer.restore_best_params(state.params, step))
  finally:
    checkpointer.close()
  return config, state, progress
