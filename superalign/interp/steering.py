"""Steering in generation: interventions at every pass of cached sampling.

``generate(model, prompt, mask, interventions=..., max_new_tokens=...)`` samples from the LM head
with ``models.generate`` (one compiled program: the prompt's pass, then a ``while_loop`` of
one-token passes over the KV cache) with ``interp.hooks`` interventions installed around every
pass: ``hooks.add`` (a steering vector), ``hooks.ablate_direction`` (project a direction out),
``clamp_latent`` (set an SAE latent, keeping the SAE's error term), or any other. Because the
prompt's pass and each decode step run intervened, the keys and values they cache are the
steered run's: the tokens are those of re-running the whole sequence with the intervention at
every position and taking each next token (the test checks exactly that).

Positions. A mask ``hooks.at(pos=...)`` (or ``query_pos``) means absolute positions: columns of
the left-padded prompt followed by the new tokens (column ``prompt.shape[1] + i`` is the ``i``-th
new token's input), the same in the prompt's pass and in each decode step, so ``at(pos=3)``
steers only whatever token sits in column 3. Negative positions ("the last token") would mean a
different token at every step and are refused; so is an array ``where`` mask or ``replace``
value whose shape does not fit a one-token pass (a one-line ``HookError`` naming the site).

The built-in interventions are pytrees of their arrays, which go into the compiled program as
arguments: new vectors or scales of the same shapes reuse it. A custom intervention (any
function of the activation) is part of the program's key, and arrays it closes over are
constants of the program.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from superalign.interp import hooks
from superalign.interp.cache import transformer_of
from superalign.models import generate as gen, sites


def _clamp(name, x, sae, latent, value):
  if x.shape[-1] != sae.d_in:
    raise hooks.HookError(f"hook at {name!r}: an SAE on {sae.d_in} inputs cannot read an "
                          f"activation of width {x.shape[-1]}")
  z = sae.encode(x)
  clamped = z.at[..., latent].set(jnp.asarray(value, z.dtype))
  # The difference first: clamping a latent to its own value then adds exactly zero.
  return x.astype(jnp.float32) + (sae.decode(clamped) - sae.decode(z))


def clamp_latent(sae, latent, value, where=None) -> hooks.Intervention:
  """Set SAE latent(s) ``latent`` (an index or indices into the SAE's ``width``) to ``value``,
  keeping what the SAE does not reconstruct: ``x + decode(z') - decode(z)`` with ``z =
  sae.encode(x)`` and ``z'`` that ``z`` with the latent set (``interp.sae``'s modules). Clamping a
  latent to its own value leaves the activation as it is; 0 ablates the latent's feature."""
  return hooks._Masked(_clamp, where, sae, jnp.asarray(latent, jnp.int32), value)


def _dynamic(leaf) -> bool:
  return (isinstance(leaf, (jax.Array, np.ndarray, np.generic, float, int))
          and not isinstance(leaf, bool))


@dataclasses.dataclass(frozen=True)
class _Steer:
  """``models.generate``'s hooks: the interventions' structure and their non-array parts (the
  program's key); ``__call__(arrays, start)`` rebuilds them and installs them for one pass."""
  treedef: Any
  static: tuple   # the interventions' non-array leaves, None where an array goes

  def __call__(self, arrays, start) -> contextlib.AbstractContextManager:
    leaves = [a if s is None else s for s, a in zip(self.static, arrays)]
    return _pass(hooks._Hooks((), jax.tree.unflatten(self.treedef, leaves), offset=start))


@contextlib.contextmanager
def _pass(hook):
  with sites.active(hook):
    yield
  hook.check()


def _check_positions(interventions: Mapping[str, hooks.Intervention]) -> None:
  for name, intervention in interventions.items():
    where = getattr(intervention, "where", None)
    if isinstance(where, hooks.at):
      for axis, index in where.index.items():
        if axis in hooks.SEQUENCE_AXES and np.any(np.asarray(index) < 0):
          raise hooks.HookError(
              f"intervention at {name!r}: at({axis}={index!r}) counts from the end, which in "
              "generation is a different token at every step; give absolute positions (prompt "
              "columns, then prompt length + i for the i-th new token)")


def generate(model: nnx.Module, prompt, mask, *, interventions: Mapping[str, hooks.Intervention],
             max_new_tokens: int, sampler: gen.Sampler = gen.Sampler(), eos_id: int | None = None,
             pad_id: int = 0, rng: jax.Array | None = None) -> jax.Array:
  """New tokens ``[batch, max_new_tokens]`` of ``model`` (a ``Transformer``, or a
  ``models.load`` language model) after the left-padded ``prompt`` (``mask`` 1 on real
  tokens), as ``models.generate.generate`` samples them, with ``interventions`` (``{site:
  intervention}``, ``interp.hooks``) applied at every pass, the prompt's and each new token's.
  A site the model lacks is a one-line ``HookError`` listing its sites."""
  interventions = dict(interventions)
  _check_positions(interventions)
  leaves, treedef = jax.tree.flatten(interventions)
  static = tuple(None if _dynamic(leaf) else leaf for leaf in leaves)
  arrays = [jnp.asarray(leaf) if _dynamic(leaf) else None for leaf in leaves]
  return gen.generate(transformer_of(model), prompt, mask, max_new_tokens=max_new_tokens,
                      sampler=sampler, eos_id=eos_id, pad_id=pad_id, rng=rng,
                      hooks=_Steer(treedef, static), hook_state=arrays)
