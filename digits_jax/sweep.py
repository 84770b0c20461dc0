r"""Runs many (config, dataset) pairs, each in its own workdir, then compares them.

  python -m digits_jax.sweep --configs=default,v1,v2,v3,v4,v5,v6,v7,v8,v9 \
      --datasets=mnist,fashion_mnist --sweep_dir=runs/sweep --override=num_epochs=1

Each run goes to <sweep_dir>/<name>_<dataset> and is trained in this process by
`train.train_and_evaluate` (configs come from <config_dir>/<name>.py, `get_config(dataset)`).
A run whose workdir already holds results.json made with the same settings is skipped; an
interrupted one resumes from its latest checkpoint, so after a crash or preemption rerun the
same command. A run that fails (bad data folder, a workdir of another config, a diverged
loss) is reported and the others go on. At the end comparison.csv, comparison.md and
report.html are (re)written in sweep_dir from every finished run there.

--override=FIELD=VALUE sets a field in every run, converted to the field's type
(num_epochs=1, learning_rate=3e-4, test_indices=(1,2), progress_bar=false);
--override=DATASET:FIELD=VALUE sets it in that dataset's runs only, e.g.
--override=mnist:data_dir=/data/mnist. Repeat the flag for several fields.
"""

import ast
import importlib.util
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Before anything imports TensorFlow.

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from digits_jax import checkpoint as ckpt_lib
from digits_jax import console
from digits_jax import input_pipeline
from digits_jax import preemption
from digits_jax import report
from digits_jax import results as results_lib
from digits_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Settings that change a finished run's results: a run saved with other values is redone
# (an extended num_epochs resumes from the last checkpoint; other lab outputs re-evaluate).
SAME_RESULT_FIELDS = train.TRAINING_FIELDS + (
    'num_epochs', 'num_show', 'test_indices', 'num_misclassified_show')


class SweepError(RuntimeError):
  """A bad sweep argument, or runs that failed (listed in the message)."""


def load_config(name, dataset, config_dir=None):
  """`get_config(dataset)` of <config_dir>/<name>.py (default: the checkout's configs/)."""
  config_dir = os.path.abspath(config_dir or os.path.join(REPO, 'configs'))
  path = os.path.join(config_dir, f'{name}.py')
  if not os.path.isfile(path):
    raise SweepError(f'config {name!r}: no file {path}.')
  parent = os.path.dirname(config_dir)
  if parent not in sys.path:  # Variants import `configs.default`.
    sys.path.insert(0, parent)
  spec = importlib.util.spec_from_file_location(f'digits_jax_sweep_config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(dataset)


def convert(text, current, field):
  """Parses `text` into the type of the field's current value."""
  if isinstance(current, bool):
    lowered = text.strip().lower()
    if lowered not in ('true', 'false', '1', '0', 'yes', 'no'):
      raise SweepError(f'--override {field}={text}: expected true or false.')
    return lowered in ('true', '1', 'yes')
  if isinstance(current, (int, float)):
    try:
      value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
      value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        isinstance(current, int) and not isinstance(value, int)):
      raise SweepError(f'--override {field}={text}: expected {type(current).__name__}.')
    return type(current)(value)
  if isinstance(current, (tuple, list)):
    try:
      value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError) as e:
      raise SweepError(f'--override {field}={text}: expected a tuple, e.g. (1, 2).') from e
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)
  return text


def parse_override(text):
  """'[dataset:]field=value' -> (dataset or None, field, value text)."""
  key, sep, value = text.partition('=')
  if not sep or not key.strip():
    raise SweepError(f'--override {text!r}: expected FIELD=VALUE or DATASET:FIELD=VALUE.')
  dataset, _, field = key.strip().rpartition(':')
  return dataset or None, field, value


def apply_overrides(config, overrides):
  """Sets each override that applies to config.dataset; returns the config."""
  for text in overrides:
    dataset, field, value = parse_override(text)
    if dataset is not None and dataset not in input_pipeline.DATASETS:
      raise SweepError(f'--override {text!r}: unknown dataset {dataset!r}; use one of '
                       f'{", ".join(input_pipeline.DATASETS)}.')
    if dataset is not None and dataset != config.dataset:
      continue
    if field not in config:
      raise SweepError(f'--override {text!r}: config has no field {field!r}; fields: '
                       f'{", ".join(sorted(config.keys()))}.')
    setattr(config, field, convert(value, config[field], field))
  return config


def is_finished(config, workdir):
  """Whether `workdir` holds a finished run (results.json) of the same settings."""
  results = os.path.join(workdir, results_lib.FILES['results'])
  saved = os.path.join(workdir, results_lib.FILES['config'])
  if not (os.path.exists(results) and os.path.exists(saved)):
    return False
  old, new = results_lib.read_json(saved), config.to_dict()
  return all(train.same_value(old.get(k), new.get(k)) for k in SAME_RESULT_FIELDS)


def plan(configs, datasets, sweep_dir, overrides=(), config_dir=None):
  """Every run of the sweep as (workdir, config), checking all overrides before any training."""
  runs = []
  for dataset in datasets:
    for name in configs:
      config = apply_overrides(load_config(name, dataset, config_dir), overrides)
      runs.append((os.path.join(sweep_dir, f'{name}_{dataset}'), config))
  return runs


def run_one(config, workdir):
  """Trains (or resumes, or skips) one run; returns 'skipped', 'resumed' or 'trained'."""
  if is_finished(config, workdir):
    console.say(f'[sweep] {workdir}: finished with these settings, skipped.')
    return 'skipped'
  status = 'resumed' if ckpt_lib.has_checkpoint(workdir) else 'trained'
  console.say(f'[sweep] {workdir}: {"resuming" if status == "resumed" else "training"} '
              f'{config.name} on {config.dataset}.')
  train.train_and_evaluate(config, workdir)
  return status


def run_sweep(configs, datasets, sweep_dir, overrides=(), config_dir=None):
  """Runs every (config, dataset) pair, then writes the comparison and the sweep report.

  Args:
    configs: config names, e.g. ('default', 'v1'); files <config_dir>/<name>.py.
    datasets: dataset names, e.g. ('mnist', 'fashion_mnist').
    sweep_dir: folder of the runs' workdirs and the comparison files.
    overrides: '[dataset:]field=value' strings applied to every matching config.
    config_dir: folder of the config files (default: the checkout's configs/).

  Returns:
    {workdir: 'skipped' | 'resumed' | 'trained' | 'failed: <reason>'}.

  Raises:
    SweepError: a bad config name or override (before any training), or failed runs
      (after the others ran and the report was written).
    preemption.StopRequested: a signal stopped the current run (rerun to resume).
  """
  status = {}
  for workdir, config in plan(configs, datasets, sweep_dir, overrides, config_dir):
    try:
      status[workdir] = run_one(config, workdir)
    except train.USER_ERRORS as e:
      console.say(f'[sweep] {workdir}: FAILED: {e}')
      status[workdir] = f'failed: {e}'
  path = report.write_sweep_report(sweep_dir)
  console.say(f'[sweep] {len(status)} runs: ' + ', '.join(
      f'{sum(s.startswith(k) for s in status.values())} {k}'
      for k in ('trained', 'resumed', 'skipped', 'failed')) + f'. Report: {path}')
  failed = {w: s for w, s in status.items() if s.startswith('failed')}
  if failed:
    raise SweepError('runs failed:\n  ' + '\n  '.join(f'{w}: {s}' for w, s in failed.items()))
  return status


def _list(text):
  """'a, b,c' -> ['a', 'b', 'c']."""
  return [x.strip() for x in text.split(',') if x.strip()]


def main(argv):
  """Runs the sweep the flags describe."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  f = flags.FLAGS
  try:
    run_sweep(_list(f.configs), _list(f.datasets), f.sweep_dir, f.override or (),
              f.config_dir or None)
  except SweepError as e:
    sys.exit(f'error: {e}')
  except preemption.StopRequested as e:
    print(f'stopped: {e}', file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
  except KeyboardInterrupt:  # Ctrl-C outside a training loop: loading, compiling, drawing.
    print(console.interrupted_line(f.sweep_dir), file=sys.stderr, flush=True)
    sys.exit(130)


def define_flags():
  """The command-line flags (defined only when run as a program, not on import)."""
  flags.DEFINE_string('configs', 'default,v1,v2,v3,v4,v5,v6,v7,v8,v9',
                      'Comma-separated config names (files <config_dir>/<name>.py).')
  flags.DEFINE_string('datasets', 'mnist,fashion_mnist', 'Comma-separated datasets.')
  flags.DEFINE_string('sweep_dir', 'runs/sweep', 'Folder of the runs and comparison files.')
  flags.DEFINE_multi_string('override', [], '[DATASET:]FIELD=VALUE set in every run '
                            '(repeatable), e.g. --override=num_epochs=1.')
  flags.DEFINE_string('config_dir', '', 'Folder of the config files; default: configs/ '
                      'of this checkout.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
