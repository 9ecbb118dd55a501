"""Low-rank adapters (LoRA, Hu et al. 2021) on a model's weight matrices, chosen by name.

A weight ``W`` (``[*in, *out]``) named by one of ``LoRA.targets`` gains an ``Adapter``: ``a``
(``[*in, rank]``, Kaiming-uniform as PEFT initializes it) and ``b`` (``[rank, *out]``, zeros), so
the layer computes ``x @ W + (alpha / rank) * (x @ a) @ b`` and a fresh adapter leaves the model's
function unchanged. The adapters are ``nnx.LoRAParam`` variables; ``core.state`` trains only them
(and a fresh task head), so the base weights are in neither the optimizer state nor the
checkpoint. Each adapter factor carries its base weight's logical axes on the shared side, so a
tensor-parallel split of the base splits its adapter the same way.

Names are block-relative (``attn.q``, ``attn.qkv``, ``attn.out``, ``mlp.gate``, ``mlp.up``,
``mlp.down``, ``mlp.fc``, ``mlp.proj``) and patterns are shell globs (``attn.*``, ``mlp.*``).
A config's ``model.lora`` block (``rank``, 0 = none; ``alpha``; ``targets``, globs separated by
commas) is read by ``from_block``. ``merged`` folds every adapter into its weight: the plain
parameters a checkpoint family's ``save`` writes (``models.save_merged``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from typing import Any, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class LoRA:
  """Adapters of ``rank`` with scale ``alpha / rank`` on the weights ``targets`` name."""
  rank: int = 8
  alpha: float = 16.0
  targets: tuple[str, ...] = ("attn.*", "mlp.*")

  def __post_init__(self):
    if self.rank < 1:
      raise ValueError(f"model.lora.rank={self.rank}: must be a positive integer")
    if not self.targets:
      raise ValueError("model.lora.targets is empty: name at least one weight (e.g. 'attn.*')")

  @property
  def scale(self) -> float:
    """The factor on the adapter's output, ``alpha / rank``."""
    return float(self.alpha) / self.rank

  def wants(self, name: str) -> bool:
    """Whether the weight ``name`` (block-relative) gets an adapter."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.targets)


def targets_of(value: str | Sequence[str]) -> tuple[str, ...]:
  """``model.lora.targets`` as patterns: a tuple of globs, or one string of them separated by
  commas (``"attn.*,mlp.*"``)."""
  parts = value.split(",") if isinstance(value, str) else value
  return tuple(p.strip() for p in parts if p.strip())


def from_block(block: Mapping[str, Any] | None) -> LoRA | None:
  """The spec of a config's ``model.lora`` block; None without one or with ``rank`` 0."""
  if block is None or not block.get("rank"):
    return None
  return LoRA(int(block["rank"]), float(block.get("alpha", LoRA.alpha)),
              targets_of(block.get("targets", LoRA.targets)))


def unmatched(spec: LoRA, names: Iterable[str]) -> list[str]:
  """The patterns of ``spec.targets`` that match none of ``names``."""
  names = sorted(set(names))
  return [p for p in spec.targets if not any(fnmatch.fnmatchcase(n, p) for n in names)]


class Adapter(nnx.Module):
  """``x -> scale * (x @ a) @ b`` for a base weight of shape ``[*in_shape, *out_shape]``."""

  def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], in_axes, out_axes,
               spec: LoRA, param_dtype, rngs: nnx.Rngs):
    fan_in = math.prod(in_shape)
    # PEFT's init of A: kaiming_uniform(a=sqrt(5)), a bound of 1/sqrt(fan_in).
    bound = 1.0 / math.sqrt(fan_in)
    a = jax.random.uniform(rngs.params(), (*in_shape, spec.rank), jnp.float32, -bound, bound)
    self.a = nnx.LoRAParam(a.astype(param_dtype), sharding_names=(*in_axes, None))
    self.b = nnx.LoRAParam(jnp.zeros((spec.rank, *out_shape), param_dtype),
                           sharding_names=(None, *out_axes))
    self.scale = spec.scale
    self.in_dims, self.out_shape = len(in_shape), tuple(out_shape)

  def __call__(self, x: jax.Array, dtype) -> jax.Array:
    """The adapter's term for ``x`` ``[..., prod(in_shape)]``: ``[..., prod(out_shape)]``."""
    a = self.a[...].astype(dtype).reshape(-1, self.a.shape[-1])
    b = self.b[...].astype(dtype).reshape(self.b.shape[0], -1)
    h = x.reshape(-1, x.shape[-1]) @ a
    y = (h @ b) * jnp.asarray(self.scale, dtype)
    return y.reshape(*x.shape[:-1], y.shape[-1])

  def delta(self) -> jax.Array:
    """What merging adds to the base weight: ``scale * a @ b`` as ``[*in_shape, *out_shape]``."""
    a = self.a[...].astype(jnp.float32)
    b = self.b[...].astype(jnp.float32)
    return jnp.tensordot(a, b, axes=1) * self.scale


def adapter(spec: LoRA | None, name: str, in_shape, out_shape, in_axes, out_axes, param_dtype,
            rngs: nnx.Rngs) -> Adapter | None:
  """An ``Adapter`` for the weight ``name`` when ``spec`` targets it, else None."""
  if spec is None or not spec.wants(name):
    return None
  return Adapter(in_shape, out_shape, in_axes, out_axes, spec, param_dtype, rngs)


def merged(model: nnx.Module) -> dict:
  """``model``'s parameters as a nested dict, each ``Adapter``'s ``delta()`` added to the weight
  it adapts (its sibling without ``_lora``, or that layer's ``kernel``; summed in float32, then
  cast to the weight's dtype) and the adapters dropped: the same function with no adapters. One
  run's model (a stacked state's adapters do not fold)."""
  params = nnx.state(model, nnx.Param).to_pure_dict()
  for path, node in nnx.iter_graph(model):
    if not isinstance(node, Adapter):
      continue
    parent = params
    for key in path[:-1]:
      parent = parent[key]
    base = parent[path[-1][:-len("_lora")]]
    holder, key = ((base, "kernel") if isinstance(base, dict) else
                   (parent, path[-1][:-len("_lora")]))
    weight, delta = holder[key], node.delta()
    if delta.shape != weight.shape:
      raise ValueError(f"lora.merged: the adapter {'/'.join(map(str, path))} folds to "
                       f"{delta.shape}, its weight is {weight.shape} (take one run of a stack)")
    holder[key] = (weight.astype(jnp.float32) + delta).astype(weight.dtype)
    del parent[path[-1]]
  return params
