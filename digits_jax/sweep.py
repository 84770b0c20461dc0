r"""Runs many (config, dataset) cells, each in its own workdir, then compares them.

  python -m digits_jax.sweep --configs=default,v1,v2,v3,v4,v5,v6,v7,v8,v9 \
      --datasets=mnist,fashion_mnist --sweep_dir=runs/sweep --override=num_epochs=1
  python -m digits_jax.sweep --num_seeds=5 --configs=default,v6 --datasets=mnist
  python -m digits_jax.sweep --base=configs/default.py --vary=hidden_units=32,128,512 \
      --datasets=mnist --num_seeds=3 --sweep_dir=runs/width
  python -m digits_jax.sweep --sweep_dir=runs/sweep --report_only

Each cell goes to <sweep_dir>/<name>_<dataset> and is trained in this process by
`train.train_and_evaluate`; its config is what `--config=<config_dir>/<name>.py:<dataset>`
gives the main program (ml_collections' config_flags load it the same way); with
--num_seeds=N each cell is one run of N seeds (config.num_seeds).
--vary=FIELD=V1,V2,... sweeps one field of the --base config instead of the lab's
variants (several --vary flags give their grid); a cell is named by its values
(hidden_units=32) and compared with the cell of the base config's own values, which joins
the grid when the listed values leave it out (--vary=hidden_units=32,64 on a base of 128
trains three cells; hidden_units=128 is the reference).
The console gets one line per cell, with its place, mean test accuracy over its seeds and
seconds, and a table at the end; each cell's own run lines go to <cell>/log.txt (while it
runs, to <cell>.log.txt beside it). A sweep of one cell prints its run's lines as main does.
A run whose workdir already holds results.json made with the same settings is skipped; an
interrupted one resumes from its latest checkpoint, so after a crash or preemption rerun the
same command. A run that fails (bad data folder, a workdir of another config, a diverged
loss) is reported and the others go on. At the end comparison.csv, comparison.md,
significance.csv and report.html are (re)written in sweep_dir from every finished run
there (--nosweep_report leaves that to a later --report_only, as the SLURM array does).
A finished cell's figures, TensorBoard summaries and report are drawn by a worker process
at the lowest priority while the next cells train (sweep_outputs.py; --nooutput_worker
draws them after each cell instead); all are written before the sweep ends, and a run
whose outputs failed is reported failed.

--override=FIELD=VALUE sets a field in every run, parsed as --config.FIELD=VALUE is
(num_epochs=1, learning_rate=3e-4, test_indices=(1,2), progress_bar=false);
--override=DATASET:FIELD=VALUE sets it in that dataset's runs only, e.g.
--override=mnist:data_dir=/data/mnist. Repeat the flag for several fields.
"""

import importlib.util
import itertools
import math
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Before anything imports TensorFlow.

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
from ml_collections import config_flags

from digits_jax import cli
from digits_jax import errors
from digits_jax import input_pipeline


def _lazy(name):
  """The module `name`, loaded on its first attribute use (importlib.util.LazyLoader):
  `sweep --help` and a bad flag answer without importing JAX (seconds)."""
  if name in sys.modules:
    return sys.modules[name]
  spec = importlib.util.find_spec(name)
  spec.loader = importlib.util.LazyLoader(spec.loader)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


LAZY = ('jax', *(f'digits_jax.{m}' for m in (
    'checkpoint', 'comparison', 'config_files', 'console', 'results',
    'sweep_console', 'sweep_outputs', 'sweep_report', 'train', 'workdir')))
(jax, ckpt_lib, comparison, config_files, console, results_lib, sweep_console,
 sweep_outputs, sweep_report_lib, train, workdir_lib) = map(_lazy, LAZY)


def load_modules():
  """Loads the lazy modules now, before any cell sends its lines to its log: a module
  loaded inside that redirection would keep the log file as its sys.stdout (e.g. a
  default argument), closed after the cell."""
  for name in LAZY:
    vars(sys.modules[name])  # Any attribute use runs the module.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The cells a plain `python -m digits_jax.sweep` runs (launch/slurm_sweep.sbatch's too).
DEFAULT_CONFIGS = 'default,v1,v2,v3,v4,v5,v6,v7,v8,v9'
DEFAULT_DATASETS = 'mnist,fashion_mnist'  # Named: a registered dataset joins by --datasets.
NO_REPORT = 'not written (--nosweep_report)'  # Said in place of the report's path.


def result_neutral_fields():
  """Settings that leave a finished run's results as they are: a run saved with other
  values of any other field is redone (an extended num_epochs resumes from the last
  checkpoint; other lab outputs re-evaluate)."""
  return workdir_lib.RESUMABLE_FIELDS - {
      'num_epochs', 'num_show', 'test_indices', 'num_misclassified_show'}


class SweepError(errors.UserError, RuntimeError):
  """A bad sweep argument, or runs that failed (listed in the message)."""


def parse_override(text):
  """'[dataset:]field=value' -> (dataset or None, field, value text)."""
  key, sep, value = text.partition('=')
  if not sep or not key.strip():
    raise SweepError(f'--override {text!r}: expected FIELD=VALUE or DATASET:FIELD=VALUE.')
  dataset, _, field = key.strip().rpartition(':')
  if dataset and dataset not in input_pipeline.DATASETS:
    raise SweepError(f'--override {text!r}: unknown dataset {dataset!r}; use one of '
                     f'{", ".join(input_pipeline.DATASETS)}.')
  return dataset or None, field, value


def _parse_config_flags(argv):
  """The config that `argv`'s --config and --config.FIELD=VALUE flags give, parsed by
  ml_collections exactly as `python -m digits_jax.main` parses them."""
  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file('config', None, 'Config file.', flag_values=values,
                                           lock_config=True, sys_argv=argv)
  values(argv)
  return holder.value


def load_config(name, dataset, overrides=(), config_dir=None, *, varied=()):
  """The config of `--config=<config_dir>/<name>.py:<dataset> --config.FIELD=VALUE ...`.

  Args:
    name: the config file's name, e.g. 'v1'; default folder: the checkout's configs/.
    dataset: passed to its get_config, as the `:dataset` of --config.
    overrides: '[dataset:]field=value' strings; those for other datasets are left out.
    config_dir: the folder of the config files.
    varied: 'field=value' strings of a --vary cell, applied after `overrides`.
  """
  config_dir = os.path.abspath(config_dir or os.path.join(REPO, 'configs'))
  path = os.path.join(config_dir, f'{name}.py')
  if not os.path.isfile(path):
    raise SweepError(f'config {name!r}: no file {path}.')
  applied = [('--override', text, field, value) for text in overrides
             for ds, field, value in [parse_override(text)] if ds in (None, dataset)]
  applied += [('--vary', text, *text.split('=', 1)) for text in varied]
  argv = ['sweep', f'--config={path}:{dataset}']
  base = _parse_config_flags(argv)
  for flag, text, field, _ in applied:
    if field not in base:
      raise SweepError(f'{flag} {text!r}: the config has no field {field!r}.'
                       f'{errors.near(field, base.keys())} Fields: '
                       f'{", ".join(sorted(base.keys()))}.')
  try:
    return _parse_config_flags(argv + [f'--config.{f}={v}' for _, _, f, v in applied])
  except flags.Error as e:  # absl names the flag: --config.FIELD=VALUE.
    flag, text, field = next(((g, t, f) for g, t, f, v in applied
                              if f'--config.{f}=' in str(e)), ('--override', ' '.join(overrides), ''))
    expected = f'expected {type(base[field]).__name__}: ' if field else ''
    raise SweepError(f'{flag} {text!r}: {expected}{e}.') from e


def is_finished(config, workdir):
  """Whether `workdir` holds one finished run (results.json, consistent with config.json and
  history.csv) of the same settings; damaged or unfinished files mean not finished (the
  run then resumes and rewrites them)."""
  try:
    results_lib.read_finished(workdir)
    old = config_files.read_run_config(workdir).to_dict()
  except errors.FileProblem:
    return False
  return not workdir_lib.changed_fields(old, config.to_dict(), may_change=result_neutral_fields())


def plan(configs, datasets, sweep_dir, overrides=(), config_dir=None):
  """Every run of the sweep as (workdir, config), checking all overrides before any training."""
  check_datasets(datasets)
  runs = []
  for dataset in datasets:
    for name in configs:
      config = load_config(name, dataset, overrides, config_dir)
      runs.append((cell_dir(sweep_dir, f'{name}_{dataset}'), config))
  return runs


def check_datasets(datasets):
  """Raises SweepError for an unknown dataset name, before any cell runs."""
  unknown = [d for d in datasets if d not in input_pipeline.DATASETS]
  if unknown or not datasets:
    raise SweepError(f'--datasets: unknown {", ".join(map(repr, unknown)) or "(none given)"}; '
                     f'use one or more of {", ".join(input_pipeline.DATASETS)}.')


def cell_dir(sweep_dir, name):
  """A cell's workdir: one safe folder (workdir.safe_name) directly inside `sweep_dir`."""
  return os.path.join(sweep_dir, workdir_lib.safe_name(name))


def parse_vary(texts):
  """['hidden_units=32,64', ...] -> {'hidden_units': ['32', '64'], ...} (value texts)."""
  vary = {}
  for text in texts:
    field, sep, values = text.partition('=')
    values = [v.strip() for v in values.split(',') if v.strip()]
    if not sep or not field.strip() or not values:
      raise SweepError(f'--vary {text!r}: expected FIELD=V1,V2,... e.g. hidden_units=64,128.')
    if field.strip() in vary:
      raise SweepError(f'--vary {field.strip()!r} is given twice; list its values once.')
    vary[field.strip()] = values
  return vary


def cell_label(config, fields):
  """A --vary cell's name: its fields' values, e.g. 'hidden_units=64,num_hidden_layers=2'."""
  return ','.join(f'{f}={config[f]}' for f in fields)


def vary_plan(base, datasets, sweep_dir, vary, overrides=()):
  """The cells of a --vary sweep, as (workdir, config), and the reference cell's name.

  Args:
    base: the base config file, e.g. 'configs/default.py'.
    datasets: dataset names.
    sweep_dir: folder of the cells' workdirs.
    vary: {field: [value texts]} (parse_vary); the cells are their product.
    overrides: '[dataset:]field=value' strings applied before the varied values.

  Returns:
    (runs, reference): runs as `plan` gives them, each config named by its cell_label; the
    reference is the label of the base's own values. Where the grid does not hold them,
    the base's own cell joins (first), so that every cell is compared with the base the
    user named, never with whichever value happened to come first.
  """
  config_dir, name = os.path.split(os.path.abspath(base))
  if not name.endswith('.py'):
    raise SweepError(f'--base {base!r}: expected a config file, e.g. configs/default.py.')
  check_datasets(datasets)
  runs, reference = [], None
  for dataset in datasets:
    config = load_config(name[:-3], dataset, overrides, config_dir)
    for field in vary:
      if field not in config:
        raise SweepError(f'--vary {field}: the config has no field {field!r}.'
                         f'{errors.near(field, config.keys())} Fields: '
                         f'{", ".join(sorted(config.keys()))}.')
    reference = cell_label(config, vary)
    cells = [load_config(name[:-3], dataset, overrides, config_dir,
                         varied=[f'{f}={v}' for f, v in zip(vary, values)])
             for values in itertools.product(*vary.values())]
    if reference not in [cell_label(c, vary) for c in cells]:
      cells.insert(0, config)  # The base's own values: the named reference.
    for cell in cells:
      cell.name = cell_label(cell, vary)
      slug = cell.name.replace('=', '-').replace(',', '_')
      runs.append((cell_dir(sweep_dir, f'{slug}_{dataset}'), cell))
  folders = [w for w, _ in runs]
  clash = sorted({w for w in folders if folders.count(w) > 1})
  if clash:
    raise SweepError(f'--vary: several cells would share the folder {clash[0]} (values that '
                     'differ only in characters a folder name cannot hold); vary other values.')
  return runs, reference


def run_one(config, workdir, tag='[sweep]', writer=None):
  """Trains (or resumes, or skips) one run; returns 'skipped', 'resumed' or 'trained'.

  Its console lines start with `tag`, e.g. `[3/20] v6 fashion_mnist: training in ...`;
  `writer`: the sweep's sweep_outputs.OutputWorker, which takes the run's outputs and
  pauses while it trains (None: the run draws its outputs itself).
  """
  what = f'{tag} {config.name} {config.dataset}'
  if is_finished(config, workdir):
    console.say(f'{what}: finished with these settings in {workdir}, skipped.')
    return 'skipped'
  status = 'resumed' if ckpt_lib.has_checkpoint(workdir) else 'trained'
  console.say(f'{what}: {"resuming" if status == "resumed" else "training"} in {workdir}.')
  train.train_and_evaluate(config, workdir, **({} if writer is None else {
      'write_outputs': writer.write_outputs, 'while_training': writer.paused}))
  return status


def _run_cell(config, workdir, tag, writer, spent, alone=False):
  """run_one with its lines in the cell's log.txt (on the console where it runs `alone`),
  its user error as 'failed: <reason>'; says the cell's one line; adds a trained run's
  train and compile seconds to `spent`."""
  start = time.perf_counter()
  try:
    with sweep_console.cell_log(workdir, quiet=not alone):
      status = run_one(config, workdir, tag, writer)
  except train.USER_ERRORS as e:
    status = f'failed: {e}'
  seconds = time.perf_counter() - start
  console.say(f'{tag} {config.name} {config.dataset}: '
              f'{sweep_console.cell_line(workdir, status, seconds)}')
  if status in ('trained', 'resumed'):
    try:  # (Absent on processes other than 0.)
      timings = results_lib.read_results(workdir).get('timings', {})
    except errors.FileProblem:
      timings = {}
    for key in spent:
      spent[key] += timings.get(key, 0.0)
  return status


def run_sweep(configs, datasets, sweep_dir, overrides=(), config_dir=None, *, num_seeds=0,
              base=None, vary=None, sweep_report=True, output_worker=True):
  """Runs every (config, dataset) cell, then writes the comparison and the sweep report.

  Args:
    configs: config names, e.g. ('default', 'v1'); files <config_dir>/<name>.py.
    datasets: dataset names, e.g. ('mnist', 'fashion_mnist').
    sweep_dir: folder of the runs' workdirs and the comparison files.
    overrides: '[dataset:]field=value' strings applied to every matching config.
    config_dir: folder of the config files (default: the checkout's configs/).
    num_seeds: seeds per cell (config.num_seeds; 0 = the configs' own).
    base: with `vary`, the config file whose fields are varied (configs are then unused).
    vary: {field: [value texts]}: cells are the grid of these values (see vary_plan).
    sweep_report: write the comparison, significance and report at the end.
    output_worker: draw each run's figures, summaries and report in a worker process
      while the next runs train (sweep_outputs.py; one process, several cells), else
      after each run; may be an OutputWorker already started, which the caller discards
      if this raises first (`main` starts it before it imports JAX: both imports overlap).

  Returns:
    {workdir: 'skipped' | 'resumed' | 'trained' | 'failed: <reason>'}.

  Raises:
    SweepError: a bad config name or override (before any training), or failed runs
      (after the others ran and the report was written).
    preemption.StopRequested: a signal stopped the current run (rerun to resume).
  """
  start = time.perf_counter()
  load_modules()
  overrides = list(overrides) + ([f'num_seeds={num_seeds}'] if num_seeds else [])
  if vary:
    runs, reference = vary_plan(base or os.path.join(REPO, 'configs', 'default.py'),
                                datasets, sweep_dir, vary, overrides)
  else:
    runs, reference = plan(configs, datasets, sweep_dir, overrides, config_dir), 'default'
  comparison.write_sweep_info(sweep_dir, reference=reference, vary=vary or {})
  status, seconds, spent = {}, {}, {'train_seconds': 0.0, 'compile_seconds': 0.0}
  writer = sweep_outputs.for_sweep(output_worker, len(runs))
  if writer:  # Each dataset's, while the first cell compiles.
    writer.warm_up({config.dataset: config for _, config in runs}.values())
  try:
    for k, (workdir, config) in enumerate(runs, 1):
      cell_start = time.perf_counter()
      status[workdir] = _run_cell(config, workdir, f'[{k}/{len(runs)}]', writer, spent,
                                  alone=len(runs) == 1)
      seconds[workdir] = time.perf_counter() - cell_start
      if writer:
        writer.start()  # Its run released the workdir.
        sweep_console.note_output_failures(writer.failures(), status)
    if writer and sweep_report:  # Beside the last cells' drawing.
      writer.draw_sweep_figures(sweep_dir)
  finally:  # An interrupted sweep draws its finished cells too: a rerun skips them.
    if writer:
      sweep_console.note_output_failures(writer.close(), status)
  _finish(sweep_dir, runs, status, seconds, spent, start=start, sweep_report=sweep_report,
          figures_drawn=bool(writer and writer.sweep_figures_drawn))
  return status


def _finish(sweep_dir, runs, status, seconds, spent, *, start, sweep_report, figures_drawn):
  """Writes the comparison and report (its figures unless `figures_drawn`), prints the
  final table and the sweep's cost, and raises SweepError if any run failed."""
  path = (sweep_report_lib.write_sweep_report(sweep_dir, draw_figures=not figures_drawn)
          if sweep_report else NO_REPORT)
  console.say(sweep_console.final_table(runs, status, seconds))
  console.say(sweep_console.closing(status, path, spent, time.perf_counter() - start))
  failed = {w: s for w, s in status.items() if s.startswith('failed')}
  if failed:
    raise SweepError('runs failed:\n  ' + '\n  '.join(f'{w}: {s}' for w, s in failed.items()))


def _list(text):
  """'a, b,c' -> ['a', 'b', 'c']."""
  return [x.strip() for x in text.split(',') if x.strip()]


def main(argv):
  """Runs the sweep the flags describe."""
  cli.no_arguments(argv)
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  f = flags.FLAGS
  # Started before anything imports JAX: the worker's imports overlap the sweep's own.
  worker = (sweep_outputs.OutputWorker() if f.output_worker and not f.report_only
            and _expected_cells(f) > 1 else None)
  try:
    _main(f, worker)
  finally:
    if worker:
      worker.discard()  # Nothing left to do once the sweep has closed it.


def _expected_cells(f):
  """How many cells the flags ask for, counted without parsing them (they are checked
  later, with their one-line errors)."""
  per_dataset = (math.prod(len(_list(v.partition('=')[2])) for v in f.vary) if f.vary
                 else len(_list(f.configs)))
  return per_dataset * len(_list(f.datasets))


def _main(f, worker):
  """main's work once the drawing `worker` (or None) is started."""
  with cli.one_line(f.sweep_dir, interrupted=console.interrupted_line(f.sweep_dir)):
    if f.report_only:
      if not comparison.run_folders(f.sweep_dir):
        raise SweepError(f'--report_only: no finished runs under {f.sweep_dir!r}; give '
                         'the --sweep_dir that the sweep trained into.')
      sweep_report_lib.warn_unreadable_runs(f.sweep_dir)
      console.say(f'[sweep] Report: {sweep_report_lib.write_sweep_report(f.sweep_dir)}')
      return
    if f.vary and f['configs'].present:
      raise SweepError('--vary varies the fields of --base; leave out --configs.')
    if f.num_seeds < 0:
      raise SweepError(f'--num_seeds={f.num_seeds}: expected 1 or more (0 = the configs\').')
    run_sweep(_list(f.configs), _list(f.datasets), f.sweep_dir, f.override or (),
              f.config_dir or None, num_seeds=f.num_seeds, base=f.base or None,
              vary=parse_vary(f.vary), sweep_report=f.sweep_report,
              output_worker=worker or f.output_worker)


def define_flags():
  """The command-line flags (defined only when run as a program, not on import)."""
  flags.DEFINE_string('configs', DEFAULT_CONFIGS,
                      'Comma-separated config names (files <config_dir>/<name>.py).')
  flags.DEFINE_string('datasets', DEFAULT_DATASETS, 'Comma-separated datasets.')
  flags.DEFINE_string('sweep_dir', 'runs/sweep', 'Folder of the runs and comparison files.')
  flags.DEFINE_multi_string('override', [], '[DATASET:]FIELD=VALUE set in every run '
                            '(repeatable), e.g. --override=num_epochs=1.')
  flags.DEFINE_string('config_dir', '', 'Folder of the config files; default: configs/ '
                      'of this checkout.')
  flags.DEFINE_integer('num_seeds', 0, 'Seeds per cell, trained as one run '
                       '(config.num_seeds); 0 = the configs\' own.')
  flags.DEFINE_string('base', '', 'With --vary: the config file whose fields are varied '
                      '(default: configs/default.py of this checkout).')
  flags.DEFINE_multi_string('vary', [], 'FIELD=V1,V2,...: cells are the base config with '
                            'each value (repeat the flag for a grid), e.g. '
                            '--vary=hidden_units=64,128,256.')
  flags.DEFINE_bool('report_only', False, 'Train nothing: (re)write the comparison, '
                    'significance and report of the runs in --sweep_dir.')
  flags.DEFINE_bool('output_worker', True, 'Draw each finished cell\'s figures, summaries '
                    'and report in a worker process at the lowest priority while the next '
                    'cells train (--nooutput_worker: after each cell, in this process).')
  flags.DEFINE_bool('sweep_report', True, 'Write the comparison, significance and report '
                    'at the end (--nosweep_report: leave them to --report_only).')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, __doc__))
