"""What every entry point (main, sweep, report, predict) shares: flags parsed into one-line
errors, and its work run so that any failure a user can fix ends as one line.

`parse_flags` is each program's absl flags_parser; `one_line` wraps its work. The kinds of
error and their wording are in errors.py; this module only maps them to stderr and exit
statuses.
"""

import contextlib
import signal
import sys

from absl import app
from absl import flags

from digits_jax import errors
from digits_jax import preemption
from digits_jax import storage

HELP_FLAGS = ('--help', '-help', '-h', '-?', '--helpshort', '--helpfull')


def parse_flags(argv, doc=None):
  """absl's parsing, with --help printing `doc` (text, or a function giving it) and the
  flags (exit status 0) and a bad
  flag ending as one `error:` line (exit status 1) instead of absl's FATAL text."""
  if any(a in HELP_FLAGS for a in argv[1:]):
    doc = doc() if callable(doc) else doc
    if doc is not None:
      sys.modules['__main__'].__doc__ = doc.replace('%', '%%')
    app.usage(shorthelp='--helpfull' not in argv, writeto_stdout=True, exitcode=0)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'error: {errors.flag_error_line(e)}')


def no_arguments(argv):
  """Exits with one line if `argv` (as absl leaves it) holds more than the program name."""
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments: {" ".join(argv[1:])}. Every setting is a flag '
             '(--name=value); see --help.')


def _ignore_interrupts_from_now():
  """Ctrl-C once the work is done would only interrupt the interpreter's shutdown (and
  print 'Exception ignored in ...'): the command has finished, so it is ignored."""
  try:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
  except ValueError:  # Not the main thread: leave signals to it.
    pass


@contextlib.contextmanager
def one_line(folder='', *, interrupted=None):
  """Runs an entry point's work: a UserError, a failed write or read of a file, a stop on a
  signal or a Ctrl-C ends as one line on stderr and its exit status.

  Args:
    folder: the workdir or sweep folder, named when a write there fails.
    interrupted: the line to print for a Ctrl-C outside a training loop (default: a
      generic one naming `folder`).
  """
  try:
    with storage.explained(folder or '.'):
      yield
  except errors.UserError as e:
    _ignore_interrupts_from_now()
    sys.exit(f'error: {e}')
  except preemption.StopRequested as e:
    _ignore_interrupts_from_now()
    print(f'stopped: {e}', file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
  except KeyboardInterrupt:
    _ignore_interrupts_from_now()
    print(interrupted or f'stopped: interrupted (Ctrl-C); what was saved in {folder} is kept.',
          file=sys.stderr, flush=True)
    sys.exit(130)
  except (IsADirectoryError, NotADirectoryError, FileExistsError, PermissionError) as e:
    _ignore_interrupts_from_now()
    sys.exit(f'error: {errors.os_error_line(e)}')
  _ignore_interrupts_from_now()
