"""Devices and data parallelism: one mesh with a 'data' axis, replicated state, sharded batches.

The same code runs on one CPU, eight GPUs or a TPU pod slice: jit propagates the input
shardings, so XLA inserts the gradient all-reduce. No pmap.
"""

import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DISTRIBUTED_ENV = 'DIGITS_JAX_DISTRIBUTED'


def initialize_distributed(enabled, coordinator_address='', num_processes=-1, process_id=-1):
  """Joins a multi-host job when asked to (flag or $DIGITS_JAX_DISTRIBUTED); errors propagate.

  With no explicit values JAX detects the coordinator, process count and index itself
  (Cloud TPU, SLURM, Open MPI, Kubernetes); give them to run elsewhere (e.g. localhost).
  """
  if not enabled and os.environ.get(DISTRIBUTED_ENV, '') in ('', '0'):
    return
  jax.distributed.initialize(
      coordinator_address=coordinator_address or None,
      num_processes=None if num_processes < 0 else num_processes,
      process_id=None if process_id < 0 else process_id)


def make_mesh():
  """A 1-D mesh over every device of every process, axis 'data'.

  Auto axes: XLA propagates the shardings (batch split, parameters replicated, gradient
  all-reduce inserted), so the step functions need no sharding annotations.
  """
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharding(mesh, ndim, batch_axis=0):
  """Shards axis `batch_axis` of an `ndim`-D array across the mesh's 'data' axis."""
  spec = [None] * ndim
  spec[batch_axis] = 'data'
  return NamedSharding(mesh, P(*spec))


def replicate(tree, mesh):
  """Places a pytree (the train state, the on-device dataset) on every device."""
  return jax.device_put(tree, replicated(mesh))


def local_columns(mesh, global_batch):
  """The slice of a global batch that this process feeds (all of it on one host)."""
  sharding = batch_sharding(mesh, 1)
  slices = sharding.addressable_devices_indices_map((global_batch,)).values()
  spans = sorted({(s[0].start or 0, global_batch if s[0].stop is None else s[0].stop)
                  for s in slices})
  if any(a[1] != b[0] for a, b in zip(spans, spans[1:])):  # make_mesh orders by process.
    raise ValueError(f'this process\'s devices hold non-contiguous batch slices {spans}.')
  return slice(spans[0][0], spans[-1][1])


def to_global(mesh, local_tree, global_batch, batch_axis=0):
  """Assembles each process's share of a batch into global arrays sharded on 'data'."""
  def put(x):
    x = np.asarray(x)
    shape = list(x.shape)
    shape[batch_axis] = global_batch
    return jax.make_array_from_process_local_data(
        batch_sharding(mesh, x.ndim, batch_axis), x, tuple(shape))
  return jax.tree.map(put, local_tree)


def to_host(x):
  """A (possibly multi-host sharded) array as one numpy array on every process."""
  if jax.process_count() > 1 and not x.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def any_process(flag):
  """Whether `flag` is True on any process: every process then takes the same branch
  (e.g. stopping on a signal that reached only some hosts)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.any(multihost_utils.process_allgather(np.asarray(bool(flag)))))


def barrier(name):
  """Waits until every process reaches this point (a no-op with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def is_main_process():
  """Only process 0 writes files and prints."""
  return jax.process_index() == 0
