"""Debate players: uniform random, greedy (one-ply lookahead) and Monte Carlo tree search.

A player is a frozen (hashable, so jit-static) dataclass called at a turn with the game, the state
and a key; it returns one item to reveal per game. Players are registered in ``PLAYERS`` by the
names configs use (``make(name, ...)`` builds one). Every player is batched over games and pure,
so a whole game (``game.play``) is one jitted function with the judge evaluated in batches.

Tree search is ``mctx``'s Gumbel MuZero policy over the exact game: the "model" is ``game.reveal``
(no learned dynamics), the prior is uniform over legal moves, and a leaf's value is the judge's
verdict on the evidence revealed so far, from the perspective of the player to move there. Turns
alternate in debate (discount -1 flips the perspective) and repeat in consultancy (discount +1).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import mctx

from superalign.config.registry import Registry
from superalign.oversight import game as game_lib, search
from superalign.oversight.game import Evidence, Game, Judge, State

_MASKED = -1e9  # prior logit of an illegal move (finite, so a game with none left stays finite)

PLAYERS: Registry = Registry("debate player")   # configs name players: "random", "greedy", ...


def _legal_now(game: Game, state: State) -> tuple[jax.Array, jax.Array]:
  """Legal moves, and whether a game has any (a game with none passes: every move is a no-op)."""
  legal = game_lib.legal_moves(game, state)
  return legal, legal.any(-1)


@PLAYERS.register("random")
@dataclasses.dataclass(frozen=True)
class Random:
  """Reveals a uniformly random legal item."""

  def judge_evaluations(self, num_items: int) -> int:
    """Judge evaluations one move costs per game (for throughput figures)."""
    return 0

  def __call__(self, evidence: Evidence, judge: Judge, game: Game, state: State, turn: int,
               rng: jax.Array) -> jax.Array:
    legal, _ = _legal_now(game, state)
    noise = jax.random.gumbel(rng, legal.shape)
    return jnp.argmax(jnp.where(legal, noise, -jnp.inf), axis=-1)


def one_ply_values(evidence: Evidence, judge: Judge, game: Game, state: State, turn: int,
                   chunk: int) -> jax.Array:
  """``[games, items]``: the mover's payoff if the judge decided right after revealing each item
  (``chunk`` items per judge batch of ``games x chunk`` evaluations)."""
  num_items = game.legal.shape[-1]
  sign = game_lib.player_sign(game.movers[turn])

  def score(item):
    action = jnp.full(game.legal.shape[:1], item)
    return sign * game_lib.value(evidence, judge, game, game_lib.reveal(game, state, action))

  return jax.lax.map(score, jnp.arange(num_items), batch_size=min(chunk, num_items)).T


@PLAYERS.register("greedy")
@dataclasses.dataclass(frozen=True)
class Greedy:
  """Reveals the item that most raises its own payoff if the judge decided right after."""
  chunk: int = 64

  def judge_evaluations(self, num_items: int) -> int:
    """Judge evaluations one move costs per game: one per item (``num_items``), each candidate
    reveal scored."""
    return num_items

  def __call__(self, evidence: Evidence, judge: Judge, game: Game, state: State, turn: int,
               rng: jax.Array) -> jax.Array:
    del rng
    legal, _ = _legal_now(game, state)
    scores = one_ply_values(evidence, judge, game, state, turn, self.chunk)
    return jnp.argmax(jnp.where(legal, scores, -jnp.inf), axis=-1)


@PLAYERS.register("mcts")
@dataclasses.dataclass(frozen=True)
class MCTS:
  """Gumbel MuZero search (Danihelka et al. 2022) with ``num_simulations`` judge-evaluated leaves
  per move; the root considers the ``max_considered`` best moves by Gumbel-perturbed prior.

  Priors are one-ply judge values as logits (``prior_scale`` x the mover's payoff after each
  reveal; 0 = uniform), computed once at the root (the greedy player's scores) and reused at every
  node below it, signed for the player to move there: the effect of a pixel on the judge is close
  to additive, so the root's ordering is a good, free ordering of replies deeper down. Search thus
  refines greedy play and tries each node's strongest replies first. (Measured alternatives: a
  uniform prior, and a first-order prior from the judge's gradient at every node, were both
  weaker, the gradient one 4x slower; so was a leaf value after a random
  completion of the remaining moves.)

  ``gumbel_scale``: 1 samples the move from the improved policy (what training wants); a player
  that plays to win takes the best move, and a tiny scale only breaks ties among the uniform prior
  logits (a random subset of moves is considered, then search values decide)."""
  num_simulations: int = 200
  max_considered: int = 16
  gumbel_scale: float = 1e-3
  prior_scale: float = 10.0      # 0: uniform priors
  chunk: int = 64                # items per judge batch for the root prior

  def judge_evaluations(self, num_items: int) -> int:
    """Judge evaluations one move costs per game: ``num_simulations`` leaves and the root, plus
    one per item (``num_items``) for the root prior unless ``prior_scale`` is 0."""
    return self.num_simulations + 1 + (num_items if self.prior_scale else 0)

  def __call__(self, evidence: Evidence, judge: Judge, game: Game, state: State, turn: int,
               rng: jax.Array) -> jax.Array:
    order = jnp.asarray(game.movers + (game.movers[-1],), jnp.int32)  # padded: turn == num_moves
    last = game.num_moves

    def prior_logits(s: State, scores: jax.Array | float = 0.0) -> jax.Array:
      legal, _ = _legal_now(game, s)
      return jnp.where(legal, self.prior_scale * scores, _MASKED)

    def recurrent_fn(params, key, action, s: State):
      del params, key
      legal, has_legal = _legal_now(game, s)
      was_legal = jnp.take_along_axis(legal, action[:, None], axis=-1)[:, 0] | ~has_legal
      new = game_lib.reveal(game, s, action)
      mover, next_mover = order[s.turn], order[new.turn]
      v0 = game_lib.value(evidence, judge, game, new)
      scores = game_lib.player_sign(next_mover)[:, None] * root_v0_after
      done = new.turn >= last
      # A search never prefers an illegal reveal: it ends the game as a loss for its maker.
      reward = jnp.where(was_legal, jnp.where(done, game_lib.player_sign(mover) * v0, 0.0), -1.0)
      discount = jnp.where(done | ~was_legal, 0.0, jnp.where(next_mover == mover, 1.0, -1.0))
      leaf_value = jnp.where(done, 0.0, game_lib.player_sign(next_mover) * v0)
      out = mctx.RecurrentFnOutput(reward=reward, discount=discount,
                                   prior_logits=prior_logits(new, scores), value=leaf_value)
      return out, new

    legal, has_legal = _legal_now(game, state)
    root_scores = (one_ply_values(evidence, judge, game, state, turn, self.chunk)
                   if self.prior_scale else jnp.zeros(legal.shape))
    # v0 after revealing each item now; reused as the prior below the root (see the docstring).
    root_v0_after = game_lib.player_sign(game.movers[turn]) * root_scores
    root_logits = prior_logits(state, root_scores)
    root = mctx.RootFnOutput(
        prior_logits=root_logits,
        value=game_lib.player_sign(game.movers[turn]) * game_lib.value(evidence, judge, game, state),
        embedding=state)
    with search.linear_backward():
      out = mctx.gumbel_muzero_policy(
          params=(), rng_key=rng, root=root, recurrent_fn=recurrent_fn,
          num_simulations=self.num_simulations, invalid_actions=~legal & has_legal[:, None],
          max_depth=last - turn, max_num_considered_actions=self.max_considered,
          gumbel_scale=self.gumbel_scale)
    return out.action


def make(name: str, **kwargs) -> Random | Greedy | MCTS:
  """A player by its registered name; ``kwargs`` go to the players that take them (MCTS:
  ``num_simulations``, ``max_considered``; Greedy: ``chunk``)."""
  cls = PLAYERS[name]
  fields = {f.name for f in dataclasses.fields(cls)}
  return cls(**{k: v for k, v in kwargs.items() if k in fields})

