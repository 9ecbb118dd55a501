"""Judge alone, consultancy and debate as games played in an ``Arena``.

Player 0 always argues for the true answer, so ``v0 > 0`` means the judge got it right:

* judge alone: k random reveals; the judge's top answer must be the truth.
* consultancy: one advisor makes all k reveals: honest (player 0, arguing for the truth) or
  lying (player 1, arguing against it); each image is scored under both, weighted 50/50.
* debate: players alternate; with precommit the liar commits to one wrong answer per game,
  every wrong answer is tried, and the honest player wins the image only if it beats every lie;
  without precommit the liar argues for whatever beats the truth.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from superalign.core import mesh as mesh_lib
from superalign.core.apply import batched_apply
from superalign.core.rng import stream_seed
from superalign.oversight import game as game_lib
from superalign.oversight import players as players_lib
from superalign.parties import judge as judge_lib


@dataclasses.dataclass
class Throughput:
  """Work done by an arena: games played, judge evaluations, and the seconds they took; compiling
  (ahead of time, once per program) is counted apart in ``compile_seconds``."""
  games: int = 0
  judge_evaluations: int = 0
  seconds: float = 0.0
  compile_seconds: float = 0.0

  def as_dict(self) -> dict:
    """The counts and seconds as JSON, with ``games_per_s`` and ``judge_evaluations_per_s``
    beside them."""
    s = max(self.seconds, 1e-9)
    return {**dataclasses.asdict(self), "games_per_s": self.games / s,
            "judge_evaluations_per_s": self.judge_evaluations / s}


class Arena:
  """Plays batches of games against one judge: fixed-size chunks sharded over the mesh's batch
  axes, one compiled program per (move order, players).

  The judge is ``judge_apply(judge_params, observations) -> probabilities``; by default a trained
  classifier's TrainState (``judge.predict``)."""

  def __init__(self, evidence, judge_params, mesh: Mesh, chunk: int,
               judge_apply: Callable = judge_lib.predict):
    shards = mesh_lib.batch_size_per_shard(mesh)
    self.evidence, self.judge_params, self.mesh = evidence, judge_params, mesh
    self.judge_apply = judge_apply
    self.chunk = -(-chunk // shards) * shards
    self.throughput = Throughput()
    self._compiled: dict[tuple, Callable] = {}

  def _program(self, movers: tuple[int, ...], players: tuple) -> Callable:
    """The game for this move order and these players, compiled ahead of time per chunk shape
    (so compiling is timed apart from playing)."""
    evidence, judge_apply, mesh = self.evidence, self.judge_apply, self.mesh

    def play(judge_params, batch, rng):
      x = batch["x"]
      game = game_lib.Game(x, evidence.legal(x), batch["claims"], movers)
      judge = lambda obs: judge_apply(judge_params, obs)
      _, v0 = game_lib.play(evidence, judge, game, players, rng)
      return v0

    def run(*args):
      key = (movers, players, args[1]["x"].shape)
      if key not in self._compiled:
        t0 = time.perf_counter()
        self._compiled[key] = jax.jit(
            play, out_shardings=mesh_lib.batch_sharding(mesh)).lower(*args).compile()
        self.throughput.compile_seconds += time.perf_counter() - t0
      return self._compiled[key](*args)

    return run

  def play(self, x: np.ndarray, claims: np.ndarray, movers: Sequence[int], players: tuple,
           seed: int) -> np.ndarray:
    """``v0`` for each game ``(x[i], claims[i])``; player 0 argues for the truth. Chunk ``i``
    plays with the key ``fold_in(key(seed), i)``."""
    movers, players = tuple(int(m) for m in movers), tuple(players)
    n, shards = len(x), mesh_lib.batch_size_per_shard(self.mesh)
    chunk = min(self.chunk, -(-n // shards) * shards)
    items = self.evidence.num_items(x.shape[1:])
    evals_per_game = 1 + sum(players[m].judge_evaluations(items) for m in movers)
    t0, compiling = time.perf_counter(), self.throughput.compile_seconds
    v0 = batched_apply(self._program(movers, players), self.judge_params,
                       {"x": x, "claims": claims}, self.mesh, chunk, seed=seed)
    self.throughput.seconds += (time.perf_counter() - t0 -
                                (self.throughput.compile_seconds - compiling))
    self.throughput.games += n
    self.throughput.judge_evaluations += n * evals_per_game
    return v0


def _claims(y: np.ndarray, lies: np.ndarray | None = None) -> np.ndarray:
  other = np.full_like(y, game_lib.UNCOMMITTED) if lies is None else lies
  return np.stack([y, other], axis=1).astype(np.int32)


def judge_alone(arena: Arena, x: np.ndarray, y: np.ndarray, k: int, draws: int,
                seed: int) -> np.ndarray:
  """Per-image accuracy of the judge on ``k`` random reveals, averaged over ``draws`` draws."""
  rand = players_lib.Random()
  reps = np.repeat(np.arange(len(y)), draws)
  v0 = arena.play(x[reps], _claims(y[reps]), game_lib.movers("judge_alone", k), (rand, rand), seed)
  return (v0 > 0).reshape(len(y), draws).mean(1)


def consultancy(arena: Arena, x: np.ndarray, y: np.ndarray, k: int, advisor,
                seed: int) -> dict[str, np.ndarray]:
  """Per-image judge correctness with an honest and with a lying advisor making all k reveals."""
  idle = players_lib.Random()  # the side without an advisor never moves
  out = {}
  for side, name in ((0, "honest"), (1, "lying")):
    players = (advisor, idle) if side == 0 else (idle, advisor)
    v0 = arena.play(x, _claims(y), game_lib.movers("consultancy", k, first=side), players,
                    stream_seed(seed, f"consultancy/{name}"))
    out[name] = v0 > 0
  return out


def debate(arena: Arena, x: np.ndarray, y: np.ndarray, k: int, honest, liar, *,
           num_classes: int, precommit: bool, first: str, seed: int) -> dict[str, np.ndarray]:
  """Per-image honest wins (``wins``) and per-game payoffs (``v0``, ``[images, lies]`` with
  precommit). ``first``: ``"honest"`` or ``"liar"`` makes the first reveal."""
  movers = game_lib.movers("debate", k, first=0 if first == "honest" else 1)
  if not precommit:
    v0 = arena.play(x, _claims(y), movers, (honest, liar), seed)
    return {"wins": v0 > 0, "v0": v0[:, None]}
  n, lies_per_image = len(y), num_classes - 1
  # Lie j of image i is the (j+1)-th answer after the truth: every wrong answer exactly once.
  lies = (y[:, None] + 1 + np.arange(lies_per_image)[None]) % num_classes
  reps = np.repeat(np.arange(n), lies_per_image)
  v0 = arena.play(x[reps], _claims(y[reps], lies.ravel()), movers, (honest, liar), seed)
  v0 = v0.reshape(n, lies_per_image)
  return {"wins": (v0 > 0).all(1), "v0": v0, "lies": lies}
