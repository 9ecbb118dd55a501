"""Seeds as arrays: 8 seeds in one vmapped step against 8 sequential runs of the same step.

For each model of the weak-to-strong digits ladder, both sides train 8 seeds for the same number
of steps on the same batches (each seed its own data order) with the core's jitted step; the
sequential side reuses one compiled step for all 8 runs (its fairest form). Compilation is timed
apart from training. The predictions of the final models must agree run for run.

  python benchmarks/w2s_sweep.py [--steps 200] [--seeds 8]

The last line is JSON: per-model and total speedup of the vmapped sweep.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from superalign import data as data_lib
from superalign import models
from superalign.core import mesh as mesh_lib
from superalign.core import optim, state as state_lib, steps
from superalign.core import batches
from superalign.core.spec import TrainSpec

from experiments.w2s import digits as w2s_digits


def _batch(split, seeds, step, batch_size, mesh, stacked):
  idx = np.stack([batches.train_indices(s, step, len(split), batch_size) for s in seeds])
  if stacked:
    return mesh_lib.shard_batch({"x": split.x[idx], "y": split.y[idx]}, mesh, stacked=True)
  return mesh_lib.shard_batch({"x": split.x[idx[0]], "y": split.y[idx[0]]}, mesh)


def bench_model(name, config, split, spec, mesh, seeds, num_steps):
  build = models.builder(name, spec)
  tx = optim.make(TrainSpec.from_config(config).optim, num_steps)
  bs = config.train.batch_size

  # vmapped: all seeds in one step
  state, shard = state_lib.create(build, tx, seeds, mesh)
  step = steps.make_train_step(steps.cross_entropy_loss, shard, mesh, stacked=True)
  t = time.perf_counter()
  state, m = step(state, _batch(split, seeds, 0, bs, mesh, True))
  jax.block_until_ready(m)
  compile_v = time.perf_counter() - t
  t = time.perf_counter()
  for s in range(1, num_steps):
    state, m = step(state, _batch(split, seeds, s, bs, mesh, True))
  jax.block_until_ready(state.params)
  vmapped = time.perf_counter() - t
  stacked_probs = np.asarray(jax.jit(jax.vmap(steps.predict_fn, in_axes=(0, None)))(
      state, {"x": split.x}))

  # sequential: one compiled step, reused for each seed in turn
  one_step = None
  sequential, compile_s, max_diff = 0.0, 0.0, 0.0
  predict = jax.jit(steps.predict_fn)
  for i, seed in enumerate(seeds):
    st, sh = state_lib.create(build, tx, seed, mesh)
    if one_step is None:
      one_step = steps.make_train_step(steps.cross_entropy_loss, sh, mesh)
    t = time.perf_counter()
    st, m = one_step(st, _batch(split, [seed], 0, bs, mesh, False))
    jax.block_until_ready(m)
    if i == 0:
      compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for s in range(1, num_steps):
      st, m = one_step(st, _batch(split, [seed], s, bs, mesh, False))
    jax.block_until_ready(st.params)
    sequential += time.perf_counter() - t
    # Equal results: the same predicted probabilities on the training split, run for run (float
    # reassociation in batched matmuls makes parameters differ in the last bits).
    probs = np.asarray(predict(st, {"x": split.x}))
    max_diff = max(max_diff, float(np.max(np.abs(probs - stacked_probs[i]))))
  return {"model": name, "steps": num_steps, "seeds": len(seeds),
          "vmapped_s": round(vmapped, 3), "sequential_s": round(sequential, 3),
          "speedup": round(sequential / vmapped, 2), "compile_vmapped_s": round(compile_v, 2),
          "compile_one_s": round(compile_s, 2),
          # A plain Python loop over runs re-jits each run's step: what stacking also saves.
          "speedup_vs_recompiling_loop": round(
              (sequential + len(seeds) * compile_s) / (vmapped + compile_v), 2),
          "max_prob_diff": max_diff}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--seeds", type=int, default=8)
  args = parser.parse_args()
  config = w2s_digits.get_config()
  source = data_lib.load(config.data)
  split = data_lib.make_splits(source, {"train": 0.5})["train"]
  mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
  seeds = list(range(args.seeds))
  rows = []
  for name in config.w2s.ladder:
    row = bench_model(name, config, split, source.spec, mesh, seeds, args.steps)
    print(f"{name:12s} {args.seeds} seeds x {args.steps} steps: vmapped {row['vmapped_s']:.2f}s, "
          f"sequential {row['sequential_s']:.2f}s, speedup {row['speedup']:.2f}x, "
          f"(with compilation, against a loop that re-jits each run: "
          f"{row['speedup_vs_recompiling_loop']:.2f}x), max |prob diff| {row['max_prob_diff']:.1e}")
    rows.append(row)
  total_v = sum(r["vmapped_s"] for r in rows)
  total_s = sum(r["sequential_s"] for r in rows)
  # Batched and single matmuls round differently; 200 Adam steps amplify last-bit differences.
  equal = all(r["max_prob_diff"] < 1e-2 for r in rows)
  print(json.dumps({"benchmark": "w2s_sweep", "device": jax.devices()[0].device_kind,
                    "models": rows, "total_vmapped_s": round(total_v, 3),
                    "total_sequential_s": round(total_s, 3),
                    "speedup": round(total_s / total_v, 2), "results_equal": equal}))


if __name__ == "__main__":
  main()
