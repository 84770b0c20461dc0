"""The shipped config files: where they are, how `--config` finds one, what `--help` says.

The `configs` package (configs/default.py and the variants) is installed with digits_jax,
so `from configs import default` and `--config=/any/path/v6.py` work from any folder, and
`--config=configs/v6.py` (or just `--config=v6`) finds the shipped file when the current
folder has none. The field list of `--help` is read from configs/default.py itself: each
field's default from `get_config()`, its meaning from the comment beside (or above) it.

A run's saved config (its workdir's config.json) is read by `read_run_config` alone: the
fields added to configs/default.py since the run was made take their default there, which
by contract is what runs did before the field existed (dropout_rate 0, num_seeds 1, ...).
Nothing else fills in a missing field (`config.get(field, default)`), and the resume guard
(workdir.py) compares the completed config.
"""

import ast
import io
import os
import sys
import textwrap
import tokenize

import ml_collections

from digits_jax import errors
from digits_jax import input_pipeline
from digits_jax import results as results_lib


def config_dir():
  """The folder of the installed `configs` package (else ./configs, as before installing)."""
  try:
    import configs  # pylint: disable=g-import-not-at-top
  except ImportError:
    return os.path.abspath('configs')
  return os.path.dirname(os.path.abspath(configs.__file__))


def defaults():
  """configs/default.py's config: every field, at its default."""
  from configs import default  # pylint: disable=g-import-not-at-top  (see config_dir)
  return default.get_config()


def complete(saved):
  """A saved config (a dict, as in config.json) as a ConfigDict with every field that
  configs/default.py has and it lacks filled with its default. Fields it has keep their
  saved value, including any that default.py no longer has."""
  return ml_collections.ConfigDict({**defaults().to_dict(), **saved})


def added_fields(saved):
  """The fields of configs/default.py that a saved config (a dict) lacks, in file order."""
  return [field for field in defaults().keys() if field not in saved]


def read_run_config(workdir, fix=results_lib.CONFIG_FIX):
  """The config of the run in `workdir`: its config.json, completed by `complete`.

  Raises:
    the typed error of `results.read_config` (naming the file and `fix`) if config.json
    is missing or damaged.
  """
  return complete(results_lib.read_config(workdir, fix=fix))


def shipped():
  """{name: first docstring line} of every shipped config, e.g. {'default': ..., 'v1': ...}."""
  out = {}
  for name in sorted(os.listdir(config_dir())):
    if name.endswith('.py') and not name.startswith('_'):
      with open(os.path.join(config_dir(), name), encoding='utf-8') as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ''
      out[name[:-3]] = doc.strip().splitlines()[0] if doc.strip() else ''
  return out


def resolve(text):
  """`--config`'s value with the file found: as given when it exists, else the shipped
  config that `NAME`, `NAME.py` or `configs/NAME.py` names (the `:arg` is kept)."""
  path, sep, arg = text.partition(':')
  if os.path.exists(path):
    return text
  name = os.path.basename(path)
  name = name[:-3] if name.endswith('.py') else name
  if os.path.dirname(os.path.normpath(path)) in ('', 'configs') and name in shipped():
    return os.path.join(config_dir(), name + '.py') + sep + arg
  return text


class ConfigFileError(errors.UserError, ValueError):
  """`--config` names no file and no shipped config."""


def resolve_argv(argv):
  """argv with every `--config=VALUE` / `--config VALUE` resolved by `resolve`.

  Raises:
    ConfigFileError: a value that names no file and no shipped config.
  """
  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith('--config='):
      out[i] = '--config=' + resolve(arg[len('--config='):])
    elif arg == '--config' and i + 1 < len(out):
      out[i + 1] = resolve(out[i + 1])
    else:
      continue
    path = out[i + (arg == '--config')].removeprefix('--config=').partition(':')[0]
    if not os.path.isfile(path):
      raise ConfigFileError(
          f'--config: no file {path!r}. Give the path of a config file (a module with '
          f'get_config()) or the name of a shipped one: {", ".join(shipped())}.')
  return out


def _load(config_arg):
  """The config that `--config=<config_arg>` names, loaded as ml_collections does.

  Raises:
    ConfigFileError: the file fails to load, or get_config() fails or returns no config.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_dict  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file('config', None, '', flag_values=values,
                                           sys_argv=['check'])
  # ml_collections re-executes each file into the module 'config_config' it made before:
  # a file without get_config() would find the last file's.
  sys.modules.pop('config_config', None)
  try:
    values(['check', f'--config={config_arg}'])
    config = holder.value
  except Exception as e:  # pylint: disable=broad-except  (anything the user's file raises)
    text = f'{type(e).__name__}: {e}'
    if 'Traceback' in text:  # ml_collections puts the traceback in Type/ValueErrors' text.
      text = text.strip().splitlines()[-1]
    raise ConfigFileError(f'cannot load the --config file {config_arg!r}: {text.rstrip(".")}. '
                          f'{LOAD_FIX}') from None
  if not isinstance(config, config_dict.ConfigDict):
    raise ConfigFileError(f'cannot load the --config file {config_arg!r}: its get_config() '
                          f'returned a {type(config).__name__}, not an '
                          f'ml_collections.ConfigDict. {LOAD_FIX}')
  return config


LOAD_FIX = ('A config file is a Python module whose get_config() returns an '
            'ml_collections.ConfigDict, as configs/default.py does.')


def check_overrides(argv):
  """Loads `argv`'s --config file and checks that each --config.FIELD=... names a field.

  Raises:
    ConfigFileError: the file cannot be loaded (see _load), or an override names no
      field of its config (with the near field names).
  """
  values = [a.split('=', 1)[1] if a.startswith('--config=') else argv[i + 1]
            for i, a in enumerate(argv) if a.startswith('--config=')
            or (a == '--config' and i + 1 < len(argv))]
  config = _load(values[-1] if values else os.path.join(config_dir(), 'default.py'))
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    path = arg[len('--config.'):].split('=', 1)[0]
    node = config
    for depth, key in enumerate(path.split('.')):
      if not hasattr(node, 'keys') or key not in node:
        known = list(node.keys()) if hasattr(node, 'keys') else []
        field = '.'.join(path.split('.')[:depth + 1])
        raise ConfigFileError(f'bad --config override {arg!r}: the config has no field '
                              f'{field!r}.{errors.near(key, known)} Run with --help for '
                              'every field.')
      node = node[key]


def field_docs():
  """[(field, comment)] of configs/default.py in file order: the comment on the field's
  line, else the comment lines just above it."""
  with open(os.path.join(config_dir(), 'default.py'), encoding='utf-8') as f:
    source = f.read()
  comments = {t.start[0]: t.string.lstrip('#').strip()
              for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type == tokenize.COMMENT}
  lines = source.splitlines()
  fields = []
  for node in ast.walk(ast.parse(source)):
    if (isinstance(node, ast.Assign) and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Attribute)
        and isinstance(node.targets[0].value, ast.Name) and node.targets[0].value.id == 'config'):
      comment = comments.get(node.end_lineno, '')
      if not comment:  # A block of whole-line comments right above the field.
        above, row = [], node.lineno - 1
        while row >= 1 and lines[row - 1].strip().startswith('#'):
          above.insert(0, comments[row])
          row -= 1
        comment = ' '.join(above)
      fields.append((node.lineno, node.targets[0].attr, comment))
  return [(name, comment) for _, name, comment in sorted(fields)]


def help_text():
  """The shipped configs, every config field (default and meaning) and the data variables."""
  config = defaults()
  datasets = ', '.join(input_pipeline.DATASETS)
  lines = ['', f'Shipped configs (in {config_dir()}): --config=configs/NAME.py, or '
           f'--config=NAME; add :DATASET for another dataset ({datasets}), e.g. '
           '--config=v6:fashion_mnist (Task 2).']
  lines += [f'  {name:<8} {doc}' for name, doc in shipped().items()]
  lines += ['', 'Config fields, with the default config\'s values; override any with '
            '--config.FIELD=VALUE:']
  for name, comment in field_docs():
    lines.append(textwrap.fill(comment, width=100, initial_indent=f'  {name} = {config[name]!r}'
                               .ljust(38) + ' ', subsequent_indent=' ' * 39))
  lines += ['', 'Environment variables (the data folders, see config.data_source):']
  for name, record in input_pipeline.DATASETS.items():
    lines.append(f'  {record.env_var:<30} a folder of the four {name} '
                 'IDX files, tried after config.data_dir')
  lines.append(f'  {"TFDS_DATA_DIR":<30} where tensorflow-datasets keeps prepared data '
               '(default ~/tensorflow_datasets)')
  lines.append(f'  {"DIGITS_JAX_KERNEL_CACHE":<30} where the fused CPU kernel is built '
               '(default ~/.cache/digits_jax)')
  return '\n'.join(lines) + '\n'
