"""Bound propagation throughput, as ratios against a plain forward pass timed in the same run.

    python benchmarks/verify.py [--model cnn_ibp_small] [--batch 256] [--eps 0.05]

On a registry CNN at 28x28 (untrained: the costs do not depend on the weights, except that
``--max-unstable`` refines only unstable neurons), each of IBP, CROWN-IBP, CROWN and alpha-CROWN
bounds the margins of a batch; the forward pass of the same batch is the peer. Every side is
compiled and called once first, then timed in alternating rounds, each call waited on. For CROWN the memory its
compiled program holds (XLA's temp allocation: the backward pass's linear bounds) is printed
beside the chunk of neurons per pass that kept it there; a smaller ``--chunk`` trades passes for
memory. Human-readable lines first; the last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--model", default="cnn_ibp_small", help="a registry MLP or CNN")
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--size", type=int, default=28, help="image height and width (1 channel)")
  p.add_argument("--eps", type=float, default=0.05)
  p.add_argument("--chunk", type=int, default=0, help="CROWN neurons per pass (0: auto)")
  p.add_argument("--max-unstable", type=int, default=0,
                 help="CROWN: refine at most this many unstable neurons a layer (0: all)")
  p.add_argument("--alpha-steps", type=int, default=20)
  p.add_argument("--methods", default="ibp,crown_ibp,crown,alpha_crown")
  p.add_argument("--rounds", type=int, default=3, help="alternating blocks per side")
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  from superalign import models
  from superalign.core.specs import InputSpec
  from superalign.verify import bounds, network

  spec = InputSpec((args.size, args.size, 1), "image", 10)
  model = models.builder(args.model, spec)(nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(args.batch, *spec.shape)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, args.batch), jnp.int32)
  net_of = lambda p: network.from_model(nnx.merge(graphdef, p), spec.shape)
  chunk = args.chunk or bounds.chunk_size(args.batch, network.lowered(net_of(params)).shapes())

  def bound_fn(method):
    kw = {}
    if method in ("crown", "alpha_crown"):
      kw.update(chunk=chunk, max_unstable=args.max_unstable or None)
    if method == "alpha_crown":
      kw["steps"] = args.alpha_steps

    def fn(p, x):
      lo, hi = bounds.input_box(x, args.eps)
      return bounds.bounds(method, net_of(p), lo, hi, bounds.margin_spec(y, 10), **kw)[0]
    return fn

  sides = {"forward": lambda p, x: nnx.merge(graphdef, p)(x)}
  sides.update({m: bound_fn(m) for m in args.methods.split(",")})
  compiled, memory = {}, {}
  for name, fn in sides.items():
    c = jax.jit(fn).lower(params, x).compile()
    analysis = c.memory_analysis()
    memory[name] = None if analysis is None else analysis.temp_size_in_bytes
    compiled[name] = c
    jax.block_until_ready(c(params, x))   # a first call allocates and warms; not timed
  times = {name: [] for name in compiled}
  for _ in range(args.rounds):
    for name, c in compiled.items():
      start = time.perf_counter()
      jax.block_until_ready(c(params, x))
      times[name].append(time.perf_counter() - start)
  seconds = {name: statistics.median(t) for name, t in times.items()}
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {args.model} at "
        f"{args.size}x{args.size}, batch {args.batch}, eps {args.eps}; CROWN chunk {chunk}"
        f"{f', max_unstable {args.max_unstable}' if args.max_unstable else ''}")
  figures = {}
  for name, s in seconds.items():
    per_s = args.batch / s
    ratio = seconds["forward"] / s
    mib = None if memory[name] is None else memory[name] / 2**20
    print(f"{name:12s} {1e3 * s:10.1f} ms  {per_s:12,.1f} bounds/s  {ratio:10.5f}x forward"
          f"  temp {'n/a' if mib is None else f'{mib:,.0f} MiB'}")
    figures[name] = {"ms": 1e3 * s, "per_s": per_s, "vs_forward": ratio, "temp_mib": mib}
  print(json.dumps({"model": args.model, "batch": args.batch, "size": args.size,
                    "eps": args.eps, "chunk": chunk, "max_unstable": args.max_unstable,
                    "device": jax.devices()[0].platform, "figures": figures}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
