"""Training-step throughput: superalign (JAX) against HuggingFace transformers + PyTorch.

    python benchmarks/train_step.py [--steps N] [--dtype float32|bfloat16]
                                    [--model gpt_medium|gpt2|llama_tiny|llama_small|llama_1b]
                                    [--checkpoint DIR] [--batch B] [--seq S] [--lora RANK]
                                    [--require-gpu]

GPT-2 shapes (``gpt_medium``: 6 layers, width 384, 6 heads, vocabulary 8192; ``gpt2``: the 124M
GPT-2 shape, 12 layers, width 768, 12 heads, vocabulary 50257; sequence 128 and batch 16 unless
given) train a sequence classifier (2 classes) on both sides. Llama shapes (``LLAMA_SHAPES``:
``llama_small`` 4 layers x 512, 8 heads, 2 key/value heads, MLP 1376, vocabulary 8192;
``llama_1b`` the Llama-3.2-1B shape) are a random ``LlamaForCausalLM`` that transformers saves to
a temporary directory first (no download), trained as a language model: next-token
cross-entropy on every token after the first (``core.steps.next_token_loss``; torch: the
model's own causal-LM loss on the same targets), the model reading ``seq`` tokens a step. Both
sides use AdamW, and each timed step is a full forward + backward + optimizer update. With
``--checkpoint DIR`` (a GPT-2, GPT-NeoX or Llama-family directory as ``save_pretrained`` writes
it) superalign trains the ``hf:DIR`` model, built and warm-started through the registry, and
torch loads the same directory (``AutoModelForSequenceClassification``, or
``AutoModelForCausalLM`` for the language-model objective, ``--objective``): both sides run the
checkpoint's shape and start from the same weights. superalign's step is built exactly as the
framework builds it (``models.builder`` -> ``core.state.create`` -> ``core.steps.make_train_step``
on a ``{'data': -1}`` mesh, batches put on the mesh with ``core.mesh.shard_batch``). Every step's
outputs are waited on (``block_until_ready``) before its clock stops, so nothing is left in flight.

``--lora RANK`` fine-tunes low-rank adapters (``models.lora.LoRA(rank, 2 * rank)`` on every
attention and MLP weight) over a frozen base: superalign builds the ``Transformer`` with
``lora=`` and leaves the freezing to ``core.state``; the run says whether the optimizer state
really left the base out (``lora_base_frozen``). torch gets the same adapters (``x @ a @ b``
times ``alpha / rank`` added to each ``nn.Linear``, base ``requires_grad=False``). The FLOPs of a
LoRA step count 4 per frozen weight and token (no weight gradient) instead of 6.

The two sides run in alternating blocks of steps (``--rounds``); each round's ratio (the superalign
block against the torch block right after it) is printed too, so the spread shows how much of a
ratio is noise. The same run samples the machine's
matrix-multiply peak (``jax.jit(a @ b)`` on 2048 x 2048 float32, best of several) between blocks,
so that other work on a shared machine falls on all three alike; the achieved FLOP/s of the step
is put against that peak (MFU). The share of the CPUs that other processes took during the timed
part is printed too: figures from a busy machine are low and noisy. On a GPU the MFU is also given
against the card's nominal dense peak, and torch runs on CUDA (SDPA attention, ``torch.compile``,
bfloat16 autocast with ``--dtype bfloat16``) when ``torch.cuda.is_available()``; a GPU run that
cannot give torch a GPU says so, and with ``--require-gpu`` any missing GPU is an error (exit 2),
never a silent fallback to the CPU.

Human-readable lines first; the last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time

BATCH = 16
SEQ = 128
VOCAB = 8192
# Vocabulary by registry model when no --vocab is given: gpt2 is the real GPT-2's.
MODEL_VOCAB = {"gpt_medium": VOCAB, "gpt2": 50257}
NUM_CLASSES = 2
LR = 1e-4
WEIGHT_DECAY = 0.01

# Nominal dense peaks (FLOP/s) by device_kind substring and dtype; H200 has the H100's SXM core.
NOMINAL_PEAK = {
    "H100": {"bfloat16": 989e12, "float32": 494e12},   # float32 as TF32, JAX's default on GPU
    "H200": {"bfloat16": 989e12, "float32": 494e12},
}

# Llama shapes: LlamaConfig fields of a random checkpoint (benchmarks/generate.py's too). Every one
# has Llama 3's rotary scaling and tied embeddings, as Llama-3.2-1B, whose shape llama_1b is.
_LLAMA3 = dict(rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192},
               tie_word_embeddings=True, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
               pad_token_id=0)
LLAMA_SHAPES = {
    "llama_tiny": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=172, vocab_size=512,
                       max_position_embeddings=131072, **_LLAMA3),
    "llama_small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8,
                        num_key_value_heads=2, intermediate_size=1376, vocab_size=8192,
                        max_position_embeddings=131072, **_LLAMA3),
    "llama_1b": dict(num_hidden_layers=16, hidden_size=2048, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=64, intermediate_size=8192,
                     vocab_size=128256, max_position_embeddings=131072, **_LLAMA3),
}
BOS = 1   # every language-model sequence starts with it: next_token_loss counts what follows


def save_llama(directory: str, shape: str, seed: int = 0, init: float = 0.02) -> str:
  """A random ``LlamaForCausalLM`` of ``LLAMA_SHAPES[shape]`` saved by transformers (weights
  N(0, ``init``)); one of over half a billion parameters is stored in bfloat16, half the bytes to
  write and read (both sides load it as float32). Returns ``directory``."""
  import torch
  import transformers
  torch.manual_seed(seed)
  config = transformers.LlamaConfig(initializer_range=init, **LLAMA_SHAPES[shape])
  model = transformers.LlamaForCausalLM(config).eval()
  if sum(p.numel() for p in model.parameters()) > 5e8:
    model = model.to(torch.bfloat16)
  model.save_pretrained(directory)
  return directory


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--steps", type=int, default=8, help="timed steps on each side")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing (each side)")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="superalign compute dtype (parameters and optimizer stay float32)")
  p.add_argument("--model", default="gpt_medium", choices=("gpt_medium", "gpt2", *LLAMA_SHAPES),
                 help="a registry GPT-2 shape, or a Llama shape (a random checkpoint)")
  p.add_argument("--batch", type=int, default=BATCH,
                 help="sequences per step (16 on CPU; a GPU wants hundreds to be busy)")
  p.add_argument("--rounds", type=int, default=4,
                 help="timed steps are split into this many alternating superalign/torch blocks")
  p.add_argument("--skip-torch", action="store_true", help="do not run the PyTorch baseline")
  p.add_argument("--checkpoint", metavar="DIR",
                 help="train this GPT-2, GPT-NeoX or Llama-family checkpoint (hf:DIR) on both "
                      "sides instead of --model")
  p.add_argument("--seq", type=int, default=SEQ, help="sequence length (context)")
  p.add_argument("--vocab", type=int, default=None,
                 help="vocabulary of a --model run (default: 8192 for gpt_medium, 50257 for gpt2)")
  p.add_argument("--require-gpu", action="store_true",
                 help="exit 2 unless JAX sees a GPU (and torch CUDA, unless --skip-torch)")
  p.add_argument("--torch-compile", default="auto", choices=("auto", "on", "off"),
                 help="torch.compile the torch model (auto: on CUDA only)")
  p.add_argument("--objective", default="auto", choices=("auto", "classify", "lm"),
                 help="sequence classification or next-token loss (auto: lm for Llama-family "
                      "models, classify for GPT-2 and GPT-NeoX)")
  p.add_argument("--lora", type=int, default=0, metavar="RANK",
                 help="train rank-RANK adapters on every attention and MLP weight, base frozen")
  p.add_argument("--compiler-option", action="append", default=[], metavar="KEY=VALUE",
                 help="an XLA compiler option for superalign's step, e.g. "
                      "xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_REDUCE")
  return p.parse_args(argv)


# The cores this process may run on (all of the machine's unless pinned, e.g. by taskset): torch
# gets one thread each, as XLA's CPU client sizes its pool.
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def compiler_options(items) -> dict:
  out = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep:
      fail(f"--compiler-option {item!r}: expected KEY=VALUE")
    out[key] = {"true": True, "false": False}.get(value.lower(), value)
  return out


# ---------------------------------------------------------------------------------------------
# Other load on the machine (Linux): the share of all CPUs used by other processes.


class OtherLoad:

  @staticmethod
  def _read():
    try:
      with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]
      with open("/proc/self/stat") as f:
        own = f.read().rsplit(")", 1)[1].split()
    except OSError:
      return None
    busy = sum(ticks) - ticks[3] - ticks[4]   # all but idle and iowait
    return busy, sum(ticks), int(own[11]) + int(own[12])

  def __enter__(self):
    self.start, self.share = self._read(), None
    return self

  def __exit__(self, *exc):
    end = self._read()
    if self.start and end and end[1] > self.start[1]:
      other = (end[0] - self.start[0]) - (end[2] - self.start[2])
      self.share = max(0.0, other / (end[1] - self.start[1]))


# ---------------------------------------------------------------------------------------------
# FLOPs


def analytic_flops_per_step(num_layers: int, width: int, batch: int, seq: int,
                            num_classes: int, mlp_width: int | None = None, *,
                            attn_width: int | None = None, kv_width: int | None = None,
                            gated: bool = False, lm_vocab: int | None = None,
                            frozen: bool = False) -> dict[str, float]:
  """Model FLOPs of one training step (forward + backward), counted as the field does.

  Matmuls: each weight matrix entry does one multiply-add per token forward (2 FLOPs) and two
  backward (activation gradient and weight gradient, 4 FLOPs): ``6 * N * tokens``, where ``N``
  counts the non-embedding matmul weights. Per block these are qkv (d x 3d), the attention output
  (d x d), and the MLP (d x 4d, 4d x d): ``12 d^2``, so ``N = 12 * L * d^2`` (with an MLP width
  ``m`` other than 4d, ``L * (4 d^2 + 2 d m)``; with ``attn_width`` = heads x head_dim ``a`` and
  grouped keys and values of ``kv_width`` ``c``, ``2 d a + 2 d c`` for attention; a gated MLP has
  three ``d x m`` matrices). The classifier head (d x classes) runs on one token per sequence
  only: ``6 * d * classes * batch``; a language model's head (``lm_vocab``, d x vocab) runs on
  every token: ``6 * d * vocab * tokens``. ``frozen`` (LoRA over a frozen base): no weight
  gradients, 4 FLOPs per weight and token (the adapters' own FLOPs are left out).

  Attention: QK^T and AV are each ``2 * b * s^2 * a`` FLOPs forward per layer, and backward costs
  twice forward, so ``6 * 2 * L * b * s^2 * a`` (the full s x s square, not halved for the causal
  mask, which is the usual convention). Embedding lookups, norms, activations, softmax and the
  optimizer update are not counted (they are not matmuls).
  """
  tokens = batch * seq
  mlp_width = mlp_width or 4 * width
  attn_width = attn_width or width
  kv_width = kv_width or attn_width
  n_matmul = num_layers * (2 * width * attn_width + 2 * width * kv_width
                           + (3 if gated else 2) * width * mlp_width)
  per_weight = 4 if frozen else 6
  matmul = per_weight * n_matmul * tokens
  head = (per_weight * width * lm_vocab * tokens if lm_vocab
          else 6 * width * num_classes * batch)
  attention = 6 * 2 * num_layers * batch * seq * seq * attn_width
  return {"n_matmul_params": n_matmul, "matmul": matmul, "head": head, "attention": attention,
          "total": matmul + head + attention}


def xla_cost_flops(compiled) -> float | None:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):   # older jax returned one dict per program
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


# ---------------------------------------------------------------------------------------------
# Matmul peak


# On CPU, XLA can run a matmul through YNNPACK or through Eigen (an XLA flag picks which); the
# peak is the better of the two, so that choosing a library for the step cannot lower the bar.
_CPU_MATMUL_LIBRARIES = {
    "ynnpack": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
    "eigen": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"},
}


class MatmulPeak:
  """FLOP/s of ``jax.jit(a @ b)`` on n x n matrices; ``sample(reps)`` keeps the best of reps."""

  def __init__(self, jax, dtype, n: int):
    self.jax, self.n = jax, n
    ka, kb = jax.random.split(jax.random.key(0))
    self.a = jax.random.normal(ka, (n, n), dtype)
    self.b = jax.random.normal(kb, (n, n), dtype)
    lowered = jax.jit(lambda a, b: a @ b).lower(self.a, self.b)
    self.fns = {}
    if jax.devices()[0].platform == "cpu":
      for name, options in _CPU_MATMUL_LIBRARIES.items():
        try:
          self.fns[name] = lowered.compile(compiler_options=options)
        except Exception:   # an XLA without these options: the default compile stands alone
          pass
    if len(self.fns) < len(_CPU_MATMUL_LIBRARIES):
      self.fns["default"] = lowered.compile()
    for f in self.fns.values():
      f(self.a, self.b).block_until_ready()
    self.samples: list[float] = []
    self.best_by = {name: 0.0 for name in self.fns}
    self.runs = 0

  def sample(self, reps: int) -> float:
    best = 0.0
    for name, f in self.fns.items():
      for _ in range(reps):
        t0 = time.perf_counter()
        f(self.a, self.b).block_until_ready()
        flops = 2 * self.n ** 3 / (time.perf_counter() - t0)
        self.best_by[name] = max(self.best_by[name], flops)
        best = max(best, flops)
      self.runs += reps
    self.samples.append(best)
    return best


# ---------------------------------------------------------------------------------------------
# The two sides. Each is set up and warmed up first; ``run(n)`` then times n steps, waiting for
# every step's results before its clock stops.


def lora_trained(params):
  """Labels for ``optim.make``'s ``trainable_mask``: True on adapters (``*_lora``) and the task
  head, False on the base weights (zero updates where the core still holds them)."""
  import jax
  names = lambda path: [str(getattr(k, "key", k)) for k in path]
  return jax.tree_util.tree_map_with_path(
      lambda path, _: any(n.endswith("_lora") or n == "head" for n in names(path)), params)


class Superalign:
  """The framework's own step: builder -> state.create -> steps.make_train_step on a data mesh."""

  def __init__(self, args, batches, arch=None):
    import jax
    from superalign import models
    from superalign.core import mesh as mesh_lib
    from superalign.core import optim, state as state_lib, steps
    from superalign.core.spec import Optim
    from superalign.models import InputSpec
    from superalign.models.lora import LoRA

    self.jax = jax
    self.batches = batches
    self.mesh = mesh_lib.make_mesh({"data": -1})
    name = f"hf:{os.path.abspath(args.checkpoint)}" if args.checkpoint else args.model
    lm = args.objective == "lm"
    spec = InputSpec((args.seq + lm,), "tokens", num_classes=NUM_CLASSES, vocab_size=args.vocab)
    lora = LoRA(args.lora, 2.0 * args.lora, ("attn.*", "mlp.*")) if args.lora else None
    build = models.builder(name, spec, compute_dtype=args.dtype, lora=lora)
    tx = optim.make(Optim(name="adamw", learning_rate=LR, weight_decay=WEIGHT_DECAY,
                          schedule="constant", clip_norm=0.0), args.warmup + args.steps)
    # A checkpoint is the warm start, read slice by slice onto the mesh (models.pretrained); with
    # LoRA the core trains the adapters and head and carries the base frozen.
    self.state, shardings = state_lib.create(build, tx, 0, self.mesh,
                                             warm=models.pretrained(name))
    self.n_params = state_lib.param_count(self.state.all_params())   # trained and frozen
    # A language model reads x[:, :-1] and predicts x[:, 1:], every token after the first (BOS).
    loss = steps.next_token_loss(BOS) if lm else steps.cross_entropy_loss
    self.step = steps.make_train_step(loss, shardings, self.mesh)
    self.put = lambda b: mesh_lib.shard_batch({"x": b[0]} if lm else {"x": b[0], "y": b[1]},
                                              self.mesh)
    self.i = 0

    t0 = time.perf_counter()
    self.options = compiler_options(args.compiler_option)
    compiled = self.step.lower(self.state, self.put(batches[0])).compile(
        compiler_options=self.options or None)
    self.compile_s = time.perf_counter() - t0
    self.xla_flops = xla_cost_flops(compiled)
    if self.options:   # the step as compiled with these options (same program, same donation)
      self.step = compiled
    self.times: list[float] = []
    self.run(args.warmup, record=False)

  def run(self, n: int, record: bool = True) -> None:
    for _ in range(n):
      batch = self.batches[self.i % len(self.batches)]
      self.i += 1
      t0 = time.perf_counter()
      self.state, self.metrics = self.step(self.state, self.put(batch))
      self.jax.block_until_ready((self.state, self.metrics))
      if record:
        self.times.append(time.perf_counter() - t0)

  @property
  def loss(self) -> float:
    return float(self.metrics["loss"])


def torch_lora(model, rank: int, names=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                         "up_proj", "down_proj")) -> None:
  """``--lora`` on a transformers model, as ``models.lora`` computes it: each ``nn.Linear`` of
  ``names`` adds ``(alpha / rank) * (x @ a) @ b`` (alpha = 2 * rank; ``a`` Kaiming-uniform as PEFT
  draws it, ``b`` zeros) to its output; every other parameter is frozen."""
  import torch
  model.requires_grad_(False)
  for module in list(model.modules()):
    for child_name, child in module.named_children():
      if isinstance(child, torch.nn.Linear) and child_name in names:
        bound = child.in_features ** -0.5
        a = torch.empty(child.in_features, rank, device=child.weight.device)
        child.lora_a = torch.nn.Parameter(a.uniform_(-bound, bound))
        child.lora_b = torch.nn.Parameter(
            torch.zeros(rank, child.out_features, device=child.weight.device))
        child.register_forward_hook(lambda m, inp, out: out + (inp[0] @ m.lora_a) @ m.lora_b * 2.0)


class Torch:
  """HuggingFace GPT2ForSequenceClassification (SDPA attention) + torch.optim.AdamW; with
  ``--checkpoint``, the checkpoint family's class (``AutoModelForSequenceClassification``, or
  ``AutoModelForCausalLM`` and its own loss for the language-model objective).

  float32 eager on CPU (all cores). On a CUDA device, ``torch.compile``d, float32 (TF32 matmuls,
  as JAX's default precision on GPU) or, with ``--dtype bfloat16``, bfloat16 autocast (float32
  parameters and optimizer, as on the superalign side). With ``--checkpoint`` the model is
  ``from_pretrained(DIR)`` (with a fresh score head when it classifies).
  """

  def __init__(self, args, batches, num_layers, width, num_heads, device: str = "cpu"):
    import numpy as np
    import torch
    import transformers

    if device == "cpu":
      torch.set_num_threads(CORES)
    else:
      torch.backends.cuda.matmul.allow_tf32 = True
      torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    self.torch = torch
    self.device = torch.device(device)
    self.autocast = (device == "cuda" and args.dtype == "bfloat16")
    no_dropout = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0)
    self.lm = args.objective == "lm"
    if self.lm:
      model = transformers.AutoModelForCausalLM.from_pretrained(
          args.checkpoint, attn_implementation="sdpa", dtype=torch.float32)
    elif args.checkpoint:
      if transformers.AutoConfig.from_pretrained(args.checkpoint).model_type == "gpt_neox":
        no_dropout = dict(hidden_dropout=0.0, attention_dropout=0.0, classifier_dropout=0.0)
      model = transformers.AutoModelForSequenceClassification.from_pretrained(
          args.checkpoint, num_labels=NUM_CLASSES, pad_token_id=0, attn_implementation="sdpa",
          dtype=torch.float32, **no_dropout)
    else:
      config = transformers.GPT2Config(
          n_layer=num_layers, n_embd=width, n_head=num_heads, n_positions=args.seq,
          vocab_size=args.vocab, num_labels=NUM_CLASSES, pad_token_id=0, bos_token_id=0,
          eos_token_id=0, attn_implementation="sdpa", **no_dropout)
      model = transformers.GPT2ForSequenceClassification(config)
    self.model = model.float().to(self.device)
    self.model.train()
    if args.lora:
      torch_lora(self.model, args.lora)
    trained = [p for p in self.model.parameters() if p.requires_grad]
    self.opt = torch.optim.AdamW(trained, lr=LR, weight_decay=WEIGHT_DECAY,
                                 fused=device == "cuda")
    self.n_params = sum(p.numel() for p in self.model.parameters())
    self.n_trained = sum(p.numel() for p in trained)
    self.compiled = args.torch_compile == "on" or (args.torch_compile == "auto"
                                                   and device == "cuda")
    self.forward = torch.compile(self.model) if self.compiled else self.model
    self.batches = [(np.asarray(x, np.int64), None if y is None else np.asarray(y, np.int64))
                    for x, y in batches]
    self.version = f"torch {torch.__version__}, transformers {transformers.__version__}"
    self.attn = getattr(self.model.config, "_attn_implementation", None)
    self.threads = torch.get_num_threads()
    self.i = 0
    self.times: list[float] = []
    t0 = time.perf_counter()
    self.run(1, record=False)   # with torch.compile, the first step compiles
    self.first_step_s = time.perf_counter() - t0
    self.run(max(args.warmup - 1, 1 if self.compiled else 0), record=False)

  def run(self, n: int, record: bool = True) -> None:
    torch = self.torch
    for _ in range(n):
      x, y = self.batches[self.i % len(self.batches)]
      self.i += 1
      t0 = time.perf_counter()
      x = torch.from_numpy(x).to(self.device)
      if self.lm:   # reads x[:, :-1], predicts x[:, 1:] (already shifted: shift_labels)
        targets = x[:, 1:].contiguous()
        x, kw = x[:, :-1], dict(labels=targets, shift_labels=targets, use_cache=False)
      else:
        kw = dict(labels=torch.from_numpy(y).to(self.device))
      with (torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast
            else contextlib.nullcontext()):
        out = self.forward(input_ids=x, **kw)
      self.opt.zero_grad(set_to_none=True)
      out.loss.backward()
      self.opt.step()
      self.last_loss = out.loss.item()   # waits for the device (CPU eager is synchronous anyway)
      if record:
        self.times.append(time.perf_counter() - t0)

  @property
  def loss(self) -> float:
    return self.last_loss

  def matmul_flops(self, n: int, reps: int) -> float:
    """Best FLOP/s of ``a @ b`` on n x n float32 in torch (its BLAS), for reference."""
    a, b = self.torch.randn(n, n), self.torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
      t0 = time.perf_counter()
      a @ b
      best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


# ---------------------------------------------------------------------------------------------


def main(argv=None):
  args = parse_args(argv)
  import jax
  import jax.numpy as jnp
  import numpy as np
  from superalign.models.registry import MODELS

  from superalign.core.errors import ConfigError
  from superalign.models import registry

  dev = jax.devices()[0]
  platform = dev.platform
  backend = jax.default_backend()
  device = f"{platform}:{dev.device_kind} x{jax.device_count()}"
  if platform == "cpu":
    device += f" ({CORES} of {os.cpu_count()} cores)"
  if args.require_gpu and platform != "gpu":
    fail(f"--require-gpu: JAX sees {device} (backend {backend}), no GPU")
  if args.dtype == "bfloat16" and platform == "cpu":
    print("note: bfloat16 on a CPU without bfloat16 matmul units checks the code path, not speed")
  tmp, source = None, ""
  if args.model in LLAMA_SHAPES and not args.checkpoint:
    tmp = tempfile.TemporaryDirectory(prefix="train_bench_")
    t0 = time.perf_counter()
    args.checkpoint = save_llama(tmp.name, args.model)
    source = f"random {args.model}, saved by transformers in {time.perf_counter() - t0:.1f} s: "
  arch, kv_heads, head_dim, gated = None, None, None, False
  if args.checkpoint:
    try:
      family = registry.loader(args.checkpoint, "--checkpoint")
      arch = family.architecture(family.read_config(args.checkpoint, "--checkpoint"))
    except ConfigError as e:
      fail(str(e))
    num_layers, width, num_heads = arch["num_layers"], arch["width"], arch["num_heads"]
    mlp_width, args.vocab = arch["mlp_width"], arch["vocab_size"]
    if args.seq + 1 > arch["max_len"]:
      fail(f"--seq {args.seq} exceeds the checkpoint's {arch['max_len']} positions")
    model_name = f"{source}hf:{args.checkpoint}"
    llama = "options" in arch and not arch["options"].fused_qkv   # hf_llama's families
    if llama:
      options = arch["options"]
      kv_heads, head_dim, gated = options.num_kv_heads, options.head_dim, options.gated_mlp
  else:
    kw = MODELS[args.model].kwargs
    num_layers, width, num_heads = kw["num_layers"], kw["width"], kw["num_heads"]
    mlp_width = 4 * width
    args.vocab = args.vocab or MODEL_VOCAB[args.model]
    model_name, llama = args.model, False
  if args.objective == "auto":
    args.objective = "lm" if llama else "classify"
  if args.objective == "lm" and not args.checkpoint:
    fail("--objective lm: needs --checkpoint or a Llama --model (torch loads it as a causal LM)")
  if args.lora and not llama:
    fail("--lora: Llama-family models only (a Llama --model or checkpoint)")
  head_dim = head_dim or width // num_heads
  tokens_per_step = args.batch * args.seq
  lm = args.objective == "lm"
  what = ("language model (next-token loss on every token after BOS)" if lm
          else "sequence classifier")
  print("measured: train step (forward + backward + AdamW) of a "
        f"{'Llama-family' if llama else 'GPT-2'} {what}"
        + (f", LoRA rank {args.lora} on every attention and MLP weight" if args.lora else "")
        + ", superalign (JAX) vs transformers + PyTorch, tokens/s = batch x seq / step time")
  print(f"device {device}; JAX backend {backend}; jax {jax.__version__}; model {model_name} "
        f"(L={num_layers}, d={width}, h={num_heads}"
        + (f", kv heads {kv_heads}, head dim {head_dim}" if llama else "")
        + f", mlp {mlp_width}{' gated' if gated else ''}), batch {args.batch} x seq "
        f"{args.seq}, vocab {args.vocab}, dtype {args.dtype}, {args.warmup} warmup + "
        f"{args.steps} timed steps")
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
        + (f"; step compiler options {compiler_options(args.compiler_option)}"
           if args.compiler_option else ""))
  if hasattr(os, "getloadavg"):
    print(f"load average before start: {os.getloadavg()[0]:.2f}")

  rng = np.random.default_rng(0)
  if lm:   # seq + 1 tokens: the model reads the first seq and predicts the last seq
    batches = [(rng.integers(BOS + 1, args.vocab, (args.batch, args.seq + 1), dtype=np.int32),
                None) for _ in range(4)]
    for x, _ in batches:
      x[:, 0] = BOS
  else:
    batches = [(rng.integers(1, args.vocab, (args.batch, args.seq), dtype=np.int32),
                rng.integers(0, NUM_CLASSES, (args.batch,), dtype=np.int32)) for _ in range(4)]

  # Matmul peak, in the compute dtype, sampled once before and once after each round below and
  # taken as the best of all samples: a machine shared with other work cannot then understate it.
  peak_n = 2048 if platform == "cpu" else 8192
  peak_dtype = jnp.float32 if args.dtype == "float32" else jnp.bfloat16
  peaks = MatmulPeak(jax, peak_dtype, peak_n)
  peaks.sample(5)

  shape = dict(attn_width=num_heads * head_dim, kv_width=(kv_heads or num_heads) * head_dim,
               gated=gated, lm_vocab=args.vocab if lm else None)
  flops = analytic_flops_per_step(num_layers, width, args.batch, args.seq, NUM_CLASSES,
                                  mlp_width, frozen=bool(args.lora), **shape)
  sa = Superalign(args, batches, arch)
  print(f"superalign: {sa.n_params:,} params, compiled in {sa.compile_s:.1f} s")
  base_differentiated = None
  if args.lora:
    # What the step differentiates: state.params, less the adapters and the task head. A core that
    # freezes the base holds it elsewhere; one that does not computes its weight gradients.
    trained = jax.tree.leaves(lora_trained(sa.state.params))
    sizes = [x.size for x in jax.tree.leaves(sa.state.params)]
    base_differentiated = sum(n for n, t in zip(sizes, trained) if not t)
    full = analytic_flops_per_step(num_layers, width, args.batch, args.seq, NUM_CLASSES,
                                   mlp_width, **shape)["total"]
    print(f"  LoRA: {sum(n for n, t in zip(sizes, trained) if t):,} adapter and head parameters "
          f"trained; {base_differentiated:,} base parameters in the differentiated state"
          + (f"; XLA counts {sa.xla_flops / full:.2f}x a full step's analytic FLOPs"
             if sa.xla_flops else "")
          + ("" if not base_differentiated else
             " -- NOTE: core.state does not freeze the base yet (zero updates only): its weight "
             "gradients are still computed, so this is not yet a LoRA step's cost"))

  th = None
  if args.skip_torch:
    print("torch: skipped (--skip-torch)")
  else:
    torch_device = "cpu"
    if platform != "cpu":
      try:
        import torch
        torch_device = "cuda" if torch.cuda.is_available() else None
      except ImportError:
        torch_device = None
    if torch_device is None:
      if args.require_gpu:
        fail(f"--require-gpu: torch sees no CUDA device (JAX is on {device}); pass --skip-torch "
             "to measure superalign alone")
      print(f"torch: SKIPPED on {platform} (torch has no CUDA here); no ratio is reported")
    else:
      th = Torch(args, batches, num_layers, width, num_heads, torch_device)
      print(f"torch: {th.version} on {torch_device}"
            + (f" ({torch.cuda.get_device_name()})" if torch_device == "cuda" else "")
            + f", attn={th.attn}, torch.compile {'on' if th.compiled else 'off'}, "
            f"{'bfloat16 autocast' if th.autocast else 'float32'}, {th.threads} threads, "
            f"{th.n_params:,} params"
            + (f" ({th.n_trained:,} trained)" if args.lora else "")
            + ("" if lm else " (superalign's head has a bias, GPT-2's score layer none)")
            + f"; first step {th.first_step_s:.1f} s")

  # Timed rounds: the two sides alternate in small blocks so that any other load on the machine
  # falls on both alike; every step is a full forward + backward + AdamW update.
  # A short pause between blocks lets each side's worker threads stop spinning before the other
  # side's clock starts.
  torch_mm = 0.0
  rounds = max(1, min(args.steps, args.rounds))
  per_round = [args.steps // rounds + (r < args.steps % rounds) for r in range(rounds)]
  round_ratios = []   # each round's superalign block against the torch block that follows it
  with OtherLoad() as load:
    for n in per_round:
      time.sleep(0.2)
      sa.run(n)
      if th is not None:
        time.sleep(0.2)
        th.run(n)
        round_ratios.append(sum(th.times[-n:]) / sum(sa.times[-n:]))
      time.sleep(0.2)
      peaks.sample(3)
      if th is not None and platform == "cpu" and args.dtype == "float32":
        torch_mm = max(torch_mm, th.matmul_flops(peak_n, 3))
  peak = max(peaks.samples)
  if load.share is not None:
    print(f"other processes used {load.share:.0%} of the CPUs during the timed rounds"
          + (" (a busy machine: expect low, noisy figures)" if load.share > 0.05 else ""))
  print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s (jit(a @ b), n={peak_n}, {args.dtype}; best of "
        f"{peaks.runs} runs; by compile: "
        + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in peaks.best_by.items()) + "; per-sample bests "
        + ", ".join(f"{p / 1e9:.0f}" for p in peaks.samples) + ")")

  if torch_mm:
    print(f"  for reference, torch's own a @ b (its BLAS) at n={peak_n}: {torch_mm / 1e9:.1f} "
          "GFLOP/s")

  def describe(times):
    mean = sum(times) / len(times)
    return mean, (f"step mean {mean * 1e3:.1f} ms (median {statistics.median(times) * 1e3:.1f}, "
                  f"min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f})")

  sa_step, text = describe(sa.times)
  sa_tps = tokens_per_step / sa_step
  sa_flops = flops["total"] / sa_step
  print(f"superalign: {text}, {sa_tps:,.0f} tokens/s, loss {sa.loss:.4f}")
  print(f"  FLOPs/step analytic {flops['total'] / 1e9:.2f} G (matmul {flops['matmul'] / 1e9:.2f} "
        f"+ attention {flops['attention'] / 1e9:.2f} + head {flops['head'] / 1e9:.4f}; "
        f"{flops['n_matmul_params']:,} non-embedding matmul params)")
  if sa.xla_flops is not None:
    print(f"  FLOPs/step by XLA cost analysis {sa.xla_flops / 1e9:.2f} G "
          f"({sa.xla_flops / flops['total']:.3f}x analytic; XLA also counts elementwise work)")
  mfu = sa_flops / peak
  print(f"  achieved {sa_flops / 1e9:.1f} GFLOP/s analytic = {mfu:.1%} of the measured matmul peak"
        + (f" ({sa_flops / torch_mm:.1%} of torch's)" if torch_mm else "")
        + (f"; {sa.xla_flops / sa_step / 1e9:.1f} GFLOP/s by XLA's count" if sa.xla_flops else ""))
  nominal = None
  if platform == "gpu":
    print("  MFU target on H100/H200 bfloat16: >= 45% of the nominal dense peak")
    for key, kind_peaks in NOMINAL_PEAK.items():
      if key in dev.device_kind and args.dtype in kind_peaks:
        nominal = kind_peaks[args.dtype]
    if nominal:
      print(f"  MFU vs nominal {nominal / 1e12:.0f} TFLOP/s {args.dtype} dense: "
            f"{sa_flops / nominal:.2%}")

  torch_tps = speedup = None
  if th is not None:
    th_step, text = describe(th.times)
    torch_tps = tokens_per_step / th_step
    speedup = sa_tps / torch_tps
    th_flops = flops["total"] / th_step
    print(f"torch: {text}, {torch_tps:,.0f} tokens/s = {th_flops / 1e9:.1f} GFLOP/s "
          f"({th_flops / peak:.1%} of the measured matmul peak), loss {th.loss:.4f}")
    print(f"speedup superalign / torch: {speedup:.2f}x (tokens/s {sa_tps:,.0f} vs "
          f"{torch_tps:,.0f}); by round: "
          + ", ".join(f"{r:.2f}" for r in round_ratios)
          + f" (median {statistics.median(round_ratios):.2f}x); best step against best step, the "
          f"figure least moved by other load: {min(th.times) / min(sa.times):.2f}x")

  result = {
      "superalign_tokens_per_s": round(sa_tps, 1),
      "torch_tokens_per_s": round(torch_tps, 1) if torch_tps else None,
      "speedup_vs_torch": round(speedup, 3) if speedup else None,
      "speedup_by_round": [round(r, 3) for r in round_ratios] or None,
      "speedup_best_step": round(min(th.times) / min(sa.times), 3) if th is not None else None,
      "matmul_peak_gflops": round(peak / 1e9, 2),
      "superalign_gflops": round(sa_flops / 1e9, 2),
      "mfu_vs_measured_peak": round(mfu, 4),
      "mfu_vs_nominal_peak": round(sa_flops / nominal, 4) if nominal else None,
      "torch_matmul_gflops": round(torch_mm / 1e9, 2) if torch_mm else None,
      "xla_flops_per_step": sa.xla_flops,
      "analytic_flops_per_step": flops["total"],
      "other_load": round(load.share, 3) if load.share is not None else None,
      "device": device,
      "backend": backend,
      "torch_device": th.device.type if th is not None else None,
      "torch_compile": th.compiled if th is not None else None,
      "compiler_options": compiler_options(args.compiler_option) or None,
      "dtype": args.dtype,
      "model": args.model if source else model_name,
      "objective": args.objective,
      "lora": args.lora or None,
      "lora_base_frozen": (base_differentiated == 0) if args.lora else None,
      "batch": args.batch,
      "seq": args.seq,
      "vocab": args.vocab,
      "steps": args.steps,
  }
  print(json.dumps(result))
  if tmp is not None:
    tmp.cleanup()
  return result


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
