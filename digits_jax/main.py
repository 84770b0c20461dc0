r"""Entry point: `python -m digits_jax.main --config=configs/v6.py [--workdir=DIR]`.

Any config field can be overridden, e.g. `--config.num_epochs=3`; `--config=FILE:fashion_mnist`
runs the lab's Task 2; `--dry_run` prints the resolved config and workdir and exits. The
library does the work; this file only parses flags.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Before anything imports TensorFlow.

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from digits_jax import cli
from digits_jax import config_files

_CONFIG = None  # Defined by parse_flags: loading the config file can fail (one line then).
_WORKDIR = flags.DEFINE_string('workdir', '', 'Where results go; default runs/<name>_<dataset>.')
_FRESH = flags.DEFINE_bool('fresh', False, 'Move a previous run in --workdir aside, start anew.')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False,
                                 'Call jax.distributed.initialize() (multi-host jobs); also '
                                 'enabled by DIGITS_JAX_DISTRIBUTED=1.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', '',
                                   'host:port of process 0 (default: detected).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', -1, 'Process count (default: detected).')
_PROCESS_ID = flags.DEFINE_integer('process_id', -1, 'This process index (default: detected).')
_DRY_RUN = flags.DEFINE_bool('dry_run', False,
                             'Print the resolved config and workdir, then exit without training.')


def main(argv):
  cli.no_arguments(argv)
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  config = _CONFIG.value
  workdir = _WORKDIR.value or default_workdir(config)
  if _DRY_RUN.value:
    with cli.one_line(workdir):
      check_as_a_run_does(config, workdir)
    print(dry_run_text(config, workdir), end='')
    return
  import jax  # pylint: disable=g-import-not-at-top
  from digits_jax import console, parallel, train  # pylint: disable=g-import-not-at-top,g-multiple-import
  with cli.one_line(workdir, interrupted=console.interrupted_line(workdir)):
    parallel.initialize_distributed(_DISTRIBUTED.value, _COORDINATOR.value,
                                    _NUM_PROCESSES.value, _PROCESS_ID.value)
    logging.info('JAX process %d/%d, local devices %s', jax.process_index(),
                 jax.process_count(), jax.local_devices())
    train.train_and_evaluate(config, workdir, fresh=_FRESH.value)


def default_workdir(config):
  """runs/<name>_<dataset>, one safe folder name whatever the config's name holds."""
  from digits_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  return os.path.join('runs', workdir_lib.safe_name(f'{config.name}_{config.dataset}'))


def check_as_a_run_does(config, workdir):
  """The checks a run makes before it trains (config, workdir path, data against the
  config), for --dry_run: a config that a run refuses is refused here the same way."""
  # pylint: disable=g-import-not-at-top,g-multiple-import
  from digits_jax import input_pipeline, validation, workdir as workdir_lib
  validation.check_config(config, workdir)
  workdir_lib.check_path(workdir)
  data = input_pipeline.load(config)
  validation.raise_if(validation.check_against_data(config, len(data.train_labels),
                                                    len(data.test_labels)))


def dry_run_text(config, workdir):
  """The config file, the resolved config, the workdir and the data source, as --dry_run
  prints them."""
  from digits_jax import idx, input_pipeline  # pylint: disable=g-import-not-at-top,g-multiple-import
  try:
    kind, folder = input_pipeline.resolve_source(config)
    source = f'IDX files in {os.path.abspath(folder)}' if kind == 'idx' else 'tensorflow-datasets'
  except idx.DataError as e:
    source = f'none ({e})'
  return (f'config file: {flags.FLAGS["config"].config_filename}\n'
          f'config:\n{config.to_json_best_effort(indent=2)}\n'
          f'workdir: {os.path.abspath(workdir)}\n'
          f'data: {source}\n')


def define_config_flag(argv):
  """--config and its --config.FIELD flags, defined from `argv` once the config file is
  known to load and every override to name a field (config_files.check_overrides)."""
  global _CONFIG
  config_files.check_overrides(argv)
  _CONFIG = config_flags.DEFINE_config_file(
      'config', os.path.join(config_files.config_dir(), 'default.py'),
      'Config file (a get_config() module): a path, or a shipped config\'s name (listed '
      'above).', lock_config=True, sys_argv=argv)


def parse_flags(argv):
  """absl's parsing, with `--config` naming a shipped config from any folder, the configs
  and fields added to --help, and every malformed flag (a config file that does not
  load, an override that names no field, a bad value) as one `error:` line."""
  try:
    argv = config_files.resolve_argv(argv)
    if _CONFIG is None:
      define_config_flag([a for a in argv if a not in cli.HELP_FLAGS])
  except config_files.ConfigFileError as e:
    sys.exit(f'error: {e}')
  return cli.parse_flags(argv, lambda: __doc__ + config_files.help_text())


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
