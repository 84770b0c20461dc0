"""The training loop: `train_and_evaluate(config, workdir)` runs every step of the lab.

Reads no flags. Validates everything before any compute, resumes from the workdir's
latest checkpoint, trains in scanned blocks of `config.steps_per_call` steps, evaluates
without dropping examples, then writes every result file (process 0 only).
"""

import dataclasses
import datetime
import math
import os
import platform
import shutil
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np

from digits_jax import best_epoch
from digits_jax import checkpoint as ckpt_lib
from digits_jax import console
from digits_jax import cpu_kernel
from digits_jax import idx
from digits_jax import input_pipeline
from digits_jax import models
from digits_jax import parallel
from digits_jax import preemption
from digits_jax import results as results_lib
from digits_jax import storage
from digits_jax import train_state as ts
from digits_jax import validation

# Fields that change what a checkpoint means: resuming under other values is refused.
# (num_epochs may grow: the shuffles depend only on seed and epoch, so extending a run
# gives exactly the longer run.)
TRAINING_FIELDS = ('dataset', 'validation_split', 'hidden_units', 'num_hidden_layers',
                   'kernel_init', 'optimizer', 'learning_rate', 'b1', 'b2', 'eps',
                   'batch_size', 'seed', 'compute_dtype', 'restore_best',
                   'early_stopping_patience')


class WorkdirMismatchError(ValueError):
  """The workdir holds a run of another config."""


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite; the last good checkpoint is kept."""


# Failures caused by the inputs, reported as one clear line (no traceback) by the entry
# points; a sweep records them and goes on with its other runs.
USER_ERRORS = (validation.ConfigError, idx.DataError, WorkdirMismatchError,
               NonFiniteLossError, ckpt_lib.CheckpointError, results_lib.DamagedFileError,
               storage.StorageError)


@dataclasses.dataclass
class Progress:
  """Where training stands; saved in every checkpoint beside the state."""
  epoch: int = 0  # Epochs finished.
  step_in_epoch: int = 0  # Steps done in the unfinished epoch `epoch` (0 at epoch ends).
  sums: dict = dataclasses.field(default_factory=lambda: {'loss': 0., 'correct': 0., 'count': 0.})
  seconds: float = 0.0  # Training seconds spent in the unfinished epoch so far.
  history: list = dataclasses.field(default_factory=list)


def prepare_workdir(config, workdir, fresh):
  """Refuses a workdir holding another config's run; with `fresh`, moves the old run aside."""
  path = os.path.join(workdir, results_lib.FILES['config'])
  if not os.path.exists(path) and not ckpt_lib.has_checkpoint(workdir):
    return None
  if fresh:
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    aside = f'{os.path.abspath(workdir).rstrip(os.sep)}.old-{stamp}'
    if parallel.is_main_process():
      shutil.move(workdir, aside)
    parallel.barrier('moved_aside')  # No process may read the old run once it moved.
    return aside
  old = results_lib.read_json(path) if os.path.exists(path) else {}
  if old:  # A field newer than the saved run: that run had the default's behaviour.
    from configs import default  # pylint: disable=g-import-not-at-top
    old = {**{k: v for k, v in default.get_config().items() if k not in old}, **old}
  new = config.to_dict()
  diff = [f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in TRAINING_FIELDS
          if not same_value(old.get(k), new.get(k))]
  if diff:
    raise WorkdirMismatchError(
        f'workdir {workdir!r} holds a run of a different config ({"; ".join(diff)}). '
        'Use another --workdir, or pass --fresh to move the old run aside and start anew.')
  return None


def same_value(a, b):
  """Equal config values, as saved in config.json (JSON turns tuples into lists)."""
  norm = lambda v: list(v) if isinstance(v, (tuple, list)) else v
  return norm(a) == norm(b)


def write_run_files(config, workdir):
  """config.json and model_summary.txt, before training starts."""
  if not parallel.is_main_process():
    return
  os.makedirs(workdir, exist_ok=True)
  results_lib.write_text(os.path.join(workdir, results_lib.FILES['config']),
                         config.to_json_best_effort(indent=2) + '\n')
  results_lib.write_text(os.path.join(workdir, results_lib.FILES['summary']),
                         models.summary(models.hidden_sizes(config), config.name) + '\n')


def restore_or_init(config, mesh, checkpointer):
  """A replicated train state and progress: from the newest intact checkpoint, else fresh."""
  state = parallel.replicate(ts.create_train_state(config, jax.random.key(config.seed)), mesh)
  step, restored, saved, set_aside = checkpointer.restore_newest_intact(state)
  for damaged in set_aside:
    console.say(f'The checkpoint at step {damaged.step} {damaged.reason}; moved it aside to '
                f'{damaged.moved_to}.')
  if step is None:
    return state, Progress()
  state, progress = restored, Progress(**saved)
  console.say(f'Resumed from the checkpoint at step {step} (epoch {progress.epoch} done'
              + (f', {progress.step_in_epoch} steps into the next' if progress.step_in_epoch
                 else '') + ').')
  return state, progress


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
  """Loss and accuracy over every example of `batches` (and the probabilities, if asked)."""
  sums, probs = [], []
  for batch in batches:
    if with_probabilities:
      m, p = ts.eval_and_predict(state, batch)
      probs.append(parallel.to_host(p)[np.asarray(parallel.to_host(batch['mask']))])
    else:
      m = ts.eval_step(state, batch)
    sums.append(m)
  total = jax.tree.map(lambda *x: float(np.sum(np.asarray(x, np.float64))),
                       *jax.device_get(sums))
  out = {'loss': total['loss'] / total['count'], 'accuracy': total['correct'] / total['count']}
  return (out, np.concatenate(probs)) if with_probabilities else out


class BlockRunner:
  """Feeds and dispatches blocks of training steps, compiling once per block length."""

  def __init__(self, config, mesh, data, padded_batch):
    self.config, self.mesh, self.data, self.padded_batch = config, mesh, data, padded_batch
    self.columns = parallel.local_columns(mesh, padded_batch)
    self.compiled, self.compile_seconds = {}, 0.0
    start = time.perf_counter()
    self.why_not_fused = cpu_kernel.unusable_because(config, mesh)  # Builds it once.
    self.compile_seconds += time.perf_counter() - start
    if config.cpu_kernel == 'on' and self.why_not_fused:
      raise validation.ConfigError(
          f'config.cpu_kernel=on, but the fused CPU kernel cannot run here: '
          f'{self.why_not_fused}. Use --config.cpu_kernel=auto to fall back to XLA.')
    self.fused = self.why_not_fused is None
    self.hparams = cpu_kernel.hyperparams(config) if self.fused else None
    if config.data_on_device:  # The whole uint8 split on every device (47 MB for MNIST).
      self.images = parallel.replicate(data.train_images, mesh)
      self.labels = parallel.replicate(data.train_labels, mesh)

  def describe(self):
    """One line on how the steps run, for the console and results.json."""
    if self.fused:
      return f'fused CPU kernel ({dict(self.hparams)["threads"]} thread(s))'
    if self.config.cpu_kernel == 'off':
      return 'XLA scan'
    return f'XLA scan (fused CPU kernel not used: {self.why_not_fused})'

  def feed(self, index, mask, block_list):
    """Yields the device arguments of each block, in order."""
    to_global = lambda tree: parallel.to_global(self.mesh, tree, self.padded_batch, 1)
    if self.config.data_on_device:
      for begin, end in block_list:
        local = {'index': index[begin:end, self.columns], 'mask': mask[begin:end, self.columns]}
        block = to_global(local)
        yield (self.images, self.labels, block['index'], block['mask'])
    else:
      for host_block in input_pipeline.tf_block_feeder(
          self.data.train_images, self.data.train_labels, index, mask, block_list,
          self.columns):
        yield (to_global(host_block),)

  def run(self, state, args):
    """Dispatches one block asynchronously; returns (state, metric sums on device)."""
    key = str(jax.tree.map(lambda x: x.shape, args))  # One executable per block shape.
    if key not in self.compiled:
      start = time.perf_counter()
      if self.fused:
        lowered = cpu_kernel.train_steps_indexed.lower(state, *args, self.hparams)
      elif self.config.data_on_device:
        lowered = ts.train_steps_indexed.lower(state, *args)
      else:
        lowered = ts.train_steps.lower(state, *args)
      self.compiled[key] = lowered.compile()
      self.compile_seconds += time.perf_counter() - start
    return self.compiled[key](state, *args)


def _add(sums, block_sums):
  """Accumulates a block's metric sums on the host in float64 (same order on every run)."""
  block_sums = jax.device_get(block_sums)
  for k in sums:
    sums[k] += float(block_sums[k])
  if not math.isfinite(sums['loss']):
    raise NonFiniteLossError(
        'the training loss became non-finite (NaN or inf); training stopped and the last '
        'good checkpoint was kept. Lower config.learning_rate or check the input data.')


def train_epoch(state, progress, runner, stop, config, num_train):
  """Trains the rest of epoch `progress.epoch`; returns (state, unfinished: stopped early)."""
  steps = input_pipeline.steps_per_epoch(num_train, config.batch_size)
  index, mask = input_pipeline.epoch_plan(num_train, config.batch_size, runner.padded_batch,
                                          config.seed, progress.epoch)
  block_list = input_pipeline.blocks(progress.step_in_epoch, steps, config.steps_per_call)
  bar = console.ProgressBar(steps, config.batch_size, config.progress_bar)
  start, first = time.perf_counter(), progress.step_in_epoch
  compiled_before = runner.compile_seconds
  pending = None  # Fetch a block's metrics only after the next block was dispatched.
  for (begin, end), args in zip(block_list, runner.feed(index, mask, block_list)):
    state, block_sums = runner.run(state, args)
    if pending is not None:
      _add(progress.sums, pending)
    pending = block_sums
    progress.step_in_epoch = end
    bar.update(end, first)
    if parallel.any_process(stop.requested):
      break
  if pending is not None:
    _add(progress.sums, pending)
  bar.close()  # Compilation is reported apart (results.json timings.compile_seconds).
  progress.seconds += time.perf_counter() - start - (runner.compile_seconds - compiled_before)
  return state, progress.step_in_epoch < steps


def finish_epoch(state, progress, val_batches, config, workdir, summary_writer=None):
  """Validates, logs and records the finished epoch (TensorBoard too); resets the sums."""
  start = time.perf_counter()
  val = evaluate(state, val_batches) if val_batches else {'loss': math.nan, 'accuracy': math.nan}
  s = progress.sums
  record = {'epoch': progress.epoch + 1, 'loss': s['loss'] / s['count'],
            'accuracy': s['correct'] / s['count'], 'val_loss': val['loss'],
            'val_accuracy': val['accuracy'],
            'seconds': progress.seconds + time.perf_counter() - start}
  progress.history.append(record)
  console.say(console.epoch_line(record, config.num_epochs))
  progress.epoch, progress.step_in_epoch, progress.seconds = progress.epoch + 1, 0, 0.0
  progress.sums = {'loss': 0., 'correct': 0., 'count': 0.}
  if parallel.is_main_process():
    results_lib.write_history(workdir, progress.history)
  if summary_writer:
    summary_writer.epoch(record)


def initial_best_params(config, checkpointer, state):
  """With config.restore_best, the best epoch's parameters so far (from the checkpoint, or
  a copy of the initial ones until an epoch is validated); else None."""
  if not config.restore_best:
    return None
  if checkpointer.latest_step() is None:
    return jax.tree.map(jnp.copy, state.params)
  return checkpointer.restore_best_params(state.params)


def early_stop_done(config, progress):
  """Whether EarlyStopping ended training (also true when resuming such a run)."""
  return best_epoch.stopped_early(progress.history, config.early_stopping_patience)


def train_loop(config, workdir, state, progress, runner, checkpointer, data, val_batches,
               summary_writer=None, best=None):
  """Runs the remaining epochs, saving checkpoints; raises StopRequested on a signal.

  `best` ({'params': ...} with config.restore_best, else None) is updated in place with a
  copy of the parameters of each epoch that improves the validation accuracy.
  """
  with preemption.GracefulStop() as stop:
    while progress.epoch < config.num_epochs and not early_stop_done(config, progress):
      state, unfinished = train_epoch(state, progress, runner, stop, config,
                                      len(data.train_labels))
      if not unfinished:
        finish_epoch(state, progress, val_batches, config, workdir, summary_writer)
        if best is not None and best_epoch.last_is_best(progress.history):
          best['params'] = jax.tree.map(jnp.copy, state.params)  # The state is donated.
        if early_stop_done(config, progress) and progress.epoch < config.num_epochs:
          console.say(console.early_stop_line(progress.history,
                                              config.early_stopping_patience))
      stopping = unfinished or parallel.any_process(stop.requested)  # Same on all hosts.
      if (stopping or progress.epoch % config.checkpoint_every_epochs == 0
          or progress.epoch == config.num_epochs or early_stop_done(config, progress)):
        checkpointer.save(int(state.step), state, dataclasses.asdict(progress),
                          best['params'] if best is not None else None)
      if stopping:
        checkpointer.close()
        where = (f'epoch {progress.epoch + 1}, step {progress.step_in_epoch}' if unfinished
                 else f'end of epoch {progress.epoch}')
        signal_name = stop.requested or "another process's stop signal"
        raise preemption.StopRequested(
            f'{signal_name} received: saved a checkpoint at step {int(state.step)} '
            f'({where}) in {workdir}. Rerun the same command to resume.',
            signum=stop.signum or signal.SIGTERM)
  return state


def versions():
  """Library versions for results.json."""
  import flax, optax, orbax.checkpoint  # pylint: disable=g-import-not-at-top,multiple-imports
  return {'python': platform.python_version(), 'jax': jax.__version__,
          'jaxlib': getattr(jax.lib, '__version__', jax.__version__),
          'flax': flax.__version__, 'optax': optax.__version__,
          'orbax-checkpoint': getattr(orbax.checkpoint, '__version__', ''),
          'numpy': np.__version__}


def device_description():
  devices = jax.devices()
  return {'platform': devices[0].platform, 'kind': devices[0].device_kind,
          'count': len(devices), 'processes': jax.process_count()}


def log_start(config, mesh, data, padded_batch):
  """Devices, data source and split sizes: the first lines a user reads."""
  d = device_description()
  console.say(f'Devices: {d["count"]} x {d["kind"]} ({d["platform"]}), {d["processes"]} '
              f'process(es); mesh {dict(mesh.shape)}.')
  console.say(f'Data: {config.dataset} from {data.source}: {len(data.train_labels):,} '
              f'training, {len(data.val_labels):,} validation (last '
              f'{config.validation_split:.0%}), {len(data.test_labels):,} test images.')
  if padded_batch != config.batch_size:
    console.say(f'Batch {config.batch_size} padded to {padded_batch} (a multiple of '
                f'{mesh.devices.size} devices); padded examples are masked out of the loss, '
                'gradients and metrics.')


def write_results(config, workdir, data, history, test, probs, timings, epochs_info=None):
  """Every result file of a finished run (process 0); returns results.json's content.

  `epochs_info`: best_epoch.summary's fields (restore_best, evaluated_epoch, ...)."""
  recs = results_lib.recognized(config.test_indices, probs, data.test_labels, data.class_names)
  validated = [h for h in history if math.isfinite(h['val_accuracy'])]  # None if split 0.
  best = max(validated, key=lambda h: h['val_accuracy']) if validated else None
  res = {
      'name': config.name, 'dataset': config.dataset, 'data_source': data.source,
      'hidden_sizes': list(models.hidden_sizes(config)),
      'num_params': models.count_params(models.hidden_sizes(config)),
      'num_epochs': config.num_epochs, 'batch_size': config.batch_size,
      'validation_split': config.validation_split, 'seed': config.seed,
      'num_train': len(data.train_labels), 'num_val': len(data.val_labels),
      'num_test': len(data.test_labels), 'test_loss': test['loss'],
      'test_accuracy': test['accuracy'],
      'misclassified_count': int(len(results_lib.misclassified(probs, data.test_labels))),
      'final_val_accuracy': validated[-1]['val_accuracy'] if validated else None,
      'best_val_accuracy': best['val_accuracy'] if best else None,
      'best_epoch': best['epoch'] if best else None,
      **(epochs_info or {}),
      'recognized': recs, 'class_names': list(data.class_names), 'timings': timings,
      'devices': device_description(), 'versions': versions(),
      'finished_at': datetime.datetime.now().isoformat(timespec='seconds'),
  }
  if parallel.is_main_process():
    results_lib.write_predictions(workdir, probs, data.test_labels)
    results_lib.write_misclassified(workdir, probs, data.test_labels, data.class_names)
    results_lib.write_json(os.path.join(workdir, results_lib.FILES['results']), res)
  return res


def report_test(config, res):
  """Lab steps 7-9 on the console."""
  console.say(f'Test: loss {res["test_loss"]:.4f} - accuracy {res["test_accuracy"]:.4f} '
              f'({res["num_test"]:,} images)')
  for rec in res['recognized']:
    console.say(console.recognition_lines(rec))
  console.say(f'Misclassified test images: {res["misclassified_count"]:,} of '
              f'{res["num_test"]:,} (first {config.num_misclassified_show} drawn).')


def train_and_evaluate(config, workdir, *, fresh=False):
  """Trains and evaluates the config's network, writing every result to `workdir`.

  Args:
    config: an ml_collections config as in configs/default.py.
    workdir: folder for checkpoints and results; a run already there is resumed.
    fresh: move a run already in `workdir` aside and start anew.

  Returns:
    The trained TrainState.

  Raises:
    One of USER_ERRORS for bad inputs, a full disk or a damaged workdir (one clear
    message each); preemption.StopRequested after a signal (a checkpoint was saved).
  """
  with storage.explained(workdir):
    return _train_and_evaluate(config, workdir, fresh)


def _train_and_evaluate(config, workdir, fresh):
  """train_and_evaluate, whose disk-full and permission failures the caller explains."""
  t0 = time.perf_counter()
  validation.check_config(config, workdir)
  data = input_pipeline.load(config)
  validation.raise_if(validation.check_against_data(config, len(data.train_labels),
                                                    len(data.test_labels)))
  aside = prepare_workdir(config, workdir, fresh)
  if aside:
    console.say(f'Moved the previous run aside to {aside}.')
  mesh = parallel.make_mesh()
  padded_batch = input_pipeline.padded_batch_size(config.batch_size, mesh.devices.size)
  runner = BlockRunner(config, mesh, data, padded_batch)  # Refuses cpu_kernel=on if unusable.
  log_start(config, mesh, data, padded_batch)
  console.say(f'Training steps: {runner.describe()}, up to {config.steps_per_call} per call.')
  write_run_files(config, workdir)
  console.say(models.summary(models.hidden_sizes(config), config.name))
  checkpointer = ckpt_lib.Checkpointer(workdir, config.max_checkpoints_to_keep)
  summary_writer = None
  try:  # On a failure too, an asynchronous save in flight must finish, not be lost.
    state, progress = restore_or_init(config, mesh, checkpointer)
    best = initial_best_params(config, checkpointer, state)
    best = None if best is None else {'params': best}
    summary_writer = open_summaries(config, workdir, progress.history)
    val_batches = device_eval_batches(mesh, data.val_images, data.val_labels,
                                      config.eval_batch_size)
    if val_batches:  # Compile validation now, so that epoch timings exclude compilation.
      start = time.perf_counter()
      jax.block_until_ready(ts.eval_step(state, val_batches[0]))
      runner.compile_seconds += time.perf_counter() - start
    state = train_loop(config, workdir, state, progress, runner, checkpointer, data,
                       val_batches, summary_writer, best)
  except BaseException:
    if summary_writer:
      summary_writer.close()
    raise
  finally:
    checkpointer.close()
  epochs_info = best_epoch.summary(progress.history, restore_best=config.restore_best,
                                   patience=config.early_stopping_patience,
                                   num_epochs=config.num_epochs)
  if best is not None and best_epoch.best_record(progress.history):
    state = state.replace(params=best['params'])
    console.say(console.restored_line(best_epoch.best_record(progress.history)))
  t_eval = time.perf_counter()
  test, probs = evaluate(state, device_eval_batches(
      mesh, data.test_images, data.test_labels, config.eval_batch_size), True)
  train_seconds = sum(h['seconds'] for h in progress.history)
  steps = input_pipeline.steps_per_epoch(len(data.train_labels), config.batch_size)
  timings = {'compile_seconds': runner.compile_seconds, 'train_seconds': train_seconds,
             'examples_per_second': len(data.train_labels) * len(progress.history) / max(
                 train_seconds, 1e-9), 'steps': steps * len(progress.history),
             'eval_seconds': time.perf_counter() - t_eval, 'steps_run_by': runner.describe()}
  res = write_results(config, workdir, data, progress.history, test, probs, timings,
                      epochs_info)
  report_test(config, res)
  finish_outputs(config, workdir, data, t0, summary_writer, res)
  return state


def open_summaries(config, workdir, history):
  """TensorBoard's writer of the run (process 0, config.tensorboard), else None."""
  if not (config.tensorboard and parallel.is_main_process()):
    return None
  from digits_jax import summaries  # pylint: disable=g-import-not-at-top
  return summaries.RunWriter(workdir, history)


def finish_outputs(config, workdir, data, t0, summary_writer=None, res=None):
  """Figures (drawn from the saved results), TensorBoard's test values and images, the
  report and the list of files written."""
  if not parallel.is_main_process():
    return
  from digits_jax import figures  # pylint: disable=g-import-not-at-top
  figures.draw_all(workdir, config, data.train_images, data.train_labels, data.test_images,
                   data.class_names)
  if summary_writer:
    summary_writer.finish(res, res['epochs_trained'])
  if config.write_report:
    from digits_jax import report  # pylint: disable=g-import-not-at-top
    report.write_run_report(workdir)
  console.say(f'Wrote to {os.path.abspath(workdir)} in {console.fmt_seconds(time.perf_counter() - t0)}:')
  for name in sorted(os.listdir(workdir)):
    console.say(f'  {name}{os.sep if os.path.isdir(os.path.join(workdir, name)) else ""}')
