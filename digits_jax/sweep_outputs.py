"""A sweep's cells' figures, TensorBoard summaries and report pages, drawn by one worker
process while the next cells train.

Drawing a finished run's outputs costs about 1 s of one core (matplotlib, the report
page), more than a short cell's training. While a cell compiles, evaluates and saves, the
sweep's process mostly keeps one core busy; the worker draws the cells handed to it on
the other, at the lowest priority (nice 19), and is stopped (SIGSTOP) while training
steps run, since those take every core. `sweep.main` starts it before importing JAX, so
that both imports overlap, and warms it up on the sweep's datasets while the first cell
compiles. The sweep's own comparison figures are queued behind the last cell. `close`
does in the sweep's own process whatever the worker has not taken (two cores at the end
instead of one), waits for the rest, and redoes what a worker killed by a signal left.
Every file a run writes is there when the sweep ends, drawn from the files the run saved
(config.json, results.json, predictions.npz, history.csv) as `python -m
digits_jax.report --workdir=CELL` draws them; a cell's drawing failure is kept with its
cell and reported, never lost.
benchmarks/sweep_overhead.py measures it against drawing after each cell.
"""

import contextlib
import multiprocessing
import os
import queue
import signal

from absl import logging

WARMUP = ('jax', 'digits_jax.outputs')  # What a worker imports before its first cell.


def _init_worker(pid):
  """A worker draws on the CPU at the lowest priority, leaving the cores (and any
  accelerator) to the sweep's training; it says its `pid` (a shared value), then imports
  what drawing needs."""
  pid.value = os.getpid()
  os.environ['JAX_PLATFORMS'] = 'cpu'  # Read by JAX on import, below.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  os.nice(19)
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the sweep, which closes it.
  logging.set_verbosity(logging.WARNING)
  for name in WARMUP:
    __import__(name)


def draw_cell(workdir):
  """One finished run's outputs, from its saved files, under its workdir lock, with what
  they print appended to the cell's log; returns '' or the failure as one line (an
  exception raised in a worker would not say which cell)."""
  # Imported here, after _init_worker in a worker: JAX reads JAX_PLATFORMS on import.
  # pylint: disable=g-import-not-at-top
  from digits_jax import config_files, input_pipeline, outputs, storage, sweep_console
  from digits_jax import workdir as workdir_lib
  try:
    config = config_files.read_run_config(workdir)
    with sweep_console.cell_log(workdir), storage.explained(workdir), \
        workdir_lib.WorkdirLock(workdir):
      outputs.write_outputs(config, workdir, input_pipeline.load(config))
      drawn = sorted(n for n in outputs.drawn_file_names()
                     if os.path.exists(os.path.join(workdir, n)))
      print(f'Drew, once the run had ended: {", ".join(drawn)}.')  # Into the cell's log.
  except (storage.StorageError, workdir_lib.WorkdirInUseError) as e:
    return str(e)  # Their message says all.
  except Exception as e:  # pylint: disable=broad-except
    logging.error('Writing the outputs of %s failed.', workdir, exc_info=e)
    return f'{type(e).__name__}: {e}'
  return ''


def warm_up(config):
  """Pays before the first cell what a process's first drawing pays once (0.45 s): the
  config's dataset read and checked, matplotlib's first text, JAX's first program, the
  sweep report's imports (scipy)."""
  # pylint: disable=g-import-not-at-top,unused-import
  import jax
  from digits_jax import figures, input_pipeline, sweep_report
  try:
    input_pipeline.load(config)
  except Exception:  # pylint: disable=broad-except  (the cell's drawing reports it)
    pass
  fig = figures.plt.figure(figsize=(1, 1))
  fig.text(0.5, 0.5, 'warm')
  figures.png(fig)
  jax.block_until_ready(jax.jit(lambda x: x + 1)(0))
  return ''


def draw_sweep_figures(sweep_dir):
  """The sweep's comparison files and figures, which need its runs' result files only;
  returns '' or the failure as one line."""
  from digits_jax import sweep_report  # pylint: disable=g-import-not-at-top
  try:
    sweep_report.draw_sweep_figures(sweep_report.read_sweep(sweep_dir))
  except Exception as e:  # pylint: disable=broad-except  (drawn again with the page)
    return f'{type(e).__name__}: {e}'
  return ''


# What a task (kind, argument) does; each returns '' or a failure as one line.
TASKS = {'draw': draw_cell, 'warm': warm_up, 'sweep_figures': draw_sweep_figures}


def _serve(tasks, done, pid):
  """The worker's loop: does each task taken from `tasks`, putting (task, reason) on
  `done` (but for warm-ups)."""
  _init_worker(pid)
  for task in iter(tasks.get, None):
    reason = TASKS[task[0]](task[1])
    if task[0] != 'warm':
      done.put((task, reason))


class OutputWorker:
  """Takes train.train_and_evaluate's write_outputs calls; a worker process draws them."""

  def __init__(self):
    context = multiprocessing.get_context('spawn')
    self._tasks, self._done = context.Queue(), context.Queue()
    self._pid = context.Value('q', 0, lock=False)  # Set by the worker as it starts.
    self._process = context.Process(target=_serve, args=(self._tasks, self._done, self._pid),
                                    name='sweep-outputs', daemon=True)
    self._process.start()  # Its imports overlap the first cell.
    self._staged = []  # Cells whose run may still hold its workdir.
    self._handed = set()  # Tasks handed to the worker, not reported yet.
    self.sweep_figures_drawn = False  # By `draw_sweep_figures`, at `close`.

  @contextlib.contextmanager
  def paused(self):
    """Stops the worker (SIGSTOP) while the steps train: they take every core, and a
    drawing process sharing them slowed them by half."""
    pid = self._pid.value if self._process.is_alive() else 0  # 0: not started yet.
    if pid:
      os.kill(pid, signal.SIGSTOP)
    try:
      yield
    finally:
      if pid:
        os.kill(pid, signal.SIGCONT)

  def write_outputs(self, config, workdir, data, *, summary_writer=None, res=None):
    """Closes the run's event file (rewritten whole from its results by the worker) and
    keeps its folder for `start`; returns at once."""
    del config, data, res  # Read back from the run's files.
    if summary_writer:
      summary_writer.close()
    self._staged.append(workdir)

  def warm_up(self, configs):
    """Has the worker read each config's dataset (and warm up) before the first cell."""
    for config in configs:
      self._tasks.put(('warm', config))

  def _hand(self, task):
    self._tasks.put(task)
    self._handed.add(task)

  def start(self):
    """Hands the cells taken so far to the worker (call it once their runs returned)."""
    for workdir in self._staged:
      self._hand(('draw', workdir))
    self._staged = []

  def draw_sweep_figures(self, sweep_dir):
    """Has the sweep's comparison files and figures drawn at `close`, beside the last
    cells' drawing (sweep_report.write_sweep_report then writes the page alone)."""
    self._hand(('sweep_figures', sweep_dir))

  def failures(self, timeout=0):
    """{workdir: one-line reason} of the drawings that failed since the last call, among
    those finished within `timeout` seconds."""
    failed = {}
    try:
      while self._handed:
        task, reason = self._done.get(timeout=timeout)
        self._note(task, reason, failed)
        timeout = 0
    except queue.Empty:
      pass
    return failed

  def _note(self, task, reason, failed):
    """Records a handed task's outcome: a cell's failure into `failed`."""
    self._handed.discard(task)
    if task[0] == 'sweep_figures':
      self.sweep_figures_drawn = not reason
    elif reason:
      failed[task[1]] = reason

  def discard(self):
    """Stops the worker at once: it has nothing left to draw (or was given nothing, e.g. in
    a sweep of one cell)."""
    self._process.kill()
    self._process.join()

  def close(self):
    """Does here the tasks the worker has not taken (two cores at the end instead of one),
    waits for the others, stops the worker; returns the cells' failures not reported yet.
    A task that a worker killed by a signal left is done here too."""
    self.start()
    failed = {}
    try:
      while True:
        task = self._tasks.get(timeout=0.05)
        if task[0] != 'warm':
          self._note(task, TASKS[task[0]](task[1]), failed)
    except queue.Empty:
      pass
    while self._handed and self._process.is_alive():
      failed.update(self.failures(timeout=0.2))
    failed.update(self.failures(timeout=1))
    self.discard()  # Nothing is left for it: killed, not waited for (its exit takes 0.5 s).
    for task in list(self._handed):  # The worker died (a signal).
      self._note(task, TASKS[task[0]](task[1]), failed)
    return {w: r for w, r in failed.items() if r}


def for_sweep(output_worker, num_cells):
  """The OutputWorker of a sweep of `num_cells` (`output_worker` itself if it is one
  already started; a new one if it is True), or None: none for one cell, or with several
  processes (a worker cannot join the collectives that their workdir lock takes)."""
  import jax  # pylint: disable=g-import-not-at-top  (after the sweep's own, lazily)
  started = isinstance(output_worker, OutputWorker)
  if not output_worker or num_cells < 2 or jax.process_count() > 1:
    if started:
      output_worker.discard()
    return None
  return output_worker if started else OutputWorker()
