"""What a sweep says on the console: one line per cell, and a table at the end.

A cell's run prints its ~40 lines (epochs, test results, the files it wrote) into the
cell's own log.txt instead (cell_log), so that a sweep of many cells reads as a list.
"""

import contextlib
import os

from digits_jax import errors
from digits_jax import results as results_lib
from digits_jax import significance

LOG = 'log.txt'  # In each cell's folder: the lines its run printed.


@contextlib.contextmanager
def cell_log(workdir, quiet=True):
  """Sends what a cell prints to <workdir>/log.txt (appended: a resumed run's lines follow
  the interrupted ones) instead of the console, where the sweep says one line per cell.

  While the cell runs its lines go to <workdir>.log.txt beside its folder (`tail -f` it),
  and join log.txt when the cell ends, however it ends: the run may move an old folder
  aside (workdir.prepare_workdir) while it trains. A cell whose folder was never made
  (e.g. a bad data folder) keeps that file; its console line says why it failed. With
  quiet=False (a sweep of one cell, e.g. a SLURM array task, whose console is its log)
  the lines stay on the console.
  """
  if not quiet:
    yield
    return
  live = workdir.rstrip(os.sep) + '.' + LOG
  try:
    with open(live, 'a', encoding='utf-8') as f, contextlib.redirect_stdout(f):
      yield
  finally:
    if os.path.isdir(workdir) and os.path.isfile(live):
      with open(live, encoding='utf-8') as f, open(
          os.path.join(workdir, LOG), 'a', encoding='utf-8') as out:
        out.write(f.read())
      os.remove(live)


def cell_line(workdir, status, seconds):
  """The console's line of a finished cell: '... 97.05% (2 seeds) in 4.1 s' (mean test
  accuracy over its seeds), or its failure."""
  if status.startswith('failed'):
    logs = [p for p in (os.path.join(workdir, LOG), workdir.rstrip(os.sep) + '.' + LOG)
            if os.path.isfile(p)]
    return (f'FAILED in {seconds:.1f} s: {status[len("failed: "):]}'
            + (f' (log: {logs[0]})' if logs else ''))
  try:
    values = significance.seed_values(results_lib.read_results(workdir))
  except errors.FileProblem:  # (Absent on processes other than 0.)
    return f'{status} in {seconds:.1f} s.'
  n = len(values)
  done = 'finished before, skipped' if status == 'skipped' else f'{status} in {seconds:.1f} s'
  return (f'{100 * sum(values) / n:.2f}% ({n} seed{"s" if n > 1 else ""}), {done}.')


def final_table(runs, status, seconds):
  """The sweep's closing table, one row per cell: its mean test accuracy over its seeds,
  how many seeds, what happened and the seconds it took here."""
  rows = [('cell', 'dataset', 'test acc.', 'seeds', 'status', 'seconds')]
  for workdir, config in runs:
    try:
      values = significance.seed_values(results_lib.read_results(workdir))
      acc, n = f'{100 * sum(values) / len(values):.2f}%', str(len(values))
    except errors.FileProblem:
      acc, n = '-', '-'
    rows.append((config.name, config.dataset, acc, n,
                 status.get(workdir, '-').split(':')[0], f'{seconds.get(workdir, 0):.1f}'))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  return '\n'.join('  '.join(c.ljust(w) if i < 2 or i == 4 else c.rjust(w)
                              for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                    for r in rows)


def closing(status, report_path, spent, wall):
  """The sweep's last two lines: how its runs ended, where the report is, and its cost."""
  counts = ', '.join(f'{sum(s.startswith(k) for s in status.values())} {k}'
                     for k in ('trained', 'resumed', 'skipped', 'failed'))
  ratio = (f' (wall / training: {wall / spent["train_seconds"]:.2f}x).'
           if spent['train_seconds'] else '.')
  return (f'[sweep] {len(status)} runs: {counts}. Report: {report_path}\n'
          f'[sweep] wall time {wall:.1f} s for {spent["train_seconds"]:.1f} s of training and '
          f'{spent["compile_seconds"]:.1f} s of compiling in the runs trained here{ratio}')


def note_output_failures(failed, status):
  """Marks in `status` (and says) the runs whose figures, summaries or report could not
  be written: {workdir: reason} from sweep_outputs (whose worker only a one-process
  sweep has: printed as is)."""
  for workdir, reason in failed.items():
    print(f'[sweep] writing the figures and report in {workdir} FAILED: {reason}', flush=True)
    status[workdir] = f'failed: writing its outputs: {reason}'
