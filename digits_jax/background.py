"""Writes finished runs' figures, TensorBoard summaries and reports in a background thread.

A sweep trains its runs one after another; drawing a finished run's outputs (matplotlib,
the report page) takes seconds that the next run's training need not wait for. An
`OutputWriter` takes each finished run's `write_outputs` call (the signature
train.train_and_evaluate makes) and, once `start` is called after the run released its
workdir, runs it in one worker thread, in order, under the workdir's lock, while the
caller goes on. A failure there is kept with its run and handed back by `failures` /
`close`, never lost; `close` waits until every output is written, so a sweep's report
(and its exit) comes after them. While the worker lives it is the only thread that draws
(pyplot is not thread-safe), so the caller draws nothing until `close`.

It pays only where the training it overlaps leaves CPU cores idle (README, "The sweep's
own cost"): on 2 busy cores the drawing just slows that training.
"""

import concurrent.futures

from absl import logging

from digits_jax import outputs
from digits_jax import storage
from digits_jax import workdir as workdir_lib


def _write(config, workdir, data, summary_writer, res):
  """One run's outputs, as train_and_evaluate writes them, under its workdir lock."""
  with storage.explained(workdir), workdir_lib.WorkdirLock(workdir):
    outputs.write_outputs(config, workdir, data, summary_writer=summary_writer, res=res)


# Failures of the disk or of another process holding the workdir: their message says all.
EXPECTED_ERRORS = (storage.StorageError, workdir_lib.WorkdirInUseError)


def _message(workdir, error):
  """The failure as one line: an expected error's message, else its type too (and its
  traceback in the log, as a bug's)."""
  if isinstance(error, EXPECTED_ERRORS):
    return str(error)
  logging.error('Writing the outputs of %s failed.', workdir, exc_info=error)
  return f'{type(error).__name__}: {error}'


class OutputWriter:
  """One worker thread writing runs' outputs in the order they were handed over."""

  def __init__(self):
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                       thread_name_prefix='outputs')
    self._staged = []  # Calls not started yet: their run may still hold its workdir.
    self._pending = {}  # workdir -> Future of its outputs.

  def write_outputs(self, config, workdir, data, *, summary_writer=None, res=None):
    """Takes outputs.write_outputs(config, workdir, data, ...) for `start`; returns at once."""
    self._staged.append((config, workdir, data, summary_writer, res))

  def start(self):
    """Starts writing the outputs taken so far (call it once their runs have returned)."""
    for args in self._staged:
      self._pending[args[1]] = self._pool.submit(_write, *args)
    self._staged = []

  def failures(self, *, wait=False):
    """{workdir: one-line reason} of the outputs that failed since the last call.

    Without `wait` only those already done are looked at (the others stay pending);
    with it, every output taken is started and waited for first.
    """
    if wait:
      self.start()
      concurrent.futures.wait(self._pending.values())
    done = {w: f for w, f in self._pending.items() if f.done()}
    failed = {}
    for workdir, future in done.items():
      del self._pending[workdir]
      if future.exception() is not None:
        failed[workdir] = _message(workdir, future.exception())
    return failed

  def close(self):
    """Waits for every queued output, stops the thread; returns failures(wait=True)."""
    failed = self.failures(wait=True)
    self._pool.shutdown(wait=True)
    return failed
