"""Interpretability costs, each as a ratio against a peer timed in the same run.

    python benchmarks/interp.py [--model gpt_small] [--batch 64] [--seq 32] [--rounds 5]

1. Inactive hooks: the train step of a model with its activation sites (no hook installed)
   against the same step traced with ``models.sites.site`` replaced by the identity, which is
   the model as it was before sites existed. The two compiled programs are also compared as
   text: equal programs cost the same by construction, the timing shows it.
2. Patching grid: the full layer x position activation-patching grid (every block's
   ``resid_pre`` at every position, a batch of ``--batch`` sequences) as one jitted call
   (``interp.patching.patching_grid``), against a Python loop of single patches (one jitted
   cell per site, compiled once, called once per position).

Both sides of each pair are compiled first and then timed in alternating blocks, each call
waited on. Human-readable lines first; the last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--model", default="gpt_small", help="a registry transformer")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--seq", type=int, default=32)
  p.add_argument("--rounds", type=int, default=5, help="alternating blocks per side")
  p.add_argument("--per-round", type=int, default=3, help="calls per side per block")
  p.add_argument("--chunk", type=int, default=1,
                 help="patching cells per vmapped chunk (0: all; 1 is fastest on a CPU)")
  return p.parse_args(argv)


def alternate(sides: dict, rounds: int, per_round: int) -> dict[str, float]:
  """Median seconds per call of each ``name -> callable`` (each returns something to wait on)."""
  import jax
  times = {name: [] for name in sides}
  for _ in range(rounds):
    for name, call in sides.items():
      for _ in range(per_round):
        start = time.perf_counter()
        jax.block_until_ready(call())
        times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def train_steps(args):
  """``(with_sites, identity)`` compiled train steps on one state and batch, and whether the
  compiled programs are equal."""
  import jax
  import numpy as np
  from superalign import models
  from superalign.core import mesh as mesh_lib, optim, state as state_lib, steps
  from superalign.core.spec import Optim
  from superalign.core.specs import InputSpec
  from superalign.models import cnn, mlp, sites, transformer

  spec = InputSpec((args.seq,), "tokens", 2, vocab_size=512)
  mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
  tx = optim.make(Optim(), 1000)
  state, shardings = state_lib.create(models.builder(args.model, spec), tx, 0, mesh)
  rng = np.random.default_rng(0)
  batch = mesh_lib.shard_batch({"x": rng.integers(1, 512, (args.batch, args.seq)).astype(np.int32),
                                "y": rng.integers(0, 2, args.batch).astype(np.int32)}, mesh)

  def compiled():
    step = steps.make_train_step(steps.cross_entropy_loss, shardings, mesh)
    return step.lower(state, batch).compile()

  with_sites = compiled()
  originals = {m: m.site for m in (transformer, mlp, cnn)}
  try:
    for module in originals:
      module.site = lambda name, x, axes: x
    identity = compiled()
  finally:
    for module, fn in originals.items():
      module.site = fn
  # The source-location tables and op metadata name source lines (which differ); the
  # computations must not.
  def text(c):
    body = c.as_text().split("\n\n\n", 1)[-1]
    return re.sub(r", metadata=\{[^}]*\}", "", body)
  same = text(with_sites) == text(identity)
  # Donation: each call gets its own copy of the state.
  copies = lambda: jax.tree.map(lambda a: a.copy(), state)
  return ({"with_sites": lambda: with_sites(copies(), batch),
           "identity": lambda: identity(copies(), batch)}, same)


def patching_sides(args):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  from superalign import models
  from superalign.core.specs import InputSpec
  from superalign.interp import hooks, patching

  spec = InputSpec((args.seq,), "tokens", 2, vocab_size=512)
  model = models.builder(args.model, spec)(nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  forward = lambda params, x: nnx.merge(graphdef, params)(x)
  rng = np.random.default_rng(0)
  clean = jnp.asarray(rng.integers(1, 512, (args.batch, args.seq)), jnp.int32)
  corrupted = clean.at[:, args.seq // 2].set(7)
  sites = [f"blocks.{i}.resid_pre" for i in range(len(model.blocks))]
  metric = patching.logit_diff(0, 1)

  grid = jax.jit(lambda params, clean, corrupted: patching.activation_patching(
      lambda x: forward(params, x), clean, corrupted, metric, sites, chunk=args.chunk or None))
  capture = jax.jit(lambda params, x: hooks.run(forward, params, x, capture=sites)[1])

  def single(site):
    def cell(params, act, corrupted, position):
      where = (jnp.arange(args.seq) == position)[None, :, None]
      out, _ = hooks.run(forward, params, corrupted,
                         interventions={site: hooks.replace(act, where)})
      return metric(out)
    return jax.jit(cell)

  cells = {site: single(site) for site in sites}

  def loop():
    acts = capture(params, clean)
    return [cells[s](params, acts[s], corrupted, p) for s in sites for p in range(args.seq)]

  jax.block_until_ready(grid(params, clean, corrupted))
  jax.block_until_ready(loop())
  a = np.asarray(jax.tree.map(np.asarray, grid(params, clean, corrupted))[sites[-1]])
  b = np.asarray(loop()[-args.seq:])
  return ({"grid": lambda: grid(params, clean, corrupted), "loop": loop},
          float(np.abs(a - b).max()), len(sites) * args.seq)


def main(argv=None):
  args = parse_args(argv)
  import jax
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} devices); "
        f"{args.model}, batch {args.batch}, {args.seq} positions")
  step_sides, same = train_steps(args)
  for call in step_sides.values():
    jax.block_until_ready(call())
  step = alternate(step_sides, args.rounds, args.per_round)
  ratio = step["identity"] / step["with_sites"]
  print(f"train step, inactive hooks: {1e3 * step['with_sites']:.1f} ms; without sites "
        f"{1e3 * step['identity']:.1f} ms; ratio {ratio:.3f}x; compiled programs "
        f"{'identical' if same else 'DIFFER'}")
  patch_sides, max_diff, cells = patching_sides(args)
  patch = alternate(patch_sides, args.rounds, 1)
  speedup = patch["loop"] / patch["grid"]
  print(f"patching grid, {cells} cells: one call {1e3 * patch['grid']:.0f} ms; loop of single "
        f"patches {1e3 * patch['loop']:.0f} ms; {speedup:.1f}x; max |grid - loop| {max_diff:.2e}")
  print(json.dumps({"model": args.model, "batch": args.batch, "seq": args.seq,
                    "train_step_ms": 1e3 * step["with_sites"],
                    "train_step_without_sites_ms": 1e3 * step["identity"],
                    "inactive_hooks_ratio": ratio, "programs_identical": same,
                    "grid_ms": 1e3 * patch["grid"], "loop_ms": 1e3 * patch["loop"],
                    "grid_speedup": speedup, "cells": cells, "max_abs_diff": max_diff}))
  return 0 if same and max_diff < 1e-3 else 1


if __name__ == "__main__":
  sys.exit(main())
