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


# The helpers below are written for XLA's CPU backend as much as for accelerators: they compute
# what the plain formulation computes (same parameters, shapes and dtypes), in a form that
# compiles to fewer layout copies and faster matmuls there (benchmarks/train_step.py).


def _attention(q: jax.Array, k: jax.Array, v: jax.Array,
               keys: jax.Array | None = None) -> jax.Array:
  """Softmax attention on ``[batch, length, heads, head_dim]`` arrays: causal, or, given
  ``keys`` (``[batch, length]`` bool, the non-pad positions), bidirectional over those keys.

  The same computation as ``jax.nn.dot_product_attention(q, k, v, is_causal=True)`` (whose
  default implementation is this XLA one on every backend): logits in float32, scaled by
  1/sqrt(head_dim), masked with -0.7 * float32 max, softmax in float32, probabilities cast to
  ``v.dtype``. Written out as two einsums it compiles with fewer layout copies on CPU.
  """
  length, head_dim = q.shape[1], q.shape[-1]
  logits = jnp.einsum("bqhe,bkhe->bhqk", q, k, preferred_element_type=jnp.float32)
  logits = logits * jnp.float32(1.0 / math.sqrt(head_dim))
  if keys is None:
    mask = jnp.tril(jnp.ones((length, length), dtype=bool))
  else:
    mask = keys[:, None, None, :]
  logits = jnp.where(mask, logits, jnp.float32(-0.7 * float(jnp.finfo(jnp.float32).max)))
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhe->bqhe", probs, v)


def _matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """``x[..., k] @ kernel[k, n]`` as one 2-D matmul over all leading axes.

  Flattening the leading axes first lets XLA's CPU backend take the weight gradient as a plain
  ``x^T @ dy`` product; with a 3-D ``dot_general`` it transposes ``dy`` and runs a slower
  transposed-operand matmul instead.
  """
  y = x.reshape(-1, x.shape[-1]) @ kernel
  return y.reshape(*x.shape[:-1], kernel.shape[-1])


def _dense(layer: nnx.Linear, x: jax.Array, dtype) -> jax.Array:
  """``layer(x)`` for an ``nnx.Linear``: the same parameters, dtypes and result, via ``_matmul``."""
  return _matmul(x.astype(dtype), layer.kernel[...].astype(dtype)) + layer.bias[...].astype(dtype)


# GELU with approximate=True (GPT-2's), rematerialized: the backward pass recomputes it from its
# input rather than keeping its tanh, one activation-sized array per layer less to write and read.
_gelu = jax.checkpoint(lambda x: jax.nn.gelu(x, approximate=True))


class Attention(nnx.Module):
  """Causal self-attention with fused QKV; heads are the tensor-parallel axis."""

  def __init__(self, width: int, num_heads: int, out_std: float, dtype, rngs: nnx.Rngs):
    head_dim = width // num_heads
    self.qkv = _param(rngs, (width, 3, num_heads, head_dim), ("embed", None, "heads", None))
    self.qkv_bias = nnx.Param(jnp.zeros((3, num_heads, head_dim), jnp.float32))
    self.out = _param(rngs, (num_heads, head_dim, width), ("heads", None, "embed"), out_std)
    self.out_bias = nnx.Param(jnp.zeros((width,), jnp.float32))
    self.dtype = dtype

  def __call__(self, x: jax.Array, keys: jax.Array | None = None) -> jax.Array:
    # One [tokens, d] x [d, heads * 3 * head_dim] matmul. Columns go heads-major so that a
    # tensor-parallel split of the heads axis stays a split of the matmul's columns.
    w = self.qkv[...].astype(self.dtype)                           # [d, 3, heads, head_dim]
    d, _, heads, head_dim = w.shape
    w = w.transpose(0, 2, 1, 3).reshape(d, -1)
    qkv = _matmul(x, w).reshape(*x.shape[:-1], heads, 3, head_dim)
    qkv = qkv + self.qkv_bias[...].astype(self.dtype).transpose(1, 0, 2)
    h = _attention(qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :], keys)
    out_kernel = self.out[...].astype(self.dtype)                  # [heads, head_dim, d]
    h = _matmul(h.reshape(*h.shape[:-2], -1), out_kernel.reshape(-1, out_kernel.shape[-1]))
    return h + self.out_bias[...].astype(self.dtype)


class Block(nnx.Module):

  def __init__(self, width: int, num_heads: int, num_layers: int, dtype, rngs: nnx.Rngs):
    out_std = _STD / math.sqrt(2 * num_layers)
    self.ln1 = _layer_norm(width, rngs)
    self.attn = Attention(width, num_heads, out_std, dtype, rngs)
    self.ln2 = _layer_norm(width, rngs)
    self.fc = layers.dense(width, 4 * width, ("embed", "mlp"), dtype, rngs, stddev=_STD)
    self.proj = layers.dense(4 * width, width, ("mlp", "embed"), dtype, rngs, stddev=out_std)
    self.dtype = dtype

  def __call__(self, x: jax.Array, keys: jax.Array | None = None) -> jax.Array:
    x = x + self.attn(self.ln1(x).astype(self.dtype), keys)
    h = _gelu(_dense(self.fc, self.ln2(x), self.dtype))
    return x + _dense(self.proj, h, self.dtype)


class Transformer(nnx.Module):
  """GPT-2-shaped classifier over token ids ``[batch, length]`` (int32, 0 = pad).

  Tokens may also be ``[batch, length, fields]``: each position is a record (a fact such as
  ``(x, sigma(x))``) whose fields' embeddings are summed, so a record costs one position rather
  than one per field. Fields take disjoint id ranges; a position is padding when field 0 is pad.
  With ``causal=False`` attention is bidirectional over the non-pad positions: an encoder over a
  set of records (facts see one another, whatever their order).
  """

  def __init__(self, vocab_size: int, max_len: int, num_classes: int, num_layers: int,
               width: int, num_heads: int, *, pad_id: int = 0, causal: bool = True,
               dtype=jnp.float32, rngs: nnx.Rngs):
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
    self.causal = causal
    self.dtype = dtype

  def _present(self, tokens: jax.Array) -> jax.Array:
    return (tokens if tokens.ndim == 2 else tokens[..., 0]) != self.pad_id

  def hidden_states(self, tokens: jax.Array) -> jax.Array:
    """Final-LayerNorm activations ``[batch, length, width]``."""
    length = tokens.shape[1]
    x = self.embed(tokens)
    if tokens.ndim == 3:
      x = x.sum(axis=2)
    x = x + self.pos[:length].astype(self.dtype)
    keys = None if self.causal else self._present(tokens)
    for block in self.blocks:
      x = block(x, keys)
    return self.ln_f(x)

  def features(self, tokens: jax.Array) -> jax.Array:
    """The activation at each sequence's last non-pad token ``[batch, width]``."""
    h = self.hidden_states(tokens)
    last = jnp.maximum(jnp.sum(self._present(tokens), axis=1) - 1, 0)
    return jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]

  def __call__(self, tokens: jax.Array) -> jax.Array:
    return self.head(self.features(tokens).astype(self.dtype))
