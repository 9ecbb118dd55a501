"""Batched sampling from the ``Transformer``'s LM head with a KV cache.

One compiled program per (prompt bucket, batch, new tokens, sampler): the prompt fills the cache
in one pass and yields the first token, then a ``while_loop`` decodes one token per iteration
(``max_new_tokens - 1`` passes: none after the last token) and stops once every row has produced
EOS. The cache is kept in the model's compute dtype. Prompts are left-padded (``HFTokenizer.encode_prompts``): the attention mask hides
the padding and position ids count real tokens, so a padded prompt yields the tokens and the
logits its unpadded self yields.

Site hooks (``models.sites``) can ride along: ``hooks(hook_state, start)`` is a context manager
installed around each forward pass, the prompt's (``start`` 0) and each decode step's (``start``
the position of its token), so an intervention acts on every pass and the keys and values cached
are those of the intervened run (``interp.steering`` builds them). ``hooks`` is part of the
compiled program's key (hashable); ``hook_state`` is a pytree of arrays passed as an argument, so
new values of the same shapes reuse the program.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Callable, ContextManager

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class Sampler:
  """``temperature`` 0 is greedy; ``top_k`` 0 and ``top_p`` 1 disable those filters."""
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
      raise ValueError(f"sampler {self}: needs temperature >= 0, top_k >= 0, 0 < top_p <= 1")

  def __call__(self, logits: jax.Array, rng: jax.Array) -> jax.Array:
    """Token ids ``[batch]`` from float32 logits ``[batch, vocab]``."""
    if self.temperature == 0:
      return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / self.temperature
    if self.top_k:
      kth = jax.lax.top_k(logits, self.top_k)[0][:, -1:]
      logits = jnp.where(logits < kth, -jnp.inf, logits)
    if self.top_p < 1:
      # Keep the smallest set of most likely tokens whose mass reaches top_p (the top token always).
      order = jnp.argsort(-logits, axis=-1)
      probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
      drop_sorted = jnp.cumsum(probs, axis=-1) - probs >= self.top_p
      drop = jnp.zeros_like(drop_sorted).at[jnp.arange(len(order))[:, None], order].set(drop_sorted)
      logits = jnp.where(drop, -jnp.inf, logits)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


Hooks = Callable[[Any, jax.Array], ContextManager]   # (hook_state, start) -> context


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "sampler", "eos_id",
                                             "pad_id", "hooks"))
def _generate(graphdef, params, prompt, mask, rng, hook_state, *, max_new_tokens, sampler, eos_id,
              pad_id, hooks):
  model = nnx.merge(graphdef, params)
  compute = jnp.dtype(getattr(model, "dtype", jnp.float32))
  if compute != jnp.float32:
    # Weight matrices are cast to the compute dtype wherever they are used: cast them once here,
    # not in every decode step (the same values; a decode step then reads half the bytes).
    cast = lambda p: (p.astype(compute) if p.ndim >= 2 and jnp.issubdtype(p.dtype, jnp.floating)
                      else p)
    model = nnx.merge(graphdef, jax.tree.map(cast, params))
  batch, length = prompt.shape
  total = length + max_new_tokens
  mask = jnp.concatenate([mask.astype(bool), jnp.zeros((batch, max_new_tokens), bool)], axis=1)

  def last_logits(tokens, mask, cache, start):
    """One forward pass (under the hooks): the last token's logits and the updated cache."""
    with contextlib.nullcontext() if hooks is None else hooks(hook_state, start):
      hidden, _, cache = model.forward(tokens, attention_mask=mask, cache=cache, start=start)
      return model.lm_logits(hidden[:, -1]), cache

  logits, cache = last_logits(prompt, mask, model.init_cache(batch, total), 0)
  rng, key = jax.random.split(rng)
  token = sampler(logits, key)
  out = jnp.full((batch, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(token)
  done = (token == eos_id) if eos_id is not None else jnp.zeros((batch,), bool)

  # Iteration i feeds token i - 1 (at position length + i - 1) and samples token i: the last
  # token is sampled without a forward pass after it (max_new_tokens - 1 decode passes in all).
  def body(carry):
    i, out, token, cache, mask, done, rng = carry
    at = length + i - 1
    mask = jax.lax.dynamic_update_slice(mask, jnp.ones((batch, 1), bool), (0, at))
    logits, cache = last_logits(token[:, None], mask, cache, at)
    rng, key = jax.random.split(rng)
    token = jnp.where(done, pad_id, sampler(logits, key))
    out = jax.lax.dynamic_update_slice(out, token[:, None], (0, i))
    done = done | (token == eos_id) if eos_id is not None else done
    return i + 1, out, token, cache, mask, done, rng

  def cond(carry):
    i, *_, done, _ = carry
    return (i < max_new_tokens) & ~jnp.all(done)

  carry = (jnp.int32(1), out, token, cache, mask, done, rng)
  return jax.lax.while_loop(cond, body, carry)[1]


def generate(model: nnx.Module, prompt: jax.Array, mask: jax.Array, *, max_new_tokens: int,
             sampler: Sampler = Sampler(), eos_id: int | None = None, pad_id: int = 0,
             rng: jax.Array | None = None, hooks: Hooks | None = None,
             hook_state: Any = None) -> jax.Array:
  """New tokens ``[batch, max_new_tokens]`` after left-padded ``prompt`` ``[batch, length]``
  (``mask`` 1 on real tokens). A row that emits ``eos_id`` keeps it and is padded with
  ``pad_id`` after; the loop ends when every row has. ``hooks(hook_state, start)``: site hooks
  around every forward pass (see the module's docstring)."""
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens}: must be positive")
  room = model.max_len
  if prompt.shape[1] + max_new_tokens > room:
    raise ValueError(f"prompt length {prompt.shape[1]} + max_new_tokens {max_new_tokens} exceeds "
                     f"the model's {room} positions")
  graphdef, params = nnx.split(model)
  rng = jax.random.key(0) if rng is None else rng
  return _generate(graphdef, params, jnp.asarray(prompt, jnp.int32), jnp.asarray(mask), rng,
                   hook_state, max_new_tokens=max_new_tokens, sampler=sampler, eos_id=eos_id,
                   pad_id=pad_id, hooks=hooks)


@functools.lru_cache(maxsize=None)
def greedy_fn(max_new_tokens: int, eos_id: int | None, pad_id: int):
  """``fn(state, batch) -> [batch, max_new_tokens]``: greedy ``generate`` from a train state's
  model on left-padded ``batch['x']`` with ``batch['mask']``, for ``Trained.apply`` (one
  function per setting, so its compiled program is reused; stacked runs vmap it)."""
  def fn(state, batch):
    return generate(state.model(), batch["x"], batch["mask"], max_new_tokens=max_new_tokens,
                    eos_id=eos_id, pad_id=pad_id)
  return fn
