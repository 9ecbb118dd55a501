"""Every debate protocol at ``k`` reveals against one trained judge, with 95% intervals.

Judge alone, consultancy and debate (with and without precommit) on the same images, then a
matrix of players (honest x liar) and paired comparisons of each stronger player against the next
weaker one. Finished games are saved under ``games/`` in the workdir, keyed by everything that
decides them, so an interrupted run picks up where it stopped and the matrix reuses the main
debate's cell.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np

from superalign.results.files import cached
from superalign.results.estimates import proportion_ci
from superalign.core.rng import stream_seed
from superalign.oversight import players as players_lib
from superalign.oversight import protocols


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """Who plays and what is played: the config's ``debate`` block (defaults in
  ``oversight.config``)."""
  honest: str                      # the honest debater, and the consultancy advisor
  liar: str
  first: str                       # who reveals first in debate: "honest" or "liar"
  variants: tuple[str, ...]        # "precommit", "no_precommit"
  num_simulations: int             # MCTS
  max_considered: int              # MCTS
  greedy_chunk: int                # greedy
  judge_alone_draws: int
  matrix_players: tuple[str, ...]  # () = no matrix
  matrix_images: int

  @classmethod
  def from_config(cls, block: Mapping) -> Evaluation:
    """From the config's ``debate`` block (lists become tuples)."""
    values = {f.name: block[f.name] for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()})

  def player(self, name: str):
    """The registered player ``name`` (``players.PLAYERS``), built with this evaluation's search
    and batching settings."""
    return players_lib.make(name, num_simulations=self.num_simulations,
                            max_considered=self.max_considered, chunk=self.greedy_chunk)


def _row(judge_accuracy: np.ndarray, honest_win: np.ndarray, **extra) -> dict:
  return {"judge_accuracy": proportion_ci(judge_accuracy),
          "honest_win_rate": proportion_ci(honest_win), **extra}


def evaluate_k(setup: Evaluation, arena: protocols.Arena, x: np.ndarray, y: np.ndarray, k: int,
               num_classes: int, seed: int, workdir: str) -> dict:
  """Every protocol at ``k`` reveals on images ``x`` with labels ``y``; games draw from streams
  ``debate/<protocol>`` of ``seed``."""
  s = setup
  stream = lambda name: stream_seed(seed, f"debate/{name}")
  rows = {}
  alone = cached(workdir, f"games/k{k}_judge_alone", lambda: {"accuracy": protocols.judge_alone(
      arena, x, y, k, s.judge_alone_draws, stream("judge_alone"))}, keys=("accuracy",))["accuracy"]
  rows["judge_alone"] = _row(alone, alone, draws=s.judge_alone_draws)
  consult = cached(workdir, f"games/k{k}_consultancy_{s.honest}",
                   lambda: protocols.consultancy(arena, x, y, k, s.player(s.honest),
                                                 stream("consultancy")), keys=("honest", "lying"))
  rows["consultancy"] = _row(
      0.5 * (consult["honest"] + consult["lying"]), consult["honest"],
      honest_advisor_accuracy=proportion_ci(consult["honest"]),
      lying_advisor_accuracy=proportion_ci(consult["lying"]), advisor=s.honest)

  def play_debate(h: str, lie: str, variant: str, m: int) -> dict[str, np.ndarray]:
    # Keyed by everything that decides the games: the matrix reuses the main debate's cell.
    name = f"games/k{k}_debate_{variant}_{h}_vs_{lie}_{s.first}_{m}"
    return cached(workdir, name, lambda: protocols.debate(
        arena, x[:m], y[:m], k, s.player(h), s.player(lie), num_classes=num_classes,
        precommit=variant == "precommit", first=s.first, seed=stream("games")),
        keys=("wins", "v0"))

  for variant in s.variants:
    game = play_debate(s.honest, s.liar, variant, len(y))
    rows[f"debate_{variant}"] = _row(game["wins"], game["wins"],
                                     game_win_rate=proportion_ci(game["v0"] > 0),
                                     honest=s.honest, liar=s.liar, first=s.first)
  out = {"protocols": rows}
  best_debate = max(rows[f"debate_{v}"]["judge_accuracy"]["mean"] for v in s.variants)
  out["debate_minus_judge_alone"] = best_debate - rows["judge_alone"]["judge_accuracy"]["mean"]
  out["debate_minus_consultancy"] = best_debate - rows["consultancy"]["judge_accuracy"]["mean"]

  if s.matrix_players and s.matrix_images:
    m = min(s.matrix_images, len(y))
    matrix = {}
    for h in s.matrix_players:
      matrix[h] = {}
      for lie in s.matrix_players:
        game = play_debate(h, lie, "precommit", m)
        matrix[h][lie] = {"honest_win_rate": proportion_ci(game["wins"]),
                          "game_win_rate": proportion_ci(game["v0"] > 0)}
    out["player_matrix"], out["player_matrix_images"] = matrix, m
    wins = lambda h, lie: play_debate(h, lie, "precommit", m)["wins"]
    names = list(s.matrix_players)
    # Each stronger player against the next weaker one, on the same images in both roles.
    out["player_comparisons"] = {
        f"{a}_vs_{b}": {"as_honest": paired_difference(wins(a, b), wins(b, b)),
                        "as_liar": paired_difference(wins(b, b), wins(b, a))}
        for a, b in zip(names, names[1:])}
  return out


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict:
  """Honest win rate ``a - b`` over the same images, with an exact two-sided sign test on the
  images where exactly one of the two won (McNemar's test)."""
  a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
  n = a_only + b_only
  tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1)) / 2 ** n if n else 1.0
  return {"difference": float(np.mean(a) - np.mean(b)), "a_only": a_only, "b_only": b_only,
          "p_value": min(1.0, 2 * tail)}
