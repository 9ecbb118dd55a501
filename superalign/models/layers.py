"""Layer constructors that attach logical axis names for sharding (see core/mesh.py)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx


KERNEL_INITS = {"lecun_normal": nnx.initializers.lecun_normal(),
                "he_normal": nnx.initializers.variance_scaling(2.0, "fan_in", "normal")}


def dense(in_features: int, out_features: int, axes, dtype, rngs: nnx.Rngs,
          stddev: float | None = None, kernel_init: str = "lecun_normal",
          bias_std: float = 0.0, param_dtype=jnp.float32) -> nnx.Linear:
  """``nnx.Linear`` computing in ``dtype`` whose ``param_dtype`` kernel carries logical ``axes``
  (in, out) and bias ``(axes[1],)``. ``stddev`` (a normal kernel) overrides ``kernel_init``;
  biases are zero unless ``bias_std``."""
  init = (nnx.initializers.normal(stddev) if stddev is not None else KERNEL_INITS[kernel_init])
  bias = nnx.initializers.normal(bias_std) if bias_std > 0 else nnx.initializers.zeros_init()
  return nnx.Linear(
      in_features, out_features, dtype=dtype, param_dtype=param_dtype,
      kernel_init=nnx.with_partitioning(init, tuple(axes)),
      bias_init=nnx.with_partitioning(bias, (axes[1],)),
      rngs=rngs)
