"""The training loop: `train_and_evaluate(config, workdir)` runs every step of the lab.

Reads no flags. Validates everything before any compute, resumes from the workdir's
latest checkpoint, trains in scanned blocks of `config.steps_per_call` steps, evaluates
without dropping examples, then writes every result file (process 0 only).

With config.num_seeds = N the state is N replicas stacked on a leading axis (seeds
config.seed ... config.seed + N - 1, each with its own shuffles) and every block, every
evaluation trains or evaluates all of them in one call; one seed is the case N = 1.
config.restore_best and config.early_stopping_patience (Keras's habits, best_epoch.py)
choose which parameters each replica is evaluated with, and when its epochs end.

The loop's helpers live in their own modules: workdir.py (whose run a workdir holds),
steps.py (how the steps run: kernel or XLA, and the block runner), results.py (the
result files), console.py (what the user reads).
"""

import contextlib
import dataclasses
import math
import signal
import time

import jax
import numpy as np

from digits_jax import best_epoch
from digits_jax import checkpoint as ckpt_lib
from digits_jax import console
from digits_jax import errors
from digits_jax import input_pipeline
from digits_jax import models
from digits_jax import outputs
from digits_jax import parallel
from digits_jax import preemption
from digits_jax import results as results_lib
from digits_jax import steps as steps_lib
from digits_jax import storage
from digits_jax import summaries
from digits_jax import train_state as ts
from digits_jax import validation
from digits_jax import workdir as workdir_lib


class NonFiniteLossError(errors.UserError, FloatingPointError):
  """The training loss became NaN or infinite; the checkpoints saved before are kept."""


# Failures caused by the inputs, reported as one clear line (no traceback) by the entry
# points; a sweep records them and goes on with its other runs.
# Every such error subclasses errors.UserError (kept as a tuple for older callers).
USER_ERRORS = (errors.UserError,)


@dataclasses.dataclass
class Progress:
  """Where training stands; saved in every checkpoint beside the state.

  `sums` holds each replica's running metric sums; `history` one record per epoch (per
  seed per epoch, each with its 'seed', in a many-seed run). In a checkpoint, a one-seed
  run's sums are saved as a single dict (as before num_seeds existed).
  """
  epoch: int = 0  # Epochs finished.
  step_in_epoch: int = 0  # Steps done in the unfinished epoch `epoch` (0 at epoch ends).
  sums: list = dataclasses.field(default_factory=lambda: [ts.zero_sums()])
  seconds: float = 0.0  # Training seconds spent in the unfinished epoch so far.
  history: list = dataclasses.field(default_factory=list)

  @classmethod
  def fresh(cls, num_replicas):
    return cls(sums=[ts.zero_sums() for _ in range(num_replicas)])

  @classmethod
  def from_saved(cls, saved, workdir=''):
    """The progress a checkpoint saved; refuses one summed with other metrics than
    train_state.METRICS declares (its history could not be continued)."""
    sums = saved['sums']
    sums = [sums] if isinstance(sums, dict) else sums
    if set(sums[0]) != set(ts.sum_names()):
      raise workdir_lib.WorkdirMismatchError(
          f'the run in {workdir} was trained with the metric sums {sorted(sums[0])}, and '
          f'train_state.METRICS now declares {sorted(ts.sum_names())}: its history cannot '
          'go on with other metrics. Rerun with --fresh (the old run is moved aside) or '
          'another --workdir, or restore the declaration to resume it.')
    return cls(**{**saved, 'sums': sums})

  def to_saved(self):
    """The JSON record a checkpoint holds (a one-seed run's sums as one dict)."""
    saved = dataclasses.asdict(self)
    if len(self.sums) == 1:
      saved['sums'] = saved['sums'][0]
    return saved

  def add_block(self, block_sums, active):
    """Adds each replica's block metric sums on the host in float64 (same order on every
    run); `active` (one bool per replica): the replicas whose loss must stay finite."""
    block_sums = jax.device_get(block_sums)
    for r, sums in enumerate(self.sums):
      for k in sums:
        sums[k] += float(block_sums[k][r])
    if not all(math.isfinite(s['loss']) for s, a in zip(self.sums, active) if a):
      raise NonFiniteLossError(
          'the training loss became non-finite (NaN or inf); training stopped, and the '
          'checkpoints saved before it were kept. Lower config.learning_rate or check the '
          'input data.')

  def close_epoch(self, vals, *, seeds, active, extra_seconds):
    """Records the finished epoch (each replica's validation metrics `vals`) for the
    `active` replicas, resets the running sums and returns its history records (one per
    replica; None for a replica that early stopping has stopped)."""
    records = []
    for seed, s, val, still in zip(seeds, self.sums, vals, active):
      record = {'epoch': self.epoch + 1, **ts.epoch_values(s),
                **{'val_' + k: v for k, v in val.items()},
                'seconds': self.seconds + extra_seconds}
      records.append(None if not still else record if len(seeds) == 1 else
                     {'seed': seed, **record})
    self.history.extend(r for r in records if r is not None)
    self.epoch, self.step_in_epoch, self.seconds = self.epoch + 1, 0, 0.0
    self.sums = [ts.zero_sums() for _ in seeds]
    return records


def restore_or_init(config, mesh, checkpointer, runner):
  """The stacked train state (placed on the mesh), progress and kept parameters (None
  unless the run keeps some, see best_epoch.py): from the newest intact checkpoint, else
  fresh. The initialisation's time (compiling it, once per model and optimizer) is added
  to `runner.compile_seconds`."""
  seeds = ts.seeds_of(config)
  start = time.perf_counter()
  state = jax.block_until_ready(ts.create_train_states(config, seeds))
  runner.compile_seconds += time.perf_counter() - start
  state = parallel.place_replicas(state, mesh)
  kept = best_epoch.initial_kept(config, state.params)
  restored, set_aside = checkpointer.restore_newest_intact(state, kept)
  for damaged in set_aside:
    console.say(f'The checkpoint at step {damaged.step} {damaged.reason}; moved it aside to '
                f'{damaged.moved_to}.')
  if restored is None:
    return state, Progress.fresh(len(seeds)), kept
  progress = Progress.from_saved(restored.progress, checkpointer.workdir)
  console.say(console.resumed_line(restored.step, progress))
  return restored.state, progress, restored.kept_params


def device_eval_batches(mesh, images, labels, batch_size):
  """Evaluation batches, padded and masked, placed on the devices once."""
  n_dev = mesh.devices.size
  out = []
  for batch in input_pipeline.eval_batches(images, labels, batch_size, n_dev):
    size = len(batch['mask'])
    cols = parallel.local_columns(mesh, size)
    out.append(parallel.to_global(mesh, {k: v[cols] for k, v in batch.items()}, size))
  return out


def evaluate(state, batches, with_probabilities=False):
  """Each replica's metrics ({name: value}, train_state.METRICS) over every example of
  `batches` (a list of dicts), and the probabilities [replicas, examples, 10] if asked."""
  sums, probs = [], []
  for batch in batches:  # One program for both (compiled once): the softmax costs nothing.
    m, p = ts.eval_and_predict_stacked(state, batch)
    if with_probabilities:
      probs.append(parallel.to_host(p)[:, np.asarray(parallel.to_host(batch['mask']))])
    sums.append(m)
  total = jax.tree.map(lambda *x: np.sum(np.asarray(x, np.float64), axis=0),
                       *jax.device_get(sums))
  out = [{name: float(v) for name, v in ts.epoch_values(replica_sums).items()}
         for replica_sums in (ts.replica(total, k) for k in range(len(total[ts.COUNT])))]
  return (out, np.concatenate(probs, axis=1)) if with_probabilities else out


def train_epoch(state, progress, *, runner, stop, config, num_train,
                while_training=contextlib.nullcontext):
  """Trains the rest of epoch `progress.epoch`; returns (state, unfinished: stopped early).

  Its steps are compiled first, then run inside `while_training()`."""
  steps = input_pipeline.steps_per_epoch(num_train, config.batch_size)
  plans = [input_pipeline.epoch_plan(num_train, config.batch_size, runner.padded_batch, seed,
                                     progress.epoch) for seed in ts.seeds_of(config)]
  index, mask = np.stack([p[0] for p in plans]), np.stack([p[1] for p in plans])
  block_list = input_pipeline.blocks(progress.step_in_epoch, steps, config.steps_per_call)
  runner.compile_blocks(state, index, mask, block_list)
  bar = console.ProgressBar(steps, config.batch_size, config.progress_bar)
  start, first = time.perf_counter(), progress.step_in_epoch
  compiled_before = runner.compile_seconds
  active = best_epoch.active(progress.history, ts.seeds_of(config),
                             config.early_stopping_patience)
  pending = None  # Fetch a block's metrics only after the next block was dispatched.
  with while_training():
    for (_, end), args in zip(block_list, runner.feed(index, mask, block_list)):
      state, block_sums = runner.run(state, args)
      if pending is not None:
        progress.add_block(pending, active)
      pending = block_sums
      progress.step_in_epoch = end
      bar.update(end, first)
      if parallel.any_process(stop.requested):
        break
    if pending is not None:
      progress.add_block(pending, active)
  bar.close()  # Compilation is reported apart (results.json timings.compile_seconds).
  progress.seconds += time.perf_counter() - start - (runner.compile_seconds - compiled_before)
  return state, progress.step_in_epoch < steps


def finish_epoch(state, progress, *, val_batches, config, workdir, summary_writer=None):
  """Validates, logs and records the finished epoch (TensorBoard: every seed's); resets the
  running sums. Returns its records, one per replica (None for a stopped one)."""
  start = time.perf_counter()
  seeds = ts.seeds_of(config)
  active = best_epoch.active(progress.history, seeds, config.early_stopping_patience)
  vals = (evaluate(state, val_batches) if val_batches else
          [dict.fromkeys(ts.metric_names(), math.nan)] * len(seeds))
  records = progress.close_epoch(vals, seeds=seeds, active=active,
                                 extra_seconds=time.perf_counter() - start)
  shown = [r for r in records if r is not None]
  console.say(console.epoch_line(shown[0], config.num_epochs) if len(seeds) == 1 else
              console.seeds_epoch_line(shown, config.num_epochs, len(seeds)))
  for seed, record in zip(seeds, records):
    own = best_epoch.of_seed(progress.history, seed)
    if (record is not None and progress.epoch < config.num_epochs
        and best_epoch.stopped_early(own, config.early_stopping_patience)):
      console.say(console.early_stop_line(own, config.early_stopping_patience,
                                          many=len(seeds) > 1))
  if parallel.is_main_process():
    results_lib.write_history(workdir, progress.history)
  if summary_writer:
    summary_writer.epoch(records)
  return records


def checkpoint_due(config, epoch, seconds_since_save):
  """Whether the end of `epoch` saves a checkpoint: every config.checkpoint_every_epochs
  epochs, once config.checkpoint_min_interval_seconds have passed since the last save (on
  any process, so all agree). Short epochs then do not pay a save each (about 40 ms in
  orbax however small the state); the last epoch and a stop signal always save."""
  return epoch % config.checkpoint_every_epochs == 0 and parallel.any_process(
      seconds_since_save >= config.checkpoint_min_interval_seconds)


def train_loop(config, workdir, *, state, progress, kept, runner, checkpointer, num_train,
               val_batches, summary_writer=None, while_training=contextlib.nullcontext):
  """Runs the remaining epochs, saving checkpoints; raises StopRequested on a signal.
  Their steps run inside `while_training()` (see train_and_evaluate).

  Returns (state, kept): `kept` (None unless the run keeps parameters) is updated after
  each epoch with the parameters each replica is to be evaluated with (best_epoch.py).
  """
  seeds, patience = ts.seeds_of(config), config.early_stopping_patience
  saved_at = time.monotonic()  # Resuming counts as a save: the interval starts here.
  with preemption.GracefulStop() as stop:
    while progress.epoch < config.num_epochs and any(
        best_epoch.active(progress.history, seeds, patience)):
      state, unfinished = train_epoch(state, progress, runner=runner, stop=stop,
                                      config=config, num_train=num_train,
                                      while_training=while_training)
      if not unfinished:
        records = finish_epoch(state, progress, val_batches=val_batches, config=config,
                               workdir=workdir, summary_writer=summary_writer)
        if kept is not None:  # New arrays: the state's are donated to the next block.
          kept = best_epoch.keep(best_epoch.to_keep(records, progress.history,
                                                    restore_best=config.restore_best),
                                 state.params, kept)
      stopping = unfinished or parallel.any_process(stop.requested)  # Same on all hosts.
      if (stopping or progress.epoch == config.num_epochs
          or not any(best_epoch.active(progress.history, seeds, patience))
          or checkpoint_due(config, progress.epoch, time.monotonic() - saved_at)):
        checkpointer.save(int(state.step[0]), state, progress.to_saved(), kept)
        saved_at = time.monotonic()
      if stopping:
        checkpointer.close()
        where = (f'epoch {progress.epoch + 1}, step {progress.step_in_epoch}' if unfinished
                 else f'end of epoch {progress.epoch}')
        signal_name = stop.requested or "another process's stop signal"
        raise preemption.StopRequested(
            f'{signal_name} received: saved a checkpoint at step {int(state.step[0])} '
            f'({where}) in {workdir}. Rerun the same command to resume.',
            signum=stop.signum or signal.SIGTERM)
  return state, kept


def open_summaries(config, workdir, history):
  """TensorBoard's writer of the run (process 0, config.tensorboard; every seed's epochs),
  else None."""
  if not (config.tensorboard and parallel.is_main_process()):
    return None
  seeds = ts.seeds_of(config)
  return summaries.RunWriter(workdir, history, seeds if len(seeds) > 1 else [None])


def train_and_evaluate(config, workdir, *, fresh=False, write_outputs=None,
                       while_training=contextlib.nullcontext):
  """Trains and evaluates the config's network, writing every result to `workdir`.

  Args:
    config: an ml_collections config as in configs/default.py.
    workdir: folder for checkpoints and results; a run already there is resumed.
    fresh: move a run already in `workdir` aside and start anew.
    write_outputs: writes the figures, summaries and report once the results are saved,
      called as outputs.write_outputs (the default, at once); a sweep passes one that
      hands them to its worker process (sweep_outputs.py), drawing while the next run trains.
    while_training: a context manager factory entered while training steps run (a sweep
      pauses its drawing worker there: training takes every core).

  Returns:
    The trained TrainState, replica-stacked (a leading axis of config.num_seeds; take
    replica k with `train_state.replica(state, k)`), with the parameters the test set saw
    (with config.restore_best, each replica's best epoch's).

  Raises:
    One of USER_ERRORS for bad inputs, a full disk or a damaged workdir (one clear
    message each); preemption.StopRequested after a signal (a checkpoint was saved).
  """
  with storage.explained(workdir):
    t0 = time.perf_counter()
    validation.check_config(config, workdir)
    data = input_pipeline.load(config)
    validation.raise_if(validation.check_against_data(config, len(data.train_labels),
                                                      len(data.test_labels)))
    with workdir_lib.WorkdirLock(workdir) as lock:  # Held until the last file is written.
      if lock.taken_over:
        console.say(f'Took over the lock of process {lock.taken_over["pid"]} on '
                    f'{lock.taken_over["host"]} (since {lock.taken_over["since"]}), which '
                    'ended without releasing it.')
      return _train_locked(config, workdir, data=data, fresh=fresh, t0=t0,
                           write_outputs=write_outputs or outputs.write_outputs,
                           while_training=while_training)


def _timings(config, *, runner, progress, num_train, eval_seconds, checkpoint_seconds):
  """results.json's `timings`: compile, training, evaluation and checkpoint-waiting seconds,
  the steps taken and how they ran."""
  seconds = {h['epoch']: h['seconds'] for h in progress.history}  # One clock for all seeds.
  train_seconds = sum(seconds.values())
  steps = input_pipeline.steps_per_epoch(num_train, config.batch_size)
  return {'compile_seconds': runner.compile_seconds, 'train_seconds': train_seconds,
          'examples_per_second': num_train * len(seconds) * config.num_seeds
                                 / max(train_seconds, 1e-9),
          'steps': steps * progress.epoch, 'eval_seconds': eval_seconds,
          'checkpoint_wait_seconds': checkpoint_seconds, **runner.impl.timings()}


def _train_locked(config, workdir, *, data, fresh, t0, write_outputs, while_training):
  """train_and_evaluate once the workdir is locked: checks and writes its config first."""
  workdir_lib.remove_temporaries(workdir)
  aside = workdir_lib.prepare_workdir(config, workdir, fresh=fresh)
  if aside:
    console.say(f'Moved the previous run aside to {aside}.')
  mesh = parallel.make_mesh(config.num_seeds)
  padded_batch = input_pipeline.padded_batch_size(config.batch_size, mesh.devices.size)
  impl = steps_lib.select_steps(config, mesh)  # May refuse cpu_kernel=on; compiles nothing.
  results_lib.write_run_files(config, workdir)  # Before the slow build.
  start = time.perf_counter()
  impl = steps_lib.build(impl, config)
  build_seconds = time.perf_counter() - start
  runner = steps_lib.BlockRunner(impl, config=config, mesh=mesh, data=data,
                                 padded_batch=padded_batch)
  runner.compile_seconds += build_seconds
  console.log_start(config, mesh=mesh, data=data, padded_batch=padded_batch)
  console.say(f'Training steps: {impl.describe()}, up to {config.steps_per_call} per call.')
  console.say(models.summary(models.create_model(config), config.name))
  # On CPU, training uses every core (the kernel's threads, XLA's pool): a save overlapping
  # it only slows it (v6: 6.14 -> 5.78 s of training waiting for saves; same wall time).
  checkpointer = ckpt_lib.Checkpointer(workdir, config.max_checkpoints_to_keep,
                                       wait_for_saves=jax.default_backend() == 'cpu')
  summary_writer = None
  try:  # On a failure too, an asynchronous save in flight must finish, not be lost.
    state, progress, kept = restore_or_init(config, mesh, checkpointer, runner)
    runner = runner.checked(state, progress)  # The kernel proves itself before it is relied on.
    summary_writer = open_summaries(config, workdir, progress.history)
    val_batches, test_batches = (
        device_eval_batches(mesh, images, labels, config.eval_batch_size)
        for images, labels in ((data.val_images, data.val_labels),
                               (data.test_images, data.test_labels)))
    # Evaluation compiled now (validation and test share it where batch sizes agree).
    start = time.perf_counter()
    jax.block_until_ready(ts.eval_and_predict_stacked(state, (val_batches or test_batches)[0]))
    runner.compile_seconds += time.perf_counter() - start
    state, kept = train_loop(config, workdir, state=state, progress=progress, kept=kept,
                             runner=runner, checkpointer=checkpointer,
                             num_train=len(data.train_labels), val_batches=val_batches,
                             summary_writer=summary_writer, while_training=while_training)
  except BaseException:
    if summary_writer:
      summary_writer.close()
    raise
  finally:
    checkpointer.close()
  if kept is not None:
    state = state.replace(params=kept)
  t_eval = time.perf_counter()
  tests, probs = evaluate(state, test_batches, True)
  timings = _timings(config, runner=runner, progress=progress, num_train=len(data.train_labels),
                     eval_seconds=time.perf_counter() - t_eval,
                     checkpoint_seconds=checkpointer.waited_seconds)
  res = results_lib.write_results(config, workdir, data=data, history=progress.history,
                                  tests=tests, probs=probs, timings=timings)
  console.report_test(config, res)
  write_outputs(config, workdir, data, summary_writer=summary_writer, res=res)
  if parallel.is_main_process():
    console.list_written(workdir, time.perf_counter() - t0)
  return state
