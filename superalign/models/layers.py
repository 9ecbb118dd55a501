"""Layer constructors that attach logical axis names for sharding (see core/mesh.py)."""

from __future__ import annotations

from flax import nnx


def dense(in_features: int, out_features: int, axes, dtype, rngs: nnx.Rngs,
          stddev: float | None = None) -> nnx.Linear:
  """``nnx.Linear`` whose kernel carries logical ``axes`` (in, out) and bias ``(axes[1],)``."""
  init = (nnx.initializers.normal(stddev) if stddev is not None
          else nnx.initializers.lecun_normal())
  return nnx.Linear(
      in_features, out_features, dtype=dtype,
      kernel_init=nnx.with_partitioning(init, tuple(axes)),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (axes[1],)),
      rngs=rngs)
