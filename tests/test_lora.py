"""LoRA in the core: adapters on a tiny Llama (and GPT-2, GPT-NeoX) checkpoint trained by the
engine. Fresh adapters change nothing; training moves only the adapters and the head, and the
optimizer state and the checkpoint hold no base weight; an interrupted run resumes to the same
adapters; a merged save is a plain checkpoint transformers reads, computing what the adapted
model computes; a misfit ``model.lora`` is one line at validation; and a weak GPT-2 supervises
a strong Llama student trained with LoRA, end to end."""

import json
import os
import signal
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import (_assert_one_line_error, launch, one_line, save_tiny_decoder,
                      save_tiny_gpt2, save_tiny_neox)
from superalign import models
from superalign.core import loop, mesh as mesh_lib, state as state_lib
from superalign.core.errors import ConfigError
from superalign.core.spec import MeshSpec, Optim, Train, TrainSpec
from superalign.core.specs import InputSpec
from superalign.models import lora as lora_lib
from superalign.parties import classifier

LORA = lora_lib.LoRA(rank=4, alpha=8.0, targets=("attn.*", "mlp.*"))
INPUTS = InputSpec((8,), "tokens", 2, 300)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
  path = tmp_path_factory.mktemp("llama")
  save_tiny_decoder("llama", path, seed=0, num_hidden_layers=2)
  return str(path)


def _examples(n=64, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.integers(3, 300, size=(n, 8)).astype(np.int32)
  return {"x": x, "y": (x[:, 1] < 150).astype(np.int32)}


def _trainer(path, workdir, lora=LORA, steps=8, **fields):
  spec = TrainSpec(optim=Optim(learning_rate=1e-2, schedule="constant"),
                   train=Train(batch_size=16, num_steps=steps, eval_every=0, log_every=1,
                               checkpoint_every=4),
                   mesh=MeshSpec(axes=(("data", 1),)))
  model = classifier.Model(f"hf:{path}", max_len=8, lora=lora)
  fields.setdefault("mesh", mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1]))
  return classifier.trainer(spec, model, INPUTS, str(workdir), tag="t", **fields)


def _flat(tree):
  """``{"a/b/c": array}`` of a nested dict or nnx.State (host arrays)."""
  if isinstance(tree, nnx.State):
    tree = tree.to_pure_dict()
  key = lambda v: hasattr(v, "dtype") and jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key)
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path):
          np.asarray(jax.random.key_data(v) if key(v) else v) for path, v in leaves}


@nnx.jit
def _forward(model, ids):
  return model.lm_logits(model.hidden_states(ids)), model(ids)


def _lm_logits(model, ids):
  return np.asarray(_forward(model, jnp.asarray(ids))[0])


def _holding(path, weights, lora=None, seed=0):
  """The checkpoint's model (with ``lora``'s adapters) built abstractly, so no initializer
  compiles: ``weights`` (a nested dict) where given, the rest drawn at random."""
  build = models.builder(f"hf:{path}", INPUTS, lora=lora)
  graphdef, state = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))))
  rng = np.random.default_rng(seed)
  draw = lambda s: (0.05 * rng.standard_normal(s.shape)).astype(s.dtype)
  nnx.replace_by_pure_dict(state, jax.tree.map(draw, state.to_pure_dict()))
  return nnx.merge(graphdef, state_lib.overlay(state, weights))


def test_fresh_adapters_leave_the_logits_unchanged(llama, tmp_path):
  """The engine's initial state (adapters as ``Adapter`` draws them) computes what the
  checkpoint without adapters computes, bitwise."""
  state = _trainer(llama, tmp_path).init().state
  adapters = _flat(nnx.state(state.model(), nnx.LoRAParam))
  assert len(adapters) == 2 * 7 * 2      # a and b on 7 weights in each of 2 blocks
  assert all(not v.any() for k, v in adapters.items() if k.endswith("/b"))   # b starts at 0
  assert all(v.any() for k, v in adapters.items() if k.endswith("/a"))
  weights = jax.device_get(nnx.state(state.model(), nnx.Not(nnx.LoRAParam)).to_pure_dict())
  plain = _holding(llama, weights)
  ids = _examples(4)["x"]
  for ours, base in zip(_forward(state.model(), ids), _forward(plain, ids)):   # LM and head
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(base))


def test_training_moves_only_the_adapters_and_the_head(llama, tmp_path):
  """The engine path: base weights bitwise the checkpoint's, adapters and head moved; the
  optimizer state and the Orbax checkpoint hold adapters and head only."""
  import orbax.checkpoint as ocp
  job = _trainer(llama, tmp_path)
  before = _flat(job.init().state.params)
  assert before and all("_lora/" in k or k.startswith("head/") for k in before)
  trained = job.fit(_examples())
  after = _flat(trained.state.params)
  assert after.keys() == before.keys()
  assert all(not np.array_equal(after[k], before[k]) for k in after if k.endswith("_lora/b"))
  assert not np.array_equal(after["head/kernel"], before["head/kernel"])
  base = _flat(models.registry.loader(llama).load(llama))
  frozen = _flat(trained.state.frozen)
  assert frozen.keys() == base.keys()
  for k, v in base.items():
    np.testing.assert_array_equal(frozen[k], v, err_msg=k)
  assert trained.num_params == sum(v.size for v in [*base.values(), *after.values()])
  moments = _flat(trained.state.opt_state)
  assert moments and all("_lora" in k or "head" in k for k, v in moments.items() if v.ndim)
  saved = ocp.PyTreeCheckpointer().restore(str(tmp_path / "checkpoints" / "t" / "8" / "state"))
  saved = _flat(saved)
  arrays = [k for k in saved if k not in ("state/step", "state/rng") and "count" not in k]
  assert arrays and all("_lora" in k or "/head/" in k for k in arrays), [
      k for k in arrays if "_lora" not in k and "/head/" not in k]
  assert not any("embed" in k for k in saved)


def test_an_interrupted_lora_run_resumes_to_the_same_adapters(llama, tmp_path):
  full = _trainer(llama, tmp_path / "full", steps=10).fit(_examples())

  def stop(step):
    if step == 5:   # after the step-4 checkpoint
      os.kill(os.getpid(), signal.SIGTERM)
  with pytest.raises(loop.Preempted):
    _trainer(llama, tmp_path / "cut", steps=10, on_batch=stop).fit(_examples())
  resumed = _trainer(llama, tmp_path / "cut", steps=10).fit(_examples())
  assert resumed.fit.resumed_from == 6
  want, got = _flat(full.state.all_params()), _flat(resumed.state.all_params())
  assert want.keys() == got.keys()
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_adapters_are_sharded_like_their_base_weights(llama, tmp_path):
  """On a data x fsdp x model mesh each adapter factor is split as its weight is on the side
  they share, and training computes the one-device losses."""
  from superalign.results.metrics import read_metrics
  losses = {}
  for name, axes in (("one", {"data": 1}), ("mesh", {"data": 2, "fsdp": 2, "model": 2})):
    mesh = mesh_lib.make_mesh(axes, devices=jax.devices()[:int(np.prod(list(axes.values())))])
    trained = _trainer(llama, tmp_path / name, steps=4, mesh=mesh).fit(_examples())
    losses[name] = [r["train/loss"] for r in read_metrics(str(tmp_path / name))
                    if "train/loss" in r]
  np.testing.assert_allclose(losses["mesh"], losses["one"], rtol=2e-4, atol=1e-5)
  spec = lambda x: tuple(x.sharding.spec) + (None,) * (x.ndim - len(x.sharding.spec))
  block = trained.state.model().blocks[0]
  pairs = [(block.attn, n) for n in ("q", "k", "v", "out")]
  pairs += [(block.mlp, n) for n in ("gate", "up", "down")]
  split = 0
  for parent, name in pairs:
    weight, adapter = getattr(parent, name)[...], getattr(parent, f"{name}_lora")
    a, b, shared = adapter.a[...], adapter.b[...], adapter.a.ndim - 1
    assert spec(a)[:shared] == spec(weight)[:shared] and spec(a)[shared] is None, name
    assert spec(b)[1:] == spec(weight)[shared:] and spec(b)[0] is None, name
    split += any(spec(weight))
  assert split == len(pairs)   # every weight is split on this mesh, so the check bites


@pytest.mark.parametrize("family", ["llama", "gpt2", "neox"])
def test_a_merged_save_is_a_checkpoint_transformers_reads(family, tmp_path):
  """Adapters with random ``b`` folded into their weights: our plain model read back computes
  the adapted model's LM logits, and so does transformers' ``from_pretrained``."""
  import torch
  import transformers
  source = tmp_path / "source"
  if family == "llama":
    save_tiny_decoder("llama", source, seed=1, num_hidden_layers=2)
  elif family == "gpt2":
    save_tiny_gpt2(source, seed=1)
  else:
    save_tiny_neox(source, seed=1)
  model = _holding(source, models.registry.loader(str(source)).load(str(source)), LORA)
  assert all(v.any() for v in _flat(nnx.state(model, nnx.LoRAParam)).values())   # b drawn too
  out = tmp_path / "merged"
  models.save_merged(f"hf:{source}", model, str(out))
  assert not any("lora" in name or name.startswith("head") for name in hf_names(out))
  ids = _examples(3)["x"]
  adapted = _lm_logits(model, ids)
  ours = _lm_logits(_holding(out, models.registry.loader(str(out)).load(str(out))), ids)
  np.testing.assert_allclose(ours, adapted, atol=1e-5, rtol=0)
  reference = transformers.AutoModelForCausalLM.from_pretrained(
      str(out), attn_implementation="eager").eval()
  with torch.no_grad():
    theirs = reference(torch.tensor(ids, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(theirs, adapted, atol=1e-5, rtol=0)
  # the adapters mattered: the source checkpoint computes something else
  with torch.no_grad():
    base = transformers.AutoModelForCausalLM.from_pretrained(str(source)).eval()
    assert np.abs(base(torch.tensor(ids, dtype=torch.long)).logits.numpy() - theirs).max() > 1e-3


def hf_names(path):
  """The tensor names of a safetensors checkpoint."""
  from safetensors import safe_open
  with safe_open(os.path.join(str(path), "model.safetensors"), "np") as f:
    return list(f.keys())


def test_a_merged_save_needs_a_checkpoint_name(tmp_path):
  with pytest.raises(ConfigError) as e:
    models.save_merged("gpt_nano", None, str(tmp_path))
  one_line(e, "'gpt_nano' is no checkpoint")


def test_a_target_that_matches_nothing_is_one_line(llama, tmp_path, monkeypatch, capsys):
  with pytest.raises(ConfigError) as e:
    models.check_lora(f"hf:{llama}", lora_lib.LoRA(4, 8.0, ("attn.*", "attn.qkv")))
  one_line(e, "model.lora.targets: 'attn.qkv' matches no weight of model.name=", "attn.q, ")
  out = launch(monkeypatch, capsys, "--config=experiments/supervised/digits.py:smoke",
               f"--config.model.name=hf:{llama}", "--config.model.lora.rank=4",
               "--config.model.lora.targets=attn.q,mlp.fc", f"--workdir={tmp_path}", "--dry_run")
  _assert_one_line_error(out, "model.lora.targets: 'mlp.fc' matches no weight")


def test_lora_on_an_mlp_is_one_line(tmp_path, monkeypatch, capsys):
  out = launch(monkeypatch, capsys, "--config=experiments/supervised/digits.py:smoke",
               "--config.model.lora.rank=4", f"--workdir={tmp_path}", "--dry_run")
  _assert_one_line_error(out, "model.lora.rank=4: LoRA adapts transformer weights; "
                              "model.name='mlp_base' is a mlp model")
  out = launch(monkeypatch, capsys, "--config=experiments/supervised/digits.py:smoke",
               "--config.model.lora.targets=", f"--workdir={tmp_path}", "--dry_run")
  _assert_one_line_error(out, "model.lora.targets=''")


def test_the_config_block_reads_as_a_spec():
  assert lora_lib.from_block(None) is None
  assert lora_lib.from_block({"rank": 0, "alpha": 16.0, "targets": "attn.*"}) is None
  spec = lora_lib.from_block({"rank": 8, "alpha": 4.0, "targets": " attn.q, attn.v ,"})
  assert spec == lora_lib.LoRA(8, 4.0, ("attn.q", "attn.v")) and spec.scale == 0.5
  assert lora_lib.from_block({"rank": 2, "targets": ("mlp.*",)}).targets == ("mlp.*",)


@pytest.mark.e2e
@pytest.mark.slow
def test_weak_gpt2_supervises_a_strong_llama_trained_with_lora(tmp_path):
  """``experiments/w2s/gpt2.py`` with a GPT-2 weak model and a tiny Llama strong one (the same
  tokenizer), every stage fine-tuning LoRA adapters and the head: the students' checkpoints
  hold adapters and head only."""
  import orbax.checkpoint as ocp
  from conftest import write_gpt2_ladder
  from experiments.w2s import gpt2
  from superalign.launch import runners
  dirs, data = write_gpt2_ladder(tmp_path / "ladder")
  weak = dirs.split(":")[0]
  strong = tmp_path / "llama"
  save_tiny_decoder("llama", strong, seed=3, num_hidden_layers=2)
  shutil.copy(f"{weak}/tokenizer.json", strong)
  config = gpt2.get_config(f"smoke,dirs={weak}:{strong},data={data},seeds=1")
  config.mesh.num_devices = 1
  config.model.lora.rank = 4
  runners.validate(config)
  results = runners.execute(config, str(tmp_path / "run"))
  json.dumps(results)
  assert results["ladder"] == [f"hf:{weak}", f"hf:{strong}"]
  pair = results["pairs"][0]["losses"]["xent"]
  assert 0 <= pair["w2s_accuracy"]["mean"] <= 1
  students = tmp_path / "run" / "checkpoints" / "student" / models.label(f"hf:{strong}")
  stage = next(p for p in students.rglob("state") if p.is_dir())
  saved = _flat(ocp.PyTreeCheckpointer().restore(str(stage)))
  arrays = [k for k in saved if k not in ("state/step", "state/rng") and "count" not in k]
  assert arrays and all("_lora" in k or "/head/" in k for k in arrays), [
      k for k in arrays if "_lora" not in k and "/head/" not in k]
