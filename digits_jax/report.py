r"""report.html: a self-contained page per run, and one comparing the runs of a sweep.

  python -m digits_jax.report --workdir=runs/default_mnist   # a run: writes its report.html
  python -m digits_jax.report --workdir=runs/sweep           # a sweep: compares its runs

Everything comes from the saved result files; the page opens offline, mailed or archived
as a single file. The run's page is run_report.py's, the sweep's sweep_report.py's, both
made of html_page.py's blocks; this module is the command that picks one.
"""

import os

from absl import app
from absl import flags
from absl import logging

from digits_jax import cli
from digits_jax import comparison
from digits_jax import results as results_lib
from digits_jax import run_report
from digits_jax import sweep_report


def is_sweep_dir(folder):
  """A sweep folder: no results.json of its own, but subfolders holding one."""
  return (not os.path.exists(os.path.join(folder, results_lib.FILES['results']))
          and bool(comparison.run_folders(folder)))


def main(argv):
  """Writes the report of --workdir (a run or a sweep folder) and prints its path."""
  cli.no_arguments(argv)
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs at INFO when the pad loads weights.
  folder = flags.FLAGS.workdir
  with cli.one_line(folder):
    if is_sweep_dir(folder):
      sweep_report.warn_unreadable_runs(folder)
      print(sweep_report.write_sweep_report(folder))
    else:
      print(run_report.write_run_report(folder))


if __name__ == '__main__':
  # Defined here, not on import: main.py owns --workdir where both are imported.
  flags.DEFINE_string('workdir', None, 'A run folder, or a sweep folder of runs.',
                      required=True)
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, __doc__))
