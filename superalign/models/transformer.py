"""Decoder-only transformer shaped like GPT-2, with a classification head and an LM head.

Learned positions, pre-LayerNorm blocks, causal multi-head attention, GELU MLP (4x width), a final
LayerNorm, and a linear head read at the last non-pad token (right padding, ``pad_id``). Weights
are initialized as GPT-2: N(0, 0.02), residual projections scaled by 1/sqrt(2 * layers). The same
module holds a Hugging Face GPT-2 checkpoint (``hf_gpt2.py``): its LM head is the token embedding.

Four options make it GPT-NeoX (Pythia; ``hf_neox.py``): ``rotary_dim`` (rotary positions on the
first ``rotary_dim`` dimensions of each head's queries and keys, GPT-NeoX's rotate-half form, in
place of learned positions), ``parallel_residual`` (``x + attn(ln1(x)) + mlp(ln2(x))``),
``tied_lm_head=False`` (an LM head of its own, ``unembed``), and ``gelu_approximate=False`` (the
exact GELU).

``forward`` is the general pass: an optional attention mask (left padding: position ids come from
the mask) and an optional KV cache written at ``start`` (``generate.py`` decodes with it).

Sites (``models.sites``, TransformerLens' names without ``hook_``): ``embed``, ``pos_embed``; per
block ``blocks.<i>.`` + ``resid_pre``, ``attn.pattern`` ``[batch, heads, queries, keys]``,
``attn.z`` (each head's output before the output projection, ``[batch, length, heads,
head_dim]``), ``attn_out``, ``resid_mid``, ``mlp.pre`` and ``mlp.post`` (the hidden layer before
and after the GELU), ``mlp_out``, ``resid_post``; then ``ln_final``, and ``logits`` (the
classifier head) or ``lm_logits``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from superalign.models import layers, sites
from superalign.models.sites import site

_STD = 0.02


def _param(rngs: nnx.Rngs, shape, axes, stddev=_STD):
  init = nnx.with_partitioning(nnx.initializers.normal(stddev), axes)
  return nnx.Param(init(rngs.params(), shape, jnp.float32))


def _layer_norm(width: int, epsilon: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(
      width, epsilon=epsilon, dtype=jnp.float32,
      scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ("embed",)),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("embed",)),
      rngs=rngs)


# The helpers below are written for XLA's CPU backend as much as for accelerators: they compute
# what the plain formulation computes (same parameters, shapes and dtypes), in a form that
# compiles to fewer layout copies and faster matmuls there (benchmarks/train_step.py).


def _attention(q: jax.Array, k: jax.Array, v: jax.Array,
               allowed: jax.Array | None = None) -> jax.Array:
  """Softmax attention on ``[batch, length, heads, head_dim]`` arrays: causal, or where
  ``allowed`` (bool, broadcast to ``[batch, 1, queries, keys]``) says a query may see a key.

  The same computation as ``jax.nn.dot_product_attention(q, k, v, is_causal=True)`` (whose
  default implementation is this XLA one on every backend): logits in float32, scaled by
  1/sqrt(head_dim), masked with -0.7 * float32 max, softmax in float32, probabilities cast to
  ``v.dtype``. Written out as two einsums it compiles with fewer layout copies on CPU.
  """
  length, head_dim = q.shape[1], q.shape[-1]
  logits = jnp.einsum("bqhe,bkhe->bhqk", q, k, preferred_element_type=jnp.float32)
  logits = logits * jnp.float32(1.0 / math.sqrt(head_dim))
  if allowed is None:
    allowed = jnp.tril(jnp.ones((length, length), dtype=bool))
  logits = jnp.where(allowed, logits, jnp.float32(-0.7 * float(jnp.finfo(jnp.float32).max)))
  probs = site("pattern", jax.nn.softmax(logits, axis=-1), sites.PATTERN).astype(v.dtype)
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
_gelu_exact = jax.checkpoint(lambda x: jax.nn.gelu(x, approximate=False))   # GPT-NeoX's


def _rotate(x: jax.Array, positions: jax.Array, rotary_dim: int, base: float) -> jax.Array:
  """Rotary positions on ``x`` ``[batch, length, heads, head_dim]`` at ``positions`` ``[batch or
  1, length]``: the first ``rotary_dim`` dimensions turn in pairs ``(i, i + rotary_dim / 2)``
  (GPT-NeoX's rotate-half layout), the rest pass through."""
  inv_freq = 1.0 / (base ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq           # [b, t, rotary_dim / 2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]     # [b, t, 1, rotary_dim]
  cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
  turn, rest = x[..., :rotary_dim], x[..., rotary_dim:]
  half = rotary_dim // 2
  rotated = jnp.concatenate([-turn[..., half:], turn[..., :half]], axis=-1)
  return jnp.concatenate([turn * cos + rotated * sin, rest], axis=-1)


class Attention(nnx.Module):
  """Causal self-attention with fused QKV; heads are the tensor-parallel axis."""

  def __init__(self, width: int, num_heads: int, out_std: float, dtype, rngs: nnx.Rngs,
               rotary_dim: int = 0, rotary_base: float = 10000.0):
    head_dim = width // num_heads
    self.rotary_dim, self.rotary_base = rotary_dim, rotary_base
    self.qkv = _param(rngs, (width, 3, num_heads, head_dim), ("embed", None, "heads", None))
    self.qkv_bias = nnx.Param(jnp.zeros((3, num_heads, head_dim), jnp.float32))
    self.out = _param(rngs, (num_heads, head_dim, width), ("heads", None, "embed"), out_std)
    self.out_bias = nnx.Param(jnp.zeros((width,), jnp.float32))
    self.dtype = dtype

  def __call__(self, x: jax.Array, allowed: jax.Array | None = None, cache=None, start=0,
               positions: jax.Array | None = None):
    """``(output, cache)``; given ``cache`` (keys and values ``[batch, cache_len, heads,
    head_dim]``), this call's keys and values are written at ``start`` and attended with it.
    With rotary positions, ``positions`` ``[batch or 1, length]`` are the tokens' positions; keys
    are cached turned."""
    # One [tokens, d] x [d, heads * 3 * head_dim] matmul. Columns go heads-major so that a
    # tensor-parallel split of the heads axis stays a split of the matmul's columns.
    w = self.qkv[...].astype(self.dtype)                           # [d, 3, heads, head_dim]
    d, _, heads, head_dim = w.shape
    w = w.transpose(0, 2, 1, 3).reshape(d, -1)
    qkv = _matmul(x, w).reshape(*x.shape[:-1], heads, 3, head_dim)
    qkv = qkv + self.qkv_bias[...].astype(self.dtype).transpose(1, 0, 2)
    q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
    if self.rotary_dim:
      q, k = (_rotate(t, positions, self.rotary_dim, self.rotary_base) for t in (q, k))
    if cache is not None:
      at = (0, start, 0, 0)
      cache = tuple(jax.lax.dynamic_update_slice(c, new.astype(c.dtype), at)
                    for c, new in zip(cache, (k, v)))
      k, v = cache
    with sites.scope("attn"):
      h = site("z", _attention(q, k, v, allowed), sites.HEADS)     # each head's output
    out_kernel = self.out[...].astype(self.dtype)                  # [heads, head_dim, d]
    h = _matmul(h.reshape(*h.shape[:-2], -1), out_kernel.reshape(-1, out_kernel.shape[-1]))
    return h + self.out_bias[...].astype(self.dtype), cache


class Block(nnx.Module):
  """One transformer block: attention then MLP, each after a layer norm, added to the residual
  stream ``[batch, pos, embed]`` (or both read the same normed input with
  ``parallel_residual``, as GPT-NeoX); its sites are ``resid_pre``, ``attn_out``, ``resid_mid``,
  ``mlp_out``, ``resid_post`` and those of its attention and MLP."""

  def __init__(self, width: int, num_heads: int, num_layers: int, mlp_width: int,
               epsilon: float, dtype, rngs: nnx.Rngs, rotary_dim: int = 0,
               rotary_base: float = 10000.0, parallel_residual: bool = False,
               gelu_approximate: bool = True):
    out_std = _STD / math.sqrt(2 * num_layers)
    self.ln1 = _layer_norm(width, epsilon, rngs)
    self.attn = Attention(width, num_heads, out_std, dtype, rngs, rotary_dim, rotary_base)
    self.parallel_residual = parallel_residual
    self.gelu = _gelu if gelu_approximate else _gelu_exact
    self.ln2 = _layer_norm(width, epsilon, rngs)
    self.fc = layers.dense(width, mlp_width, ("embed", "mlp"), dtype, rngs, stddev=_STD)
    self.proj = layers.dense(mlp_width, width, ("mlp", "embed"), dtype, rngs, stddev=out_std)
    self.dtype = dtype

  def __call__(self, x: jax.Array, allowed: jax.Array | None = None, cache=None, start=0,
               positions: jax.Array | None = None):
    x = site("resid_pre", x, sites.RESID)
    a, cache = self.attn(self.ln1(x).astype(self.dtype), allowed, cache, start, positions)
    a = site("attn_out", a, sites.RESID)
    # Parallel residual (GPT-NeoX): the MLP reads the block's input, not the attention's sum, so
    # there is no resid_mid.
    mid = x if self.parallel_residual else site("resid_mid", x + a, sites.RESID)
    with sites.scope("mlp"):
      h = site("post", self.gelu(site("pre", _dense(self.fc, self.ln2(mid), self.dtype),
                                          sites.NEURONS)), sites.NEURONS)
    m = site("mlp_out", _dense(self.proj, h, self.dtype), sites.RESID)
    x = m + a + x if self.parallel_residual else mid + m
    return site("resid_post", x, sites.RESID), cache


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
               mlp_width: int | None = None, epsilon: float = 1e-5,
               rotary_dim: int = 0, rotary_base: float = 10000.0,
               parallel_residual: bool = False, gelu_approximate: bool = True,
               tied_lm_head: bool = True, dtype=jnp.float32, rngs: nnx.Rngs):
    if width % num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
    if rotary_dim % 2 or not 0 <= rotary_dim <= width // num_heads:
      raise ValueError(f"rotary_dim {rotary_dim}: must be even and at most the head dimension "
                       f"{width // num_heads}")
    self.embed = nnx.Embed(
        vocab_size, width, dtype=dtype,
        embedding_init=nnx.with_partitioning(nnx.initializers.normal(_STD), ("vocab", "embed")),
        rngs=rngs)
    self.rotary_dim, self.max_len = rotary_dim, max_len   # max_len: positions it may read
    self.pos = None if rotary_dim else _param(rngs, (max_len, width), (None, "embed"), 0.01)
    self.blocks = nnx.List([Block(width, num_heads, num_layers, mlp_width or 4 * width, epsilon,
                                  dtype, rngs, rotary_dim, rotary_base, parallel_residual,
                                  gelu_approximate) for _ in range(num_layers)])
    # An untied LM head is stored as the embedding is, [vocab, width] (GPT-NeoX's embed_out).
    self.unembed = None if tied_lm_head else _param(rngs, (vocab_size, width), ("vocab", "embed"))
    self.ln_f = _layer_norm(width, epsilon, rngs)
    self.head = layers.dense(width, num_classes, ("embed", None), dtype, rngs, stddev=_STD)
    self.pad_id = pad_id
    self.causal = causal
    self.dtype = dtype

  def _present(self, tokens: jax.Array) -> jax.Array:
    return (tokens if tokens.ndim == 2 else tokens[..., 0]) != self.pad_id

  def init_cache(self, batch: int, length: int) -> list[tuple[jax.Array, jax.Array]]:
    """Zero keys and values for ``length`` positions, one pair per block."""
    attn = self.blocks[0].attn
    _, _, heads, head_dim = attn.qkv.shape
    shape = (batch, length, heads, head_dim)
    return [(jnp.zeros(shape, self.dtype), jnp.zeros(shape, self.dtype)) for _ in self.blocks]

  def forward(self, tokens: jax.Array, *, attention_mask: jax.Array | None = None,
              cache=None, start=0, all_layers: bool = False):
    """``(hidden, layers, cache)``: final-LayerNorm activations ``[batch, length, width]``; with
    ``all_layers``, the embeddings and every block's output as ``output_hidden_states`` gives
    them (the last one after the final LayerNorm), else None; and the updated cache.

    ``attention_mask`` (``[batch, keys]``, 1 = real token; ``keys`` is the cache length when
    decoding) masks padding keys, and position ids count the real tokens before each one, so a
    left-padded prompt computes what the unpadded prompt computes. Without a mask and a cache,
    positions are ``0..length-1`` and padding is on the right, where causal attention cannot see
    it. ``cache`` comes from ``init_cache``; this call's tokens sit at ``start``.
    """
    length = tokens.shape[1]
    x = self.embed(tokens)
    if tokens.ndim == 3:
      x = x.sum(axis=2)
    x = site("embed", x, sites.RESID)
    allowed = positions = None
    if attention_mask is None and cache is None:
      if self.rotary_dim:
        positions = jnp.arange(length)[None]
      else:
        x = x + site("pos_embed", self.pos[:length].astype(self.dtype), ("pos", "embed"))
      if not self.causal:
        allowed = self._present(tokens)[:, None, None, :]
    else:
      keys = (jnp.ones((tokens.shape[0], cache[0][0].shape[1] if cache else length), bool)
              if attention_mask is None else attention_mask.astype(bool))
      query = start + jnp.arange(length)
      allowed = (jnp.arange(keys.shape[1])[None, :] <= query[:, None])[None, None]
      allowed = allowed & keys[:, None, None, :]
      # A token's position is the number of real tokens before it.
      before = jnp.cumsum(keys, axis=1) - 1
      positions = jnp.maximum(jax.lax.dynamic_slice_in_dim(before, start, length, axis=1), 0)
      if not self.rotary_dim:
        x = x + site("pos_embed", jnp.take(self.pos[...], positions, axis=0).astype(self.dtype),
                     sites.RESID)
    outputs = [x] if all_layers else None
    new_cache = [] if cache is not None else None
    for i, block in enumerate(self.blocks):
      with sites.scope(f"blocks.{i}"):
        x, c = block(x, allowed, None if cache is None else cache[i], start, positions)
      if cache is not None:
        new_cache.append(c)
      if all_layers:
        outputs.append(x)
    x = site("ln_final", self.ln_f(x), sites.RESID)
    if all_layers:
      outputs[-1] = x
    return x, outputs, new_cache

  def hidden_states(self, tokens: jax.Array, attention_mask: jax.Array | None = None):
    """Final-LayerNorm activations ``[batch, length, width]``."""
    return self.forward(tokens, attention_mask=attention_mask)[0]

  def lm_logits(self, hidden: jax.Array) -> jax.Array:
    """Next-token logits ``[..., vocab]`` from final activations: the LM head, tied to the token
    embedding (GPT-2's) or its own (``unembed``)."""
    table = (self.embed.embedding if self.unembed is None else self.unembed)[...].astype(self.dtype)
    logits = jnp.einsum("...d,vd->...v", hidden.astype(self.dtype), table,
                        preferred_element_type=jnp.float32)
    return site("lm_logits", logits, ("batch", "pos", "vocab")[-logits.ndim:])

  def features(self, tokens: jax.Array) -> jax.Array:
    """The activation at each sequence's last non-pad token ``[batch, width]``."""
    h = self.hidden_states(tokens)
    last = jnp.maximum(jnp.sum(self._present(tokens), axis=1) - 1, 0)
    return jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]

  def __call__(self, tokens: jax.Array) -> jax.Array:
    return site("logits", self.head(self.features(tokens).astype(self.dtype)), sites.LOGITS)
