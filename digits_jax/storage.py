"""Disk-full and permission failures: found in any exception, explained in one paragraph.

Orbax and TensorStore wrap the OSError of a failed write in their own exceptions, or only
quote its text, so both the exception chain and the messages are searched.
"""

import contextlib
import errno
import os
import shutil

from digits_jax import errors

# The failures a user fixes on the file system, with what to do about each.
FIXES = {
    errno.ENOSPC: 'free some space there or choose another --workdir',
    errno.EDQUOT: 'free some space there (or raise the quota) or choose another --workdir',
    errno.EACCES: 'make it writable (chmod u+w) or choose another --workdir',
    errno.EPERM: 'make it writable (chmod u+w) or choose another --workdir',
    errno.EROFS: 'choose a --workdir on a writable file system',
}


class StorageError(errors.UserError):
  """A write failed for lack of space or permission; the message explains it whole."""

  def __init__(self, message, *, code, folder):
    super().__init__(message)
    self.errno, self.folder = code, folder  # The cause, as values.


def find(exc):
  """(errno, path or None) of a disk-full or permission failure in `exc`'s chain, else None."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    if isinstance(exc, OSError) and exc.errno in FIXES:
      return exc.errno, exc.filename
    for code in FIXES:
      if os.strerror(code) in str(exc):  # e.g. 'No space left on device' quoted by orbax.
        return code, None
    exc = exc.__cause__ or exc.__context__
  return None


def _existing(path):
  """`path` or its nearest existing parent."""
  path = os.path.abspath(path)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return path


def human_size(num_bytes):
  """Bytes as a short human number (e.g. '1.2 GB')."""
  for unit in ('bytes', 'KB', 'MB', 'GB', 'TB'):
    if num_bytes < 1024 or unit == 'TB':
      return f'{num_bytes:.0f} {unit}' if unit == 'bytes' else f'{num_bytes:.1f} {unit}'
    num_bytes /= 1024


def folder_of(path, workdir):
  """The folder to name for a failed write of `path`: the workdir's own subfolder
  (e.g. checkpoints/) rather than a temporary one inside it."""
  workdir = os.path.abspath(workdir)
  if path is None:
    return workdir
  path = os.path.abspath(os.fsdecode(path))
  if os.path.commonpath([path, workdir]) != workdir or path == workdir:
    return _existing(os.path.dirname(path))
  top = os.path.join(workdir, os.path.relpath(path, workdir).split(os.sep)[0])
  return top if os.path.isdir(top) else workdir


def explain(code, folder, *, needed=None):
  """One paragraph naming the folder, the cause, the free space and the fix."""
  usage = shutil.disk_usage(_existing(folder))
  need = f'; this run needs about {human_size(needed)}' if needed else ''
  return (f'could not write to {folder}: {os.strerror(code).lower()} '
          f'({human_size(usage.free)} free of {human_size(usage.total)}{need}). Nothing was '
          f'half-written: every file there is whole or absent. To go on, {FIXES[code]}, then '
          'rerun the same command: it resumes from its last checkpoint.')


@contextlib.contextmanager
def explained(workdir):
  """Turns a disk-full or permission failure raised inside into one StorageError."""
  try:
    yield
  except StorageError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    found = find(e)
    if found is None:
      raise
    code, path = found
    folder = folder_of(path, workdir)
    raise StorageError(explain(code, folder), code=code, folder=folder) from e
