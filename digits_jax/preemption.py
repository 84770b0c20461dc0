"""Graceful stops: SIGTERM/SIGINT ask the loop to save and exit; a second signal exits at once."""

import signal
import threading


class StopRequested(Exception):
  """Training stopped on a signal after saving a checkpoint; rerun the command to resume.

  `exit_code` is the shell's for the signal: 130 for SIGINT (Ctrl-C), 143 for SIGTERM.
  """

  exit_code = 128 + signal.SIGTERM

  def __init__(self, message, signum=signal.SIGTERM):
    super().__init__(message)
    self.exit_code = 128 + int(signum)


class GracefulStop:
  """Context manager: `stop.requested` turns True on the first SIGTERM or SIGINT."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = None  # The signal's name once one arrived.
    self.signum = None  # And its number.
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.requested:  # Second signal: give up at once, with the default behaviour.
      signal.signal(signum, signal.SIG_DFL)
      signal.raise_signal(signum)
      return
    self.requested, self.signum = signal.Signals(signum).name, signum

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False
