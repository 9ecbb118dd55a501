"""Generation throughput: ``superalign.models.generate.generate`` against ``transformers``'
``generate`` (``GPT2LMHeadModel``, or the checkpoint family's ``AutoModelForCausalLM``).

    python benchmarks/generate.py [--checkpoint DIR | --shape tiny|gpt_medium|gpt2|llama_tiny|
                                                              llama_small|llama_1b]
                                  [--batch 8] [--prompt-len 32] [--new-tokens 64]
                                  [--dtype float32|bfloat16] [--rounds 4] [--require-gpu]

Both sides decode greedily with a KV cache from the same checkpoint, the same batch of prompts
and the same number of new tokens; EOS is off (``eos_id=None`` / ``eos_token_id=None``), so every
row runs the full length. Without ``--checkpoint`` a random model of the chosen shape (a GPT-2,
or a ``LlamaForCausalLM`` of ``train_step.LLAMA_SHAPES``: ``llama_small`` 4 layers x 512, 8 heads,
2 key/value heads; ``llama_1b`` the Llama-3.2-1B shape) is saved to a temporary directory by
``transformers`` itself first (no download), and superalign reads it through the registry's
``hf:<dir>`` name and warm start, as the framework does.

superalign's first call (trace + compile + one run) is timed and reported apart; both sides are
then warmed up and timed in alternating blocks, each call waited on (``block_until_ready`` /
the tokens copied to the host). tokens/s counts new tokens only: ``batch * new_tokens / time``.
The greedy tokens of the two sides are compared as a correctness check: in float32 they must be
identical (the script exits non-zero otherwise); in bfloat16 the share that agrees is printed.

On a CUDA machine torch runs on the GPU (SDPA attention; bfloat16 weights with --dtype bfloat16);
on a CPU it runs float32 on all cores. Human-readable lines first; the last line is one JSON
object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

# GPT-2 shapes: (layers, width, heads, vocab, positions).
SHAPES = {
    "tiny": (2, 64, 4, 512, 256),
    "gpt_medium": (6, 384, 6, 8192, 1024),
    "gpt2": (12, 768, 12, 50257, 1024),
}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--checkpoint",
                 help="a GPT-2, GPT-NeoX or Llama-family checkpoint directory (save_pretrained's "
                      "layout)")
  p.add_argument("--shape", default="gpt_medium", choices=sorted([*SHAPES, *LLAMA_SHAPES]),
                 help="shape of the random checkpoint made when no --checkpoint is given")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--prompt-len", type=int, default=32)
  p.add_argument("--new-tokens", type=int, default=64)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="compute dtype of both sides (superalign keeps float32 parameters)")
  p.add_argument("--rounds", type=int, default=4, help="alternating superalign/torch blocks")
  p.add_argument("--per-round", type=int, default=2, help="generate calls per side per block")
  p.add_argument("--warmup", type=int, default=1, help="untimed calls per side after compiling")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--require-gpu", action="store_true",
                 help="exit non-zero unless JAX (and torch, unless --skip-torch) see a GPU")
  p.add_argument("--skip-torch", action="store_true")
  return p.parse_args(argv)


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


# The share of the CPUs other processes used during a block: the training benchmark's meter.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # as a script
from benchmarks.train_step import CORES, LLAMA_SHAPES, OtherLoad, save_llama  # noqa: E402


def random_checkpoint(directory: str, shape: str, seed: int) -> None:
  """A random GPT-2 or Llama saved by transformers. A wider init than the usual 0.02 spreads the
  logits, so greedy argmaxes are far from ties and the token comparison tests the code, not
  rounding."""
  if shape in LLAMA_SHAPES:
    save_llama(directory, shape, seed, init=0.1)
    return
  import torch
  import transformers
  layers, width, heads, vocab, positions = SHAPES[shape]
  torch.manual_seed(seed)
  config = transformers.GPT2Config(n_layer=layers, n_embd=width, n_head=heads, vocab_size=vocab,
                                   n_positions=positions, bos_token_id=0, eos_token_id=0,
                                   initializer_range=0.1)
  transformers.GPT2LMHeadModel(config).eval().save_pretrained(directory)


class Superalign:

  def __init__(self, path, args, prompt, mask):
    import jax
    import optax
    from superalign import models
    from superalign.core import mesh as mesh_lib, state as state_lib
    from superalign.models import InputSpec, generate as gen, registry

    self.jax, self.gen = jax, gen
    family = registry.loader(path)
    vocab = family.architecture(family.read_config(path))["vocab_size"]
    name = f"hf:{path}"
    spec = InputSpec((args.prompt_len + args.new_tokens,), "tokens", 2, vocab)
    mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
    state, _ = state_lib.create(models.builder(name, spec, compute_dtype=args.dtype),
                                optax.sgd(0.0), 0, mesh, warm=models.pretrained(name))
    self.model = state.model()
    self.prompt = jax.device_put(prompt)
    self.mask = jax.device_put(mask)
    self.n = args.new_tokens
    t0 = time.perf_counter()
    self.tokens = self.call()
    self.first_call_s = time.perf_counter() - t0
    self.times: list[float] = []

  def call(self):
    out = self.gen.generate(self.model, self.prompt, self.mask, max_new_tokens=self.n,
                            eos_id=None)
    return self.jax.block_until_ready(out)

  def run(self, n: int, record: bool = True) -> None:
    for _ in range(n):
      t0 = time.perf_counter()
      self.tokens = self.call()
      if record:
        self.times.append(time.perf_counter() - t0)


class Torch:

  def __init__(self, path, args, prompt, mask, device):
    import torch
    import transformers
    self.torch = torch
    if device == "cpu":
      torch.set_num_threads(CORES)
    dtype = torch.bfloat16 if (args.dtype == "bfloat16" and device == "cuda") else torch.float32
    self.model = transformers.AutoModelForCausalLM.from_pretrained(
        path, attn_implementation="sdpa", dtype=dtype).to(device).eval()
    self.model.generation_config.eos_token_id = None   # run the full length, as superalign does
    self.dtype = str(dtype).replace("torch.", "")
    self.attn = self.model.config._attn_implementation
    self.threads = torch.get_num_threads()
    self.version = f"torch {torch.__version__}, transformers {transformers.__version__}"
    self.prompt = torch.tensor(prompt, dtype=torch.long, device=device)
    self.mask = torch.tensor(mask, dtype=torch.long, device=device)
    self.n = args.new_tokens
    self.times: list[float] = []
    t0 = time.perf_counter()
    self.tokens = self.call()
    self.first_call_s = time.perf_counter() - t0

  def call(self):
    with self.torch.inference_mode():
      out = self.model.generate(self.prompt, attention_mask=self.mask, max_new_tokens=self.n,
                                min_new_tokens=self.n, do_sample=False, eos_token_id=None,
                                pad_token_id=0, use_cache=True)
    out = out[:, self.prompt.shape[1]:].cpu().numpy()   # copying to the host waits for the GPU
    if out.shape[1] != self.n:
      fail(f"transformers generated {out.shape[1]} new tokens, not {self.n}")
    return out

  def run(self, n: int, record: bool = True) -> None:
    for _ in range(n):
      t0 = time.perf_counter()
      self.tokens = self.call()
      if record:
        self.times.append(time.perf_counter() - t0)


def main(argv=None):
  args = parse_args(argv)
  import jax
  import numpy as np

  dev = jax.devices()[0]
  platform = dev.platform
  device = f"{platform}:{dev.device_kind} x{jax.device_count()}"
  if platform == "cpu":
    device += f" ({CORES} of {os.cpu_count()} cores)"
  if args.require_gpu and platform != "gpu":
    fail(f"--require-gpu: JAX sees {device} (backend {jax.default_backend()}), no GPU")
  torch_device = None
  if not args.skip_torch:
    import torch
    if platform == "cpu":
      torch_device = "cpu"
    elif torch.cuda.is_available():
      torch_device = "cuda"
    elif args.require_gpu:
      fail(f"--require-gpu: torch {torch.__version__} sees no CUDA device (JAX is on {device})")
  if args.dtype == "bfloat16" and platform == "cpu":
    print("note: bfloat16 on a CPU checks the code path, not speed; torch stays float32 there")
  if args.dtype == "float32" and platform != "cpu":
    # torch's float32 matmuls are full float32 (no TF32) by default; JAX's default on a GPU is
    # lower, so match torch, or the token comparison would compare two precisions.
    jax.config.update("jax_default_matmul_precision", "highest")
    print("note: float32 on a GPU: jax_default_matmul_precision=highest, as torch's default")

  tmp = None
  if args.checkpoint:
    path, source = os.path.abspath(args.checkpoint), f"checkpoint {args.checkpoint}"
  else:
    tmp = tempfile.TemporaryDirectory(prefix="gen_bench_")
    path = tmp.name
    t0 = time.perf_counter()
    random_checkpoint(path, args.shape, args.seed)
    source = (f"random {args.shape} checkpoint (saved by transformers in "
              f"{time.perf_counter() - t0:.1f} s)")
  from superalign.core.errors import ConfigError
  from superalign.models import registry
  try:
    family = registry.loader(path, "--checkpoint")
    arch = family.architecture(family.read_config(path, "--checkpoint"))
  except ConfigError as e:
    fail(str(e))
  if args.prompt_len + args.new_tokens > arch["max_len"]:
    fail(f"prompt {args.prompt_len} + {args.new_tokens} new tokens exceed the checkpoint's "
         f"{arch['max_len']} positions")
  new_per_call = args.batch * args.new_tokens
  print(f"measured: greedy KV-cached generation, {args.batch} prompts x {args.prompt_len} tokens "
        f"-> {args.new_tokens} new tokens each, EOS off; {source}: L={arch['num_layers']}, "
        f"d={arch['width']}, h={arch['num_heads']}"
        + (f", kv heads {arch['options'].num_kv_heads}" if "options" in arch else "")
        + f", mlp {arch['mlp_width']}, vocab {arch['vocab_size']}; dtype {args.dtype}")
  print(f"device {device}; JAX backend {jax.default_backend()}; jax {jax.__version__}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  if hasattr(os, "getloadavg"):
    print(f"load average before start: {os.getloadavg()[0]:.2f}")

  rng = np.random.default_rng(args.seed)
  prompt = rng.integers(1, arch["vocab_size"], (args.batch, args.prompt_len)).astype(np.int32)
  mask = np.ones_like(prompt)

  sa = Superalign(path, args, prompt, mask)
  print(f"superalign: first call (trace + compile + run) {sa.first_call_s:.2f} s")
  th = None
  if torch_device is None:
    print("torch: skipped" + (" (--skip-torch)" if args.skip_torch else
                              f" on {platform} (torch has no CUDA)"))
  else:
    th = Torch(path, args, prompt, mask, torch_device)
    print(f"torch: {th.version} on {torch_device}, attn={th.attn}, dtype {th.dtype}, "
          f"{th.threads} threads; first call {th.first_call_s:.2f} s")

  sa.run(args.warmup, record=False)
  if th is not None:
    th.run(args.warmup, record=False)
  with OtherLoad() as load:
    for _ in range(args.rounds):
      time.sleep(0.2)
      sa.run(args.per_round)
      if th is not None:
        time.sleep(0.2)
        th.run(args.per_round)
  if load.share is not None:
    print(f"other processes used {load.share:.0%} of the CPUs during the timed rounds"
          + (" (a busy machine: expect low, noisy figures)" if load.share > 0.05 else ""))

  def describe(times):
    med = statistics.median(times)
    return med, (f"call median {med * 1e3:.1f} ms (mean {statistics.mean(times) * 1e3:.1f}, "
                 f"min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}; {len(times)} calls)")

  sa_call, text = describe(sa.times)
  sa_tps = new_per_call / sa_call
  print(f"superalign: {text}, {sa_tps:,.0f} new tokens/s")
  torch_tps = ratio = best = same = None
  if th is not None:
    th_call, text = describe(th.times)
    torch_tps = new_per_call / th_call
    ratio = sa_tps / torch_tps
    print(f"torch: {text}, {torch_tps:,.0f} new tokens/s")
    best = min(th.times) / min(sa.times)
    print(f"speedup superalign / transformers.generate: {ratio:.2f}x (best call against best "
          f"call, the figure least moved by other load: {best:.2f}x)")
    ours, theirs = np.asarray(sa.tokens), np.asarray(th.tokens)
    same = float((ours == theirs).mean())
    if same == 1.0:
      print(f"greedy tokens identical on both sides ({ours.size} tokens)")
    else:
      rows, cols = np.nonzero(ours != theirs)
      print(f"greedy tokens differ: {same:.1%} agree; first at row {rows[0]}, new token "
            f"{cols[0]}: superalign {ours[rows[0], cols[0]]} vs transformers "
            f"{theirs[rows[0], cols[0]]}")
  result = {
      "superalign_tokens_per_s": round(sa_tps, 1),
      "torch_tokens_per_s": round(torch_tps, 1) if torch_tps else None,
      "speedup_vs_transformers": round(ratio, 3) if ratio else None,
      "speedup_best_call": round(best, 3) if best else None,
      "tokens_identical": same == 1.0 if same is not None else None,
      "tokens_agree": same,
      "superalign_first_call_s": round(sa.first_call_s, 2),
      "torch_first_call_s": round(th.first_call_s, 2) if th else None,
      "other_load": round(load.share, 3) if load.share is not None else None,
      "device": device, "backend": jax.default_backend(), "torch_device": torch_device,
      "dtype": args.dtype, "shape": None if args.checkpoint else args.shape,
      "batch": args.batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
  }
  print(json.dumps(result))
  if tmp is not None:
    tmp.cleanup()
  if same is not None and same < 1.0 and args.dtype == "float32":
    fail("greedy tokens differ between superalign and transformers in float32")
  return result


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
