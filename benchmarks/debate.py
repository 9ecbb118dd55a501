"""Debate throughput: a full precommit evaluation with tree-search players, and its peers.

Trains the digits judge for k reveals (briefly: throughput does not depend on its accuracy), then
plays MCTS against MCTS with precommit (every lie of every image) and reports games per second and
judge leaf evaluations per second, compilation timed apart. Peers in the same run, on the first
chunk of the same games: the same search with mctx's own backward pass (the quadratic one that
``superalign.oversight.search`` replaces), and the greedy player.

  python benchmarks/debate.py                       # k=6, 300 images, 200 simulations
  python benchmarks/debate.py --images 60 --k 4     # quicker

The last line is JSON. The issue's target: k=6, 200 simulations, 300 digits images in <= 600 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time

import jax
import numpy as np

from experiments.debate import digits
from superalign.core import mesh as mesh_lib
from superalign.core.spec import TrainSpec
from superalign.oversight import players, protocols, search
from superalign.parties.classifier import Model
from superalign.parties.judge import load_pixel_task, train_judge


@contextlib.contextmanager
def _stock_mctx():
  """Traces searches with mctx's own backward pass (undoes ``search.linear_backward``)."""
  patched = search.linear_backward
  search.linear_backward = contextlib.nullcontext
  try:
    yield
  finally:
    search.linear_backward = patched


def _evaluate(arena, x, y, k, player, num_classes):
  t = time.perf_counter()
  out = protocols.debate(arena, x, y, k, player, player, num_classes=num_classes, precommit=True,
                         first="honest", seed=0)
  return out, time.perf_counter() - t


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--k", type=int, default=6)
  parser.add_argument("--images", type=int, default=300)
  parser.add_argument("--simulations", type=int, default=200)
  parser.add_argument("--chunk", type=int, default=512)
  parser.add_argument("--judge-steps", type=int, default=300)
  parser.add_argument("--peer-games", type=int, default=256,
                      help="games (image x lie) the peers play, from the start of the same set")
  args = parser.parse_args()

  config = digits.get_config()
  config.mesh.num_devices = 1
  config.train.num_steps = args.judge_steps
  config.train.checkpoint_every = 0
  spec, model = TrainSpec.from_config(config), Model.from_blocks(config.model, config.data)
  source, splits, evidence = load_pixel_task(config.data, model.name, "debate")
  with tempfile.TemporaryDirectory() as workdir:
    judge = train_judge(spec, model, evidence, splits["train"], splits["val"], source.spec,
                        args.k, workdir)
  mesh = mesh_lib.make_mesh(spec.mesh)
  x, y = splits["test"].x[:args.images], splits["test"].y[:args.images]
  classes = source.spec.num_classes
  mcts = players.MCTS(num_simulations=args.simulations)

  arena = protocols.Arena(evidence, judge.state, mesh, args.chunk)
  out, wall = _evaluate(arena, x, y, args.k, mcts, classes)
  ours = arena.throughput.as_dict()

  peer_images = max(1, -(-args.peer_games // (classes - 1)))
  peers = {}
  with _stock_mctx():
    stock = protocols.Arena(evidence, judge.state, mesh, args.chunk)
    _evaluate(stock, x[:peer_images], y[:peer_images], args.k, mcts, classes)
    peers["mctx_backward"] = stock.throughput.as_dict()
  fast = protocols.Arena(evidence, judge.state, mesh, args.chunk)
  _evaluate(fast, x[:peer_images], y[:peer_images], args.k, mcts, classes)
  peers["linear_backward_same_games"] = fast.throughput.as_dict()
  greedy = protocols.Arena(evidence, judge.state, mesh, args.chunk)
  _evaluate(greedy, x, y, args.k, players.Greedy(), classes)
  peers["greedy"] = greedy.throughput.as_dict()

  result = {
      "device": jax.devices()[0].device_kind, "k": args.k, "images": len(y),
      "games": int(out["v0"].size), "simulations": args.simulations,
      "wall_s": round(wall, 1), "play_s": round(ours["seconds"], 1),
      "compile_s": round(ours["compile_seconds"], 1),
      "games_per_s": round(ours["games_per_s"], 1),
      "judge_evaluations_per_s": round(ours["judge_evaluations_per_s"]),
      "target_wall_s": 600, "meets_target": wall <= 600,
      "honest_win_rate": float(np.mean(out["wins"])),
      "speedup_vs_mctx_backward": round(peers["linear_backward_same_games"]["games_per_s"]
                                        / peers["mctx_backward"]["games_per_s"], 2),
      "peers": {name: {"games_per_s": round(p["games_per_s"], 1),
                       "judge_evaluations_per_s": round(p["judge_evaluations_per_s"]),
                       "games": p["games"], "play_s": round(p["seconds"], 2)}
                for name, p in peers.items()},
  }
  print(f"k={args.k}: {result['games']} precommit games ({len(y)} images x {classes - 1} lies), "
        f"MCTS {args.simulations} simulations a move: {result['wall_s']} s "
        f"({result['compile_s']} s compiling), {result['games_per_s']} games/s, "
        f"{result['judge_evaluations_per_s']:,} judge evaluations/s")
  print(f"linear backward vs mctx's: {result['speedup_vs_mctx_backward']}x on "
        f"{peers['mctx_backward']['games']} games")
  print(json.dumps(result))


if __name__ == "__main__":
  main()
