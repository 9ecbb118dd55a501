"""Evidence types for the debate game. Pixels of an image: the sparse-pixel judge of Irving et al.

An item is one pixel position. Only nonzero pixels may be revealed: the judge is trained on k
random *nonzero* pixels, and a pixel it never saw in training (a revealed zero) is off its
support, where a liar can exploit it (measured on digits: honest wins fall from ~90% to ~15%
when zeros may be revealed; ../shared/REFERENCES.md).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp


class PixelEvidence:
  """Images ``[games, H, W, C]``; the judge sees ``C + 1`` planes: the mask, and the pixel values
  where revealed (zeros elsewhere)."""

  def num_items(self, instance_shape: Sequence[int]) -> int:
    """The items of one instance of ``instance_shape`` ``[H, W, C]``: its pixel positions,
    ``H * W``."""
    return math.prod(instance_shape[:-1])

  def observed_shape(self, instance_shape: Sequence[int]) -> tuple[int, ...]:
    """The shape the judge reads for an instance of ``instance_shape`` ``[H, W, C]``:
    ``[H, W, C + 1]``, the mask plane first."""
    return (*instance_shape[:-1], instance_shape[-1] + 1)

  def legal(self, x: jax.Array) -> jax.Array:
    """``[games, H * W]`` bool: the pixels of images ``x`` ``[games, H, W, C]`` that may be
    revealed, those nonzero in some channel."""
    return (jnp.abs(x) > 0).any(-1).reshape(x.shape[0], -1)

  def observe(self, x: jax.Array, revealed: jax.Array) -> jax.Array:
    """``[games, H, W, C + 1]``: images ``x`` ``[games, H, W, C]`` as the judge sees them with
    the pixels ``revealed`` (``[games, H * W]`` bool): the mask, then the pixel values where
    revealed and zeros elsewhere."""
    mask = revealed.reshape(x.shape[:-1])[..., None].astype(x.dtype)
    return jnp.concatenate([mask, x * mask], axis=-1)


def random_reveal(rng: jax.Array, legal: jax.Array, k: int) -> jax.Array:
  """``[games, items]`` bool: ``k`` distinct legal items per game drawn uniformly (all legal items
  when a game has fewer than ``k``)."""
  scores = jnp.where(legal, jax.random.uniform(rng, legal.shape), -1.0)
  _, top = jax.lax.top_k(scores, k)
  picked = jax.nn.one_hot(top, legal.shape[-1], dtype=jnp.bool_).any(-2)
  return picked & legal
