"""The fused CPU training kernel: a block of MLP + Adam steps in one XLA FFI call.

XLA:CPU runs a lab-sized step (batch 5 to 42) at a few hundred microseconds, most of
it outside arithmetic (see kernels/mlp_adam_cpu.cc). This module compiles that C++
kernel once per machine with the system's C++ compiler (cached under
$DIGITS_JAX_KERNEL_CACHE, default ~/.cache/digits_jax, keyed by the source, compiler,
flags, the CPU's instruction-set features and jaxlib), registers it with JAX and exposes
`train_steps_indexed`, a drop-in for `train_state.train_steps_indexed`.

  from digits_jax import cpu_kernel
  if cpu_kernel.unusable_because(config, mesh) is None:
    cpu_kernel.load()  # Builds it (once per machine), or raises KernelBuildError.
    state, sums = cpu_kernel.train_steps_indexed(state, images, labels, index, mask,
                                                 cpu_kernel.hyperparams(config))

steps.select_steps chooses between this kernel and the XLA scan for training.
"""

import ctypes
import dataclasses
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from digits_jax import console
from digits_jax import models
from digits_jax import train_state as ts

TARGET = 'digits_mlp_adam_block'
SOURCE = os.path.join(os.path.dirname(__file__), 'kernels', 'mlp_adam_cpu.cc')
FLAGS = ('-O3', '-march=native', '-std=c++17', '-shared', '-fPIC', '-fno-math-errno')
MODES = {'auto': 'the fused CPU kernel where it applies', 'on': 'require it',
         'off': 'XLA only'}  # config.cpu_kernel.
AUTO_MAX_BATCH = 32  # Measured: faster than the XLA scan up to here, not at 35 and 42.


class KernelBuildError(RuntimeError):
  """The C++ kernel could not be compiled or loaded."""


def cache_dir():
  return os.environ.get('DIGITS_JAX_KERNEL_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'digits_jax')


def _compiler():
  return os.environ.get('CXX') or shutil.which('c++') or shutil.which('g++') or 'c++'


@functools.cache
def cpu_features(compiler):
  """What -march=native means to `compiler` on this CPU: its expansion of the flag (the
  target CPU and every instruction-set extension it enables), else /proc/cpuinfo's flags.

  Part of the cache key, so that a home folder shared by machines of different CPUs (an
  NFS home, a prebuilt image) never loads a build using instructions this CPU lacks.
  """
  try:
    proc = subprocess.run([compiler, '-march=native', '-Q', '--help=target'],
                          capture_output=True, text=True, check=False, timeout=60)
    if proc.returncode == 0 and proc.stdout.strip():
      return proc.stdout
  except (OSError, subprocess.TimeoutExpired):
    pass
  try:
    with open('/proc/cpuinfo') as f:
      flags = sorted({line for line in f if line.startswith(('flags', 'Features'))})
    if flags:
      return ''.join(flags)
  except OSError:
    pass
  return platform.machine() + ' ' + platform.processor()


def library_path():
  """Where the compiled kernel for this source, compiler, flags, CPU and jaxlib lives."""
  with open(SOURCE, 'rb') as f:
    key = hashlib.sha256(f.read())
  key.update(' '.join((_compiler(),) + FLAGS).encode())
  key.update(cpu_features(_compiler()).encode())
  key.update(jax.ffi.include_dir().encode())
  key.update(getattr(jax.lib, '__version__', jax.__version__).encode())
  return os.path.join(cache_dir(), f'mlp_adam_cpu-{key.hexdigest()[:16]}.so')


def build():
  """Compiles the kernel if it is not in the cache yet; returns the library's path."""
  path = library_path()
  if os.path.exists(path):
    return path
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix='.so', dir=os.path.dirname(path))
  except OSError as e:  # The cache, not the workdir: say which folder and how to move it.
    raise KernelBuildError(f'its cache folder {os.path.dirname(path)} cannot be written '
                           f'({e.strerror}); set $DIGITS_JAX_KERNEL_CACHE to a writable '
                           'folder') from e
  os.close(fd)
  console.say(f'Building the fused CPU kernel for this machine (once, about 5-10 s; cached in '
              f'{os.path.dirname(path)})...')
  cmd = [_compiler(), *FLAGS, f'-I{jax.ffi.include_dir()}', SOURCE, '-o', tmp]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  except OSError as e:
    os.remove(tmp)
    raise KernelBuildError(f'no C++ compiler ({e}); install g++ or set $CXX') from e
  if proc.returncode != 0:
    os.remove(tmp)
    raise KernelBuildError(f'{" ".join(cmd)} failed:\n{proc.stderr[-2000:]}')
  os.replace(tmp, path)  # Atomic: a concurrent build never sees half a library.
  return path


@functools.cache
def load():
  """Builds (once) and registers the kernel with JAX; raises KernelBuildError."""
  lib = ctypes.cdll.LoadLibrary(build())
  jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.DigitsMlpAdamBlock),
                              platform='cpu')
  return True


# The kernel's contract: what it implements, as values. Every field of the config is either
# in IMPLEMENTS (with the values the kernel implements) or in NEUTRAL; a field in neither
# (a new idea) makes the kernel stand aside until someone says here what it does to the
# training steps. tests/test_kernel_contract.py fails when a field of configs/default.py is in
# neither. A code edit is invisible to any list: the self-check (steps.self_check) covers it.


@dataclasses.dataclass(frozen=True)
class Implements:
  """What the kernel implements of one config field.

  values: the values it implements (None: every value validation accepts).
  check: (config, value) -> why it stands aside, or None; for limits that are not a set.
  default: the value a config without the field means (one saved before it existed).
  """
  values: Optional[tuple] = None
  check: Optional[Callable[[Any, Any], Optional[str]]] = None
  default: Any = None


def _auto_batch(config, batch_size):
  """Under auto the kernel runs up to AUTO_MAX_BATCH, where it is measured faster."""
  if config.cpu_kernel == 'auto' and batch_size > AUTO_MAX_BATCH:
    return (f'auto uses it up to batch {AUTO_MAX_BATCH} (beyond, the XLA scan is as fast; '
            'see benchmarks/README.md); --config.cpu_kernel=on forces it')
  return None


IMPLEMENTS = {
    'cpu_kernel': Implements(('auto', 'on')),
    'model': Implements(('mlp',), default='mlp'),  # Dense layers, any widths and depth.
    'hidden_units': Implements(),
    'num_hidden_layers': Implements(),
    'activation': Implements(('relu',), default='relu'),
    'dropout_rate': Implements((0,), default=0.0),
    'compute_dtype': Implements(('float32',)),
    'optimizer': Implements(('keras_adam',)),
    'learning_rate': Implements(),  # keras_adam's hyper-parameters: `hyperparams`.
    'b1': Implements(),
    'b2': Implements(),
    'eps': Implements(),
    # The optimizer registry's other hyperparameters: keras_adam takes none of them, and
    # validation keeps them at these defaults for it (optimizers.problems).
    'momentum': Implements((0,), default=0.0),
    'nesterov': Implements((False,), default=False),
    'weight_decay': Implements((0,), default=0.0),
    'batch_size': Implements(check=_auto_batch),
    'data_on_device': Implements((True,)),
    'seed': Implements(),  # Seeds and batches arrive as the initial state and the index.
    'num_seeds': Implements(),  # Replicas: one call trains them all.
    'steps_per_call': Implements(),  # The block's length.
}
# Fields that never reach a training step (data, evaluation, outputs, bookkeeping), or reach
# it only through the initial state or the batch plan, which the kernel takes as given.
NEUTRAL = frozenset({
    'name', 'dataset', 'data_source', 'data_dir', 'verify_checksums', 'validation_split',
    'kernel_init', 'num_epochs', 'restore_best', 'early_stopping_patience',
    'eval_batch_size', 'num_show', 'test_indices', 'num_misclassified_show',
    'checkpoint_every_epochs', 'checkpoint_min_interval_seconds', 'max_checkpoints_to_keep',
    'progress_bar', 'tensorboard', 'write_report',
    'cnn'})  # cnn: the CNN's sizes (model='cnn', which the kernel refuses).
# The per-batch metric sums the kernel computes, in its output's column order.
METRICS = ('loss', 'correct', 'count')


def field_reason(config, field):
  """Why the kernel stands aside for `config.field` (None: implemented, or neutral)."""
  if field in NEUTRAL:
    return None
  rule = IMPLEMENTS.get(field)
  if rule is None:
    return (f'config.{field} is in neither its implemented fields nor its neutral ones '
            '(cpu_kernel.IMPLEMENTS / NEUTRAL): say there what the kernel does with it')
  value = config[field] if field in config else rule.default
  if rule.values is not None and value not in rule.values:
    allowed = ' or '.join(repr(v) for v in rule.values)
    return f'it implements config.{field}={allowed} only (not {value!r})'
  return rule.check(config, value) if rule.check else None


def reference_metrics():
  """The metric sums train_state's step declares (train_state.sum_names): the kernel
  computes METRICS, and stands aside for any other set."""
  return ts.sum_names()


def unusable_because(config, mesh):
  """Why the kernel can't run this config here (a string), or None when it can.

  Derived from the contract (IMPLEMENTS, NEUTRAL, METRICS) and the devices; builds and
  compiles nothing (`load` builds; `steps.self_check` proves it on the run's first steps).
  """
  if config.cpu_kernel == 'off':
    return 'config.cpu_kernel is off'
  reasons = []
  if jax.default_backend() != 'cpu':
    reasons.append(f'the backend is {jax.default_backend()}, not cpu')
  if mesh.devices.size != 1 or jax.process_count() != 1:
    reasons.append('it runs on one device only')
  fields = list(config.keys()) + [f for f in IMPLEMENTS if f not in config]
  reasons += [r for r in (field_reason(config, f) for f in fields) if r]
  if sorted(reference_metrics()) != sorted(METRICS):
    reasons.append(f'it computes the metric sums {", ".join(METRICS)} only, and the train '
                   f'step declares {", ".join(reference_metrics())}')
  return '; '.join(reasons) or None


# The self-check's tolerance, normwise: the largest difference of any parameter (or Adam
# moment) over the largest value, and the loss sum's relative difference. The same math in
# another summation order measures ~1e-6 on the ten lab configs; ReLU against tanh or sigmoid
# 1e-2 to 1 (4 to 8 steps on MNIST).
CHECK_TOLERANCE = 1e-4


def _normwise(got, want):
  """max |got - want| / max |want| over a pytree's leaves (0 for an all-zero `want`)."""
  flat = lambda t: np.concatenate([np.ravel(np.asarray(x, np.float64))
                                   for x in jax.tree.leaves(t)])
  g, w = flat(got), flat(want)
  return float(np.max(np.abs(g - w)) / max(np.max(np.abs(w)), 1e-30))


def disagreement(got, got_sums, want, want_sums, tol=CHECK_TOLERANCE):
  """Why the kernel's state and metric sums (`got`) differ from the reference's (`want`)
  beyond rounding, as one line; None when they agree."""
  trees = (('params', got.params, want.params), ('Adam m', got.opt_state.mu, want.opt_state.mu),
           ('Adam v', got.opt_state.nu, want.opt_state.nu))
  diffs = [(what, _normwise(a, b)) for what, a, b in trees]
  far = [f'{what} {diff:.1e}' for what, diff in diffs if not diff <= tol]  # NaN too.
  problems = ([f'max |kernel - reference| / max |reference|: {", ".join(far)} > {tol:.0e}']
              if far else [])
  (loss, ref_loss), (correct, ref_correct), (count, ref_count) = (
      (float(np.sum(got_sums[k])), float(np.sum(want_sums[k]))) for k in METRICS)
  if not abs(loss - ref_loss) <= tol * abs(ref_loss):
    problems.append(f'loss sum {loss:.6g} vs {ref_loss:.6g}')
  if abs(correct - ref_correct) > 1 or count != ref_count:  # One near-tie may round apart.
    problems.append(f'correct {correct:g} vs {ref_correct:g} of {count:g} vs {ref_count:g}')
  return '; '.join(problems) or None


def checks_dir():
  """Where passed self-checks are remembered (beside the builds)."""
  return os.path.join(cache_dir(), 'self-checks')


def check_key(*jaxprs):
  """The self-check's cache key: the computations compared, as traced (the reference step's
  layers and activation, loss, optimizer, constants and shapes; the kernel's call and its
  attributes) and the kernel's build (library_path: its source, compiler, CPU and jaxlib).
  An edit of the model, the step or the kernel traces or builds differently: a new check."""
  key = hashlib.sha256(library_path().encode())
  for jaxpr in jaxprs:
    key.update(str(jaxpr).encode())
  return key.hexdigest()[:32]


def passed_before(key):
  """Whether a self-check of this key passed on this machine before."""
  return os.path.exists(os.path.join(checks_dir(), key))


def remember_pass(key, note):
  """Records a passed self-check (best effort: a read-only cache only costs a re-check)."""
  try:
    os.makedirs(checks_dir(), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=checks_dir())
    with os.fdopen(fd, 'w') as f:
      f.write(note + '\n')
    os.replace(tmp, os.path.join(checks_dir(), key))
  except OSError:
    pass


# How a block's threads share the replicas (the kernel's `layout` attribute is the index):
# 'lanes': replicas in turn, each on the threads (up to 2, one per lane of its rows);
# 'replica_per_thread': one replica per thread, replicas in parallel, each single-threaded.
LAYOUTS = ('lanes', 'replica_per_thread')


def default_threads(replicas=1):
  """Threads per block: the CPUs this process may use, at most 2 for one replica (its two
  lanes) and at most one per replica for many (see the README's Many seeds)."""
  cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  return max(1, min(2 if replicas == 1 else replicas, cpus or 1))


def default_layout(replicas, threads):
  """The layout for `replicas` on `threads` threads, chosen by measurement.

  One replica splits its rows over the threads ('lanes'). Many run one per thread
  ('replica_per_thread'): a replica's step at batch 5 is too short for two threads to
  share without waiting for each other at every layer's barrier, while separate replicas
  never wait (v6 on this 2-core CPU: see the README's Many seeds table).
  """
  return 'replica_per_thread' if replicas > 1 and threads > 1 else 'lanes'


def hyperparams(config, threads=None, layout='replica_per_thread'):
  """The kernel's attributes; 1 - b is rounded as train_state.keras_adam rounds it.

  `layout` matters only with several replicas (one replica always runs on its lanes).
  """
  f = np.float32
  return (('b1', f(config.b1)), ('b2', f(config.b2)), ('c1', f(1 - config.b1)),
          ('c2', f(1 - config.b2)), ('eps', f(config.eps)), ('lr', f(config.learning_rate)),
          ('threads', np.int64(threads or default_threads())),
          ('layout', np.int64(LAYOUTS.index(layout))))


def _leaves(params):
  """Dense layers' (kernel, bias) in layer order: the kernel's layout of a param tree."""
  return [layer[k] for layer in models.dense_layers(params) for k in ('kernel', 'bias')]


def _tree(leaves):
  """The param tree of `_leaves`' list."""
  return models.from_dense_layers(
      [{'kernel': leaves[i], 'bias': leaves[i + 1]} for i in range(0, len(leaves), 2)])


@functools.partial(jax.jit, donate_argnums=0, static_argnums=5)
def train_steps_indexed(state, images, labels, index, mask, hparams):
  """`train_state.train_steps_indexed` computed by the fused kernel; same arguments."""
  one = lambda x: x[None]
  state, sums = _block(jax.tree.map(one, state), images, labels, one(index), one(mask), hparams)
  return ts.replica((state, sums), 0)


@functools.partial(jax.jit, donate_argnums=0, static_argnums=5)
def train_steps_indexed_stacked(state, images, labels, index, mask, hparams):
  """`train_state.train_steps_indexed_stacked` by the kernel: every replica in one call,
  laid out on the threads as hparams' `layout` says (each replica bit-identical to its
  unstacked run whatever the layout)."""
  return _block(state, images, labels, index, mask, hparams)


def _block(state, images, labels, index, mask, hparams):
  """The FFI call on a replica-stacked state: index and mask [R, K, B], sums [R]."""
  load()
  opt = state.opt_state
  assert isinstance(opt, ts.KerasAdamState), type(opt)
  p, mu, nu = _leaves(state.params), _leaves(opt.mu), _leaves(opt.nu)
  flat = p + mu + nu
  replicas, steps = index.shape[:2]
  first = 5  # images, labels, index, mask, count come before the state arrays.
  call = jax.ffi.ffi_call(
      TARGET, (jax.ShapeDtypeStruct((replicas, len(METRICS)), jnp.float32),
               *(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in flat)),
      input_output_aliases={first + i: 1 + i for i in range(len(flat))},
      vmap_method='sequential')
  sums, *new = call(images, labels.astype(jnp.int32), index.astype(jnp.int32), mask,
                    opt.count.astype(jnp.int32), *flat, **dict(hparams))
  n = len(p)
  new_opt = ts.KerasAdamState(opt.count + steps, _tree(new[n:2 * n]), _tree(new[2 * n:]))
  state = state.replace(step=state.step + steps, params=_tree(new[:n]), opt_state=new_opt)
  return state, {name: sums[:, i] for i, name in enumerate(METRICS)}
