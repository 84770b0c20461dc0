"""Devices and parallelism: a mesh with a 'data' axis (and a 'replica' axis for many seeds).

The same code runs on one CPU, eight GPUs or a TPU pod slice: jit propagates the input
shardings, so XLA inserts the gradient all-reduce. No pmap. With several seeds trained at
once (config.num_seeds), the replica axis of the stacked state is sharded over the mesh's
'replica' axis: each device group trains its own replicas, with no communication.
"""

import math
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


def make_mesh(num_replicas=1):
  """A mesh over every device of every process: axis 'data', and 'replica' for many seeds.

  One replica: a 1-D mesh ('data',). N replicas: ('replica', 'data') of shape
  (gcd(N, devices), devices / gcd): the replicas are spread over as many devices as divide
  them evenly (at the lab's batches, replicas scale out where data parallelism cannot),
  and each replica's batch is split over the rest. Auto axes: XLA propagates the
  shardings (batch split, parameters replicated, gradient all-reduce inserted), so the
  step functions need no sharding annotations.
  """
  devices = jax.device_count()
  if num_replicas == 1:
    return jax.make_mesh((devices,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  shards = math.gcd(num_replicas, devices)
  return jax.make_mesh((shards, devices // shards), ('replica', 'data'),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


def replicated(mesh):
  return NamedSharding(mesh, P())


def _replica_axis(mesh):
  return 'replica' if 'replica' in mesh.axis_names else None


def replica_sharding(mesh, ndim, batch_axis=None):
  """Axis 0 (the replicas) over 'replica' (if the mesh has it), `batch_axis` over 'data'."""
  spec = [None] * ndim
  spec[0] = _replica_axis(mesh)
  if batch_axis is not None:
    spec[batch_axis] = 'data'
  return NamedSharding(mesh, P(*spec))


def place_replicas(tree, mesh):
  """Places a replica-stacked pytree (train states): replicas sharded, the rest replicated."""
  return jax.tree.map(lambda x: jax.device_put(x, replica_sharding(mesh, x.ndim)), tree)


def replicas_to_global(mesh, tree, batch_axis):
  """Global arrays from numpy arrays [R, ..., B, ...] that every process holds whole
  (e.g. every replica's block index): replicas over 'replica', `batch_axis` over 'data'."""
  def put(x):
    x = np.asarray(x)
    sharding = replica_sharding(mesh, x.ndim, batch_axis)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, tree)


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
