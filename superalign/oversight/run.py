"""The debate experiment: ``kind = "debate"``.

For each k: train the sparse-pixel judge (core engine), then score judge alone, consultancy and
debate (with and without precommit) on the test images, and a matrix of players (honest x liar) to
show that search beats greedy beats random (``oversight.evaluation``). Finished evaluations are
saved under ``games/`` so an interrupted run picks up where it stopped (the judge resumes from its
checkpoint).
"""

from __future__ import annotations

import json

from superalign.config import schema
from superalign.core import mesh as mesh_lib
from superalign.core.spec import TrainSpec
from superalign.oversight import config as debate_config, players, protocols, report
from superalign.oversight.evaluation import Evaluation, evaluate_k
from superalign.parties.classifier import Model
from superalign.parties.judge import check_reveals, load_pixel_task, train_judge

SPLITS = debate_config.SPLITS
_PLAYER = schema.one_of(*players.PLAYERS.names)
RULES = {**debate_config.RULES, "debate.honest": _PLAYER, "debate.liar": _PLAYER,
         "debate.matrix_players": schema.each(_PLAYER, non_empty=False)}


def run(config, workdir: str) -> dict:
  """For each ``debate.ks``: trains the sparse-pixel judge, then plays every protocol and the
  player matrix on the first ``debate.num_images`` test images; returns the results per k
  (``by_k``) with the arena's throughput."""
  d = config.debate
  spec, model = TrainSpec.from_config(config), Model.from_blocks(config.model, config.data)
  source, splits, evidence = load_pixel_task(config.data, model.name, "debate")
  check_reveals(evidence, source.spec, tuple(d.ks), "debate.ks")
  test = splits["test"]
  n = min(d.num_images, len(test)) if d.num_images else len(test)
  x, y = test.x[:n], test.y[:n]
  mesh, setup = mesh_lib.make_mesh(spec.mesh), Evaluation.from_config(d)

  by_k, throughput = {}, {}
  for k in (int(k) for k in d.ks):
    judge = train_judge(spec, model, evidence, splits["train"], splits["val"], source.spec, k,
                        workdir)
    arena = protocols.Arena(evidence, judge.state, mesh, d.chunk)
    by_k[str(k)] = {
        # train_judge's last evaluation: val accuracy on one fixed draw of k pixels
        "judge_val_accuracy": judge.fit.history[-1]["accuracy"],
        **evaluate_k(setup, arena, x, y, k, source.spec.num_classes, spec.seed, workdir)}
    throughput[str(k)] = arena.throughput.as_dict()

  return {
      "data": config.data.name, "judge_model": model.name, "num_images": n,
      "players": {"honest": d.honest, "liar": d.liar, "first": d.first,
                  "num_simulations": d.num_simulations, "max_considered": d.max_considered},
      "by_k": by_k, "throughput": throughput, "published": report.PUBLISHED,
  }


plot = report.plot


def summary(results: dict) -> str:
  """The debate table (``report.table``) and, per k, the arena's games and judge evaluations
  per second."""
  return report.table(results) + "\n" + json.dumps(
      {k: {"games_per_s": round(t["games_per_s"], 1),
           "judge_evaluations_per_s": round(t["judge_evaluations_per_s"])}
       for k, t in results["throughput"].items()})
