r"""Times the ways to train R replicas on the CPU: what the many-seed choices rest on.

  python benchmarks/replica_layouts.py                       # v6, MNIST, 1 to 8 replicas
  python benchmarks/replica_layouts.py --config=default --replicas=1,4 --calls=7

For each replica count R, trains blocks of --steps steps of R replicas of the config's
network on MNIST's training images (random batches), once per way: 'xla' (the XLA scan
vmapped over the replicas, `train_state.train_steps_indexed_stacked`) and each of the
fused kernel's `cpu_kernel.LAYOUTS` ('lanes': the replicas in turn, each on the threads;
'replica_per_thread': one replica per thread, in parallel). Prints the median wall and
CPU (process) microseconds per replica-step over --calls blocks, and the fastest block's
wall time. CPU time counts the work done (spinning at a barrier included) and is the
number that other processes on a shared machine disturb least.
"""

import importlib
import os
import statistics
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CONFIG = flags.DEFINE_string('config', 'v6', 'configs/<name>.py to take the network from.')
_REPLICAS = flags.DEFINE_list('replicas', ['1', '2', '3', '4', '8'], 'Replica counts.')
_THREADS = flags.DEFINE_integer('threads', 0, 'Kernel threads (0: cpu_kernel.default_threads '
                                '(R), as training uses).')
_STEPS = flags.DEFINE_integer('steps', 512, 'Steps per block (config.steps_per_call).')
_CALLS = flags.DEFINE_integer('calls', 5, 'Timed blocks per row (after one untimed).')
_DATA_DIR = flags.DEFINE_string('data_dir', '', "MNIST IDX folder ('' = the package's copy).")


def time_blocks(run, calls):
  """Wall and CPU seconds of each of `calls` calls of `run` (after one untimed call)."""
  run()
  walls, cpus = [], []
  for _ in range(calls):
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    walls.append(time.perf_counter() - wall)
    cpus.append(time.process_time() - cpu)
  return walls, cpus


def measure(config, images, labels, replicas, way, threads):
  """(median wall, median CPU, fastest wall) microseconds per replica-step of `way`
  ('xla' or one of cpu_kernel.LAYOUTS)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from digits_jax import cpu_kernel  # pylint: disable=import-outside-toplevel
  from digits_jax import train_state as ts  # pylint: disable=import-outside-toplevel
  shape = (replicas, _STEPS.value, config.batch_size)
  index = jax.numpy.asarray(np.random.default_rng(0).integers(0, len(labels), shape, np.int32))
  mask = jax.numpy.ones(shape, bool)
  box = [ts.create_train_states(config, list(range(replicas)))]
  if way == 'xla':
    steps = ts.train_steps_indexed_stacked
  else:
    hparams = cpu_kernel.hyperparams(config, threads, way)
    steps = lambda *args: cpu_kernel.train_steps_indexed_stacked(*args, hparams)

  def run():
    box[0], sums = steps(box[0], images, labels, index, mask)
    jax.block_until_ready(sums)

  walls, cpus = time_blocks(run, _CALLS.value)
  per = lambda seconds: 1e6 * seconds / (replicas * _STEPS.value)
  return per(statistics.median(walls)), per(statistics.median(cpus)), per(min(walls))


def main(argv):
  del argv
  import jax  # pylint: disable=import-outside-toplevel
  from digits_jax import cpu_kernel  # pylint: disable=import-outside-toplevel
  from digits_jax import idx  # pylint: disable=import-outside-toplevel
  from digits_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  config = importlib.import_module(f'configs.{_CONFIG.value}').get_config('mnist')
  folder = _DATA_DIR.value or input_pipeline.SHIPPED_MNIST
  images, labels = (jax.numpy.asarray(a) for a in idx.load_split(folder, 'train'))
  cpu_kernel.load()
  print(f'{_CONFIG.value}, MNIST, blocks of {_STEPS.value} steps of batch {config.batch_size}, '
        f'median of {_CALLS.value}; us per replica-step', flush=True)
  print(f'{"replicas":>8} {"kernel threads":>14} {"way":>18} {"wall us":>8} {"CPU us":>7} '
        f'{"best wall us":>12}', flush=True)
  for replicas in (int(r) for r in _REPLICAS.value):
    threads = _THREADS.value or cpu_kernel.default_threads(replicas)
    for way in ('xla',) + (cpu_kernel.LAYOUTS if replicas > 1 else ('lanes',)):
      wall, cpu, best = measure(config, images, labels, replicas, way, threads)
      print(f'{replicas:>8} {threads if way != "xla" else "":>14} {way:>18} {wall:8.1f} '
            f'{cpu:7.1f} {best:12.1f}', flush=True)


if __name__ == '__main__':
  app.run(main)
