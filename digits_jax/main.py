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

from digits_jax import config_files

_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(config_files.config_dir(), 'default.py'),
    'Config file (a get_config() module): a path, or a shipped config\'s name (listed above).',
    lock_config=True)
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
HELP_FLAGS = ('--help', '-help', '-h', '-?', '--helpshort', '--helpfull')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join('runs', f'{config.name}_{config.dataset}')
  if _DRY_RUN.value:
    print(dry_run_text(config, workdir), end='')
    return
  import jax  # pylint: disable=g-import-not-at-top
  from digits_jax import console, parallel, preemption, train  # pylint: disable=g-import-not-at-top,g-multiple-import
  parallel.initialize_distributed(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                                  _PROCESS_ID.value)
  logging.info('JAX process %d/%d, local devices %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  try:
    train.train_and_evaluate(config, workdir, fresh=_FRESH.value)
  except train.USER_ERRORS as e:
    sys.exit(f'error: {e}')
  except preemption.StopRequested as e:
    print(f'stopped: {e}', file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
  except KeyboardInterrupt:  # Ctrl-C outside the loop: loading, compiling, drawing.
    print(console.interrupted_line(workdir), file=sys.stderr, flush=True)
    sys.exit(130)


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


def parse_flags(argv):
  """absl's parsing, with `--config` naming a shipped config from any folder, the configs
  and fields added to --help, and a config override that names no field (or a bad value)
  as a one-line error instead of a traceback."""
  try:
    argv = config_files.resolve_argv(argv)
  except config_files.ConfigFileError as e:
    sys.exit(f'error: {e}')
  if any(a in HELP_FLAGS for a in argv[1:]):  # absl's help, with the configs, exit status 0.
    sys.modules['__main__'].__doc__ = (__doc__ + config_files.help_text()).replace('%', '%%')
    app.usage(shorthelp='--helpfull' not in argv, writeto_stdout=True, exitcode=0)
  try:
    return app.parse_flags_with_usage(argv)
  except (ImportError, OSError, SyntaxError) as e:  # Raised by the config file itself.
    sys.exit(f'error: cannot load the --config file: {type(e).__name__}: {e}')
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    message = str(e).strip('\'"').replace('\\n', ' ').replace("\\'", "'")
    sys.exit(f'error: bad --config override: {message}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
