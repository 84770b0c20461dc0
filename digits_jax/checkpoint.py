"""Checkpoints: the only module that calls orbax.

A checkpoint holds the train state (params, optimizer state, step) and a JSON record of
where training stands (epoch, step within it, the accuracy log so far), which is all a
resumed run needs: the shuffles are rebuilt from (seed, epoch). A run with
config.restore_best or config.early_stopping_patience also saves the parameters each
replica will be evaluated with, `kept_params` (best_epoch.py).

Each checkpoint also records a SHA-256 checksum of its own contents (every array of the
state and the progress record), inside the progress record, so it commits atomically with
the checkpoint. Orbax has no whole-checkpoint checksum (TensorStore's crc32c covers only
the index of a shard), and a flipped bit in a data file restores silently otherwise.
A restore recomputes the checksum; a checkpoint that fails to restore or to verify is
moved aside to `damaged_checkpoints/` (never deleted) and the next older one is tried.

A checkpoint does not hold the state's `rng` (the replicas' keys: key(seed), from the
config), so checkpoints saved before it existed restore as they are. Its progress record
also holds `arrays_checksum`, a checksum of its arrays that does not depend on their
tree's structure, which a reader that does not know the optimizer's state verifies.

Loading weights (`read_params`, `load_trained`, `load_network`: predict, the report and
its pad) reads the parameters alone, by a plain single-process read (no CheckpointManager,
no barrier: process 0 may call it alone in a multi-process run), and builds no optimizer:
a run trained with any optimizer reads back.

The loop's state is replica-stacked (config.num_seeds replicas on a leading axis). A
one-replica state is saved without that axis, exactly as before num_seeds existed, so
old checkpoints resume and load; N replicas are saved stacked.
"""

import dataclasses
import datetime
import errno
import hashlib
import json
import os
import shutil
import time

from absl import logging as absl_logging
import jax
import numpy as np
import orbax.checkpoint as ocp
from flax.training import train_state as flax_train_state

from digits_jax import config_files
from digits_jax import errors
from digits_jax import orbax_quiet
from digits_jax import parallel
from digits_jax import storage
from digits_jax import train_state as ts

CHECKPOINT_DIR = 'checkpoints'
DAMAGED_DIR = 'damaged_checkpoints'  # Checkpoints that failed to restore or verify.
CHECKSUM_KEY = 'checksum'  # Progress-record key holding the checkpoint's checksum.
ARRAYS_CHECKSUM_KEY = 'arrays_checksum'  # ... and that of its arrays, in no order.
TMP_MARK = orbax_quiet.TMP_MARK


class CheckpointError(errors.UserError, RuntimeError):
  """No checkpoint of the workdir can be restored intact."""


class DamagedCheckpointError(CheckpointError):
  """One checkpoint fails to restore or its contents do not match its checksum."""

  def __init__(self, step, reason):
    super().__init__(f'checkpoint at step {step} {reason}')
    self.step, self.reason = step, reason


@dataclasses.dataclass(frozen=True)
class SetAside:
  """A damaged checkpoint, moved out of the way."""
  step: int
  reason: str  # e.g. 'does not match its checksum', 'cannot be restored (...)'.
  moved_to: str


def _host(x):
  """An array's value on the host; a replicated array is read from its local copy."""
  if isinstance(x, jax.Array) and x.is_fully_replicated:
    x = x.addressable_data(0)
  return np.asarray(x)


def _as_digested(leaf):
  """An array as the checksums digest it (integers as int64: the step is an int32 array
  when saved, an int when restored)."""
  value = np.ascontiguousarray(_host(leaf))
  return value.astype(np.int64) if value.dtype.kind in 'iu' else value


def checksum(state, progress, kept_params=None):
  """SHA-256 of every array of `state` and `kept_params` (with its path, dtype and shape)
  and of `progress`."""
  digest = hashlib.sha256()
  for tree in (state, kept_params):  # None adds nothing: old checksums stay valid.
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      value = _as_digested(leaf)
      digest.update(f'{jax.tree_util.keystr(path)}:{value.dtype}:{value.shape};'.encode())
      digest.update(value.tobytes())
  record = {k: v for k, v in progress.items() if k != CHECKSUM_KEY}
  digest.update(json.dumps(record, sort_keys=True, allow_nan=True).encode())
  return digest.hexdigest()


def arrays_checksum(*trees):
  """SHA-256 of every array of `trees` (dtype, shape and bytes), in no order: each array is
  digested apart and the digests sorted. A reader that restores the raw tree (whose
  structure, e.g. the optimizer's state's, it does not know) can verify it."""
  parts = []
  for leaf in jax.tree.leaves(trees):
    value = _as_digested(leaf)
    parts.append(hashlib.sha256(f'{value.dtype}:{value.shape};'.encode() + value.tobytes())
                 .hexdigest())
  return hashlib.sha256(''.join(sorted(parts)).encode()).hexdigest()


def _first_line(exc):
  """An exception as one short line (TensorStore messages run to dozens of lines)."""
  text = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).strip()
  text = text.splitlines()[0] if text else ''
  text = text.split(' See full TensorStore details')[0]
  return f'{type(exc).__name__}: {text[:160]}' if text else type(exc).__name__


@dataclasses.dataclass(frozen=True)
class Restored:
  """A checkpoint's contents: the replica-stacked state, its progress record, and the
  kept parameters (None unless asked for)."""
  step: int
  state: object
  progress: dict
  kept_params: object = None


def _processes(read_only):
  """The processes a CheckpointManager involves: all for a writer (orbax's default), only
  its own for a reader. Orbax makes every manager a collective (sync_global_processes),
  which hung multi-process runs: process 0 reads alone after training (the report's
  drawing pad) while the others wait in jax.distributed.shutdown."""
  if not read_only:
    return ocp.options.MultiprocessingOptions()
  me = jax.process_index()
  return ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})


class Checkpointer:
  """Saves and restores (state, progress) under workdir/checkpoints, keyed by global step."""

  def __init__(self, workdir, max_to_keep=2, *, read_only=False, wait_for_saves=False):
    """`read_only`: for reading a run's checkpoints, even while it saves (never save).
    `wait_for_saves`: each save finishes before `save` returns (its seconds summed in
    `waited_seconds`), for runs whose training uses every core a save would share."""
    self.workdir = os.path.abspath(workdir)
    self.wait_for_saves, self.waited_seconds = wait_for_saves, 0.0
    self.directory = os.path.join(self.workdir, CHECKPOINT_DIR)
    orbax_quiet.install(absl_logging.get_absl_logger())
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only,
            # A save cut short leaves nothing behind (a reader must not touch a run's).
            cleanup_tmp_directories=not read_only,
            multiprocessing_options=_processes(read_only)))

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step, state, progress, kept_params=None):
    """Saves a replica-stacked state asynchronously; `progress` is a JSON-serialisable dict;
    `kept_params`, if given, the replica-stacked parameters each replica is evaluated with."""
    state, kept_params = _as_saved(state), _as_saved(kept_params)
    progress = dict(progress, **{ARRAYS_CHECKSUM_KEY: arrays_checksum(state, kept_params)})
    progress[CHECKSUM_KEY] = checksum(state, progress, kept_params)
    items = {'state': ocp.args.StandardSave(state), 'progress': ocp.args.JsonSave(progress)}
    if kept_params is not None:
      items['kept_params'] = ocp.args.StandardSave(kept_params)
    try:  # Raises too if the previous save failed.
      self.manager.save(step, args=ocp.args.Composite(**items), force=True)
      if self.wait_for_saves:
        start = time.perf_counter()
        self.manager.wait_until_finished()
        self.waited_seconds += time.perf_counter() - start
    except Exception:
      self._abandon()
      raise

  def restore(self, state_like, step=None, kept_like=None):
    """Restores the checkpoint of `step` (default latest) into `state_like`'s structure.

    `state_like` (and `kept_like`, given for a run that keeps parameters) are
    replica-stacked, as are the arrays returned, with their shardings, so a run may
    resume on another number of devices. Returns a Restored. Raises
    DamagedCheckpointError if the checkpoint cannot be restored or does not match its
    checksum (one saved before checksums were recorded is trusted).
    """
    step = self.latest_step() if step is None else step
    abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, _as_saved(tree))
    items = {'state': ocp.args.StandardRestore(abstract(state_like)),
             'progress': ocp.args.JsonRestore()}
    if kept_like is not None:
      items['kept_params'] = ocp.args.StandardRestore(abstract(kept_like))
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except
      if (storage.find(e) or (None,))[0] in (errno.EACCES, errno.EPERM):
        raise  # Unreadable is not damaged: the caller explains it; nothing is moved.
      raise DamagedCheckpointError(step, f'cannot be restored ({_first_line(e)})') from e
    state, progress = restored['state'], dict(restored['progress'])
    kept = restored['kept_params'] if kept_like is not None else None
    recorded = progress.pop(CHECKSUM_KEY, None)
    if recorded is not None and recorded != checksum(state, progress, kept):
      raise DamagedCheckpointError(step, 'does not match its checksum (a flipped bit?)')
    progress.pop(ARRAYS_CHECKSUM_KEY, None)
    if ts.num_replicas(state_like) == 1:
      state, kept = jax.tree.map(lambda x: x[None], (state, kept))
    state = state_like.replace(step=state.step, params=state.params, opt_state=state.opt_state)
    return Restored(step, state, progress, kept)

  def restore_newest_intact(self, state_like, kept_like=None):
    """Restores the newest checkpoint that is intact, moving damaged ones aside.

    Returns:
      (restored, set_aside): restored is a Restored, or None when the workdir holds no
      checkpoint; set_aside lists the damaged ones moved aside.

    Raises:
      CheckpointError: there were checkpoints, and every one was damaged.
    """
    set_aside = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        return self.restore(state_like, step, kept_like), set_aside
      except DamagedCheckpointError as e:
        set_aside.append(SetAside(step, e.reason, self._move_aside(step)))
    if set_aside:
      raise CheckpointError(
          f'no checkpoint in {self.directory} is intact ('
          + '; '.join(f'step {s.step} {s.reason}' for s in set_aside)
          + f'); they were moved to {os.path.join(self.workdir, DAMAGED_DIR)}. '
          'Rerun the same command to train anew in this workdir.')
    return None, set_aside

  def _move_aside(self, step):
    """Moves step's folder to damaged_checkpoints/<step>-<time> (process 0); returns it."""
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S-%f')
    target = os.path.join(self.workdir, DAMAGED_DIR, f'{step}-{stamp}')
    if parallel.is_main_process():
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), target)
    parallel.barrier(f'moved_aside_{step}')
    self.manager.reload()
    return target

  def close(self):
    """Waits for pending saves; call before exiting (also after a failure). Idempotent.

    Re-raises a failure of a save still in flight, after closing the manager.
    """
    if self.manager is not None:
      try:
        self.manager.wait_until_finished()
      except Exception:
        self._abandon()
        raise
      self.manager.close()
      self.manager = None

  def _abandon(self):
    """After a failed save: closes the manager and removes the save's temporary folder."""
    manager, self.manager = self.manager, None
    try:
      manager.close()
    finally:
      if parallel.is_main_process():
        _remove_temporaries(self.directory)


def _remove_temporaries(directory, settle=0.05, attempts=40):
  """Removes a failed save's temporary folders from `directory` (leave nothing half-written),
  until none has come back `settle` seconds later: a save waited for fails as soon as one
  write does, while its other writes may still be finishing and recreate the folder."""
  for _ in range(attempts):
    names = [n for n in os.listdir(directory) if TMP_MARK in n]
    for name in names:
      shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    time.sleep(settle)
    if not names and not any(TMP_MARK in n for n in os.listdir(directory)):
      return


def _as_saved(tree):
  """A stacked tree as saved: one replica without its replica axis, many stacked; a train
  state as flax's TrainState, without its `rng` (the config's seeds)."""
  if isinstance(tree, ts.TrainState):  # Flax's TrainState, the tree checkpoints always held.
    tree = flax_train_state.TrainState(step=tree.step, apply_fn=tree.apply_fn,
                                       params=tree.params, tx=tree.tx,
                                       opt_state=tree.opt_state)
  if tree is None or ts.num_replicas(tree) > 1:
    return tree
  return jax.tree.map(_first_replica, tree)


def _first_replica(x):
  """x[0], sliced on the host where all of x is (one process): an eager x[0] compiles a
  program per shape, 45 ms per save of a new network (each cell of a sweep)."""
  if isinstance(x, jax.Array) and x.is_fully_addressable:
    return np.asarray(_host(x)[0])  # (A 0-d array, not a NumPy scalar: orbax refuses those.)
  return x[0]


def has_checkpoint(workdir):
  """Whether `workdir` holds at least one finished checkpoint."""
  directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
  return os.path.isdir(directory) and any(
      name.isdigit() for name in os.listdir(directory))


def epochs_begun(workdir):
  """Epochs the newest readable checkpoint of `workdir` has begun (finished ones, plus one
  if it stopped inside an epoch); 0 if there is none. Reads only progress records."""
  if not has_checkpoint(workdir):
    return 0
  checkpointer = Checkpointer(workdir, read_only=True)
  try:
    for step in sorted(checkpointer.manager.all_steps(), reverse=True):
      try:
        progress = checkpointer.manager.restore(
            step, args=ocp.args.Composite(progress=ocp.args.JsonRestore()))['progress']
        return int(progress['epoch']) + (progress['step_in_epoch'] > 0)
      except Exception:  # pylint: disable=broad-except  (damaged: restoring will tell)
        continue
  finally:
    checkpointer.close()
  return 0


@dataclasses.dataclass(frozen=True)
class Weights:
  """A checkpoint's parameters, read without its optimizer state (numpy, as saved: one
  replica without a replica axis, many stacked)."""
  step: object  # The state's step (optimizer steps taken), as saved.
  params: object
  kept_params: object  # The parameters each replica is evaluated with, or None.
  progress: dict


def _single_process_reader():
  """An orbax Checkpointer that reads in this process alone: its restore's barrier spans
  only this process, so process 0 may read while the others do something else."""
  options = _processes(read_only=True)
  handler = ocp.CompositeCheckpointHandler(
      state=ocp.PyTreeCheckpointHandler(multiprocessing_options=options),
      kept_params=ocp.PyTreeCheckpointHandler(multiprocessing_options=options),
      progress=ocp.JsonCheckpointHandler(multiprocessing_options=options))
  return ocp.Checkpointer(handler, multiprocessing_options=options)


def _as_numpy(tree_metadata):
  """Restore arguments reading every array of a tree (given by its metadata) as numpy."""
  return jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree_metadata)


def read_params(workdir, step=None):
  """The parameters of the checkpoint of `step` (default the latest), verified against its
  `arrays_checksum` (one saved before that checksum existed is trusted). Builds no
  optimizer: the state is read as the raw tree it was saved as; a single-process read.

  Raises:
    CheckpointError: the workdir holds no checkpoint (or not `step`).
    DamagedCheckpointError: it cannot be read, or does not match its checksum.
  """
  steps = sorted(int(n) for n in os.listdir(os.path.join(workdir, CHECKPOINT_DIR))
                 if n.isdigit()) if has_checkpoint(workdir) else []
  step = (steps[-1] if steps else None) if step is None else step
  if step not in steps:
    raise CheckpointError(
        f'{workdir} holds no checkpoint under {CHECKPOINT_DIR}/' + (
            f' at step {step}.' if step is not None else ': it is not a trained run (python '
            f'-m digits_jax.main --workdir={workdir} trains one).'))
  try:
    return _read_weights(os.path.join(workdir, CHECKPOINT_DIR, str(step)), step)
  except DamagedCheckpointError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if (storage.find(e) or (None,))[0] in (errno.EACCES, errno.EPERM):
      raise
    raise DamagedCheckpointError(step, f'cannot be restored ({_first_line(e)})') from e


def _read_weights(path, step):
  """`Weights` of one checkpoint folder, its arrays verified against its arrays_checksum."""
  reader = _single_process_reader()
  items = reader.metadata(path).item_metadata
  names = [name for name in ('state', 'kept_params') if items.get(name) is not None]
  args = {name: ocp.args.PyTreeRestore(restore_args=_as_numpy(items[name].tree))
          for name in names}
  restored = reader.restore(path, args=ocp.args.Composite(
      **args, progress=ocp.args.JsonRestore()))
  state, kept = restored['state'], restored['kept_params'] if 'kept_params' in names else None
  progress = dict(restored['progress'])
  progress.pop(CHECKSUM_KEY, None)
  recorded = progress.pop(ARRAYS_CHECKSUM_KEY, None)
  if recorded is not None and recorded != arrays_checksum(state, kept):
    raise DamagedCheckpointError(step, 'does not match its checksum (a flipped bit?)')
  return Weights(state['step'], state['params'], kept, progress)


def load_trained(workdir, step=None):
  """The trained network of a finished (or interrupted) run, for evaluation and inference.

  Needs no TensorFlow and builds no optimizer: reads workdir/config.json (completed by
  config_files.read_run_config) and the parameters of the latest checkpoint (or `step`),
  verified against their checksum; moves nothing. A run with config.restore_best or
  config.early_stopping_patience comes back with the parameters it was evaluated with
  (each replica's best, or where it stopped).

  Returns:
    (config, state, progress): `state` is a replica-stacked TrainState without an
    optimizer (tx and opt_state None; its step is the checkpoint's), one replica per seed
    of `train_state.seeds_of(config)`; take replica k with `train_state.replica(state, k)`.
  """
  config = config_files.read_run_config(workdir)
  weights = read_params(workdir, step)
  params = weights.params if weights.kept_params is None else weights.kept_params
  # device_put: jnp.asarray compiles a program per shape (0.1 s per network read).
  stacked = lambda x: jax.device_put(np.asarray(x) if config.num_seeds > 1
                                     else np.asarray(x)[None])
  state = ts.inference_state(config, jax.tree.map(stacked, params), stacked(weights.step))
  return config, state, weights.progress


def load_network(workdir):
  """(config, state) of a trained run's network, for inference (predict, the report's pad).

  The one place that picks which trained network to use: the run's first replica.

  Raises:
    errors.MissingFileError: `workdir` holds no config.json.
    CheckpointError: it holds no intact checkpoint.
  """
  if not os.path.isfile(os.path.join(workdir, 'config.json')):
    raise errors.MissingFileError(workdir, 'holds no trained run (no config.json)',
                                  'Give a trained run\'s folder (python -m digits_jax.main '
                                  f'--workdir={workdir} trains one).')
  config, state, _ = load_trained(workdir)
  return config, jax.tree.map(lambda x: jax.device_put(_first_replica(x)), state)
