"""Multi-layer perceptron classifier."""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from superalign.models import layers, sites
from superalign.models.sites import site


class MLP(nnx.Module):
  """Flatten -> [Dense -> ReLU] * len(hidden) -> Dense head.

  ``features`` returns the last hidden activations (the "backbone" output that linear probes and
  label-cleaning probes read); ``head`` maps them to logits. Sites (``models.sites``):
  ``input``, ``layers.<i>.pre`` and ``layers.<i>.post`` (before and after the ReLU), ``logits``. ``input_scale`` divides the inputs
  (the same function class: it keeps optimizer steps well scaled for wide inputs);
  ``kernel_init`` and ``bias_std`` set the hidden layers' initialization. It computes in
  ``dtype``; its parameters are ``param_dtype``.
  """

  def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int], *,
               dtype=jnp.float32, param_dtype=jnp.float32, input_scale: float = 1.0,
               kernel_init: str = "lecun_normal", bias_std: float = 0.0, rngs: nnx.Rngs):
    dims = [math.prod(input_shape), *hidden]
    self.layers = nnx.List([
        layers.dense(a, b, ("embed", "mlp") if i % 2 == 0 else ("mlp", "embed"), dtype, rngs,
                     kernel_init=kernel_init, bias_std=bias_std, param_dtype=param_dtype)
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))])
    self.head = layers.dense(dims[-1], num_classes, (None, None), dtype, rngs,
                             param_dtype=param_dtype)
    self.dtype = dtype
    self.input_scale = float(input_scale)

  def features(self, x: jax.Array) -> jax.Array:
    """The last hidden activations ``[batch, hidden[-1]]`` of inputs ``[batch, ...]`` (flattened;
    the flattened input itself when ``hidden`` is empty): what ``head`` reads and probes read."""
    h = site("input", x.reshape(x.shape[0], -1).astype(self.dtype), sites.FEATURES)
    if self.input_scale != 1.0:
      h = h / self.input_scale
    for i, layer in enumerate(self.layers):
      with sites.scope(f"layers.{i}"):
        h = site("post", jax.nn.relu(site("pre", layer(h), sites.HIDDEN)), sites.HIDDEN)
    return h

  def __call__(self, x: jax.Array) -> jax.Array:
    return site("logits", self.head(self.features(x)), sites.LOGITS)
