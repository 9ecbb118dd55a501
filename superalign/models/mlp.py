"""Multi-layer perceptron classifier."""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from superalign.models import layers


class MLP(nnx.Module):
  """Flatten -> [Dense -> ReLU] * len(hidden) -> Dense head.

  ``features`` returns the last hidden activations (the "backbone" output that linear probes and
  label-cleaning probes read); ``head`` maps them to logits.
  """

  def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int], *,
               dtype=jnp.float32, rngs: nnx.Rngs):
    dims = [math.prod(input_shape), *hidden]
    self.layers = nnx.List([
        layers.dense(a, b, ("embed", "mlp") if i % 2 == 0 else ("mlp", "embed"), dtype, rngs)
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))])
    self.head = layers.dense(dims[-1], num_classes, (None, None), dtype, rngs)
    self.dtype = dtype

  def features(self, x: jax.Array) -> jax.Array:
    h = x.reshape(x.shape[0], -1).astype(self.dtype)
    for layer in self.layers:
      h = jax.nn.relu(layer(h))
    return h

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.head(self.features(x))
