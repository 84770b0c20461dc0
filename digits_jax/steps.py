"""How training steps run: which implementation (`select_steps`), and running its blocks.

Three implementations compute the same steps, for every replica of a replica-stacked
state (config.num_seeds) at once:
  'kernel'    the fused C++ CPU kernel (cpu_kernel.train_steps_indexed_stacked: every
              replica in one FFI call, one replica per thread, each exactly its one-seed
              run), dataset on device;
  'xla_scan'  a lax.scan over the steps (train_state.train_steps_indexed_stacked, vmapped
              over the replicas), dataset on device;
  'xla_feed'  the same scan fed host batches by tf.data (train_state.train_steps_stacked).

  impl = steps.build(steps.select_steps(config, mesh), config)  # Compiles the kernel once.
  runner = steps.BlockRunner(impl, config=config, mesh=mesh, data=data, padded_batch=b)
  runner = runner.checked(state, progress)  # The kernel proves itself, else XLA's runner.
  for (begin, end), args in zip(block_list, runner.feed(index, mask, block_list)):
    state, sums = runner.run(state, args)
"""

import dataclasses
import time
from typing import Optional

import jax
import numpy as np

from digits_jax import console
from digits_jax import cpu_kernel
from digits_jax import input_pipeline
from digits_jax import parallel
from digits_jax import train_state as ts
from digits_jax import validation

IMPLS = ('kernel', 'xla_scan', 'xla_feed')


@dataclasses.dataclass(frozen=True)
class StepImpl:
  """The chosen implementation of the training steps; recorded in results.json's timings."""
  name: str  # One of IMPLS.
  threads: Optional[int] = None  # The kernel's threads per block ('kernel' only).
  fallback_reason: Optional[str] = None  # Why cpu_kernel=auto did not use the kernel.
  replicas: int = 1  # Replicas trained at once (config.num_seeds).
  kernel_layout: Optional[str] = None  # One of cpu_kernel.LAYOUTS ('kernel' only).
  check: Optional[str] = None  # The kernel's self-check: 'passed', 'passed before' (cached).
  check_seconds: Optional[float] = None  # It took this long.

  def describe(self):
    """One line for the console, e.g. 'fused CPU kernel (2 thread(s))'."""
    if self.name == 'kernel':
      return f'fused CPU kernel ({self.threads} thread(s){self._kernel_replicas()})'
    scan = f'XLA scan (vmapped over {self.replicas} replicas)' if self.replicas > 1 else 'XLA scan'
    if self.fallback_reason:
      return f'{scan} (fused CPU kernel not used: {self.fallback_reason})'
    return scan

  def _kernel_replicas(self):
    """How the kernel's replicas share its threads, for `describe` ('' for one)."""
    if self.replicas == 1:
      return ''
    if self.kernel_layout == 'replica_per_thread':
      return f', {self.replicas} replicas in one call, one per thread at a time'
    return f', on each of {self.replicas} replicas in turn'

  def timings(self):
    """The fields results.json records under `timings`."""
    return {'step_impl': self.name, 'kernel_threads': self.threads,
            'kernel_layout': self.kernel_layout, 'kernel_fallback': self.fallback_reason,
            'kernel_check': self.check, 'kernel_check_seconds': self.check_seconds}


def _xla(config, reason=None):
  return StepImpl('xla_scan' if config.data_on_device else 'xla_feed', fallback_reason=reason,
                  replicas=config.num_seeds)


def select_steps(config, mesh):
  """The implementation that `config.cpu_kernel` asks for here; compiles nothing.

  Raises validation.ConfigError when cpu_kernel is 'on' but the kernel cannot run here.
  """
  if config.cpu_kernel == 'off':
    return _xla(config)
  why_not = cpu_kernel.unusable_because(config, mesh)
  if why_not is None:
    replicas = config.num_seeds
    threads = cpu_kernel.default_threads(replicas)
    return StepImpl('kernel', threads=threads, replicas=replicas,
                    kernel_layout=cpu_kernel.default_layout(replicas, threads))
  if config.cpu_kernel == 'on':
    raise _required_but_unusable(why_not)
  return _xla(config, why_not)


PROBE_STEPS = 4  # Steps of the self-check: a wrong step shows from the first one.


def self_check(runner, state, index, mask):
  """Runs the steps `index`, `mask` [1, K, B] from replica 0 of `state` (copied to the host:
  the run's state is not touched) through the kernel and through train_state's XLA step
  (the model's own apply_fn, so an edit of models.py is seen), and compares.

  Returns (why they disagree or None, whether a pass of this very computation was
  remembered: cpu_kernel.check_key; then nothing is run).
  """
  host = jax.tree.map(lambda x: np.asarray(x)[:1], state)
  args = (runner.images, runner.labels, index, mask)
  kernel = jax.make_jaxpr(cpu_kernel.train_steps_indexed_stacked, static_argnums=5)
  key = cpu_kernel.check_key(jax.make_jaxpr(ts.train_steps_indexed_stacked)(host, *args),
                             kernel(host, *args, runner.hparams))
  if cpu_kernel.passed_before(key):
    return None, True
  got, got_sums = cpu_kernel.train_steps_indexed_stacked(host, *args, runner.hparams)
  want, want_sums = ts.train_steps_indexed_stacked(host, *args)
  why = cpu_kernel.disagreement(got, jax.device_get(got_sums), want, jax.device_get(want_sums))
  if why is None:
    cpu_kernel.remember_pass(key, f'{index.shape[1]} steps agreed to {cpu_kernel.CHECK_TOLERANCE}')
  return why, False


def _required_but_unusable(why_not):
  return validation.ConfigError(
      f'config.cpu_kernel=on, but the fused CPU kernel cannot run here: {why_not}. '
      'Use --config.cpu_kernel=auto to fall back to XLA.')


def build(impl, config):
  """Builds what `impl` needs (the kernel's library, once per machine and cached).

  Returns `impl`, or under cpu_kernel=auto the XLA fallback when the build fails.
  """
  if impl.name != 'kernel':
    return impl
  try:
    cpu_kernel.load()
  except (cpu_kernel.KernelBuildError, OSError) as e:
    why_not = f'it failed to build: {e}'
    if config.cpu_kernel == 'on':
      raise _required_but_unusable(why_not) from e
    return _xla(config, why_not)
  return impl


def shape_key(args):
  """A hashable key of a pytree's structure, shapes and dtypes (one executable each)."""
  leaves, treedef = jax.tree.flatten(args)
  return treedef, tuple((tuple(x.shape), str(x.dtype)) for x in leaves)


class BlockRunner:
  """Feeds and dispatches blocks of training steps, compiling once per block shape."""

  def __init__(self, impl, *, config, mesh, data, padded_batch):
    self.impl, self.config, self.mesh, self.data = impl, config, mesh, data
    self.padded_batch = padded_batch
    self.compiled, self.compile_seconds = {}, 0.0
    self.hparams = (cpu_kernel.hyperparams(config, impl.threads, impl.kernel_layout)
                    if impl.name == 'kernel' else None)
    if impl.name != 'xla_feed':  # The whole uint8 split on every device (47 MB for MNIST).
      self.images = parallel.replicate(data.train_images, mesh)
      self.labels = parallel.replicate(data.train_labels, mesh)

  def checked(self, state, progress):
    """This runner once the kernel has passed its self-check on the run's next steps
    (replica 0's, from `state` where `progress` (train.Progress) stands; the state is not
    changed), else an XLA scan runner saying why, in the console too (cpu_kernel=on: a
    ConfigError). Self when it runs no kernel, or no epoch is left to train."""
    if self.impl.name != 'kernel' or progress.epoch >= self.config.num_epochs:
      return self
    start = time.perf_counter()
    index, mask = input_pipeline.epoch_plan(len(self.data.train_labels), self.config.batch_size,
                                            self.padded_batch, self.config.seed, progress.epoch)
    first = min(progress.step_in_epoch, max(len(index) - PROBE_STEPS, 0))
    rows = slice(first, first + PROBE_STEPS)
    why, cached = self_check(self, state, index[None, rows], mask[None, rows])
    seconds = time.perf_counter() - start
    self.compile_seconds += seconds
    if why is None:
      self.impl = dataclasses.replace(self.impl, check_seconds=seconds,
                                      check='passed before' if cached else 'passed')
      return self
    why = (f'self-check failed, kernel against the model\'s own step over {PROBE_STEPS} steps '
           f'({why}): the model or the step is not what the kernel implements')
    if self.config.cpu_kernel == 'on':
      raise _required_but_unusable(why)
    fallback = BlockRunner(dataclasses.replace(_xla(self.config, why), check_seconds=seconds),
                           config=self.config, mesh=self.mesh, data=self.data,
                           padded_batch=self.padded_batch)
    fallback.compile_seconds = self.compile_seconds
    console.say(f'Training steps: {fallback.impl.describe()}.')
    return fallback

  def feed(self, index, mask, block_list):
    """Yields the device arguments of each block, in order; `index` and `mask` are every
    replica's epoch plan, [replicas, steps, padded batch]."""
    to_global = lambda tree: parallel.replicas_to_global(self.mesh, tree, batch_axis=2)
    if self.impl.name != 'xla_feed':
      for begin, end in block_list:
        block = to_global({'index': index[:, begin:end], 'mask': mask[:, begin:end]})
        yield (self.images, self.labels, block['index'], block['mask'])
    else:  # One feeder per replica (its own shuffle); their blocks stacked.
      feeders = [input_pipeline.tf_block_feeder(
          self.data.train_images, self.data.train_labels, index[k], mask[k], block_list,
          slice(None)) for k in range(len(index))]
      for host_blocks in zip(*feeders):
        yield (to_global(jax.tree.map(lambda *x: np.stack(x), *host_blocks)),)

  def lower(self, state, args):
    """The block's computation for `impl`, lowered for these argument shapes."""
    if self.impl.name == 'kernel':
      return cpu_kernel.train_steps_indexed_stacked.lower(state, *args, self.hparams)
    if self.impl.name == 'xla_scan':
      return ts.train_steps_indexed_stacked.lower(state, *args)
    return ts.train_steps_stacked.lower(state, *args)

  def _compiled(self, state, args):
    """The block's executable for these argument shapes, compiled on first use."""
    key = shape_key(args)
    if key not in self.compiled:
      start = time.perf_counter()
      self.compiled[key] = self.lower(state, args).compile()
      self.compile_seconds += time.perf_counter() - start
    return self.compiled[key]

  def compile_blocks(self, state, index, mask, block_list):
    """Compiles the blocks' programs (one per length) before they run, so that nothing
    compiles while the steps train (the XLA feed compiles on first use: its blocks come
    from a tf.data pipeline)."""
    if self.impl.name == 'xla_feed':
      return
    firsts = {end - begin: (begin, end) for begin, end in reversed(block_list)}
    for block in firsts.values():
      self._compiled(state, next(self.feed(index, mask, [block])))

  def run(self, state, args):
    """Dispatches one block asynchronously; returns (state, per-replica metric sums on
    device)."""
    return self._compiled(state, args)(state, *args)
