"""SAE training steps per second: superalign against SAELens, on the same CPU in the same run.

    python benchmarks/sae.py [--kinds topk relu] [--shapes 512x4096x4096 128x1024x1024]
                             [--k 32] [--rounds 3] [--per-round 2]

Each shape is ``d_in x width x batch``. Our side is the core engine's jitted train step
(``core.steps.make_train_step`` with ``interp.sae.loss_fn`` and the decoder renormalization, as
``train_sae`` builds it), the state carried from step to step; SAELens' side is
``SAETrainer.step`` on its training SAE (``TopKTrainingSAE``, ``StandardTrainingSAE``): the
forward pass, the dead-latent bookkeeping, backward, gradient clipping and Adam. SAELens runs at
one torch thread and at torch's default thread count (which can be the slower of the two on a
loaded machine): both are reported. Both sides are compiled or warmed first, then timed in
alternating blocks, each step waited on. Human-readable lines first; the last line is one JSON
object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.interp import alternate  # noqa: E402  (each call waits for its step)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--kinds", nargs="+", default=["topk", "relu"], choices=["topk", "relu"])
  p.add_argument("--shapes", nargs="+", default=["512x4096x4096", "128x1024x1024"],
                 help="d_in x width x batch")
  p.add_argument("--k", type=int, default=32, help="TopK's active latents per row")
  p.add_argument("--rounds", type=int, default=3, help="alternating blocks per side")
  p.add_argument("--per-round", type=int, default=2, help="steps per side per block")
  return p.parse_args(argv)


def ours(kind: str, d: int, width: int, batch: int, k: int, rows):
  """One train step of ours per call, the state carried on."""
  import jax
  from superalign.core import mesh as mesh_lib, optim, state as state_lib, steps
  from superalign.interp import sae

  arch = sae.Architecture(kind=kind, width=width, k=k, l1_coefficient=1e-3)
  mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
  tx = optim.make(sae.SAE_SPEC.optim, 1000)
  state, shardings = state_lib.create(arch.builder(d), tx, 0, mesh,
                                      warm={"b_dec": rows.mean(0)})
  step = steps.make_train_step(sae.loss_fn, shardings, mesh, post_update=(sae.normalize_decoder,))
  batch = mesh_lib.shard_batch({"x": rows}, mesh)
  holder = {"state": state}

  def call():
    holder["state"], metrics = step(holder["state"], batch)
    jax.block_until_ready(metrics)
    return metrics

  return call


def saelens(kind: str, d: int, width: int, batch: int, k: int, rows, threads: int | None):
  """One ``SAETrainer.step`` per call at ``threads`` torch threads (None: torch's default)."""
  import torch
  from sae_lens.config import LoggingConfig, SAETrainerConfig
  from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
  from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
  from sae_lens.training.sae_trainer import SAETrainer

  default = torch.get_num_threads()
  torch.manual_seed(0)
  if kind == "topk":
    model = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=width, k=k, device="cpu",
                                                  decoder_init_norm=1.0))
  else:
    model = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d, d_sae=width, device="cpu",
                                                          l1_coefficient=1e-3))
  cfg = SAETrainerConfig(total_training_samples=10 ** 9, train_batch_size_samples=batch,
                         lr=1e-3, lr_end=1e-3, device="cpu",
                         logger=LoggingConfig(log_to_wandb=False))
  trainer = SAETrainer(cfg, model, iter(()))
  x = torch.from_numpy(rows)

  def call():
    torch.set_num_threads(threads or default)
    try:
      return trainer.step(x).loss.item()
    finally:
      torch.set_num_threads(default)

  return call


def main(argv=None):
  args = parse_args(argv)
  import jax
  import numpy as np
  import torch
  os.environ.setdefault("TQDM_DISABLE", "1")
  default_threads = torch.get_num_threads()
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
        f"({default_threads} default threads), {os.cpu_count()} CPUs")
  results = []
  for shape in args.shapes:
    d, width, batch = (int(v) for v in shape.split("x"))
    rows = np.random.default_rng(0).standard_normal((batch, d)).astype(np.float32)
    for kind in args.kinds:
      sides = {"superalign": ours(kind, d, width, batch, args.k, rows),
               "saelens_1_thread": saelens(kind, d, width, batch, args.k, rows, 1),
               f"saelens_{default_threads}_threads": saelens(kind, d, width, batch, args.k,
                                                             rows, None)}
      for call in sides.values():   # compile, warm
        call()
        call()
      times = alternate(sides, args.rounds, args.per_round)
      rate = {name: 1.0 / t for name, t in times.items()}
      best_peer = max(v for name, v in rate.items() if name != "superalign")
      row = {"kind": kind, "d_in": d, "width": width, "batch": batch,
             **({"k": args.k} if kind == "topk" else {}),
             "steps_per_s": rate, "speedup_vs_best_saelens": rate["superalign"] / best_peer,
             **{f"speedup_vs_{name}": rate["superalign"] / v for name, v in rate.items()
                if name != "superalign"}}
      results.append(row)
      peers = ", ".join(f"{name} {v:.2f}/s ({rate['superalign'] / v:.2f}x)"
                        for name, v in rate.items() if name != "superalign")
      print(f"{kind} d_in {d} width {width} batch {batch}: superalign "
            f"{rate['superalign']:.2f} steps/s; {peers}")
  print(json.dumps({"results": results, "torch_default_threads": default_threads,
                    "cpus": os.cpu_count()}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
