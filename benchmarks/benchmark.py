r"""Benchmarks digits_jax: the lab's variants against Keras, a batch-size cost curve, devices.

  python benchmarks/benchmark.py --configs=default,v6 --dataset=mnist --keras --repeats=3
  python benchmarks/benchmark.py --sections=curve,scaling
  python benchmarks/benchmark.py --configs=v6 --data_dir=/path/to/mnist --keras --keras_epochs=2
  python benchmarks/benchmark.py --sections=seeds --seed_configs=default,v6 --num_seeds=1,2,4,8
  python benchmarks/benchmark.py --sections=fidelity --seeds=3

Sections (--sections, default breakdown, train, curve, scaling; fidelity and seeds only
when asked for):
  breakdown  the fused CPU kernel's step of each --breakdown_configs, phase by phase
           (input, forward, loss, backward, Adam, waiting at barriers) on 1 and 2 threads,
           beside the floors measured on this CPU with the kernel's flags: the exact Adam
           update over contiguous arrays, the same without its square root and divide
           (memory alone), and the matmuls' multiply-adds at peak rate (benchmarks/
           breakdown.py compiles benchmarks/kernel_breakdown.cc; x86 CPUs).
  train    each config trained end to end by `python -m digits_jax.main` in a child process
           (timings from its results.json, peak RSS from os.wait4), once per --cpu_kernel
           choice, and with --keras by the lab's own Keras program (benchmarks/keras_lab.py),
           also in a child process.
  curve    examples/s of a block of steps at several batch sizes, per --impls: 'xla'
           (`train_state.train_steps_indexed`, a lax.scan) and 'kernel' (the fused CPU
           kernel, `cpu_kernel.train_steps_indexed`; CPU only). The default network; a
           synthetic uint8 dataset on the device; blocks of K steps, K chosen so that one
           call takes >= --min_call_seconds; median over --calls calls.
  scaling  the same at one batch size on 1, 2 and 4 devices: on CPU the devices are forced
           with XLA_FLAGS=--xla_force_host_platform_device_count=N, so the sharded code
           path (mesh, replicated state, batch sharded on 'data') is what is measured.
  seeds    each of --seed_configs trained end to end with config.num_seeds = each of
           --num_seeds (N replicas in one program), once per --cpu_kernel choice: train
           seconds, seconds per replica, and the time against N separate one-seed runs.
  fidelity N seeds (--seeds) of the lab's Keras program and of digits_jax for each config
           (seeds 0..N-1 on both sides), then per config: our mean +- std, Keras's, the
           difference of the means with its 95% Welch interval and p-value, and a verdict:
           'equivalent' (the interval within +-(--margin) points), 'better', 'worse' (the
           interval beyond 0) or 'inconclusive'. --keras_results reuses Keras runs
           recorded earlier (keras_lab.py's JSON lines) instead of running Keras again.

The parent process never imports JAX: every measurement runs in a fresh child process.
Exits 0 when every run succeeded, 1 otherwise.
"""

import csv
import glob
import importlib
import importlib.metadata
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

ALL_CONFIGS = ['default'] + [f'v{i}' for i in range(1, 10)]
SECTIONS = ('breakdown', 'train', 'curve', 'scaling', 'fidelity', 'seeds')
DEFAULT_SECTIONS = ('breakdown', 'train', 'curve', 'scaling')
RESULT_PREFIX = 'RESULT '

_CONFIGS = flags.DEFINE_list('configs', ALL_CONFIGS, 'Configs (configs/<name>.py) to train.')
_DATASET = flags.DEFINE_enum('dataset', 'mnist', ['mnist', 'fashion_mnist'], 'Dataset.')
_DATA_DIR = flags.DEFINE_string('data_dir', '', "IDX folder ('' = the package's lookup: "
                                '$DIGITS_JAX_<DATASET>_DIR, then known folders, then tfds).')
_KERAS = flags.DEFINE_bool('keras', False, 'Also run the lab\'s Keras program (slow).')
_CPU_KERNEL = flags.DEFINE_list('cpu_kernel', ['auto'], 'Train: config.cpu_kernel values to '
                                'run each config with (e.g. auto,off compares kernel and XLA).')
_IMPLS = flags.DEFINE_list('impls', ['xla', 'kernel'], "Curve: step implementations ('kernel' "
                           'is skipped where the fused CPU kernel does not apply).')
_REPEATS = flags.DEFINE_integer('repeats', 1, 'Runs of each config; the table shows medians.')
_KERAS_REPEATS = flags.DEFINE_integer('keras_repeats', 0, 'Keras runs (0 = --repeats).')
_EPOCHS = flags.DEFINE_integer('epochs', 0, "Epochs for both programs (0 = the config's).")
_KERAS_EPOCHS = flags.DEFINE_integer('keras_epochs', 0, 'Epochs for Keras only (0 = as JAX).')
_SECTIONS = flags.DEFINE_list('sections', list(DEFAULT_SECTIONS),
                              'Sections: train, curve, scaling, fidelity, seeds.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Fidelity: seeds (0..N-1) per config and program.')
_MARGIN = flags.DEFINE_float('margin', 0.5, 'Fidelity: equivalence margin in accuracy points.')
_KERAS_RESULTS = flags.DEFINE_list('keras_results', [], 'Fidelity: files (glob patterns) of '
                                   'keras_lab.py JSON lines to take Keras runs from instead '
                                   'of running Keras.')
_JAX_RESULTS = flags.DEFINE_list('jax_results', [], 'Fidelity: files (glob patterns) of '
                                 'digits_jax seed lines written by --record, taken instead of '
                                 'training those seeds again.')
_RECORD = flags.DEFINE_string('record', '', 'Fidelity: append every run\'s JSON line (both '
                              'programs, one per seed) to this file.')
_BREAKDOWN_CONFIGS = flags.DEFINE_list('breakdown_configs', ['v6', 'default'],
                                       'Breakdown: configs whose kernel step is timed.')
_SEED_CONFIGS = flags.DEFINE_list('seed_configs', ['default', 'v6'], 'Seeds: configs to train.')
_NUM_SEEDS = flags.DEFINE_list('num_seeds', ['1', '2', '4', '8'],
                               'Seeds: config.num_seeds values (1 first: the baseline).')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['5', '32', '128', '1024', '8192'],
                                 'Batch sizes of the cost curve.')
_DEVICE_COUNTS = flags.DEFINE_list('device_counts', ['1', '2', '4'], 'Scaling: device counts.')
_SCALING_BATCH = flags.DEFINE_integer('scaling_batch', 1024, 'Scaling: global batch size.')
_MIN_CALL = flags.DEFINE_float('min_call_seconds', 0.05, 'Curve/scaling: least seconds a call.')
_CALLS = flags.DEFINE_integer('calls', 7, 'Curve/scaling: timed calls (median reported).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Curve/scaling: untimed calls after compiling.')
_WORKER = flags.DEFINE_enum('worker', '', ['', 'throughput'],
                            'Internal: run as the child process that measures throughput.')
_IMPL = flags.DEFINE_enum('impl', 'xla', ['xla', 'kernel'], 'Internal: the worker\'s steps.')


def say(text=''):
  print(text, flush=True)


def cpu_model():
  """The CPU's model name from /proc/cpuinfo ('' where there is none)."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return ''


def version(package):
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return 'not installed'


def machine_lines():
  """The machine and library versions, printed at the top."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  mem = ''
  if os.path.exists('/proc/meminfo'):
    with open('/proc/meminfo') as f:
      mem = f'{int(f.readline().split()[1]) / 2**20:.1f} GiB RAM, '
  keras = _KERAS.value or 'fidelity' in _SECTIONS.value
  libs = ['jax', 'jaxlib', 'flax', 'optax'] + (['keras', 'tensorflow-cpu', 'tensorflow']
                                               if keras else [])
  return [f'Machine: {cpu_model() or "unknown CPU"}, nproc {cores}, {mem}'
          f'Python {sys.version.split()[0]}',
          'Versions: ' + ', '.join(f'{p} {version(p)}' for p in libs
                                   if version(p) != 'not installed'),
          f'Load average at start: {", ".join(f"{x:.2f}" for x in os.getloadavg())}',
          f'Started: {time.strftime("%Y-%m-%d %H:%M:%S")}']


def run_child(cmd, env=None):
  """Runs a command to completion; returns rc, wall seconds, peak RSS (MB) and its output.

  os.wait4 gives the resource usage of exactly this child, so ru_maxrss is its own peak.
  """
  with tempfile.TemporaryFile('w+') as log:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.seek(0)
    output = log.read()
  return {'rc': proc.returncode, 'wall_seconds': wall, 'peak_mb': usage.ru_maxrss / 1024,
          'output': output}


def child_env(**extra):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', **extra)
  return env


def failed(what, child):
  """Prints a failed child's exit status and the tail of its output."""
  say(f'  FAILED: {what} exited with {child["rc"]}; last lines of its output:')
  for line in child['output'].strip().splitlines()[-25:]:
    say(f'    {line}')


def run_jax(name, cpu_kernel='auto', extra=()):
  """One end-to-end digits_jax run in a child process; returns its measurements or None.

  extra: more trainer flags, e.g. ('--config.seed=1',).
  """
  workdir = tempfile.mkdtemp(prefix=f'digits_jax_bench_{name}_')
  cmd = [sys.executable, '-m', 'digits_jax.main', f'--config=configs/{name}.py:{_DATASET.value}',
         f'--workdir={workdir}', '--config.progress_bar=false', '--config.write_report=false',
         '--config.tensorboard=false', f'--config.cpu_kernel={cpu_kernel}']
  if _DATA_DIR.value:
    cmd.append(f'--config.data_dir={_DATA_DIR.value}')
  if _EPOCHS.value:
    cmd.append(f'--config.num_epochs={_EPOCHS.value}')
  cmd.extend(extra)
  try:
    child = run_child(cmd, child_env())
    path = os.path.join(workdir, 'results.json')
    if child['rc'] or not os.path.exists(path):
      failed(' '.join(cmd[1:]), child)
      return None
    with open(path) as f:
      res = json.load(f)
    with open(os.path.join(workdir, 'history.csv')) as f:
      epoch_seconds = [float(row['seconds']) for row in csv.DictReader(f)]
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  t = res['timings']
  return {'epochs': res['num_epochs'], 'steps': t['steps'],
          'compile_seconds': t['compile_seconds'], 'train_seconds': t['train_seconds'],
          'examples_per_second': t['examples_per_second'], 'eval_seconds': t['eval_seconds'],
          'steady_examples_per_second': steady(res['num_train'], epoch_seconds),
          'test_accuracy': res['test_accuracy'], 'peak_mb': child['peak_mb'],
          'seeds': res.get('seeds', [res['seed']]),
          'seed_test_accuracy': res.get('per_seed', {}).get('test_accuracy',
                                                             [res['test_accuracy']]),
          'wall_seconds': child['wall_seconds'], 'steps_by': steps_by(t),
          'num_seeds': len(res.get('seeds', [0])),
          'mean_test_accuracy': res.get('summary', {}).get('test_accuracy', {}).get('mean')}


def steps_by(timings):
  """'kernel x2', 'kernel x2 1/thread' (replicas one per thread) or 'xla', from
  results.json's timings.step_impl, kernel_threads and kernel_layout."""
  if not timings.get('step_impl'):
    return None
  if timings['step_impl'] == 'kernel':
    per_thread = ' 1/thread' if timings.get('kernel_layout') == 'replica_per_thread' else ''
    return f'kernel x{timings["kernel_threads"]}{per_thread}'
  return 'xla'


def steady(num_train, epoch_seconds):
  """Examples/s of a median epoch after the first (which pays compiling/tracing)."""
  later = epoch_seconds[1:]
  return num_train / statistics.median(later) if later else None


def run_keras(name, seeds=None):
  """benchmarks/keras_lab.py in a child process; returns its measurements or None.

  With `seeds` (a list), one child trains each seed and a list of results comes back
  (None when any seed failed); without, one run with the config's seed.
  """
  epochs = _KERAS_EPOCHS.value or _EPOCHS.value
  cmd = [sys.executable, os.path.join('benchmarks', 'keras_lab.py'), f'--config={name}',
         f'--dataset={_DATASET.value}', f'--data_dir={_DATA_DIR.value}', f'--epochs={epochs}']
  if seeds is not None:
    cmd.append(f'--seeds={",".join(map(str, seeds))}')
  child = run_child(cmd, child_env(KERAS_BACKEND='tensorflow'))
  runs = [json.loads(l) for l in child['output'].splitlines() if l.startswith('{')]
  if child['rc'] or len(runs) != len(seeds or [None]):
    failed(' '.join(cmd[1:]), child)
    return None
  for res in runs:
    res['peak_mb'] = child['peak_mb']  # Measured the same way as for JAX (os.wait4).
    res['wall_seconds'] = child['wall_seconds']
    res['steady_examples_per_second'] = steady(res['num_train'], res['epoch_seconds'])
  return runs if seeds is not None else runs[0]


def repeated(fn, name, count, label):
  """Runs fn(name) `count` times, logging each run; returns the successful results."""
  out = []
  for i in range(count):
    load = os.getloadavg()[0]
    res = fn(name)
    if res is not None and res.get('steps_by'):
      label = f'jax, {res["steps_by"]}'
    if res is not None:
      say(f'  [{label}] {name} {_DATASET.value} run {i + 1}/{count}: train '
          f'{res["train_seconds"]:.2f} s, {res["examples_per_second"]:,.0f} ex/s, test acc '
          f'{res["test_accuracy"]:.4f}, peak {res["peak_mb"]:.0f} MB, wall '
          f'{res["wall_seconds"]:.1f} s (load avg before {load:.2f})')
      out.append(res)
  return out


def summarise(runs, key, how=statistics.median):
  values = [r[key] for r in runs if r.get(key) is not None]
  return how(values) if values else None


def fmt(value, spec):
  return '-' if value is None else format(value, spec)


TRAIN_COLUMNS = (  # (header, source, key, format, how to combine repeats)
    ('config', None, 'config', 's', None), ('dataset', None, 'dataset', 's', None),
    ('jax steps by', 'jax', 'steps_by', 's', lambda v: v[0]),
    ('epochs', 'jax', 'epochs', 'd', max), ('steps', 'jax', 'steps', ',d', max),
    ('jax compile s', 'jax', 'compile_seconds', '.2f', statistics.median),
    ('jax train s', 'jax', 'train_seconds', '.2f', statistics.median),
    ('jax ex/s', 'jax', 'examples_per_second', ',.0f', statistics.median),
    ('jax steady ex/s', 'jax', 'steady_examples_per_second', ',.0f', statistics.median),
    ('jax test acc', 'jax', 'test_accuracy', '.4f', statistics.median),
    ('jax peak MB', 'jax', 'peak_mb', '.0f', max),
    ('jax wall s', 'jax', 'wall_seconds', '.1f', statistics.median),
    ('keras epochs', 'keras', 'epochs', 'd', max),
    ('keras startup s', 'keras', 'startup_seconds', '.2f', statistics.median),
    ('keras train s', 'keras', 'train_seconds', '.2f', statistics.median),
    ('keras ex/s', 'keras', 'examples_per_second', ',.0f', statistics.median),
    ('keras steady ex/s', 'keras', 'steady_examples_per_second', ',.0f', statistics.median),
    ('keras test acc', 'keras', 'test_accuracy', '.4f', statistics.median),
    ('keras peak MB', 'keras', 'peak_mb', '.0f', max),
    ('keras wall s', 'keras', 'wall_seconds', '.1f', statistics.median),
    ('speed-up', None, 'speedup', '.1f', None),
)


def train_row(name, jax_runs, keras_runs):
  """One table row: medians over the repeats (peak memory: the maximum)."""
  row = {'config': name, 'dataset': _DATASET.value}
  for header, source, key, _, how in TRAIN_COLUMNS:
    if source:
      row[header] = summarise(jax_runs if source == 'jax' else keras_runs, key, how)
  jax_eps, keras_eps = row['jax ex/s'], row['keras ex/s']
  # Throughput ratio: equals keras train s / jax train s when both ran the same epochs.
  row['speed-up'] = jax_eps / keras_eps if jax_eps and keras_eps else None
  return row


def table(rows, columns):
  """Formats rows (dicts keyed by header) as a fixed-width text table."""
  cells = [[fmt(r.get(h, r.get(k)), spec) for h, _, k, spec, _ in columns] for r in rows]
  headers = [c[0] for c in columns]
  widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
            for i, h in enumerate(headers)]
  line = lambda vals: '  '.join(v.rjust(w) for v, w in zip(vals, widths))
  return '\n'.join([line(headers), line(['-' * w for w in widths])] + [line(c) for c in cells])


def train_section():
  """Trains every config with digits_jax (and Keras); prints the comparison table."""
  say(f'== train: {", ".join(_CONFIGS.value)} on {_DATASET.value}, {_REPEATS.value} '
      f'repeat(s){", with Keras" if _KERAS.value else ""} ==')
  rows, ok = [], True
  for name in _CONFIGS.value:
    keras_runs = []
    if _KERAS.value:
      keras_runs = repeated(run_keras, name, _KERAS_REPEATS.value or _REPEATS.value, 'keras')
      ok = ok and bool(keras_runs)
    for choice in _CPU_KERNEL.value:
      jax_runs = repeated(lambda n, c=choice: run_jax(n, c), name, _REPEATS.value, 'jax')
      ok = ok and len(jax_runs) == _REPEATS.value
      rows.append(train_row(name, jax_runs, keras_runs))
  columns = TRAIN_COLUMNS if _KERAS.value else [c for c in TRAIN_COLUMNS
                                                 if c[1] != 'keras' and c[0] != 'speed-up']
  say()
  say(table(rows, columns))
  say('(medians over repeats; peak MB: the largest; speed-up = jax ex/s / keras ex/s)')
  return ok


SEEDS_COLUMNS = (
    ('config', None, 'config', 's', None), ('steps by', None, 'steps_by', 's', None),
    ('seeds', None, 'num_seeds', 'd', None), ('epochs', None, 'epochs', 'd', None),
    ('train s', None, 'train_seconds', '.2f', None),
    ('best train s', None, 'best_train_seconds', '.2f', None),
    ('s per replica', None, 'per_replica', '.2f', None),
    ('vs one seed', None, 'vs_one', '.2f', None),
    ('vs N runs', None, 'vs_separate', '.2f', None),
    ('mean test acc', None, 'mean_test_accuracy', '.4f', None),
    ('peak MB', None, 'peak_mb', '.0f', None),
)


def seeds_section():
  """N replicas in one run against one: train seconds, per replica, and against N runs."""
  counts = [int(n) for n in _NUM_SEEDS.value]
  say(f'== seeds: {", ".join(_SEED_CONFIGS.value)} on {_DATASET.value} with num_seeds '
      f'{", ".join(map(str, counts))}, {_REPEATS.value} repeat(s) ==')
  rows, ok = [], True
  for name in _SEED_CONFIGS.value:
    for choice in _CPU_KERNEL.value:
      base = None
      for n in counts:
        extra = [f'--config.num_seeds={n}'] if n != 1 else []
        runs = repeated(lambda c, k=choice, e=extra: run_jax(c, k, e), name, _REPEATS.value,
                        f'jax, {n} seed(s)')
        ok = ok and len(runs) == _REPEATS.value
        if not runs:
          continue
        row = {key: summarise(runs, key) for key in ('train_seconds', 'mean_test_accuracy')}
        row.update({key: summarise(runs, key, max) for key in ('epochs', 'peak_mb', 'num_seeds')})
        row.update(config=name, steps_by=f'{runs[0]["steps_by"]} ({choice})',
                   per_replica=row['train_seconds'] / n,
                   best_train_seconds=summarise(runs, 'train_seconds', min))
        base = row['train_seconds'] if n == 1 else base
        row['vs_one'] = row['train_seconds'] / base if base else None
        row['vs_separate'] = row['train_seconds'] / (n * base) if base else None
        rows.append(row)
  say()
  say(table(rows, SEEDS_COLUMNS))
  say('(medians over repeats; best: the fastest repeat, the least disturbed by other work; '
      'vs one seed = train s / train s of num_seeds=1; vs N runs = train s / (N x train s '
      'of num_seeds=1): below 1, the replicas beat separate runs)')
  return ok


def config_epochs(name):
  """The epochs configs/<name>.py trains for (the parent imports configs, never JAX)."""
  module = importlib.import_module(f'configs.{name}')
  return module.get_config(_DATASET.value).num_epochs


def result_files(flag):
  """The files a --*_results flag names (glob patterns expanded); a pattern matching none fails."""
  paths = []
  for pattern in flag.value:
    matched = sorted(glob.glob(pattern))
    if not matched:
      raise app.UsageError(f'--{flag.name}: no file matches {pattern!r}; give files of '
                           'JSON lines written by benchmarks/keras_lab.py or --record.')
    paths.extend(matched)
  return paths


def recorded(program, name, seeds, paths):
  """Runs of `program` ('keras', 'digits_jax') of `name` on this dataset and epochs, by seed.

  Read from JSON lines (keras_lab.py's, whose lines without 'program' are Keras's, or
  --record's); returns the ones for `seeds`, in their order.
  """
  epochs = _KERAS_EPOCHS.value or _EPOCHS.value or config_epochs(name)
  if program == 'digits_jax':
    epochs = _EPOCHS.value or config_epochs(name)
  found = {}
  for path in paths:
    with open(path) as f:
      for line in f:
        if not line.startswith('{'):
          continue
        res = json.loads(line)
        if (res.get('program', 'keras'), res.get('config'), res.get('dataset'),
            res.get('epochs')) == (program, name, _DATASET.value, epochs) and (
                res.get('seed') in seeds):
          found[res['seed']] = res
  return [found[s] for s in seeds if s in found]


def jax_seed_runs(name, seeds):
  """digits_jax's runs of `name`, one dict per seed (test_accuracy, train_seconds), or None.

  One run with config.num_seeds = len(seeds) where the trainer has that field (train
  seconds split evenly over the seeds), else one run per seed (--config.seed=s).
  """
  line = lambda seed, acc, secs, epochs: {
      'program': 'digits_jax', 'config': name, 'dataset': _DATASET.value, 'epochs': epochs,
      'seed': seed, 'test_accuracy': acc, 'train_seconds': secs}
  default = importlib.import_module('configs.default').get_config()
  if 'num_seeds' in default:
    res = run_jax(name, extra=[f'--config.seed={seeds[0]}', f'--config.num_seeds={len(seeds)}'])
    if res is None or res['seeds'] != list(seeds):
      return None
    return [line(s, a, res['train_seconds'] / len(seeds), res['epochs'])
            for s, a in zip(seeds, res['seed_test_accuracy'])]
  runs = [run_jax(name, extra=[f'--config.seed={s}']) for s in seeds]
  if any(r is None for r in runs):
    return None
  return [line(s, r['test_accuracy'], r['train_seconds'], r['epochs'])
          for s, r in zip(seeds, runs)]


def record(runs):
  """Appends runs (dicts) to --record as JSON lines."""
  if _RECORD.value and runs:
    with open(_RECORD.value, 'a') as f:
      f.writelines(json.dumps(r) + '\n' for r in runs)


def fidelity_runs(program, name, seeds, paths):
  """Seeds of `name` by `program`: recorded ones where all are there, else run (and recorded)."""
  runs = recorded(program, name, seeds, paths) if paths else []
  if paths and program == 'keras':
    return runs  # --keras_results: whatever seeds were recorded.
  if len(runs) == len(seeds):
    return runs
  runs = run_keras(name, seeds) if program == 'keras' else jax_seed_runs(name, seeds)
  record(runs)
  return runs


def fidelity_row(name, ours, keras, margin):
  """One row of the fidelity table: both spreads, the difference (points) and a verdict."""
  from digits_jax import stats  # pylint: disable=g-import-not-at-top  (numpy/scipy only)
  a, b = stats.summarize(ours), stats.summarize(keras)
  diff = stats.welch([100 * x for x in ours], [100 * x for x in keras])
  ci = diff['ci95']
  spread = lambda s: f'{100 * s["mean"]:.2f}' + (f' +- {100 * s["std"]:.2f}' if s['n'] > 1 else '')
  return {'config': name, 'n ours': a['n'], 'ours': spread(a),
          'n keras': b['n'], 'keras': spread(b),
          'difference (pt)': f'{diff["difference"]:+.2f}' + (
              f' [{ci[0]:+.2f}, {ci[1]:+.2f}]' if ci else ' (no interval)'),
          'Welch p': diff['p_value'], 'verdict': stats.verdict(diff, margin)}


FIDELITY_COLUMNS = tuple((h, None, h, spec, None) for h, spec in (
    ('config', 's'), ('n ours', 'd'), ('ours', 's'), ('n keras', 'd'), ('keras', 's'),
    ('difference (pt)', 's'), ('Welch p', '.3f'), ('Holm p', '.3f'), ('verdict', 's'),
    ('ours train s', '.2f'), ('keras train s', '.2f')))


def fidelity_section():
  """N seeds of Keras and of digits_jax per config; their spreads and the difference."""
  seeds = list(range(_SEEDS.value))
  say(f'== fidelity: {", ".join(_CONFIGS.value)} on {_DATASET.value}, seeds '
      f'{seeds[0]}..{seeds[-1]}, ours vs Keras (margin +-{_MARGIN.value} pt) ==')
  rows, ok = [], True
  keras_paths, jax_paths = result_files(_KERAS_RESULTS), result_files(_JAX_RESULTS)
  for name in _CONFIGS.value:
    keras_runs = fidelity_runs('keras', name, seeds, keras_paths)
    jax_runs = fidelity_runs('digits_jax', name, seeds, jax_paths)
    if not keras_runs or not jax_runs:
      say(f'  {name}: no result ({"Keras" if not keras_runs else "digits_jax"} failed)')
      ok = False
      continue
    accs = [r['test_accuracy'] for r in keras_runs]
    ours = [r['test_accuracy'] for r in jax_runs]
    say(f'  {name}: ours {" ".join(f"{x:.4f}" for x in ours)}; Keras (seeds '
        f'{",".join(str(r["seed"]) for r in keras_runs)}) {" ".join(f"{x:.4f}" for x in accs)}')
    row = fidelity_row(name, ours, accs, _MARGIN.value)
    row['ours train s'] = statistics.mean(r['train_seconds'] for r in jax_runs)
    row['keras train s'] = statistics.mean(r['train_seconds'] for r in keras_runs)
    rows.append(row)
  if rows:
    from digits_jax import stats  # pylint: disable=g-import-not-at-top
    for row, p in zip(rows, stats.holm([r['Welch p'] for r in rows])):
      row['Holm p'] = p  # Adjusted over the configs of the table.
    say()
    say(table(rows, FIDELITY_COLUMNS))
    say('(test accuracy in %, mean +- sample std over seeds; difference = ours - Keras with '
        "its 95% Welch interval; Holm p: Welch's p Holm-adjusted over the table's configs; "
        "verdict: 'equivalent' when the interval lies within "
        f"+-{_MARGIN.value} pt, 'better'/'worse' when it excludes 0, else 'inconclusive'; "
        'train s: mean per seed)')
  return ok


def throughput_child(batch_sizes, device_count=None, impl='xla'):
  """Runs this script as a throughput worker (forcing CPU devices if asked); returns rows."""
  env = child_env()
  if device_count:
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count='
                        f'{device_count}').strip()
  cmd = [sys.executable, os.path.abspath(__file__), '--worker=throughput',
         f'--batch_sizes={",".join(str(b) for b in batch_sizes)}',
         f'--min_call_seconds={_MIN_CALL.value}', f'--calls={_CALLS.value}',
         f'--warmup={_WARMUP.value}', f'--impl={impl}']
  child = run_child(cmd, env)
  rows = [json.loads(l[len(RESULT_PREFIX):]) for l in child['output'].splitlines()
          if l.startswith(RESULT_PREFIX)]
  if child['rc'] or len(rows) != len(batch_sizes):
    failed(' '.join(cmd[1:]), child)
    return None
  return rows


CURVE_COLUMNS = (
    ('steps by', None, 'impl', 's', None),
    ('devices', None, 'devices', 'd', None), ('platform', None, 'platform', 's', None),
    ('batch', None, 'batch_size', ',d', None), ('padded', None, 'padded_batch', ',d', None),
    ('K steps/call', None, 'steps_per_call', ',d', None),
    ('ms/call', None, 'ms_per_call', '.1f', None), ('us/step', None, 'us_per_step', ',.0f', None),
    ('ex/s', None, 'examples_per_second', ',.0f', None),
    ('best ex/s', None, 'best_examples_per_second', ',.0f', None),
    ('spread %', None, 'spread_percent', '.0f', None),
)


def curve_section():
  """Examples/s of the scanned, indexed train step against the batch size."""
  sizes = [int(b) for b in _BATCH_SIZES.value]
  say(f'== cost curve: a block of train steps ({", ".join(_IMPLS.value)}), default network '
      f'(784-128-10), batch sizes {", ".join(map(str, sizes))}, one device ==')
  rows, ok = [], True
  for impl in _IMPLS.value:
    result = throughput_child(sizes, impl=impl)
    ok = ok and result is not None
    rows.extend(r for r in result or [] if r)
  if not rows:
    return False
  say(table(rows, CURVE_COLUMNS))
  say(f'(synthetic uint8 dataset of 48,000 images on the device; K steps per call chosen '
      f'so a call takes >= {_MIN_CALL.value * 1000:.0f} ms; median of {_CALLS.value} calls '
      'after warm-up; best = the fastest call, the least disturbed by other work; spread = '
      '(max - min) / median of those calls)')
  return ok


def scaling_section():
  """Examples/s at one global batch size on 1, 2, 4, ... devices (forced on CPU)."""
  counts = [int(n) for n in _DEVICE_COUNTS.value]
  say(f'== device scaling: batch {_SCALING_BATCH.value} on {", ".join(map(str, counts))} '
      'device(s) ==')
  rows, ok = [], True
  for n in counts:
    result = throughput_child([_SCALING_BATCH.value], n)
    if result is None:
      ok = False
      continue
    rows.extend(result)
  if rows:
    base = rows[0]['examples_per_second']
    for row in rows:
      row['relative'] = row['examples_per_second'] / base
    say(table(rows, CURVE_COLUMNS + (('vs first', None, 'relative', '.2f', None),)))
  if rows and rows[0]['platform'] == 'cpu':
    say(f'Note: on CPU the N devices are forced (XLA_FLAGS=--xla_force_host_platform_'
        f'device_count=N) and share the same {os.cpu_count()} core(s): this measures the '
        'sharded machinery (mesh, replicated state, batch sharded on "data", gradient '
        'all-reduce), not a speed-up.')
  return ok


# ---------------------------------------------------------------------------------------
# The throughput worker (a child process: the only code here that imports JAX).


BREAKDOWN_COLUMNS = tuple(  # As TRAIN_COLUMNS: (header, source, key, format, combine).
    (header, None, key, spec, None) for header, key, spec in (
        ('config', 'config', 's'), ('threads', 'threads', 'd'),
        ('us/step', 'us_per_step', '.1f'), ('input', 'input', '.1f'),
        ('forward', 'forward', '.1f'), ('loss', 'loss', '.1f'),
        ('backward', 'backward', '.1f'), ('adam', 'adam', '.1f'), ('wait', 'wait', '.1f'),
        ('floor adam', 'floor_adam', '.1f'), ('floor adam mem', 'floor_adam_mem', '.1f'),
        ('floor matmuls', 'floor_matmuls', '.1f'), ('epoch s', 'epoch_seconds', '.2f')))


def breakdown_section():
  """The kernel's step phase by phase beside this CPU's floors (benchmarks/breakdown.py)."""
  say(f'== Breakdown: where a step of the fused CPU kernel goes ({_DATASET.value}; '
      'microseconds a step, phases per thread) ==')
  cmd = [sys.executable, os.path.join('benchmarks', 'breakdown.py'),
         f'--configs={",".join(_BREAKDOWN_CONFIGS.value)}', f'--dataset={_DATASET.value}']
  if _DATA_DIR.value:
    cmd.append(f'--data_dir={_DATA_DIR.value}')
  child = run_child(cmd, child_env())
  rows = [json.loads(line[len(RESULT_PREFIX):]) for line in child['output'].splitlines()
          if line.startswith(RESULT_PREFIX)]
  if child['rc'] or not rows:
    failed('benchmarks/breakdown.py', child)
    return False
  for row in rows:
    row['floor_matmuls'] = row['floor_forward'] + row['floor_backward']
    row['epoch_seconds'] = row['us_per_step'] * row['steps_per_epoch'] / 1e6
  say(table([{k: r[k] for _, _, k, _, _ in BREAKDOWN_COLUMNS} for r in rows],
            BREAKDOWN_COLUMNS))
  say('floor adam: the exact update (sqrt, divide) over contiguous aligned arrays, each '
      'thread its share; floor adam mem: the same loop without sqrt and divide (its memory '
      'traffic); floor matmuls: the multiply-adds a step needs with zero inputs skipped, at '
      'this core\'s measured peak rate. epoch s: us/step x steps per epoch (no validation).')
  return True


def _round_up_pow2(n):
  return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def _setup(batch_size, num_examples=48_000):
  """Mesh, replicated default-config state and synthetic dataset, and a block maker."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  from digits_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from digits_jax import parallel  # pylint: disable=g-import-not-at-top
  from digits_jax import train_state as ts  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh()
  padded = input_pipeline.padded_batch_size(batch_size, mesh.devices.size)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (num_examples, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, num_examples, dtype=np.int32)
  images, labels = parallel.replicate((images, labels), mesh)
  state = parallel.replicate(ts.create_train_state(default.get_config(), jax.random.key(0)),
                             mesh)
  columns = parallel.local_columns(mesh, padded)

  def host_block(k):  # As BlockRunner.feed: index/mask [K, padded], padding masked out.
    index = rng.integers(0, num_examples, (k, padded), dtype=np.int32)
    mask = np.arange(padded)[None, :].repeat(k, 0) < batch_size
    return {'index': index[:, columns], 'mask': mask[:, columns]}

  def to_device(block):  # As BlockRunner.feed: assembled and sharded on 'data' (axis 1).
    dev = parallel.to_global(mesh, block, padded, 1)
    return images, labels, dev['index'], dev['mask']

  return mesh, padded, state, host_block, to_device


def _timed_calls(state, compiled, host_block, to_device, k, count):
  """Runs `count` calls of K steps, each synchronised; returns (state, seconds per call)."""
  import jax  # pylint: disable=g-import-not-at-top
  blocks = [host_block(k) for _ in range(count)]
  seconds = []
  for block in blocks:
    start = time.perf_counter()
    state, sums = compiled(state, *to_device(block))
    jax.block_until_ready((state, sums))
    seconds.append(time.perf_counter() - start)
  return state, seconds


def measure_throughput(batch_size, min_seconds, calls, warmup, impl='xla'):
  """Examples/s of a block of steps at one batch size on every visible device.

  Returns None when impl is 'kernel' and the fused CPU kernel does not apply here.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  from digits_jax import cpu_kernel  # pylint: disable=g-import-not-at-top
  from digits_jax import steps  # pylint: disable=g-import-not-at-top
  from digits_jax import train_state as ts  # pylint: disable=g-import-not-at-top
  from digits_jax import validation  # pylint: disable=g-import-not-at-top
  mesh, padded, state, host_block, to_device = _setup(batch_size)
  if impl == 'kernel':
    config = default.get_config()
    config.cpu_kernel = 'on'  # Every batch size of the curve, past auto's limit too.
    try:
      chosen = steps.build(steps.select_steps(config, mesh), config)
    except validation.ConfigError:  # Not a CPU, several devices, or no compiler here.
      return None
    hparams = cpu_kernel.hyperparams(config, chosen.threads)
    compile_for = lambda state, k: cpu_kernel.train_steps_indexed.lower(
        state, *to_device(host_block(k)), hparams).compile()
  else:
    compile_for = lambda state, k: ts.train_steps_indexed.lower(
        state, *to_device(host_block(k))).compile()
  k = 8
  compiled = compile_for(state, k)
  for _ in range(3):  # Calibrate K (the first calls after compiling are slow: skip them).
    state, _ = _timed_calls(state, compiled, host_block, to_device, k, warmup)
    state, secs = _timed_calls(state, compiled, host_block, to_device, k, 3)
    new_k = min(_round_up_pow2(k * min_seconds / statistics.median(secs)), 1 << 16)
    if new_k <= k:
      break
    k, compiled = new_k, compile_for(state, new_k)
  state, _ = _timed_calls(state, compiled, host_block, to_device, k, warmup)
  state, secs = _timed_calls(state, compiled, host_block, to_device, k, calls)
  median = statistics.median(secs)
  return {'impl': impl, 'devices': mesh.devices.size, 'platform': jax.devices()[0].platform,
          'batch_size': batch_size, 'padded_batch': padded, 'steps_per_call': k,
          'ms_per_call': median * 1e3, 'us_per_step': median / k * 1e6,
          'examples_per_second': batch_size * k / median,
          'best_examples_per_second': batch_size * k / min(secs),
          'spread_percent': (max(secs) - min(secs)) / median * 100}


def throughput_worker(batch_sizes):
  """Prints one RESULT line (JSON) per batch size."""
  for batch_size in batch_sizes:
    res = measure_throughput(batch_size, _MIN_CALL.value, _CALLS.value, _WARMUP.value,
                             _IMPL.value)
    print(RESULT_PREFIX + json.dumps(res), flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if _WORKER.value:
    throughput_worker([int(b) for b in _BATCH_SIZES.value])
    return
  unknown = set(_SECTIONS.value) - set(SECTIONS)
  if unknown:
    raise app.UsageError(f'Unknown sections {sorted(unknown)}; choose from {SECTIONS}.')
  for line in machine_lines():
    say(line)
  say('Note: timings are wall-clock on a shared machine; other work running at the same '
      'time (see the load averages) makes them noisy.')
  ok = True
  for section, fn in (('breakdown', breakdown_section), ('curve', curve_section),
                      ('scaling', scaling_section), ('train', train_section),
                      ('fidelity', fidelity_section), ('seeds', seeds_section)):
    if section in _SECTIONS.value:
      say()
      start = time.perf_counter()
      ok = fn() and ok
      say(f'({section} took {time.perf_counter() - start:.0f} s; load average now '
          f'{os.getloadavg()[0]:.2f})')
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  app.run(main)
