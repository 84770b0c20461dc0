"""Errors a user can fix: the kinds, and how each becomes the one line an entry point prints.

Every failure caused by the inputs (flags, a config, the data, a damaged or foreign
workdir, a full disk) is a `UserError` whose message is one paragraph naming the problem
and the fix; cli.one_line prints it as `error: <message>` with exit status 1, never a
traceback, whatever module raised it. A new kind of user error only subclasses `UserError`:
no entry point lists the kinds.

The readers of the files a run writes (results.py) raise the `FileProblem` kinds here.
"""

import difflib
import os
import re


class UserError(Exception):
  """A failure the user fixes; `str(e)` is one paragraph saying what is wrong and what to do."""


class FileProblem(UserError, ValueError):
  """A file that a command reads is missing, damaged or not what it should be.

  `path`, `problem` and `fix` are kept as fields; the message joins them.
  """

  def __init__(self, path, problem, fix):
    super().__init__(f'{path} {problem}. {fix}'.strip())  # 'PATH is damaged ...'
    self.path, self.problem, self.fix = str(path), problem, fix


class MissingFileError(FileProblem):
  """The file is absent (or is not a regular file)."""


class DamagedFileError(FileProblem):
  """The file exists but cannot be read as what was written (truncated, garbled, wrong kind)."""


class UnfinishedRunError(FileProblem):
  """A workdir's files describe different runs: results of one, a later run's progress."""


def near(name, names):
  """' Did you mean "a", "b"?' with the names of `names` close to `name` (difflib), else ''."""
  close = difflib.get_close_matches(name, list(names), n=4, cutoff=0.6)
  return f' Did you mean {", ".join(chr(34) + c + chr(34) for c in close)}?' if close else ''


def flag_error_line(error):
  """absl's flag error as one sentence with what to do; a missing required flag named."""
  text = str(error).strip()
  missing = re.search(r'flag --(\w+)=None', text)
  if missing:
    return f'--{missing.group(1)} is required (see --help).'
  text = text if text.endswith('?') else text.rstrip('.') + '.'
  return f'{text} See --help for the flags and their values.'


def os_error_line(error):
  """An OSError about a path as one sentence: the path, the cause, the fix."""
  path = os.fsdecode(error.filename) if error.filename is not None else 'a file'
  return (f'{path}: {error.strerror or error}. Move it aside or choose another path, then '
          'rerun the same command.')
