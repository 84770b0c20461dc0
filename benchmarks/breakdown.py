r"""Where a step of the fused CPU kernel goes, beside what this CPU allows (issue 23).

  python benchmarks/breakdown.py --configs=v6,default --threads=1,2
  python benchmarks/benchmark.py --sections=breakdown        # the same, as a table

Writes the training images and labels of each config's dataset as raw files, compiles
benchmarks/kernel_breakdown.cc with the kernel's own flags (cpu_kernel.FLAGS: the kernel's
source with its phase marks switched on), trains each config's network at its batch size
for about one epoch of steps at each thread count, and prints one JSON line per run
(prefixed 'RESULT '): microseconds a step, each phase's share (input, forward, loss,
backward, adam, wait: per thread, so they add up to a step), and the floors measured on
this CPU with the same flags (floor_adam: the exact update over contiguous aligned arrays,
each thread its share; floor_adam_mem: the same loop without its square root and divide;
floor_forward/backward: the multiply-adds a step needs with zero inputs skipped, at the
core's measured peak rate).
"""

import importlib
import json
import os
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from digits_jax import cpu_kernel  # pylint: disable=g-import-not-at-top,wrong-import-position
from digits_jax import input_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from digits_jax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from digits_jax import train_state as ts  # pylint: disable=g-import-not-at-top,wrong-import-position

RESULT_PREFIX = 'RESULT '
HARNESS = os.path.join(REPO, 'benchmarks', 'kernel_breakdown.cc')

_CONFIGS = flags.DEFINE_list('configs', ['v6', 'default'], 'Configs (configs/<name>.py).')
_THREADS = flags.DEFINE_list('threads', ['1', '2'], 'Kernel threads of each run.')
_DATASET = flags.DEFINE_enum('dataset', 'mnist', ['mnist', 'fashion_mnist'], 'Dataset.')
_DATA_DIR = flags.DEFINE_string('data_dir', '', "IDX folder ('' = the package's lookup).")
_STEPS = flags.DEFINE_integer('steps', 0, "Timed steps (0 = one epoch's, at least 4096).")


def compile_harness(out_dir):
  """The harness binary, built with the kernel's flags (minus those of a shared library)."""
  binary = os.path.join(out_dir, 'kernel_breakdown')
  flags_ = [f for f in cpu_kernel.FLAGS if f not in ('-shared', '-fPIC')]
  cmd = [os.environ.get('CXX', 'g++'), *flags_, '-w', f'-I{REPO}',
         f'-I{jax.ffi.include_dir()}', HARNESS, '-o', binary, '-lpthread']
  subprocess.run(cmd, check=True)
  return binary


def load_config(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  config.dataset = _DATASET.value
  if _DATA_DIR.value:
    config.data_dir = _DATA_DIR.value
  return config


def layer_widths(config):
  """The widths of a config's Dense layers as the kernel receives them (the model's own
  parameter shapes, traced without computing them): input, hidden layers, classes."""
  state = jax.eval_shape(lambda: ts.create_train_state(config, jax.random.key(0)))
  kernels = [layer['kernel'].shape for layer in models.dense_layers(state.params)]
  return [k[0] for k in kernels] + [kernels[-1][1]]


def write_raw(data, out_dir):
  """The training split as raw uint8 images and int32 labels; returns their paths."""
  images, labels = os.path.join(out_dir, 'images.u8'), os.path.join(out_dir, 'labels.s32')
  data.train_images.tofile(images)
  data.train_labels.astype('int32').tofile(labels)
  return images, labels


def main(argv):
  del argv
  with tempfile.TemporaryDirectory(prefix='digits_jax_breakdown_') as tmp:
    binary = compile_harness(tmp)
    for name in _CONFIGS.value:
      config = load_config(name)
      data = input_pipeline.load(config)
      images, labels = write_raw(data, tmp)
      per_epoch = input_pipeline.steps_per_epoch(len(data.train_labels), config.batch_size)
      widths = ','.join(map(str, layer_widths(config)))
      for threads in _THREADS.value:
        out = subprocess.run([binary, images, labels, widths, str(config.batch_size),
                              str(_STEPS.value or max(4096, per_epoch)), threads],
                             check=True, capture_output=True, text=True).stdout
        res = dict(json.loads(out), config=name, dataset=_DATASET.value,
                   steps_per_epoch=per_epoch)
        print(RESULT_PREFIX + json.dumps(res), flush=True)


if __name__ == '__main__':
  app.run(main)
