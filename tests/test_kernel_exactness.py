"""The fused kernel's replacements for the CPU's divider compute exactly what it would.

Adam's update needs a square root and a divide per parameter, and both go through one
divider unit; the kernel computes the square root on the multiply-add units instead
(kernels/mlp_adam_cpu.cc: Sqrt), and the input's u / 255 by a corrected multiply
(Scale255). Each is checked here against the instruction it replaces, bit for bit, on
every input: all 2^32 float bit patterns (slow: about 10 s) or every 251st, and all 256
bytes. Bit-identical training is checked by tests/test_lab_regression.py.
"""

import os
import subprocess

import jax
import pytest

from digits_jax import cpu_kernel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(REPO, 'tests', 'kernel_exactness.cc')


@pytest.fixture(scope='module')
def program(tmp_path_factory):
  if 'avx512f' not in cpu_kernel.cpu_features(cpu_kernel._compiler()):  # pylint: disable=protected-access
    pytest.skip('this CPU has no AVX-512: the kernel uses the divider itself')
  path = str(tmp_path_factory.mktemp('exactness') / 'exactness')
  flags = [f for f in cpu_kernel.FLAGS if f not in ('-shared', '-fPIC')]
  subprocess.run([cpu_kernel._compiler(), *flags, f'-I{REPO}',  # pylint: disable=protected-access
                  f'-I{jax.ffi.include_dir()}', SOURCE, '-o', path, '-lpthread'],
                 check=True, capture_output=True, text=True)
  return path


def mismatches(program, what):
  out = subprocess.run([program, what], check=True, capture_output=True, text=True).stdout
  return int(out.split()[-1])


def test_scaled_bytes_equal_the_divide(program):
  assert mismatches(program, 'bytes') == 0


def test_square_root_equals_the_divider_on_a_sample(program):
  assert mismatches(program, 'sample') == 0


@pytest.mark.slow
def test_square_root_equals_the_divider_on_every_float(program):
  assert mismatches(program, 'sqrt') == 0
