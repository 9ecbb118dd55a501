"""The debate experiment: ``kind = "debate"``.

For each k: train the sparse-pixel judge (core engine), then score judge alone, consultancy and
debate (with and without precommit) on the test images, and a matrix of players (honest x liar) to
show that search beats greedy beats random. Finished evaluations are saved under ``games/`` so an
interrupted run picks up where it stopped (the judge resumes from its checkpoint).
"""

from __future__ import annotations

import json
import math

import numpy as np

from superalign.core import mesh as mesh_lib
from superalign.core.errors import ConfigError
from superalign.core.metrics import proportion_ci
from superalign.core.rng import stream_seed
from superalign.core.files import cached
from superalign.oversight import players as players_lib
from superalign.oversight import protocols, report
from superalign.parties.judge import load_pixel_task, train_judge

FIRST = ("honest", "liar")
VARIANTS = ("precommit", "no_precommit")


def validate(config) -> None:
  d = config.debate
  for name in ("train", "val", "test"):
    if name not in config.data.splits:
      raise ConfigError(f"data.splits: needs a {name!r} split; has {', '.join(config.data.splits)}")
  if not d.ks or any(int(k) < 1 for k in d.ks):
    raise ConfigError(f"debate.ks={tuple(d.ks)}: needs one or more positive numbers of reveals")
  for key in ("honest", "liar"):
    if d[key] not in players_lib.PLAYERS:
      raise ConfigError(f"debate.{key}={d[key]!r}: valid: {', '.join(players_lib.PLAYERS)}")
  for name in d.matrix_players:
    if name not in players_lib.PLAYERS:
      raise ConfigError(f"debate.matrix_players: {name!r} is not a player; valid: "
                        f"{', '.join(players_lib.PLAYERS)}")
  if d.first not in FIRST:
    raise ConfigError(f"debate.first={d.first!r}: valid: {', '.join(FIRST)}")
  if not d.variants:
    raise ConfigError(f"debate.variants=(): needs one or more of {', '.join(VARIANTS)}")
  for v in d.variants:
    if v not in VARIANTS:
      raise ConfigError(f"debate.variants: {v!r} is not a variant; valid: {', '.join(VARIANTS)}")
  for key in ("num_simulations", "max_considered", "chunk", "judge_alone_draws"):
    if not d[key] > 0:
      raise ConfigError(f"debate.{key}={d[key]!r}: must be positive")
  for key in ("num_images", "matrix_images"):
    if d[key] < 0:
      raise ConfigError(f"debate.{key}={d[key]!r}: must be zero (all) or positive")


def _player(config, name: str):
  d = config.debate
  return players_lib.make(name, num_simulations=d.num_simulations,
                          max_considered=d.max_considered, chunk=d.greedy_chunk)


def _row(judge_accuracy: np.ndarray, honest_win: np.ndarray, **extra) -> dict:
  return {"judge_accuracy": proportion_ci(judge_accuracy),
          "honest_win_rate": proportion_ci(honest_win), **extra}


def evaluate_k(config, arena: protocols.Arena, x: np.ndarray, y: np.ndarray, k: int,
               num_classes: int, workdir: str) -> dict:
  """Every protocol at ``k`` reveals on images ``x`` with labels ``y``."""
  d = config.debate
  seed = lambda name: stream_seed(config.seed, f"debate/{name}")
  rows = {}
  alone = cached(workdir, f"games/k{k}_judge_alone", lambda: {"accuracy": protocols.judge_alone(
      arena, x, y, k, d.judge_alone_draws, seed("judge_alone"))})["accuracy"]
  rows["judge_alone"] = _row(alone, alone, draws=d.judge_alone_draws)
  consult = cached(workdir, f"games/k{k}_consultancy_{d.honest}",
                   lambda: protocols.consultancy(arena, x, y, k, _player(config, d.honest),
                                                 seed("consultancy")))
  rows["consultancy"] = _row(
      0.5 * (consult["honest"] + consult["lying"]), consult["honest"],
      honest_advisor_accuracy=proportion_ci(consult["honest"]),
      lying_advisor_accuracy=proportion_ci(consult["lying"]), advisor=d.honest)

  def play_debate(h: str, lie: str, variant: str, m: int) -> dict[str, np.ndarray]:
    # Keyed by everything that decides the games: the matrix reuses the main debate's cell.
    name = f"games/k{k}_debate_{variant}_{h}_vs_{lie}_{d.first}_{m}"
    return cached(workdir, name, lambda: protocols.debate(
        arena, x[:m], y[:m], k, _player(config, h), _player(config, lie),
        num_classes=num_classes, precommit=variant == "precommit", first=d.first,
        seed=seed("games")))

  for variant in d.variants:
    game = play_debate(d.honest, d.liar, variant, len(y))
    rows[f"debate_{variant}"] = _row(game["wins"], game["wins"],
                                     game_win_rate=proportion_ci(game["v0"] > 0),
                                     honest=d.honest, liar=d.liar, first=d.first)
  out = {"protocols": rows}
  best_debate = max(rows[f"debate_{v}"]["judge_accuracy"]["mean"] for v in d.variants)
  out["debate_minus_judge_alone"] = best_debate - rows["judge_alone"]["judge_accuracy"]["mean"]
  out["debate_minus_consultancy"] = best_debate - rows["consultancy"]["judge_accuracy"]["mean"]

  if d.matrix_players and d.matrix_images:
    m = min(d.matrix_images, len(y))
    matrix = {}
    for h in d.matrix_players:
      matrix[h] = {}
      for lie in d.matrix_players:
        game = play_debate(h, lie, "precommit", m)
        matrix[h][lie] = {"honest_win_rate": proportion_ci(game["wins"]),
                          "game_win_rate": proportion_ci(game["v0"] > 0)}
    out["player_matrix"], out["player_matrix_images"] = matrix, m
    wins = lambda h, lie: play_debate(h, lie, "precommit", m)["wins"]
    names = list(d.matrix_players)
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


def run(config, workdir: str) -> dict:
  d = config.debate
  source, splits, evidence = load_pixel_task(config, "debate")
  test = splits["test"]
  n = min(d.num_images, len(test)) if d.num_images else len(test)
  x, y = test.x[:n], test.y[:n]
  mesh = mesh_lib.make_mesh(dict(config.mesh))

  by_k, throughput = {}, {}
  for k in (int(k) for k in d.ks):
    judge = train_judge(config, evidence, splits["train"], splits["val"], source.spec, k, workdir)
    arena = protocols.Arena(evidence, judge.state, mesh, d.chunk)
    by_k[str(k)] = {
        # train_judge's last evaluation: val accuracy on one fixed draw of k pixels
        "judge_val_accuracy": judge.fit.history[-1]["accuracy"],
        **evaluate_k(config, arena, x, y, k, source.spec.num_classes, workdir)}
    throughput[str(k)] = arena.throughput.as_dict()

  return {
      "data": config.data.name, "judge_model": config.model.name, "num_images": n,
      "players": {"honest": d.honest, "liar": d.liar, "first": d.first,
                  "num_simulations": d.num_simulations, "max_considered": d.max_considered},
      "by_k": by_k, "throughput": throughput, "published": report.PUBLISHED,
  }


plot = report.plot


def summary(results: dict) -> str:
  return report.table(results) + "\n" + json.dumps(
      {k: {"games_per_s": round(t["games_per_s"], 1),
           "judge_evaluations_per_s": round(t["judge_evaluations_per_s"])}
       for k, t in results["throughput"].items()})
