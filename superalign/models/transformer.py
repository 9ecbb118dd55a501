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

The ``Options`` of Llama, Mistral, Qwen and Gemma (``hf_llama.py``) add RMSNorm (Gemma's ``1 + w``
scale), gated MLPs (SwiGLU, GeGLU), grouped-query attention with separate q/k/v weights and an
explicit head dimension, rotary scaling (``Rope``), QK-norm, sliding-window layers, Gemma's
soft-capping, query scale, embedding scale and extra norms. With the default ``Options`` every
GPT-2 and GPT-NeoX computation is the one it was. ``lora`` (``models.lora``) adds adapters to the
weights it names.

``forward`` is the general pass: an optional attention mask (left padding: position ids come from
the mask) and an optional KV cache written at ``start`` (``generate.py`` decodes with it).

Sites (``models.sites``, TransformerLens' names without ``hook_``, and its semantics): ``embed``,
``pos_embed``; per block ``blocks.<i>.`` + ``resid_pre``; ``ln1.scale`` (the norm's divisor
``sqrt(var + eps)``, or ``sqrt(mean(x^2) + eps)`` for RMSNorm, ``[batch, pos, 1]``) and, for
RMSNorm, ``ln1.normalized`` (``x / scale``, before the norm's weight); ``attn.q``, ``attn.k``,
``attn.v`` (``[batch, pos, head, head_dim]`` after the projection and bias, before QK-norm and
rotary; keys and values on the key/value heads under grouped-query attention); ``attn.rot_q``,
``attn.rot_k`` (after rotary, rotary models only); ``attn.attn_scores`` (``[batch, head,
query_pos, key_pos]``: scaled, soft-capped, masked with a large negative number, before the
softmax); ``attn.pattern``; ``attn.z`` (each head's output before the output projection);
``attn_out``, ``resid_mid``, ``ln2.scale`` (``ln2.normalized``), ``mlp.pre`` and ``mlp.post``
(the hidden layer before and after the GELU; with a gated MLP, the gate before its activation and
the gated product, and ``mlp.pre_linear`` the up projection), ``mlp_out``, ``resid_post``; with
Gemma's extra norms ``ln1_post.*``, ``ln2_post.*``, with QK-norm ``attn.q_norm.*``,
``attn.k_norm.*``; then ``ln_final.scale`` (``ln_final.normalized``), ``ln_final`` (the final
norm's output), and ``logits`` (the classifier head) or ``lm_logits``. A norm's ``scale`` is in the
computation's path (an intervention there changes the output); with no hook, or one that returns
it unchanged, the norm multiplies by ``rsqrt`` as it always did, so the unhooked program and its
rounding are the ones without sites.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from superalign.core.errors import ConfigError
from superalign.models import layers, lora as lora_lib, sites
from superalign.models.sites import site

_STD = 0.02


def _param(rngs: nnx.Rngs, shape, axes, stddev=_STD, dtype=jnp.float32):
  init = nnx.with_partitioning(nnx.initializers.normal(stddev), axes)
  return nnx.Param(init(rngs.params(), shape, dtype))




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
  logits = site("attn_scores", logits, sites.ATTN_SCORES)
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


@dataclasses.dataclass(frozen=True)
class Rope:
  """Rotary frequencies: base ``theta`` and transformers' ``rope_type`` scaling: ``default``,
  ``linear`` (frequencies / ``factor``) or ``llama3`` (long wavelengths / ``factor``, short ones
  kept, a smooth blend between; ``low_freq_factor``, ``high_freq_factor`` and the
  ``original_max`` context it was trained at)."""
  theta: float = 10000.0
  kind: str = "default"
  factor: float = 1.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max: int = 8192

  def inv_freq(self, rotary_dim: int) -> jax.Array:
    """The ``rotary_dim / 2`` inverse frequencies (float32)."""
    inv = 1.0 / (self.theta ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
    if self.kind == "linear":
      return inv / self.factor
    if self.kind == "llama3":
      wavelen = 2 * math.pi / inv
      low = self.original_max / self.low_freq_factor
      high = self.original_max / self.high_freq_factor
      scaled = jnp.where(wavelen > low, inv / self.factor, inv)
      smooth = ((self.original_max / wavelen - self.low_freq_factor)
                / (self.high_freq_factor - self.low_freq_factor))
      blend = (1 - smooth) * scaled / self.factor + smooth * scaled
      return jnp.where((wavelen >= high) & (wavelen <= low), blend, scaled)
    return inv


def _rotate(x: jax.Array, positions: jax.Array, rotary_dim: int, inv_freq: jax.Array) -> jax.Array:
  """Rotary positions on ``x`` ``[batch, length, heads, head_dim]`` at ``positions`` ``[batch or
  1, length]``: the first ``rotary_dim`` dimensions turn in pairs ``(i, i + rotary_dim / 2)``
  (GPT-NeoX's rotate-half layout, which every transformers family uses), the rest pass through."""
  angles = positions.astype(jnp.float32)[..., None] * inv_freq           # [b, t, rotary_dim / 2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]     # [b, t, 1, rotary_dim]
  cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
  turn, rest = x[..., :rotary_dim], x[..., rotary_dim:]
  half = rotary_dim // 2
  rotated = jnp.concatenate([-turn[..., half:], turn[..., :half]], axis=-1)
  return jnp.concatenate([turn * cos + rotated * sin, rest], axis=-1)


FULL, SLIDING = "full_attention", "sliding_attention"   # layer types, as transformers names them
ACTIVATIONS = {"gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
               "gelu": lambda x: jax.nn.gelu(x, approximate=False), "silu": jax.nn.silu}


@dataclasses.dataclass(frozen=True)
class Options:
  """What a Llama, Mistral, Qwen or Gemma block computes beyond GPT-2's (the defaults are
  GPT-2's, so ``Options()`` changes nothing)."""
  norm: str = "layer"              # "layer": LayerNorm with a bias; "rms": RMSNorm
  norm_offset: float = 0.0         # RMSNorm scales by (offset + w): Gemma's 1 + w
  activation: str = "gelu_tanh"    # a key of ACTIVATIONS
  gated_mlp: bool = False          # act(x W_gate) * (x W_up), then W_down (SwiGLU, GeGLU)
  mlp_bias: bool = True
  fused_qkv: bool = True           # GPT-2/NeoX's one qkv weight; else q, k and v of their own
  num_kv_heads: int | None = None  # grouped-query attention (separate q/k/v only)
  head_dim: int | None = None      # None: width / heads
  qkv_bias: bool = True
  out_bias: bool = True
  qk_norm: bool = False            # RMSNorm of each head's queries and keys (Qwen3, Gemma 3)
  rope: Rope | None = None         # rotary frequencies (None: Rope(rotary_base))
  local_rope: Rope | None = None   # on sliding-window layers, if their own (Gemma 3)
  sliding_window: int | None = None   # a query sees the keys at most this many positions back
  layer_types: tuple[str, ...] | None = None   # FULL or SLIDING per layer; None: all SLIDING
  #                                             if sliding_window, else all FULL
  query_scale: float | None = None    # None: 1 / sqrt(head_dim)
  attn_softcap: float | None = None   # cap * tanh(logits / cap) on attention logits (Gemma 2)
  final_softcap: float | None = None  # the same on the LM head's logits
  embed_scale: bool = False        # token embeddings times sqrt(width) (Gemma)
  sandwich_norms: bool = False     # norms after attention and after the MLP too (Gemma 2/3)

  def sliding(self, layer: int) -> bool:
    """Whether ``layer`` attends within the sliding window."""
    if self.layer_types is not None:
      return self.layer_types[layer] == SLIDING
    return self.sliding_window is not None


def weight_names(options: Options) -> list[str]:
  """The block-relative names of a block's weight matrices (what ``lora.targets`` match)."""
  attn = ["attn.qkv"] if options.fused_qkv else ["attn.q", "attn.k", "attn.v"]
  mlp = ["mlp.gate", "mlp.up", "mlp.down"] if options.gated_mlp else ["mlp.fc", "mlp.proj"]
  return attn + ["attn.out"] + mlp


def _inverse_scale(mean_square: jax.Array, axes: sites.Axes) -> jax.Array:
  """``rsqrt(mean_square)``, a norm's multiplier, through the site ``scale``: the divisor
  ``sqrt(mean_square)`` ``[..., 1]`` (TransformerLens' ``hook_scale``), which an intervention can
  freeze. A hook that returns the divisor itself (no hooks, or a capture) leaves the multiplier
  the plain ``rsqrt``: the program and its rounding are those without the site."""
  inverse = jax.lax.rsqrt(mean_square)
  if not sites.hooked():
    return inverse
  divisor = jnp.sqrt(mean_square)
  hooked = site("scale", divisor, axes)
  return inverse if hooked is divisor else 1.0 / hooked


def _norm_axes(x: jax.Array) -> sites.Axes:
  """A norm's site axes: the residual stream's, or each head's (QK-norm); its ``scale`` has the
  same axes, the last of size 1."""
  return sites.SCALE if x.ndim == 3 else sites.HEADS


class LayerNorm(nnx.Module):
  """``(x - mean) / sqrt(var + eps) * w + b`` over the last axis, in float32 (returns float32):
  ``nnx.LayerNorm``'s computation and parameters (``scale``, ``bias``), with its divisor as the
  site ``scale`` (``[batch, pos, 1]``, TransformerLens' ``hook_scale``)."""

  def __init__(self, width: int, epsilon: float, param_dtype, rngs: nnx.Rngs, axes=("embed",)):
    ones = nnx.with_partitioning(nnx.initializers.ones_init(), axes)
    zeros = nnx.with_partitioning(nnx.initializers.zeros_init(), axes)
    # Two keys drawn, as nnx.LayerNorm draws them, so every later initialization is unchanged.
    self.scale = nnx.Param(ones(rngs.params(), (width,), param_dtype))
    self.bias = nnx.Param(zeros(rngs.params(), (width,), param_dtype))
    self.epsilon = epsilon

  def __call__(self, x: jax.Array) -> jax.Array:
    # nnx.LayerNorm's operations in its order (E[x^2] - E[x]^2 in one pass, clipped at zero;
    # (x - mean) * (rsqrt(var + eps) * w) + b), so that the program and its gradient round as
    # before. No ``normalized`` site: ((x - mean) / scale) * w would round differently.
    h = x.astype(jnp.float32)
    square = jax.lax.square(h)
    mean, mean_square = jnp.mean(h, axis=-1), jnp.mean(square, axis=-1)
    var = jnp.maximum(0.0, mean_square - jax.lax.square(mean))
    stats = (*h.shape[:-1], 1)
    centered = h - mean.reshape(stats)
    mul = _inverse_scale(var.reshape(stats) + self.epsilon, _norm_axes(h))
    mul = mul * self.scale[...].astype(jnp.float32).reshape((1,) * (h.ndim - 1) + (-1,))
    return centered * mul + self.bias[...].astype(jnp.float32).reshape((1,) * (h.ndim - 1) + (-1,))


class RMSNorm(nnx.Module):
  """``x / rms(x) * (offset + w)`` over the last axis, in float32 (returns float32); sites
  ``scale`` (the divisor ``sqrt(mean(x^2) + eps)``, ``[batch, pos, 1]``) and ``normalized``
  (``x / scale``), TransformerLens' ``hook_scale`` and ``hook_normalized``."""

  def __init__(self, width: int, epsilon: float, offset: float, param_dtype, axes=("embed",)):
    init = nnx.with_partitioning(nnx.initializers.constant(1.0 - offset), axes)
    self.scale = nnx.Param(init(None, (width,), param_dtype))
    self.epsilon, self.offset = epsilon, offset

  def __call__(self, x: jax.Array) -> jax.Array:
    h = x.astype(jnp.float32)
    axes = _norm_axes(h)
    h = h * _inverse_scale(jnp.mean(h * h, axis=-1, keepdims=True) + self.epsilon, axes)
    return site("normalized", h, axes) * (self.offset + self.scale[...].astype(jnp.float32))


def _norm(width: int, epsilon: float, options: Options, param_dtype, rngs: nnx.Rngs):
  if options.norm == "rms":
    return RMSNorm(width, epsilon, options.norm_offset, param_dtype)
  return LayerNorm(width, epsilon, param_dtype, rngs)


def _project(x: jax.Array, kernel: jax.Array, adapter, dtype) -> jax.Array:
  """``x @ kernel`` (both flattened to 2-D by ``_matmul``), plus ``adapter``'s term if any."""
  y = _matmul(x, kernel.astype(dtype))
  return y if adapter is None else y + adapter(x, dtype)


def _grouped_attention(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array | None,
                       scale: float, softcap: float | None) -> jax.Array:
  """``_attention`` with ``k`` and ``v`` on fewer heads than ``q`` (grouped-query attention:
  query head ``h`` reads key/value head ``h // (heads / kv_heads)``, as transformers' repeat_kv),
  a query scale and optional logit soft-capping. The pattern site is per query head."""
  b, t, heads, e = q.shape
  kv = k.shape[2]
  q = q.reshape(b, t, kv, heads // kv, e)
  logits = jnp.einsum("bqkge,bske->bkgqs", q, k, preferred_element_type=jnp.float32)
  logits = logits * jnp.float32(scale)
  if softcap:
    logits = jnp.tanh(logits / softcap) * softcap
  if allowed is None:
    allowed = jnp.tril(jnp.ones((t, k.shape[1]), dtype=bool))
  else:
    allowed = allowed[:, :, None]                       # [b, 1, 1, q, s]
  logits = jnp.where(allowed, logits, jnp.float32(-0.7 * float(jnp.finfo(jnp.float32).max)))
  shape = logits.shape   # the sites see [batch, head, query_pos, key_pos], head = kv * group + g
  logits = site("attn_scores", logits.reshape(b, heads, t, -1), sites.ATTN_SCORES).reshape(shape)
  probs = jax.nn.softmax(logits, axis=-1)
  probs = site("pattern", probs.reshape(b, heads, t, -1), sites.PATTERN).reshape(shape)
  out = jnp.einsum("bkgqs,bske->bqkge", probs.astype(v.dtype), v)
  return out.reshape(b, t, heads, e)


class Attention(nnx.Module):
  """Causal self-attention; heads are the tensor-parallel axis. GPT-2 and GPT-NeoX fuse the
  query, key and value weights in one ``qkv``; the other families (``Options.fused_qkv=False``)
  keep ``q``, ``k`` and ``v``, with ``num_kv_heads`` key/value heads of ``head_dim``."""

  def __init__(self, width: int, num_heads: int, out_std: float, dtype, rngs: nnx.Rngs,
               rotary_dim: int = 0, rotary_base: float = 10000.0, *,
               options: Options = Options(), sliding: bool = False,
               lora: lora_lib.LoRA | None = None, param_dtype=jnp.float32, epsilon: float = 1e-6):
    head_dim = options.head_dim or width // num_heads
    kv_heads = options.num_kv_heads or num_heads
    self.num_heads, self.num_kv_heads, self.head_dim = num_heads, kv_heads, head_dim
    self.rotary_dim = rotary_dim
    rope = options.rope or Rope(rotary_base)
    self.rope = (options.local_rope or rope) if sliding else rope
    self.fused = options.fused_qkv
    self.scale = options.query_scale or 1.0 / math.sqrt(head_dim)
    self.softcap = options.attn_softcap
    adapter = lambda name, in_shape, out_shape, in_axes, out_axes: lora_lib.adapter(
        lora, name, in_shape, out_shape, in_axes, out_axes, param_dtype, rngs)
    proj = lambda heads: _param(rngs, (width, heads, head_dim), ("embed", "heads", None),
                                dtype=param_dtype)
    if self.fused:
      self.qkv = _param(rngs, (width, 3, num_heads, head_dim), ("embed", None, "heads", None),
                        dtype=param_dtype)
      self.qkv_bias = nnx.Param(jnp.zeros((3, num_heads, head_dim), param_dtype))
      self.qkv_lora = adapter("attn.qkv", (width,), (3, num_heads, head_dim), ("embed",),
                              (None, "heads", None))
    else:
      self.q, self.k, self.v = proj(num_heads), proj(kv_heads), proj(kv_heads)
      bias = lambda heads: (nnx.Param(jnp.zeros((heads, head_dim), param_dtype))
                            if options.qkv_bias else None)
      self.q_bias, self.k_bias, self.v_bias = bias(num_heads), bias(kv_heads), bias(kv_heads)
      self.q_lora, self.k_lora, self.v_lora = (
          adapter(f"attn.{n}", (width,), (h, head_dim), ("embed",), ("heads", None))
          for n, h in (("q", num_heads), ("k", kv_heads), ("v", kv_heads)))
      qk_norm = lambda: (RMSNorm(head_dim, epsilon, options.norm_offset, param_dtype, (None,))
                         if options.qk_norm else None)
      self.q_norm, self.k_norm = qk_norm(), qk_norm()
    self.out = _param(rngs, (num_heads, head_dim, width), ("heads", None, "embed"), out_std,
                      dtype=param_dtype)
    self.out_bias = (nnx.Param(jnp.zeros((width,), param_dtype))
                     if self.fused or options.out_bias else None)
    self.out_lora = adapter("attn.out", (num_heads, head_dim), (width,), ("heads", None),
                            ("embed",))
    self.dtype = dtype

  def _qkv(self, x: jax.Array):
    """Queries ``[..., heads, head_dim]``, keys and values ``[..., kv_heads, head_dim]``."""
    if self.fused:
      # One [tokens, d] x [d, heads * 3 * head_dim] matmul. Columns go heads-major so that a
      # tensor-parallel split of the heads axis stays a split of the matmul's columns.
      w = self.qkv[...].astype(self.dtype)                         # [d, 3, heads, head_dim]
      d, _, heads, head_dim = w.shape
      w = w.transpose(0, 2, 1, 3).reshape(d, -1)
      qkv = _matmul(x, w).reshape(*x.shape[:-1], heads, 3, head_dim)
      if self.qkv_lora is not None:
        extra = self.qkv_lora(x, self.dtype).reshape(*x.shape[:-1], 3, heads, head_dim)
        qkv = qkv + jnp.swapaxes(extra, -3, -2)
      qkv = qkv + self.qkv_bias[...].astype(self.dtype).transpose(1, 0, 2)
      return tuple(site(name, qkv[..., i, :], sites.QKV) for i, name in enumerate("qkv"))
    out = []
    for name, w, bias, adapter in (("q", self.q, self.q_bias, self.q_lora),
                                   ("k", self.k, self.k_bias, self.k_lora),
                                   ("v", self.v, self.v_bias, self.v_lora)):
      _, heads, head_dim = w.shape
      y = _project(x, w[...].reshape(w.shape[0], -1), adapter, self.dtype)
      y = y.reshape(*x.shape[:-1], heads, head_dim)
      out.append(site(name, y if bias is None else y + bias[...].astype(self.dtype), sites.QKV))
    q, k, v = out
    if self.q_norm is not None:   # after the q and k sites, as TransformerLens' hook_q, hook_k
      with sites.scope("q_norm"):
        q = self.q_norm(q).astype(self.dtype)
      with sites.scope("k_norm"):
        k = self.k_norm(k).astype(self.dtype)
    return q, k, v

  def __call__(self, x: jax.Array, allowed: jax.Array | None = None, cache=None, start=0,
               positions: jax.Array | None = None):
    """``(output, cache)``; given ``cache`` (keys and values ``[batch, cache_len, kv_heads,
    head_dim]``), this call's keys and values are written at ``start`` and attended with it.
    With rotary positions, ``positions`` ``[batch or 1, length]`` are the tokens' positions; keys
    are cached turned. Its sites are named within the block's ``attn``."""
    with sites.scope("attn"):
      q, k, v = self._qkv(x)
      if self.rotary_dim:
        inv_freq = self.rope.inv_freq(self.rotary_dim)
        q, k = (site(f"rot_{name}", _rotate(t, positions, self.rotary_dim, inv_freq), sites.QKV)
                for name, t in (("q", q), ("k", k)))
      if cache is not None:
        at = (0, start, 0, 0)
        cache = tuple(jax.lax.dynamic_update_slice(c, new.astype(c.dtype), at)
                      for c, new in zip(cache, (k, v)))
        k, v = cache
      if self.fused:
        h = _attention(q, k, v, allowed)
      else:
        h = _grouped_attention(q, k, v, allowed, self.scale, self.softcap)
      h = site("z", h, sites.HEADS)                                # each head's output
    out_kernel = self.out[...].astype(self.dtype)                  # [heads, head_dim, d]
    h = h.reshape(*h.shape[:-2], -1)
    out = _project(h, out_kernel.reshape(-1, out_kernel.shape[-1]), self.out_lora, self.dtype)
    return out if self.out_bias is None else out + self.out_bias[...].astype(self.dtype), cache


class GatedMLP(nnx.Module):
  """``act(x W_gate) * (x W_up)``, then ``W_down``: SwiGLU (``silu``) or GeGLU (``gelu_tanh``).
  Sites: ``pre`` (the gate before its activation), ``pre_linear`` (the up projection) and
  ``post`` (their product)."""

  def __init__(self, width: int, mlp_width: int, out_std: float, options: Options, dtype,
               rngs: nnx.Rngs, lora: lora_lib.LoRA | None, param_dtype):
    param = lambda shape, axes, std=_STD: _param(rngs, shape, axes, std, dtype=param_dtype)
    bias = lambda n, axis: (nnx.Param(jnp.zeros((n,), param_dtype)) if options.mlp_bias
                            else None)
    adapter = lambda name, shape, axes: lora_lib.adapter(
        lora, name, shape[:1], shape[1:], axes[:1], axes[1:], param_dtype, rngs)
    up, down = ((width, mlp_width), ("embed", "mlp")), ((mlp_width, width), ("mlp", "embed"))
    self.gate, self.up, self.down = param(*up), param(*up), param(*down, out_std)
    self.gate_bias, self.up_bias = bias(mlp_width, "mlp"), bias(mlp_width, "mlp")
    self.down_bias = bias(width, "embed")
    self.gate_lora, self.up_lora = adapter("mlp.gate", *up), adapter("mlp.up", *up)
    self.down_lora = adapter("mlp.down", *down)
    self.activation = options.activation
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    def dense(w, bias, adapter, x):
      y = _project(x, w[...], adapter, self.dtype)
      return y if bias is None else y + bias[...].astype(self.dtype)

    x = x.astype(self.dtype)
    gate = site("pre", dense(self.gate, self.gate_bias, self.gate_lora, x), sites.NEURONS)
    up = site("pre_linear", dense(self.up, self.up_bias, self.up_lora, x), sites.NEURONS)
    h = site("post", ACTIVATIONS[self.activation](gate) * up, sites.NEURONS)
    return dense(self.down, self.down_bias, self.down_lora, h)


class Block(nnx.Module):
  """One transformer block: attention then MLP, each after a norm, added to the residual stream
  ``[batch, pos, embed]`` (or both read the same normed input with ``parallel_residual``, as
  GPT-NeoX; with ``sandwich_norms`` each output is normed again before it is added, as Gemma 2/3);
  its sites are ``resid_pre``, ``attn_out``, ``resid_mid``, ``mlp_out``, ``resid_post`` and those
  of its attention and MLP."""

  def __init__(self, width: int, num_heads: int, num_layers: int, mlp_width: int,
               epsilon: float, dtype, rngs: nnx.Rngs, rotary_dim: int = 0,
               rotary_base: float = 10000.0, parallel_residual: bool = False,
               gelu_approximate: bool = True, *, options: Options = Options(),
               sliding: bool = False, lora: lora_lib.LoRA | None = None,
               param_dtype=jnp.float32):
    out_std = _STD / math.sqrt(2 * num_layers)
    norm = lambda: _norm(width, epsilon, options, param_dtype, rngs)
    self.ln1 = norm()
    self.attn = Attention(width, num_heads, out_std, dtype, rngs, rotary_dim, rotary_base,
                          options=options, sliding=sliding, lora=lora, param_dtype=param_dtype,
                          epsilon=epsilon)
    self.sliding = sliding
    self.parallel_residual = parallel_residual
    self.gelu = _gelu if gelu_approximate else _gelu_exact
    self.ln2 = norm()
    self.post_attn_norm = norm() if options.sandwich_norms else None
    self.post_mlp_norm = norm() if options.sandwich_norms else None
    if options.gated_mlp:
      self.mlp = GatedMLP(width, mlp_width, out_std, options, dtype, rngs, lora, param_dtype)
    else:
      self.fc = layers.dense(width, mlp_width, ("embed", "mlp"), dtype, rngs, stddev=_STD,
                             param_dtype=param_dtype)
      self.proj = layers.dense(mlp_width, width, ("mlp", "embed"), dtype, rngs, stddev=out_std,
                               param_dtype=param_dtype)
      self.fc_lora = lora_lib.adapter(lora, "mlp.fc", (width,), (mlp_width,), ("embed",),
                                      ("mlp",), param_dtype, rngs)
      self.proj_lora = lora_lib.adapter(lora, "mlp.proj", (mlp_width,), (width,), ("mlp",),
                                        ("embed",), param_dtype, rngs)
    self.gated = options.gated_mlp
    self.dtype = dtype

  def _mlp(self, x: jax.Array) -> jax.Array:
    if self.gated:
      return self.mlp(x)
    pre = _dense(self.fc, x, self.dtype)
    if self.fc_lora is not None:
      pre = pre + self.fc_lora(x.astype(self.dtype), self.dtype)
    h = site("post", self.gelu(site("pre", pre, sites.NEURONS)), sites.NEURONS)
    out = _dense(self.proj, h, self.dtype)
    return out if self.proj_lora is None else out + self.proj_lora(h, self.dtype)

  def __call__(self, x: jax.Array, allowed: jax.Array | None = None, cache=None, start=0,
               positions: jax.Array | None = None):
    x = site("resid_pre", x, sites.RESID)
    with sites.scope("ln1"):
      h = self.ln1(x)
    a, cache = self.attn(h.astype(self.dtype), allowed, cache, start, positions)
    if self.post_attn_norm is not None:
      with sites.scope("ln1_post"):
        a = self.post_attn_norm(a).astype(self.dtype)
    a = site("attn_out", a, sites.RESID)
    # Parallel residual (GPT-NeoX): the MLP reads the block's input, not the attention's sum, so
    # there is no resid_mid.
    mid = x if self.parallel_residual else site("resid_mid", x + a, sites.RESID)
    with sites.scope("ln2"):
      h = self.ln2(mid)
    with sites.scope("mlp"):
      m = self._mlp(h)
    if self.post_mlp_norm is not None:
      with sites.scope("ln2_post"):
        m = self.post_mlp_norm(m).astype(self.dtype)
    m = site("mlp_out", m, sites.RESID)
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
               tied_lm_head: bool = True, options: Options = Options(),
               lora: lora_lib.LoRA | None = None, dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    head_dim = options.head_dim or width // num_heads
    if options.head_dim is None and width % num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
    if (options.num_kv_heads or num_heads) < 1 or num_heads % (options.num_kv_heads or num_heads):
      raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads "
                       f"{options.num_kv_heads}")
    if rotary_dim % 2 or not 0 <= rotary_dim <= head_dim:
      raise ValueError(f"rotary_dim {rotary_dim}: must be even and at most the head dimension "
                       f"{head_dim}")
    if lora is not None and lora_lib.unmatched(lora, weight_names(options)):
      raise ConfigError(
          f"model.lora.targets: {lora_lib.unmatched(lora, weight_names(options))[0]!r} matches no "
          f"weight of this model; its weights: {', '.join(weight_names(options))}")
    self.embed = nnx.Embed(
        vocab_size, width, dtype=dtype, param_dtype=param_dtype,
        embedding_init=nnx.with_partitioning(nnx.initializers.normal(_STD), ("vocab", "embed")),
        rngs=rngs)
    self.rotary_dim, self.max_len = rotary_dim, max_len   # max_len: positions it may read
    self.pos = (None if rotary_dim else
                _param(rngs, (max_len, width), (None, "embed"), 0.01, dtype=param_dtype))
    self.blocks = nnx.List([Block(width, num_heads, num_layers, mlp_width or 4 * width, epsilon,
                                  dtype, rngs, rotary_dim, rotary_base, parallel_residual,
                                  gelu_approximate, options=options, sliding=options.sliding(i),
                                  lora=lora, param_dtype=param_dtype)
                            for i in range(num_layers)])
    # An untied LM head is stored as the embedding is, [vocab, width] (GPT-NeoX's embed_out).
    self.unembed = (None if tied_lm_head else
                    _param(rngs, (vocab_size, width), ("vocab", "embed"), dtype=param_dtype))
    self.unembed_bias = None   # [vocab]: only a folded final LayerNorm's bias (models.fold)
    self.ln_f = _norm(width, epsilon, options, param_dtype, rngs)
    self.window = options.sliding_window
    self.embed_scale = math.sqrt(width) if options.embed_scale else None
    self.final_softcap = options.final_softcap
    self.head = layers.dense(width, num_classes, ("embed", None), dtype, rngs, stddev=_STD,
                             param_dtype=param_dtype)
    self.pad_id = pad_id
    self.causal = causal
    self.dtype = dtype

  def _present(self, tokens: jax.Array) -> jax.Array:
    return (tokens if tokens.ndim == 2 else tokens[..., 0]) != self.pad_id

  def init_cache(self, batch: int, length: int) -> list[tuple[jax.Array, jax.Array]]:
    """Zero keys and values for ``length`` positions, one pair per block."""
    attn = self.blocks[0].attn
    shape = (batch, length, attn.num_kv_heads, attn.head_dim)
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
    if self.embed_scale is not None:   # in the activations' dtype, as Gemma rounds it
      x = x * jnp.asarray(self.embed_scale, x.dtype)
    x = site("embed", x, sites.RESID)
    allowed = positions = None
    query = keys_at = jnp.arange(length)
    if attention_mask is None and cache is None:
      if self.rotary_dim:
        positions = jnp.arange(length)[None]
      else:
        pos = jnp.broadcast_to(self.pos[:length].astype(self.dtype), x.shape)   # as x + pos does
        x = x + site("pos_embed", pos, sites.RESID)
      if not self.causal:
        allowed = self._present(tokens)[:, None, None, :]
      local = (None if self.window is None else
               jnp.tril(jnp.ones((length, length), bool))[None, None])
    else:
      keys = (jnp.ones((tokens.shape[0], cache[0][0].shape[1] if cache else length), bool)
              if attention_mask is None else attention_mask.astype(bool))
      query, keys_at = start + jnp.arange(length), jnp.arange(keys.shape[1])
      allowed = (keys_at[None, :] <= query[:, None])[None, None]
      allowed = local = allowed & keys[:, None, None, :]
      # A token's position is the number of real tokens before it.
      before = jnp.cumsum(keys, axis=1) - 1
      positions = jnp.maximum(jax.lax.dynamic_slice_in_dim(before, start, length, axis=1), 0)
      if not self.rotary_dim:
        x = x + site("pos_embed", jnp.take(self.pos[...], positions, axis=0).astype(self.dtype),
                     sites.RESID)
    if self.window is not None:   # a sliding layer's query sees the last `window` keys (itself too)
      local = local & (query[:, None] - keys_at[None, :] < self.window)[None, None]
    outputs = [x] if all_layers else None
    new_cache = [] if cache is not None else None
    for i, block in enumerate(self.blocks):
      with sites.scope(f"blocks.{i}"):
        x, c = block(x, local if block.sliding else allowed, None if cache is None else cache[i],
                     start, positions)
      if cache is not None:
        new_cache.append(c)
      if all_layers:
        outputs.append(x)
    with sites.scope("ln_final"):
      x = self.ln_f(x)
    x = site("ln_final", x, sites.RESID)
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
    if self.unembed_bias is not None:
      logits = logits + self.unembed_bias[...].astype(jnp.float32)
    if self.final_softcap:
      logits = jnp.tanh(logits / self.final_softcap) * self.final_softcap
    return site("lm_logits", logits, ("batch", "pos", "vocab")[-logits.ndim:])

  def features(self, tokens: jax.Array) -> jax.Array:
    """The activation at each sequence's last non-pad token ``[batch, width]``."""
    h = self.hidden_states(tokens)
    last = jnp.maximum(jnp.sum(self._present(tokens), axis=1) - 1, 0)
    return jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]

  def __call__(self, tokens: jax.Array) -> jax.Array:
    return site("logits", self.head(self.features(tokens).astype(self.dtype)), sites.LOGITS)
