"""Checks a config (and the data and workdir it names) before any compute is spent.

Every problem is collected, so one run reports them all: each names the field, the bad
value and what is allowed. The allowed values come from where they are interpreted
(datasets and sources from input_pipeline, models, inits and dtypes from models, optimizers from
train_state, kernel modes from cpu_kernel).
"""

import math
import os
import shutil

import ml_collections
import numpy as np

from digits_jax import checkpoint
from digits_jax import config_files
from digits_jax import cpu_kernel
from digits_jax import errors
from digits_jax import idx
from digits_jax import input_pipeline
from digits_jax import models
from digits_jax import optimizers
from digits_jax import storage

FLOAT32 = np.finfo(np.float32)
FRESH_SUFFIX_CHARS = len('.old-20261126-183000')  # What --fresh appends to the workdir name.
RESULTS_BYTES = 2 << 20  # Result files and figures of a run (about 1 MB for MNIST).


class ConfigError(errors.UserError, ValueError):
  """One or more config fields are invalid; the message lists every problem."""


def _is_int(v):
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_at_least(config, field, low, problems, prefix='config.'):
  value = config.get(field)
  if not _is_int(value) or value < low:
    problems.append(f'{prefix}{field}={value!r}: must be an integer >= {low}.')


def _number_in(config, field, low, high, problems, low_open=False, high_open=True):
  """Appends a problem unless low <= value < high (bounds open or closed as asked)."""
  value = config.get(field)
  ok = _is_number(value) and (value > low if low_open else value >= low) and (
      value < high if high_open else value <= high)
  if not ok:
    rng = f'{"(" if low_open else "["}{low}, {high}{")" if high_open else "]"}'
    problems.append(f'config.{field}={value!r}: must be a number in {rng}.')


def _float32_positive(config, field, problems):
  """Appends a problem unless the value is a positive number that float32 holds (the
  optimizer computes in float32: 1e-50 rounds to 0 there, 1e39 to inf)."""
  value = config.get(field)
  if not _is_number(value) or value <= 0:
    problems.append(f'config.{field}={value!r}: must be a number in (0.0, inf).')
  elif not float(FLOAT32.tiny) <= value <= float(FLOAT32.max):
    problems.append(f'config.{field}={value!r}: float32, in which training computes, cannot '
                    f'hold it; use a number in [{FLOAT32.tiny:.2g}, {FLOAT32.max:.2g}].')


def _one_of(config, field, allowed, problems, what=''):
  """Appends a problem unless the value is one of `allowed` (names, or a registry keyed by
  name; a dict of strings is read as names and their notes)."""
  value = config.get(field)
  if isinstance(value, str) and value in allowed:
    return
  if isinstance(allowed, dict) and all(isinstance(v, str) for v in allowed.values()):
    named = [f'{k} ({note})' for k, note in allowed.items()]
    choices = f'use {", ".join(named[:-1])} or {named[-1]}'
  else:
    choices = f'use one of {", ".join(allowed)}'
  problems.append(f'config.{field}={value!r}: {what}{choices}.')


# jax.random.key takes a signed 64-bit seed; results.json and predictions.npz store int64.
MAX_SEED = 2**63 - 1


def _last_seed(config):
  """seed + num_seeds - 1 (the last replica's seed), or None if either is not an integer."""
  seed, num_seeds = config.get('seed'), config.get('num_seeds', 1)
  if any(isinstance(v, bool) or not isinstance(v, int) for v in (seed, num_seeds)):
    return None
  return seed + num_seeds - 1


def check_fields(config):
  """Returns the list of problems with the config's own values (no file access)."""
  problems = []
  _one_of(config, 'dataset', input_pipeline.DATASETS, problems, 'unknown dataset; ')
  _one_of(config, 'data_source', input_pipeline.SOURCES, problems)
  for field in ('num_epochs', 'batch_size', 'hidden_units', 'num_hidden_layers',
                'steps_per_call', 'eval_batch_size', 'checkpoint_every_epochs',
                'max_checkpoints_to_keep', 'num_seeds'):
    _int_at_least(config, field, 1, problems)
  for field in ('num_show', 'num_misclassified_show', 'seed', 'early_stopping_patience'):
    _int_at_least(config, field, 0, problems)
  last_seed = _last_seed(config)
  if last_seed is not None and last_seed > MAX_SEED:
    problems.append(f'config.seed={config.seed} with config.num_seeds={config.num_seeds}: the '
                    f'seeds run to {last_seed}, past {MAX_SEED} (2**63 - 1, the largest seed '
                    'jax.random.key and the result files take); choose a smaller seed.')
  if config.get('validation_split') == 0 and (config.get('restore_best')
                                              or config.get('early_stopping_patience')):
    problems.append('config.restore_best and config.early_stopping_patience watch the '
                    'validation accuracy, and config.validation_split=0 leaves none: set '
                    'config.validation_split > 0 (e.g. 0.2) or turn them off.')
  _number_in(config, 'validation_split', 0.0, 1.0, problems)
  _number_in(config, 'checkpoint_min_interval_seconds', 0.0, math.inf, problems,
             high_open=False)
  _float32_positive(config, 'learning_rate', problems)
  _number_in(config, 'b1', 0.0, 1.0, problems)
  _number_in(config, 'b2', 0.0, 1.0, problems)
  _float32_positive(config, 'eps', problems)
  _one_of(config, 'compute_dtype', models.COMPUTE_DTYPES, problems)
  problems += optimizers.problems(config, config_files.defaults())
  _number_in(config, 'dropout_rate', 0.0, 1.0, problems)
  _one_of(config, 'cpu_kernel', cpu_kernel.MODES, problems)
  _one_of(config, 'kernel_init', models.KERNEL_INITS, problems)
  _one_of(config, 'activation', models.ACTIVATIONS, problems)
  _one_of(config, 'model', models.MODELS, problems, 'unknown model; ')
  _check_cnn(config, problems)
  indices = config.get('test_indices')
  if not isinstance(indices, (tuple, list)) or not all(_is_int(i) for i in indices):
    problems.append(f'config.test_indices={indices!r}: must be a tuple of integers, '
                    'e.g. --config.test_indices="(5, 25, 7)".')
  elif any(i < 0 for i in indices):
    problems.append(f'config.test_indices={tuple(indices)!r}: indices must be >= 0.')
  return problems


def _check_cnn(config, problems):
  """Appends the problems of config.cnn (the CNN's sizes; checked whichever model runs)."""
  cnn = config.get('cnn')
  features = cnn.get('features') if isinstance(cnn, ml_collections.ConfigDict) else None
  most = models.CNN.MAX_LAYERS
  if not (isinstance(features, (tuple, list)) and 1 <= len(features) <= most
          and all(_is_int(f) and f >= 1 for f in features)):
    problems.append(f'config.cnn.features={features!r}: must be a tuple of 1 to {most} '
                    'integers >= 1 (each conv layer\'s channels; each 2x2 max-pool halves '
                    'the 28x28 image), e.g. --config.cnn.features="(32, 64)".')
  if isinstance(cnn, ml_collections.ConfigDict):
    _int_at_least(cnn, 'dense_units', 1, problems, prefix='config.cnn.')


def check_data_dir(config):
  """Problems with the IDX folder the config names (none when tfds is used)."""
  if config.get('dataset') not in input_pipeline.DATASETS:
    return []
  try:
    kind, folder = input_pipeline.resolve_source(config)
  except idx.DataError as e:
    return [str(e)]
  if kind != 'idx':
    return []
  where = ('config.data_dir' if config.data_dir else
           f'${input_pipeline.dataset(config.dataset).env_var}')
  if not os.path.isdir(folder):
    return [f'{where}={folder!r}: no such folder; point it at a folder holding the four '
            'IDX files, or use --config.data_source=tfds.']
  missing = idx.missing_files(folder)
  if missing:
    return [f'{where}={folder!r}: missing {", ".join(missing)}; an IDX folder needs all '
            'four files (train/t10k images and labels).']
  return []


def check_workdir(workdir, config=None):
  """Problems with writing to `workdir` (created if absent): remote, under a file, a name
  too long, not writable (nor its checkpoints/), too little space for one checkpoint."""
  if '://' in workdir:
    return [f'workdir {workdir!r}: remote URLs are not supported; mount the bucket (e.g. '
            'with gcsfuse) on every host and pass the mounted path.']
  path = os.path.abspath(workdir)
  probe = path
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    return [f'workdir {workdir!r}: {probe} is a file, not a folder; choose another --workdir.']
  problems = _name_lengths(workdir, path, probe)
  for folder in (probe, os.path.join(path, checkpoint.CHECKPOINT_DIR)):
    if os.path.isdir(folder) and not os.access(folder, os.W_OK | os.X_OK):
      problems.append(f'workdir {workdir!r}: {folder} is not writable; make it writable '
                      '(chmod u+w) or choose another --workdir.')
  if config is not None and not problems:
    need = checkpoint_bytes(config) + RESULTS_BYTES
    free = shutil.disk_usage(probe).free
    if free < need:
      problems.append(f'workdir {workdir!r}: {probe} has {storage.human_size(free)} free, but '
                      f'one checkpoint and the result files need about '
                      f'{storage.human_size(need)}; free some space there or choose another '
                      '--workdir.')
  return problems


def _name_lengths(workdir, path, probe):
  """Problems with folder names of the workdir longer than the file system allows."""
  try:
    name_max = os.pathconf(probe, 'PC_NAME_MAX')
  except (OSError, ValueError):
    name_max = 255
  parts = [] if path == probe else os.path.relpath(path, probe).split(os.sep)
  problems = []
  for i, name in enumerate(parts):
    limit = name_max - (FRESH_SUFFIX_CHARS if i == len(parts) - 1 else 0)
    if len(os.fsencode(name)) > limit:
      problems.append(
          f'workdir {workdir!r}: the folder name {name[:24]!r}... is {len(os.fsencode(name))} '
          f'bytes long; this file system allows {name_max} (and --fresh appends '
          f'{FRESH_SUFFIX_CHARS} to the workdir\'s). Choose a shorter --workdir.')
  return problems


def _params(config):
  """The number of parameters of the config's network (from its parameter tree)."""
  return models.count_params(models.param_shapes(models.create_model(config)))


def checkpoint_bytes(config):
  """About the size of one checkpoint: every replica's parameters and optimizer state,
  float32."""
  return _params(config) * 4 * (1 + optimizers.slots(config)) * config.num_seeds


def _memory_parts(config):
  """(state, activations): bytes per replica of the parameters, gradients and optimizer
  state (float32), and of the layer outputs of the larger batch and their gradients."""
  model = models.create_model(config)
  batch = max(config.batch_size, config.eval_batch_size)
  params = models.count_params(models.param_shapes(model))
  return (params * 4 * (2 + optimizers.slots(config)),
          batch * models.activation_bytes(model) * 2)


def training_bytes(config):
  """About the memory training takes on each device: for every replica, parameters,
  gradients and the optimizer's state, and the layer outputs of the larger batch."""
  return sum(_memory_parts(config)) * config.num_seeds


def device_memory():
  """(bytes, name) of the memory of one device the run trains on."""
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.local_devices()[0]
  stats = device.memory_stats() or {}
  if 'bytes_limit' in stats:
    return stats['bytes_limit'], f'{device.device_kind} memory'
  try:
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'), 'host memory (RAM)'
  except (OSError, ValueError):
    return None, 'unknown'


def check_memory(config):
  """A problem if training the config's network cannot fit in one device's memory."""
  need = training_bytes(config)
  have, what = device_memory()
  if have is None or need <= have:
    return []
  return [f'config.{_blamed(config)}: {_what_needs(config)} about {storage.human_size(need)} '
          f'to train (parameters, gradients, the optimizer\'s state and activations), more '
          f'than the {storage.human_size(have)} of {what}; lower {_to_lower(config)}.']


def _blamed_fields(config):
  """The fields behind the memory, the one whose default (configs/default.py) would save
  the most first: of the batch sizes, the model's size fields and num_seeds."""
  defaults = config_files.defaults()
  candidates = ('batch_size', 'eval_batch_size', *models.MODELS[config.model].SIZE_FIELDS,
                'num_seeds')
  saved = {}
  for field in candidates:
    reset = ml_collections.ConfigDict(config.to_dict())
    *path, last = field.split('.')
    parent, default = reset, defaults
    for part in path:
      parent, default = parent[part], default[part]
    parent[last] = default[last]
    saved[field] = training_bytes(config) - training_bytes(reset)
  blamed = sorted((f for f in candidates if saved[f] > 0), key=lambda f: -saved[f])
  return tuple(blamed) or tuple(models.MODELS[config.model].SIZE_FIELDS)


def _blamed(config):
  return ', '.join(f'{f}={_field(config, f)!r}' for f in _blamed_fields(config))


def _to_lower(config):
  *rest, last = _blamed_fields(config)
  return f'{", ".join(rest)} or {last}' if rest else last


def _what_needs(config):
  """E.g. 'the 50,890 parameters x 3 replicas, with batches of 32 examples, need'."""
  replicas = f' x {config.num_seeds} replicas' if config.num_seeds > 1 else ''
  batch = max(config.batch_size, config.eval_batch_size)
  return f'the {_params(config):,} parameters{replicas}, with batches of {batch:,} examples, need'


def _field(config, dotted):
  """The value of a (possibly nested) config field, e.g. 'cnn.features'."""
  for part in dotted.split('.'):
    config = config[part]
  return tuple(config) if isinstance(config, list) else config


def check_against_data(config, num_train, num_test):
  """Problems that depend on the loaded split sizes (indices and counts in range)."""
  problems = []
  if num_test < 1:
    problems.append('the test set holds no images: nothing could be evaluated; point '
                    'config.data_dir at a folder whose t10k files hold the test set.')
  bad = [i for i in config.test_indices if i >= num_test]
  if bad:
    problems.append(f'config.test_indices={tuple(config.test_indices)!r}: {bad} outside the '
                    f'test set; indices must be in [0, {num_test - 1}].')
  if num_train < 1:
    problems.append(f'config.validation_split={config.validation_split!r} leaves no training '
                    'examples; lower it.')
  return problems


def raise_if(problems):
  """Raises one ConfigError listing every problem, if there are any."""
  if problems:
    raise ConfigError('Invalid configuration, nothing was trained:\n  - ' +
                      '\n  - '.join(problems))


def check_config(config, workdir):
  """Raises ConfigError naming every problem with the config, its data folder and workdir."""
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f'config must be an ml_collections.ConfigDict, got {type(config)}.')
  problems = check_fields(config)
  sized = None if problems else config  # Sizes and memory need valid fields.
  problems += check_data_dir(config) + check_workdir(workdir, sized)
  raise_if(problems + (check_memory(config) if sized else []))
