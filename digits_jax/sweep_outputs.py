"""A sweep's cells' figures, TensorBoard summaries and report pages, drawn at its end in
parallel processes instead of after each cell.

Drawing a run's outputs costs about 3 s of one core (figures 2.5 s: the recognised images,
the confusion matrix, the image grids), longer than a short cell's training. A sweep hands
each finished cell to DeferredOutputs; `finish` draws them all, one process per core, from
the files the runs saved (config.json, results.json, predictions.npz, history.csv), as
`python -m digits_jax.report --workdir=CELL` would. Every file a run writes is there when
the sweep ends. The workers use the CPU only: they draw, they do not train.

Each worker is a new process that imports JAX and matplotlib (seconds), so this pays only
with many cores: on a busy 2-core machine it cost 3.68 s per short cell outside training
and compiling against 2.47 s drawing after each cell (benchmarks/sweep_overhead.sh), hence
off by default (`sweep --outputs_at_end`).
"""

import concurrent.futures
import multiprocessing
import os


def _init_worker():
  """A worker draws on the CPU, leaving any accelerator to the sweep's training."""
  os.environ['JAX_PLATFORMS'] = 'cpu'
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def draw_cell(workdir):
  """One finished run's outputs, from its saved files, under its workdir lock; returns ''
  or the failure as one line (a worker's exception would not say which cell)."""
  # Imported here, in the worker, after _init_worker: JAX reads JAX_PLATFORMS on import.
  # pylint: disable=g-import-not-at-top
  from digits_jax import config_files, input_pipeline, outputs, storage
  from digits_jax import workdir as workdir_lib
  try:
    config = config_files.read_run_config(workdir)
    with storage.explained(workdir), workdir_lib.WorkdirLock(workdir):
      outputs.write_outputs(config, workdir, input_pipeline.load(config))
  except Exception as e:  # pylint: disable=broad-except
    return f'{type(e).__name__}: {e}'
  return ''


class DeferredOutputs:
  """Takes train.train_and_evaluate's write_outputs calls; draws them at `finish`."""

  def __init__(self, workers=None):
    self.workers = workers or os.cpu_count() or 1
    self._workdirs = []

  def write_outputs(self, config, workdir, data, *, summary_writer=None, res=None):
    """Closes the run's event file (rewritten whole from its results at `finish`) and
    keeps its folder for `finish`; returns at once."""
    del config, data, res  # Read back from the run's files.
    if summary_writer:
      summary_writer.close()
    self._workdirs.append(workdir)

  def finish(self):
    """Draws every cell taken, in parallel; returns {workdir: reason} of those that failed."""
    cells, self._workdirs = self._workdirs, []
    if not cells:
      return {}
    if len(cells) == 1 or self.workers == 1:
      reasons = [draw_cell(w) for w in cells]
    else:
      with concurrent.futures.ProcessPoolExecutor(
          min(self.workers, len(cells)), mp_context=multiprocessing.get_context('spawn'),
          initializer=_init_worker) as pool:
        reasons = list(pool.map(draw_cell, cells))
    return {w: r for w, r in zip(cells, reasons) if r}
