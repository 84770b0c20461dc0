"""Workdir policy: one run at a time, of one config, resumed or moved aside, never mixed.

The lock is `flock` on workdir/.lock, taken by process 0 before the workdir is checked
or written and held until the run ends; the other processes are told whether it was
taken. The OS releases it when its process ends, however it ends, so the lock of a run
that died is taken over by the next run; the file says who holds it, and a run removes
it when it ends (a file left behind tells of a run that died).

config.json (written before training) records the config a workdir's checkpoints belong
to. A later run in the same workdir may change only the fields of `RESUMABLE_FIELDS`;
every other field is guarded, and num_epochs may not fall below the epochs already
trained. A field added to the config after the run was made is compared at the value
config_files.complete gives it (its default: what the run did before the field existed),
so an old run resumes under today's defaults and refuses a changed value.
"""

import datetime
import errno
import fcntl
import glob
import json
import os
import re
import shutil
import socket

from digits_jax import checkpoint as ckpt_lib
from digits_jax import config_files
from digits_jax import errors
from digits_jax import outputs
from digits_jax import parallel
from digits_jax import results as results_lib

LOCK_FILE = '.lock'

# Fields that may differ when a run resumes: they change neither the checkpoints' meaning
# nor the batches. num_epochs may grow (the shuffles depend only on seed and epoch, so
# extending a run gives exactly the longer run); the others choose where the data is read
# from, how steps are dispatched, and which outputs are written.
RESUMABLE_FIELDS = frozenset({
    'name', 'num_epochs', 'data_source', 'data_dir', 'verify_checksums', 'steps_per_call',
    'data_on_device', 'eval_batch_size', 'cpu_kernel', 'num_show', 'test_indices',
    'num_misclassified_show', 'checkpoint_every_epochs', 'checkpoint_min_interval_seconds',
    'max_checkpoints_to_keep', 'progress_bar', 'tensorboard', 'write_report'})


class WorkdirMismatchError(errors.UserError, ValueError):
  """The workdir holds a run of another config."""


def same_value(a, b):
  """Equal config values, as saved in config.json (JSON turns tuples into lists)."""
  return _normalised(a) == _normalised(b)


def _normalised(value):
  """A config value as config.json holds it: tuples as lists, also inside a nested
  ConfigDict's dict (e.g. config.cnn.features)."""
  if isinstance(value, (tuple, list)):
    return [_normalised(v) for v in value]
  if isinstance(value, dict):
    return {k: _normalised(v) for k, v in value.items()}
  return value


def changed_fields(old, new, *, may_change=RESUMABLE_FIELDS):
  """'field: old -> new' for each field of either dict (but `may_change`) that differs."""
  keys = sorted((set(old) | set(new)) - set(may_change))
  return [f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in keys
          if not same_value(old.get(k), new.get(k))]


def prepare_workdir(config, workdir, *, fresh):
  """Refuses a workdir holding another config's run; with `fresh`, moves the old run aside.

  Returns the folder the old run was moved to, or None.
  """
  folder = os.path.join(workdir, ckpt_lib.CHECKPOINT_DIR)
  if not fresh and os.path.lexists(folder) and not os.path.isdir(folder):
    raise errors.DamagedFileError(folder, 'is not a folder, and the run keeps its checkpoints '
                                  'there', 'Move it out of the way, or pass --fresh to move '
                                  'the old run aside and start anew.')
  path = os.path.join(workdir, results_lib.FILES['config'])
  if not os.path.exists(path) and not ckpt_lib.has_checkpoint(workdir):
    return None
  if fresh:
    return move_run_aside(workdir)
  old = config_files.read_run_config(workdir, fix=(
      f'It records the config of the run in {workdir}: restore it, or pass --fresh to move '
      'the old run aside and start anew.'))
  diff = changed_fields(old.to_dict(), config.to_dict())
  if diff:
    raise WorkdirMismatchError(
        f'workdir {workdir!r} holds a run of a different config ({"; ".join(diff)}). '
        'Use another --workdir, or pass --fresh to move the old run aside and start anew.')
  too_many = epochs_check(config, workdir)
  if too_many:
    raise WorkdirMismatchError(too_many)
  return None


class WorkdirInUseError(errors.UserError, RuntimeError):
  """Another run holds the workdir's lock."""


class UnsafeWorkdirError(errors.UserError, ValueError):
  """A workdir path that the run could not use safely: too long, characters the checkpoint
  library rejects, or a lock file that is a link out of the workdir."""


# Characters orbax/TensorStore reject or misread in a checkpoint path (a backslash splits
# it, brackets are taken as a pattern), found by saving and restoring in such folders.
UNSAFE_CHARACTERS = ('\\', '[', ']', '\0')
# Room for the longest path a run writes below its workdir (orbax's temporary checkpoint
# folders and OCDBT files).
LONGEST_INSIDE = 160


def path_problem(workdir):
  """Why `workdir` cannot hold a run (one sentence), or None."""
  path = os.path.abspath(workdir)
  bad = sorted({c for c in UNSAFE_CHARACTERS if c in path})
  if bad:
    return (f'it contains {" and ".join(repr(c) for c in bad)}, which the checkpoint library '
            '(orbax) cannot use in a path')
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  path_max = os.pathconf(existing, 'PC_PATH_MAX')  # (Each name's length: validation.py.)
  if len(os.fsencode(path)) + LONGEST_INSIDE > path_max:
    return (f'it is {len(os.fsencode(path))} bytes long; the files a run writes inside need '
            f'it under {path_max - LONGEST_INSIDE}')
  return None


def safe_name(text):
  """`text` (a config name, a cell's values) as one folder name that stays where it is put:
  characters other than letters, digits and `.,=+-_` become '_', and no leading dot (so
  never '..', a hidden file or a path separator); at most 100 characters."""
  name = re.sub(r'[^A-Za-z0-9.,=+_-]+', '_', text).lstrip('.')[:100]
  return name or '_'


def check_path(workdir):
  """Raises UnsafeWorkdirError if `workdir` cannot hold a run (see path_problem): checked
  before anything is written, so a refused path leaves nothing behind."""
  problem = path_problem(workdir)
  if problem:
    raise UnsafeWorkdirError(f'--workdir {workdir!r} cannot hold a run: {problem}. Choose a '
                             'shorter path of plain characters.')


class WorkdirLock:
  """`with WorkdirLock(workdir) as lock:` holds the workdir for the run (all processes).

  Raises WorkdirInUseError at once if another run holds it. `lock.taken_over` is the
  record ({'pid', 'host', 'since'}) of a run that held it and died, else None. On
  release the lock file is removed, and so is the workdir if the lock created it and
  nothing else was written.
  """

  def __init__(self, workdir):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self.fd, self.taken_over, self.created = None, None, False

  def __enter__(self):
    check_path(self.workdir)  # Before anything is created: the lock is the first write.
    refusal = self._acquire() if parallel.is_main_process() else None
    if parallel.any_process(refusal is not None):  # Every process stops, or none.
      self.__exit__()
      if isinstance(refusal, UnsafeWorkdirError):
        raise refusal
      raise WorkdirInUseError(refusal or self._refusal(_read_record(self.path)))
    return self

  def __exit__(self, *exc_info):
    if self.fd is not None:
      os.remove(self.path)  # While still locked: see _acquire.
      os.close(self.fd)
      self.fd = None
      if self.created and not os.listdir(self.workdir):
        os.rmdir(self.workdir)

  def _acquire(self):
    """Takes the lock (process 0); returns the refusal message if another run holds it."""
    self.created = not os.path.isdir(self.workdir)
    os.makedirs(self.workdir, exist_ok=True)
    while True:
      try:  # Never through a link: the record would overwrite a file outside the workdir.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
      except OSError as e:
        if e.errno != errno.ELOOP:
          raise
        return UnsafeWorkdirError(
            f'{self.path} is a symbolic link (to {os.readlink(self.path)!r}); a run writes '
            'its lock record there and never writes through a link out of its workdir. '
            f'Remove the link (rm {self.path}) and rerun.')
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
          raise
        return self._refusal(_read_record(self.path))
      if _same_file(fd, self.path):
        break
      os.close(fd)  # Locked a file that its releasing run had just removed: again.
    self.fd, self.taken_over = fd, _read_record(self.path)
    record = {'pid': os.getpid(), 'host': socket.gethostname(),
              'since': datetime.datetime.now().isoformat(timespec='seconds')}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + '\n').encode(), 0)
    return None

  def _refusal(self, holder):
    who = (f'process {holder["pid"]} on {holder["host"]} since {holder["since"]}'
           if holder else 'another process (just starting)')
    return (f'workdir {self.workdir} is in use by {who}. Wait for that run to finish (or '
            'stop it), or choose another --workdir.')


def _same_file(fd, path):
  """Whether the open `fd` is still the file at `path`."""
  try:
    return os.path.samestat(os.fstat(fd), os.stat(path))
  except FileNotFoundError:
    return False


def _read_record(path):
  """The lock file's record of its holder, or None if absent, empty or garbled."""
  try:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, 'rb') as f:
      record = json.loads(f.read() or 'null')
  except (OSError, ValueError):
    return None
  return record if isinstance(record, dict) and {'pid', 'host', 'since'} <= set(record) else None


def _run_names():
  """Names of what a run writes into its workdir: results, figures, report, TensorBoard
  logs, checkpoints (the lock excepted)."""
  return {*outputs.run_file_names(), ckpt_lib.CHECKPOINT_DIR, ckpt_lib.DAMAGED_DIR}


def temporaries(workdir):
  """Names of the temporary files of writes that were cut short (see results.write_bytes)."""
  return sorted({os.path.basename(p) for name in _run_names()
                 for p in glob.glob(os.path.join(glob.escape(workdir), f'.{name}.*'))})


def remove_temporaries(workdir):
  """Removes what interrupted writes left behind (process 0, under the lock)."""
  if parallel.is_main_process():
    for name in temporaries(workdir):
      os.remove(os.path.join(workdir, name))


def own_files(workdir):
  """Names in `workdir` that its run wrote; nothing else, and not the lock."""
  names = _run_names() | set(temporaries(workdir))
  return sorted(n for n in names if os.path.lexists(os.path.join(workdir, n)))


def move_run_aside(workdir):
  """Moves the run's own files to <workdir>.old-<time>/ (process 0); returns that folder.

  Only files the run wrote move: the workdir itself and anything else in it stay.
  """
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  aside = f'{os.path.abspath(workdir).rstrip(os.sep)}.old-{stamp}'
  if parallel.is_main_process():
    os.makedirs(aside)
    for name in own_files(workdir):
      shutil.move(os.path.join(workdir, name), os.path.join(aside, name))
  parallel.barrier('moved_aside')  # No process may read the old run once it moved.
  return aside


def epochs_check(config, workdir):
  """A refusal if the workdir's run has begun more epochs than config.num_epochs, else None
  (its results would describe a model trained longer than they say)."""
  begun = ckpt_lib.epochs_begun(workdir)
  if begun <= config.num_epochs:
    return None
  return (f'workdir {workdir!r} holds a run that has trained {begun} epochs, more than '
          f'config.num_epochs={config.num_epochs}. Pass --config.num_epochs={begun} (or more) '
          'to continue it, or --fresh to move it aside and start anew.')
