"""Decoder-only transformer shaped like GPT-2, with a classification head.

Learned positions, pre-LayerNorm blocks, causal multi-head attention, GELU MLP (4x width), a final
LayerNorm, and a linear head read at the last non-pad token (right padding, ``pad_id`` 0). Weights
are initialized as GPT-2: N(0, 0.02), residual projections scaled by 1/sqrt(2 * layers).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from superalign.models import layers

_STD = 0.02


def _param(rngs: nnx.Rngs, shape, axes, stddev=_STD):
  init = nnx.with_partitioning(nnx.initializers.normal(stddev), axes)
  return nnx.Param(init(rngs.params(), shape, jnp.float32))


def _layer_norm(width: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(
      width, epsilon=1e-5, dtype=jnp.float32,
      scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ("embed",)),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("embed",)),
      rngs=rngs)


class Attention(nnx.Module):
  """Causal self-attention with fused QKV; heads are the tensor-parallel axis."""

  def __init__(self, width: int, num_heads: int, out_std: float, dtype, rngs: nnx.Rngs):
    head_dim = width // num_heads
    self.qkv = _param(rngs, (width, 3, num_heads, head_dim), ("embed", None, "heads", None))
    self.qkv_bias = nnx.Param(jnp.zeros((3, num_heads, head_dim), jnp.float32))
    self.out = _param(rngs, (num_heads, head_dim, width), ("heads", None, "embed"), out_std)
    self.out_bias = nnx.Param(jnp.zeros((width,), jnp.float32))
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    qkv = jnp.einsum("btd,dkhe->btkhe", x, self.qkv[...].astype(self.dtype))
    qkv = qkv + self.qkv_bias[...].astype(self.dtype)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    h = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    return jnp.einsum("bthe,hed->btd", h, self.out[...].astype(self.dtype)) + self.out_bias[...].astype(self.dtype)


class Block(nnx.Module):

  def __init__(self, width: int, num_heads: int, num_layers: int, dtype, rngs: nnx.Rngs):
    out_std = _STD / math.sqrt(2 * num_layers)
    self.ln1 = _layer_norm(width, rngs)
    self.attn = Attention(width, num_heads, out_std, dtype, rngs)
    self.ln2 = _layer_norm(width, rngs)
    self.fc = layers.dense(width, 4 * width, ("embed", "mlp"), dtype, rngs, stddev=_STD)
    self.proj = layers.dense(4 * width, width, ("mlp", "embed"), dtype, rngs, stddev=out_std)
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attn(self.ln1(x).astype(self.dtype))
    h = jax.nn.gelu(self.fc(self.ln2(x).astype(self.dtype)), approximate=True)
    return x + self.proj(h)


class Transformer(nnx.Module):
  """GPT-2-shaped classifier over token ids ``[batch, length]`` (int32, 0 = pad)."""

  def __init__(self, vocab_size: int, max_len: int, num_classes: int, num_layers: int,
               width: int, num_heads: int, *, pad_id: int = 0, dtype=jnp.float32,
               rngs: nnx.Rngs):
    if width % num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
    self.embed = nnx.Embed(
        vocab_size, width, dtype=dtype,
        embedding_init=nnx.with_partitioning(nnx.initializers.normal(_STD), ("vocab", "embed")),
        rngs=rngs)
    self.pos = _param(rngs, (max_len, width), (None, "embed"), 0.01)
    self.blocks = nnx.List([Block(width, num_heads, num_layers, dtype, rngs)
                            for _ in range(num_layers)])
    self.ln_f = _layer_norm(width, rngs)
    self.head = layers.dense(width, num_classes, ("embed", None), dtype, rngs, stddev=_STD)
    self.pad_id = pad_id
    self.dtype = dtype

  def hidden_states(self, tokens: jax.Array) -> jax.Array:
    """Final-LayerNorm activations ``[batch, length, width]``."""
    length = tokens.shape[1]
    x = self.embed(tokens) + self.pos[:length].astype(self.dtype)
    for block in self.blocks:
      x = block(x)
    return self.ln_f(x)

  def features(self, tokens: jax.Array) -> jax.Array:
    """The activation at each sequence's last non-pad token ``[batch, width]``."""
    h = self.hidden_states(tokens)
    last = jnp.maximum(jnp.sum(tokens != self.pad_id, axis=1) - 1, 0)
    return jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]

  def __call__(self, tokens: jax.Array) -> jax.Array:
    return self.head(self.features(tokens).astype(self.dtype))
