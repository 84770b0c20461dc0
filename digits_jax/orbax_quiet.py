"""Orbax's echoes of a failure already reported, silenced: the checkpoint module raises a
failed save or restore and explains it once, in one paragraph; orbax would also log its
traceback, and its other reads and writes of that checkpoint report their own errors."""

import logging
import os
import sys
import traceback

from digits_jax import storage

TMP_MARK = '.orbax-checkpoint-tmp'  # In the name of a save's folder until it commits.


class QuietStorageFailures(logging.Filter):
  """Drops orbax's logged tracebacks of a disk-full or permission failure: the failure
  is raised to the caller too, which explains it once, in one paragraph."""

  def filter(self, record):
    if f'{os.sep}orbax{os.sep}' not in record.pathname or record.levelno < logging.WARNING:
      return True
    if TMP_MARK in record.getMessage():  # About the temporary folder of a failed save.
      return False
    exc = record.exc_info[1] if record.exc_info else None
    return storage.find(exc) is None and storage.find(Exception(record.getMessage())) is None


class QuietOrphanedReads(logging.Filter):
  """Drops asyncio's 'Task exception was never retrieved' for orbax's other reads of a
  checkpoint that failed to restore: that failure is already reported, in one line."""

  def filter(self, record):
    return not _orphaned(record.exc_info[1] if record.exc_info else None)


def _orphaned(exc):
  """Whether `exc` is the echo of a failure already reported: a TensorStore callback into
  orbax's closed event loop, or an orbax read or write left running after it failed."""
  if isinstance(exc, RuntimeError) and str(exc) == 'Event loop is closed':
    return True
  frames = traceback.extract_tb(exc.__traceback__) if exc is not None else []
  return any(f'{os.sep}orbax{os.sep}' in frame.filename for frame in frames)


def quiet_orphaned_callbacks():
  """After a failed save or restore, orbax's other reads and writes of that checkpoint
  still finish and report their errors (as unraisable exceptions, or through
  sys.excepthook from a callback thread); drops those, since the failure itself is
  raised and reported in one line. Idempotent."""
  if getattr(sys.unraisablehook, 'digits_jax_quiet', False):
    return
  previous_unraisable, previous_except = sys.unraisablehook, sys.excepthook

  def unraisable_hook(unraisable):
    if not _orphaned(unraisable.exc_value):
      previous_unraisable(unraisable)

  def except_hook(exc_type, exc, tb):
    if not _orphaned(exc):
      previous_except(exc_type, exc, tb)

  unraisable_hook.digits_jax_quiet = True
  sys.unraisablehook, sys.excepthook = unraisable_hook, except_hook


_FILTERS = (QuietStorageFailures(), QuietOrphanedReads())


def install(absl_logger):
  """Adds the filters (to absl's logger and asyncio's) and the hooks. Idempotent."""
  absl_logger.addFilter(_FILTERS[0])
  logging.getLogger('asyncio').addFilter(_FILTERS[1])
  quiet_orphaned_callbacks()  # Before any save: their echoes can come before the failure.
