"""Small convolutional classifier for image data."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from superalign.core.errors import ConfigError
from superalign.models import layers, sites
from superalign.models.sites import site


class CNN(nnx.Module):
  """[Conv3x3 -> ReLU -> MaxPool2 (while the map is at least 4 wide)] per channel count, then
  flatten -> Dense(hidden) -> ReLU -> Dense head. Input ``[batch, height, width, channels]``.
  ``kernel``, ``strides`` (one per conv), ``padding`` and ``pool=False`` give the strided,
  pool-free nets of certified training (Gowal et al. 2018's "small": 4x4 kernels, strides 2 then
  1, no padding). It computes in ``dtype``; its parameters are ``param_dtype``.

  Sites (``models.sites``): ``input``; ``convs.<i>.pre`` and ``convs.<i>.post`` (the feature map
  ``[batch, height, width, channels]`` before and after the ReLU, before pooling); ``dense.pre``
  and ``dense.post``; ``logits``."""

  def __init__(self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int],
               hidden: int, *, kernel: int = 3, strides: Sequence[int] | None = None,
               padding: str = "SAME", pool: bool = True, dtype=jnp.float32,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    if len(input_shape) != 3:
      raise ValueError(f"CNN needs image input [height, width, channels], got shape {input_shape}")
    height, width, c_in = input_shape
    self.convs = nnx.List()
    self.pool = []
    strides = tuple(strides or (1,) * len(channels))
    for c_out, stride in zip(channels, strides):
      self.convs.append(nnx.Conv(
          c_in, c_out, kernel_size=(kernel, kernel), strides=stride, padding=padding, dtype=dtype,
          param_dtype=param_dtype,
          kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(),
                                            (None, None, None, "conv_out")),
          bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("conv_out",)),
          rngs=rngs))
      if padding == "SAME":
        height, width = -(-height // stride), -(-width // stride)
      else:
        height, width = (height - kernel) // stride + 1, (width - kernel) // stride + 1
      if min(height, width) < 1:
        raise ConfigError(f"model: input {tuple(input_shape)} is too small for {kernel}x{kernel} "
                          f"kernels with strides {strides} and {padding} padding")
      pooled = pool and min(height, width) >= 4
      self.pool.append(pooled)
      if pooled:
        height, width = height // 2, width // 2
      c_in = c_out
    self.pool = tuple(self.pool)
    self.dense = layers.dense(height * width * c_in, hidden, (None, "mlp"), dtype, rngs,
                              param_dtype=param_dtype)
    self.head = layers.dense(hidden, num_classes, ("mlp", None), dtype, rngs,
                             param_dtype=param_dtype)
    self.dtype = dtype

  def features(self, x: jax.Array) -> jax.Array:
    """The last hidden activations ``[batch, hidden]`` (after the dense layer's ReLU) of images
    ``[batch, height, width, channels]``: what ``head`` reads and probes read."""
    h = site("input", x.astype(self.dtype), sites.IMAGE)
    for i, (conv, pool) in enumerate(zip(self.convs, self.pool)):
      with sites.scope(f"convs.{i}"):
        h = site("post", jax.nn.relu(site("pre", conv(h), sites.IMAGE)), sites.IMAGE)
      if pool:
        h = nnx.max_pool(h, window_shape=(2, 2), strides=(2, 2))
    with sites.scope("dense"):
      return site("post", jax.nn.relu(site("pre", self.dense(h.reshape(h.shape[0], -1)),
                                            sites.HIDDEN)), sites.HIDDEN)

  def __call__(self, x: jax.Array) -> jax.Array:
    return site("logits", self.head(self.features(x)), sites.LOGITS)
