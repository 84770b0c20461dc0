"""Checkpoints: the only module that calls orbax.

A checkpoint holds the train state (params, optimizer state, step) and a JSON record of
where training stands (epoch, step within it, the accuracy log so far), which is all a
resumed run needs: the shuffles are rebuilt from (seed, epoch).
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

  def save(self, step, state, progress):
    """Saves asynchronously; `progress` is a JSON-serialisable dict."""
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress)), force=True)

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

  Needs no TensorFlow: reads workdir/config.json and the latest checkpoint.

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
  finally:
    checkpointer.close()
  return config, state, progress


def load_network(workdir):
  """(config, state) of a trained run's network, for inference (predict, the report's pad).

  The one place that picks which trained network to use: the run's first replica.

  Raises:
    FileNotFoundError: `workdir` holds no config.json or no checkpoint.
  """
  if not os.path.isfile(os.path.join(workdir, 'config.json')):
    raise FileNotFoundError(f'{workdir} holds no config.json')
  config, state, _ = load_trained(workdir)
  return config, state
