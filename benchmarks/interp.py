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

3. Against TransformerLens 3.9 (``--peer``; ``--only peer`` runs just these): a random GPT-2
   (``--layers`` x ``--width``, GPT-2's vocabulary) or a Llama-3.2-1B-shaped ``LlamaForCausalLM``
   (``--family llama_1b``, default rotary: TransformerLens 3.9 has no llama3 scaling) built by
   ``transformers`` with random weights (no download), read by superalign through the registry's
   ``hf:<dir>`` path and by TransformerLens through its own weight conversion (a
   ``HookedTransformer``, unfolded, uncentered, as superalign computes):
   (a) caching every site: ``hooks.run(forward, x, capture=True)`` jitted against
       ``run_with_cache`` on ``--peer-batch`` x ``--peer-seq`` tokens, and against
       ``run_with_cache`` restricted (``names_filter``) to the sites superalign has;
   (b) the layer x position ``resid_pre`` activation-patching grid (logit difference at the last
       position; the clean cache included on both sides): ``interp.patching.patching_grid``
       against ``transformer_lens.patching.get_act_patch_resid_pre`` on ``--grid-batch`` x
       ``--grid-seq`` tokens, the two grids compared (max abs difference). Each side computes
       what its API lets it: TransformerLens' patching runs the whole model, LM logits at every
       position, per cell; ours computes the logits the metric reads, the last position's
       (``LanguageModel.apply(..., positions=-1)``; ``--grid-logits all``: every position, as
       TransformerLens).
   Torch runs under ``no_grad`` at its default thread count and at 1 thread (on a CPU); JAX as
   it is. On a GPU both sides run float32 with full-precision matmuls (no TF32 on either).

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
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# TransformerLens' patching loop draws a tqdm bar per grid; tqdm reads this when it is imported.
os.environ.setdefault("TQDM_DISABLE", "1")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--model", default="gpt_small", help="a registry transformer")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--seq", type=int, default=32)
  p.add_argument("--rounds", type=int, default=5, help="alternating blocks per side")
  p.add_argument("--per-round", type=int, default=3, help="calls per side per block")
  p.add_argument("--chunk", type=int, default=1,
                 help="patching cells per vmapped chunk (0: all; 1 is fastest on a CPU)")
  p.add_argument("--only", choices=("all", "self", "peer"), default="all",
                 help="self: sections 1-2; peer: section 3 (TransformerLens)")
  p.add_argument("--family", choices=("gpt2", "llama_1b"), default="gpt2",
                 help="the model compared with TransformerLens")
  p.add_argument("--layers", type=int, default=4, help="GPT-2 layers (peer section)")
  p.add_argument("--width", type=int, default=256, help="GPT-2 width; heads of 64")
  p.add_argument("--vocab", type=int, default=50257, help="GPT-2 vocabulary")
  p.add_argument("--peer-batch", type=int, default=8)
  p.add_argument("--peer-seq", type=int, default=128)
  p.add_argument("--grid-batch", type=int, default=8)
  p.add_argument("--grid-seq", type=int, default=32,
                 help="positions of the patching grid (TransformerLens runs the whole model once "
                      "per cell: layers x positions forward passes)")
  p.add_argument("--grid-rounds", type=int, default=2, help="alternating blocks for the grid")
  p.add_argument("--grid-logits", choices=("last", "all"), default="last",
                 help="our grid's LM logits: at the last position only (what the metric reads) "
                      "or at every position (what TransformerLens' API computes)")
  p.add_argument("--require-gpu", action="store_true",
                 help="exit 2 (one line) unless JAX and torch both see a GPU")
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


def _gpt2(args, directory):
  """A random ``GPT2LMHeadModel`` (float32) saved to ``directory``; returns it."""
  import torch
  import transformers
  torch.manual_seed(0)
  config = transformers.GPT2Config(n_layer=args.layers, n_embd=args.width, n_head=args.width // 64,
                                   vocab_size=args.vocab,
                                   n_positions=max(args.peer_seq, args.grid_seq),
                                   bos_token_id=0, eos_token_id=0, initializer_range=0.1)
  model = transformers.GPT2LMHeadModel(config).eval()
  model.save_pretrained(directory)
  return model


def _llama(directory):
  """A random Llama-3.2-1B-shaped ``LlamaForCausalLM`` with default rotary (TransformerLens 3.9
  has no llama3 scaling), saved to ``directory`` in bfloat16 (half the bytes) and returned in
  float32 holding the same (bfloat16-rounded) values that superalign reads."""
  import torch
  import transformers
  from benchmarks.train_step import LLAMA_SHAPES
  torch.manual_seed(0)
  shape = {**LLAMA_SHAPES["llama_1b"], "max_position_embeddings": 8192,
           "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}}
  model = transformers.LlamaForCausalLM(
      transformers.LlamaConfig(initializer_range=0.02, **shape)).eval().to(torch.bfloat16)
  model.save_pretrained(directory)
  return model.float()


def transformer_lens_model(hf, device):
  """TransformerLens 3.9's ``HookedTransformer`` holding the weights of ``hf`` (a transformers
  GPT-2 or Llama), converted by TransformerLens' own functions; the config written from
  ``hf.config`` (no download). Unfolded, uncentered weights, no BOS prepended: what superalign
  computes. (The test suite's builder, ``tests/conftest.py``, does the same; benchmarks do not
  import tests.)"""
  import transformers
  from transformer_lens import HookedTransformer, HookedTransformerConfig
  from transformer_lens.pretrained import weight_conversions
  c = hf.config
  if isinstance(hf, transformers.GPT2LMHeadModel):
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head,
        d_mlp=c.n_inner or 4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions,
        act_fn="gelu_new", normalization_type="LN", eps=c.layer_norm_epsilon,
        default_prepend_bos=False, device=device)
    state = weight_conversions.convert_gpt2_weights(hf, cfg)
  else:
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    cfg = HookedTransformerConfig(
        n_layers=c.num_hidden_layers, d_model=c.hidden_size, n_heads=c.num_attention_heads,
        d_head=head_dim, d_mlp=c.intermediate_size, d_vocab=c.vocab_size,
        n_ctx=c.max_position_embeddings, act_fn="silu", normalization_type="RMS",
        positional_embedding_type="rotary", rotary_dim=head_dim, rotary_adjacent_pairs=False,
        rotary_base=c.rope_parameters["rope_theta"], n_key_value_heads=c.num_key_value_heads,
        gated_mlp=True, final_rms=True, eps=c.rms_norm_eps, default_prepend_bos=False,
        device=device)
    state = weight_conversions.convert_llama_weights(hf, cfg)
  tl = HookedTransformer(cfg)
  tl.load_state_dict(state, strict=False)
  return tl.to(device).eval()


class Peer:
  """The model on both sides, the inputs, and the timed calls."""

  def __init__(self, args):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import torch
    from superalign import models
    from superalign.core import mesh as mesh_lib, state as state_lib
    from superalign.models import InputSpec

    self.torch, self.jax = torch, jax
    self.device = "cuda" if jax.devices()[0].platform == "gpu" else "cpu"
    if self.device == "cuda":   # float32 in full precision on both sides
      torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
      jax.config.update("jax_default_matmul_precision", "highest")
    with tempfile.TemporaryDirectory() as directory:
      hf = _gpt2(args, directory) if args.family == "gpt2" else _llama(directory)
      name = f"hf:{directory}"
      spec = InputSpec((args.peer_seq,), "tokens", 2, hf.config.vocab_size)
      mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
      state, _ = state_lib.create(models.builder(name, spec), optax.sgd(0.0), 0, mesh,
                                  warm=models.pretrained(name))
    self.model = state.model()
    self.lm = models.lm.LanguageModel(self.model, mesh=mesh)
    self.tl = transformer_lens_model(hf, self.device)
    del hf
    self.vocab = self.tl.cfg.d_vocab
    self.layers = self.tl.cfg.n_layers
    rng = np.random.default_rng(0)
    self.tokens = rng.integers(1, self.vocab, (args.peer_batch, args.peer_seq))
    self.clean = rng.integers(1, self.vocab, (args.grid_batch, args.grid_seq))
    self.corrupted = self.clean.copy()
    self.corrupted[:, args.grid_seq // 2] = 7
    self.answer, self.wrong = (int(t) for t in rng.integers(1, self.vocab, 2))
    self.jnp = jnp

  def cache_sides(self):
    """``{name: call}`` for caching every site, and the number of sites on each side."""
    from superalign.interp import hooks
    from superalign.models import sites
    graphdef, params = self._split()
    forward = self._forward(graphdef)
    ours = self.jax.jit(lambda params, x: hooks.run(forward, params, x, capture=True))
    x = self.jax.device_put(self.jnp.asarray(self.tokens, self.jnp.int32))
    xt = self.torch.tensor(self.tokens, device=self.device)
    ours_sites = list(self.jax.eval_shape(ours, params, x)[1])
    same = {sites.to_transformer_lens(n) for n in ours_sites} & set(self.tl.hook_dict)

    def theirs(names_filter=None):
      with self.torch.no_grad():
        out = self.tl.run_with_cache(xt, names_filter=names_filter)
      self._sync()
      return out

    n_tl = len(theirs()[1])
    return ({"superalign": lambda: ours(params, x),
             "transformer_lens": theirs,
             "transformer_lens_same_sites": lambda: theirs(lambda n: n in same)},
            len(ours_sites), n_tl, len(same))

  def grid_sides(self, chunk, logits="last"):
    """``{name: call}`` for the layer x position resid_pre patching grid, and the two grids'
    max abs difference."""
    import numpy as np
    from superalign.interp import patching
    from transformer_lens import patching as tl_patching
    # The metric reads the last position: our model computes the logits there only ("last"), or
    # at every position as TransformerLens does ("all").
    if logits == "last":
      forward, params = (lambda params, x: self.lm.apply(params, x, positions=-1)), self.lm.params
    else:
      graphdef, params = self._split()
      forward = self._forward(graphdef)
    metric = patching.logit_diff(self.answer, self.wrong)
    names = tuple(f"blocks.{i}.resid_pre" for i in range(self.layers))
    clean = self.jax.device_put(self.jnp.asarray(self.clean, self.jnp.int32))
    corrupted = self.jax.device_put(self.jnp.asarray(self.corrupted, self.jnp.int32))

    def ours():
      return patching.patching_grid(forward, params, clean, corrupted, metric, names,
                                    chunk=chunk or None)

    clean_t = self.torch.tensor(self.clean, device=self.device)
    corrupted_t = self.torch.tensor(self.corrupted, device=self.device)
    tl_metric = lambda logits: (logits[:, -1, self.answer] - logits[:, -1, self.wrong]).mean()

    def theirs():
      with self.torch.no_grad():
        _, cache = self.tl.run_with_cache(
            clean_t, names_filter=lambda n: n.endswith("hook_resid_pre"))
        grid = tl_patching.get_act_patch_resid_pre(self.tl, corrupted_t, cache, tl_metric)
      self._sync()
      return grid

    a = np.stack([np.asarray(ours()[n]) for n in names])
    b = theirs().cpu().numpy()
    return {"superalign": ours, "transformer_lens": theirs}, float(np.abs(a - b).max()), a.size

  def _split(self):
    from flax import nnx
    return nnx.split(self.model)

  def _forward(self, graphdef):
    from flax import nnx
    if not hasattr(self, "_fwd"):
      def forward(params, x):
        model = nnx.merge(graphdef, params)
        return model.lm_logits(model.hidden_states(x))
      self._fwd = forward   # one function: the compiled programs are reused
    return self._fwd

  def _sync(self):
    if self.device == "cuda":
      self.torch.cuda.synchronize()


def peer(args):
  """Section 3: caching and the patching grid against TransformerLens, torch at its default
  threads and at 1 (on a CPU); the figures as a dict."""
  import jax
  import torch
  p = Peer(args)
  kind = (f"GPT-2 {args.layers} x {args.width}, vocabulary {p.vocab}" if args.family == "gpt2"
          else f"Llama-3.2-1B shape, vocabulary {p.vocab}")
  print(f"vs TransformerLens on {p.device}: {kind}; torch {torch.__version__}")
  threads = [torch.get_num_threads()] + ([1] if p.device == "cpu" and
                                        torch.get_num_threads() > 1 else [])
  out = {"family": args.family, "peer_device": p.device, "peer_batch": args.peer_batch,
         "peer_seq": args.peer_seq, "grid_batch": args.grid_batch, "grid_seq": args.grid_seq,
         "grid_logits": args.grid_logits}
  cache, n_ours, n_tl, n_same = p.cache_sides()
  grid, diff, cells = p.grid_sides(args.chunk, args.grid_logits)
  for call in cache.values():   # the grids ran once already, for their difference
    jax.block_until_ready(call())
  out.update(sites_superalign=n_ours, sites_transformer_lens=n_tl, sites_shared=n_same,
             grid_cells=cells, grid_max_abs_diff=diff)
  what = ("the last position only, what the metric reads" if args.grid_logits == "last"
          else "every position")
  short = "last-position logits" if args.grid_logits == "last" else "all-position logits"
  print(f"patching grids: TransformerLens' API computes LM logits at every position; ours at "
        f"{what}")
  for n in threads:
    torch.set_num_threads(n)
    t = alternate(cache, args.rounds, args.per_round)
    g = alternate(grid, args.grid_rounds, 1)
    tag = f"torch {n} thread{'s' if n > 1 else ''}"
    print(f"caching every site ({args.peer_batch} x {args.peer_seq} tokens), {tag}: superalign "
          f"{1e3 * t['superalign']:.1f} ms ({n_ours} sites); run_with_cache "
          f"{1e3 * t['transformer_lens']:.1f} ms ({n_tl} hooks): "
          f"{t['transformer_lens'] / t['superalign']:.2f}x; same {n_same} sites only "
          f"{1e3 * t['transformer_lens_same_sites']:.1f} ms: "
          f"{t['transformer_lens_same_sites'] / t['superalign']:.2f}x")
    print(f"resid_pre patching grid ({cells} cells, {args.grid_batch} x {args.grid_seq} tokens), "
          f"{tag}: patching_grid {1e3 * g['superalign']:.0f} ms ({short}); "
          f"get_act_patch_resid_pre (all positions) {1e3 * g['transformer_lens']:.0f} ms: "
          f"{g['transformer_lens'] / g['superalign']:.2f}x; "
          f"max |diff| {diff:.2e}")
    key = "default_threads" if n == threads[0] else "1_thread"
    out[f"torch_threads_{key}"] = n
    out[f"cache_ms_{key}"] = 1e3 * t["superalign"]
    out[f"tl_cache_ms_{key}"] = 1e3 * t["transformer_lens"]
    out[f"cache_speedup_{key}"] = t["transformer_lens"] / t["superalign"]
    out[f"cache_speedup_same_sites_{key}"] = t["transformer_lens_same_sites"] / t["superalign"]
    out[f"grid_ms_{key}"] = 1e3 * g["superalign"]
    out[f"tl_grid_ms_{key}"] = 1e3 * g["transformer_lens"]
    out[f"grid_speedup_{key}"] = g["transformer_lens"] / g["superalign"]
  return out


def main(argv=None):
  args = parse_args(argv)
  import jax
  if args.require_gpu:
    import torch
    if jax.devices()[0].platform != "gpu" or not torch.cuda.is_available():
      print(f"--require-gpu: JAX sees {jax.devices()[0].platform}, torch cuda "
            f"{torch.cuda.is_available()}")
      return 2
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} devices); "
        f"{args.model}, batch {args.batch}, {args.seq} positions")
  figures, ok = {"model": args.model, "batch": args.batch, "seq": args.seq}, True
  if args.only in ("all", "self"):
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
          f"patches {1e3 * patch['loop']:.0f} ms; {speedup:.1f}x; max |grid - loop| "
          f"{max_diff:.2e}")
    figures.update({"train_step_ms": 1e3 * step["with_sites"],
                    "train_step_without_sites_ms": 1e3 * step["identity"],
                    "inactive_hooks_ratio": ratio, "programs_identical": same,
                    "grid_ms": 1e3 * patch["grid"], "loop_ms": 1e3 * patch["loop"],
                    "grid_speedup": speedup, "cells": cells, "max_abs_diff": max_diff})
    ok = same and max_diff < 1e-3
  if args.only in ("all", "peer"):
    figures["transformer_lens"] = peer(args)
    ok = ok and figures["transformer_lens"]["grid_max_abs_diff"] < 1e-3
  print(json.dumps(figures))
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
