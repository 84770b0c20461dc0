r"""Entry point: `python -m digits_jax.main --config=configs/v6.py [--workdir=DIR]`.

Any config field can be overridden, e.g. `--config.num_epochs=3`; `--config=FILE:fashion_mnist`
runs the lab's Task 2. The library does the work; this file only parses flags.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Before anything imports TensorFlow.

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py',
                                          'Config file (a get_config() module).',
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  import jax  # pylint: disable=g-import-not-at-top
  from digits_jax import console, parallel, preemption, train  # pylint: disable=g-import-not-at-top,g-multiple-import
  parallel.initialize_distributed(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                                  _PROCESS_ID.value)
  logging.info('JAX process %d/%d, local devices %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join('runs', f'{config.name}_{config.dataset}')
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


def parse_flags(argv):
  """absl's parsing, with a config override that names no field (or a bad value) as a
  one-line error instead of a traceback."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    message = str(e).strip('\'"').replace('\\n', ' ').replace("\\'", "'")
    sys.exit(f'error: bad --config override: {message}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
