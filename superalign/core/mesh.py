"""Device mesh from the config, and the shardings that map data and parameters onto it.

Parameters carry logical axis names (``'embed'``, ``'mlp'``, ``'heads'``, ``'vocab'``,
``'conv_out'``) set by the models with ``nnx.with_partitioning``; rules map each logical name to
the mesh axes it may be split over, as in MaxText. The rules are data: ``config.mesh.rules``
(``LOGICAL_RULES`` is the default). Mesh axes:

* ``data``  - pure data parallelism: batch split, parameters replicated.
* ``fsdp``  - batch split *and* parameters sharded along their ``embed`` dimension (ZeRO-3 style).
* ``model`` - tensor parallelism: ``mlp``, ``heads`` and ``vocab`` dimensions split (Megatron style).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from superalign.core.axes import BATCH_AXES, LOGICAL_RULES, MESH_AXES  # noqa: F401
from superalign.core.spec import MeshSpec

# Keys of config.mesh that are not axis sizes.
NOT_AXES = ("num_devices", "rules")


def resolve_axis_sizes(axis_sizes: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """Fills one ``-1`` axis with the remaining devices; raises ValueError naming the problem."""
  sizes = {name: int(axis_sizes.get(name, 1)) for name in MESH_AXES}
  unknown = sorted(set(axis_sizes) - set(MESH_AXES))
  if unknown:
    raise ValueError(f"mesh.{unknown[0]}: unknown mesh axis; valid axes are {', '.join(MESH_AXES)}")
  fill = [n for n, s in sizes.items() if s == -1]
  if len(fill) > 1:
    raise ValueError(f"mesh.{fill[1]}=-1: only one axis may be -1 (fill), got {', '.join(fill)}")
  for name, size in sizes.items():
    if size == 0 or size < -1:
      raise ValueError(f"mesh.{name}={size}: axis sizes must be positive, or -1 to fill")
  known = math.prod(s for s in sizes.values() if s != -1)
  if fill:
    if num_devices % known:
      raise ValueError(
          f"mesh.{fill[0]}=-1: the other axes use {known} devices, which does not divide the "
          f"{num_devices} available")
    sizes[fill[0]] = num_devices // known
  total = math.prod(sizes.values())
  if total != num_devices:
    shape = ", ".join(f"{n}={s}" for n, s in sizes.items())
    raise ValueError(
        f"mesh ({shape}): axis sizes multiply to {total} but there are {num_devices} devices; "
        "set one axis to -1 to fill")
  return sizes


def make_mesh(axis_sizes: Mapping[str, int] | MeshSpec,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over ``devices`` (default: all, or the first ``num_devices``) from a ``MeshSpec`` or
  axis sizes (the whole ``config.mesh`` block too: its rules are ignored here)."""
  if isinstance(axis_sizes, MeshSpec):
    axis_sizes = {**dict(axis_sizes.axes), "num_devices": axis_sizes.num_devices}
  axis_sizes = dict(axis_sizes)
  axis_sizes.pop("rules", None)
  count = int(axis_sizes.pop("num_devices", 0))
  devices = list(jax.devices() if devices is None else devices)
  if count:
    devices = devices[:count]
  sizes = resolve_axis_sizes(axis_sizes, len(devices))
  shape = tuple(sizes[n] for n in MESH_AXES)
  # Auto axis types: shardings are annotations that XLA's partitioner propagates, the pjit model.
  return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(shape),
                       devices=devices)


def batch_size_per_shard(mesh: Mesh) -> int:
  """The number of shards a batch splits into over the mesh's batch axes (``data`` times
  ``fsdp``): a global batch must be a multiple of it."""
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def batch_sharding(mesh: Mesh, stacked: bool = False) -> NamedSharding:
  """Batch dimension split over data and fsdp; the rest replicated. ``stacked``: the batch
  dimension is the second, after a replicated axis of independent runs."""
  return NamedSharding(mesh, P(None, BATCH_AXES) if stacked else P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  """A sharding that keeps a whole copy on every device of ``mesh``."""
  return NamedSharding(mesh, P())


def logical_to_mesh(logical: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules=LOGICAL_RULES) -> P:
  """Maps one parameter's logical axes to a PartitionSpec, skipping axes that do not divide."""
  rules = dict(rules)
  used: set[str] = set()
  spec = []
  for name, dim in zip(logical, shape):
    chosen = None
    for axis in rules.get(name, ()) if name else ():
      size = mesh.shape[axis]
      if size > 1 and axis not in used and dim % size == 0:
        chosen = axis
        used.add(axis)
        break
    spec.append(chosen)
  return P(*spec)


def param_shardings(abstract_params: nnx.State, mesh: Mesh, rules=LOGICAL_RULES):
  """NamedSharding for every parameter from its logical axis annotation (replicated if none)."""
  logical = nnx.get_partition_spec(abstract_params)

  def one(spec, value):
    names = tuple(spec) if spec is not None else ()
    names = names + (None,) * (value.ndim - len(names))
    return NamedSharding(mesh, logical_to_mesh(names, value.shape, mesh, rules))

  return jax.tree.map(one, logical, abstract_params,
                      is_leaf=lambda x: isinstance(x, P) or x is None)


def put(value, sharding: NamedSharding) -> jax.Array:
  """``value`` (the whole array, the same on every process: a seed's key, a zero step) placed with
  ``sharding``. One process: ``device_put``. Several: each process builds only its own shards
  (``device_put`` may not name another host's devices)."""
  if jax.process_count() == 1:
    return jax.device_put(value, sharding)
  if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):  # typed keys travel as their bits
    data = put(np.asarray(jax.random.key_data(value)), sharding)
    wrap = functools.partial(jax.random.wrap_key_data, impl=jax.random.key_impl(value))
    return jax.jit(wrap, out_shardings=sharding)(data)
  value = np.asarray(value)
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def to_host(tree):
  """Every array of ``tree`` whole, as NumPy on this host (a warm start, an export). Across
  processes, arrays sharded over several hosts (``fsdp``, ``model``) are gathered first, so every
  process must call it; an array held whole by this process comes as it is."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils

  def one(x):
    # process_allgather would concatenate the processes' copies of a process-local array.
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return multihost_utils.process_allgather(x, tiled=True)
    return jax.device_get(x)
  return jax.tree.map(one, tree)


def is_writer() -> bool:
  """Whether this process writes the files every process would write alike (an export, a store):
  process 0. Two processes writing one path on a shared disk would race for its temporary."""
  return jax.process_index() == 0


def from_writer(value: bool) -> bool:
  """Process 0's ``value`` on every process (alone: ``value``): one decision, where the
  processes' own views (of a disk that is not shared) could differ."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.int32(value)))


def write_once(name: str, write: Callable[[], None]) -> None:
  """``write()`` on process 0 only; every process returns once it has run (the files are then
  complete for all to read), and every process raises if it failed, so none waits forever on a
  writer that stopped."""
  error = None
  if is_writer():
    try:
      write()
    except Exception as e:   # re-raised below, after the others have heard of it
      error = e
  failed = from_writer(error is not None)
  if error is not None:
    raise error
  if failed:
    raise RuntimeError(f"{name}: process 0 failed to write it (its log says why)")


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh,
                stacked: bool = False) -> dict[str, jax.Array]:
  """Puts a host batch on the mesh split over the batch axes.

  Single process: ``batch`` is the global batch. Multi-process: each process passes its own slice
  of the global batch (see ``superalign.core.batches.process_slice``).
  """
  sharding = batch_sharding(mesh, stacked)
  if jax.process_count() == 1:
    return {k: jax.device_put(v, sharding) for k, v in batch.items()}
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
