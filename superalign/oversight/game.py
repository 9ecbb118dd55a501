"""The debate game (Irving, Christiano and Amodei 2018), batched over games, in pure JAX.

A game is one instance (an image) whose evidence items (its pixels) start hidden. Players move in a
fixed order; a move reveals one item. Each player argues for an answer (its *claim*); a claim of
``UNCOMMITTED`` means "any answer but the other player's". When the moves run out, a judge that sees
only the revealed evidence gives a distribution ``p`` over answers and the payoff to player 0 is

    v0 = (p[c0] - p[c1]) / (p[c0] + p[c1])     in [-1, 1],

where ``p[c1]`` is the best other answer's probability when player 1 is uncommitted. Player 0 wins
when ``v0 > 0``: the judge prefers its claim among the two precommitted ones, or ranks it first of
all answers. The game is zero-sum: player 1 receives ``-v0``.

Everything that knows about pixels lives in an ``Evidence`` (``legal`` items and the judge's
``observe``-ation of a revealed set), so feature subsets or text spans plug in without touching
this module or the search. Protocols are move orders and claims:

  judge alone      random reveals, claims (truth, UNCOMMITTED)
  consultancy      one player makes every move
  debate           players alternate; with precommit, one game per wrong answer
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
from flax import struct

UNCOMMITTED = -1

# probs = judge(observation): [games, answers]
Judge = Callable[[jax.Array], jax.Array]


class Evidence(Protocol):
  """What a player can reveal about an instance, and what the judge then sees."""

  def num_items(self, instance_shape: Sequence[int]) -> int:
    """Evidence items per instance (the action space of a move)."""

  def legal(self, x: jax.Array) -> jax.Array:
    """``[games, items]`` bool: items a player may reveal (the judge's training support)."""

  def observe(self, x: jax.Array, revealed: jax.Array) -> jax.Array:
    """The judge's input for instances ``x`` with ``revealed`` ``[games, items]`` shown."""


@struct.dataclass
class Game:
  """Per-game constants: the instance, the items that may be revealed, and both claims."""
  x: jax.Array             # [games, ...] instances
  legal: jax.Array         # [games, items] bool
  claims: jax.Array        # [games, 2] int32: player 0's and player 1's answer (or UNCOMMITTED)
  movers: tuple[int, ...] = struct.field(pytree_node=False)  # who reveals at each turn

  @property
  def num_moves(self) -> int:
    """The moves of a game: one per entry of ``movers``."""
    return len(self.movers)


@struct.dataclass
class State:
  """Where a batch of games stands: ``revealed`` ``[games, items]`` bool, the items shown so
  far, and ``turn`` ``[games]`` int32, the moves made."""
  revealed: jax.Array      # [games, items] bool
  turn: jax.Array          # [games] int32, moves made so far

  @classmethod
  def initial(cls, game: Game) -> "State":
    """The start of every game of ``game``: nothing revealed, no move made."""
    return cls(jnp.zeros_like(game.legal), jnp.zeros(game.legal.shape[0], jnp.int32))


def movers(protocol: str, num_moves: int, first: int = 0) -> tuple[int, ...]:
  """Move order: ``debate`` alternates starting with ``first``; ``consultancy`` (and the random
  reveals of ``judge_alone``) give every move to ``first``."""
  if protocol == "debate":
    return tuple((first + t) % 2 for t in range(num_moves))
  if protocol in ("consultancy", "judge_alone"):
    return (first,) * num_moves
  raise ValueError(f"unknown protocol {protocol!r}; valid: debate, consultancy, judge_alone")


def legal_moves(game: Game, state: State) -> jax.Array:
  """Items that may still be revealed: legal and not yet shown."""
  return game.legal & ~state.revealed


def reveal(game: Game, state: State, action: jax.Array) -> State:
  """Reveals item ``action`` ``[games]``. Revealed items stay revealed; an illegal or repeated
  item reveals nothing (the turn still passes), so no item is ever counted twice."""
  onehot = jax.nn.one_hot(action, game.legal.shape[-1], dtype=jnp.bool_)
  return State(state.revealed | (onehot & legal_moves(game, state)), state.turn + 1)


def payoff(probs: jax.Array, claims: jax.Array) -> jax.Array:
  """Player 0's payoff ``v0`` in [-1, 1] from the judge's ``probs`` ``[games, answers]``."""
  p0 = jnp.take_along_axis(probs, claims[:, :1], axis=-1)[:, 0]
  others = jnp.where(jax.nn.one_hot(claims[:, 0], probs.shape[-1], dtype=jnp.bool_), -1.0, probs)
  committed = jnp.take_along_axis(probs, jnp.maximum(claims[:, 1:], 0), axis=-1)[:, 0]
  p1 = jnp.where(claims[:, 1] == UNCOMMITTED, others.max(-1), committed)
  return (p0 - p1) / jnp.maximum(p0 + p1, 1e-12)


def player_sign(player: jax.Array | int) -> jax.Array:
  """+1 for player 0, -1 for player 1: turns ``v0`` into the payoff of ``player``."""
  return 1.0 - 2.0 * jnp.asarray(player, jnp.float32)


def value(evidence: Evidence, judge: Judge, game: Game, state: State) -> jax.Array:
  """``v0`` if the judge decided now, on the evidence revealed so far."""
  return payoff(judge(evidence.observe(game.x, state.revealed)), game.claims)


def play(evidence: Evidence, judge: Judge, game: Game, players: Sequence[Callable],
         rng: jax.Array) -> tuple[State, jax.Array]:
  """Plays every game to the end: ``players[game.movers[t]]`` makes move ``t``.

  Returns the final state and ``v0``. Pure and batched over games: jit it with the judge's
  parameters as an argument (see ``oversight.protocols``)."""
  state = State.initial(game)
  for turn, mover in enumerate(game.movers):
    rng, key = jax.random.split(rng)
    action = players[mover](evidence, judge, game, state, turn, key)
    state = reveal(game, state, action)
  return state, value(evidence, judge, game, state)

