"""Hugging Face GPT-NeoX (Pythia) checkpoints: parity with ``transformers`` (logits, every
layer's hidden states, greedy tokens, left padding) with the parallel residual on and off and a
partial or full rotary share, the bitwise round trip, the registry (``hf:<dir>`` of either family
in one ladder) and one-line errors. Every checkpoint is a random tiny model that ``transformers``
saves here."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from conftest import save_tiny_gpt2, save_tiny_neox
from superalign import models
from superalign.core import mesh as mesh_lib, state as state_lib
from superalign.core.errors import ConfigError
from superalign.core.specs import InputSpec
from superalign.models import generate as gen, hf_neox

# Sequential residual, every head dimension rotary, a rope base and epsilon of their own.
SEQUENTIAL = dict(use_parallel_residual=False, rotary_pct=1.0, rotary_emb_base=500.0,
                  layer_norm_eps=1e-3, hidden_size=48, num_attention_heads=6,
                  intermediate_size=80, num_hidden_layers=3)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  path = tmp_path_factory.mktemp("neox")
  return str(path), save_tiny_neox(path, seed=0)


def _model(path, num_classes=2):
  """The checkpoint through the framework's own path: registry builder, then ``state.create``
  with the checkpoint as the warm start."""
  name = f"hf:{path}"
  spec = InputSpec((8,), "tokens", num_classes, 300)
  mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
  state, _ = state_lib.create(models.builder(name, spec), optax.sgd(0.0), 0, mesh,
                              warm=models.pretrained(name))
  return state.model()


@pytest.mark.parametrize("config", [{}, SEQUENTIAL, {"tie_word_embeddings": True}],
                         ids=["pythia", "sequential_full_rotary", "tied_head"])
def test_logits_and_every_hidden_state_match_transformers(tmp_path, config):
  reference = save_tiny_neox(tmp_path, seed=1, **config)
  if "rotary_pct" in config:   # the config really holds the share and base we asked for
    assert hf_neox.architecture(hf_neox.read_config(str(tmp_path)))["rotary_dim"] == 8
  model = _model(str(tmp_path))
  ids = np.random.RandomState(0).randint(0, 300, (3, 17))
  with torch.no_grad():
    out = reference(torch.tensor(ids), output_hidden_states=True)
  hidden, layers, _ = model.forward(jnp.asarray(ids), all_layers=True)
  assert len(layers) == len(out.hidden_states) == reference.config.num_hidden_layers + 1
  for i, (theirs, ours) in enumerate(zip(out.hidden_states, layers)):
    np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), atol=1e-4, rtol=0,
                               err_msg=f"hidden state {i}")
  np.testing.assert_allclose(np.asarray(model.lm_logits(hidden)), out.logits.numpy(), atol=1e-4,
                             rtol=0)


def test_left_padding_and_greedy_generation_match_transformers(ckpt):
  path, reference = ckpt
  model = _model(path)
  rs = np.random.RandomState(2)
  rows = [rs.randint(1, 300, n) for n in (6, 3, 6, 1)]
  ids = np.zeros((4, 6), np.int64)
  mask = np.zeros((4, 6), np.int64)
  for r, row in enumerate(rows):
    ids[r, 6 - len(row):], mask[r, 6 - len(row):] = row, 1
  # Rotary positions come from the mask: a padded prompt computes what it computes alone.
  padded = np.asarray(model.lm_logits(model.hidden_states(jnp.asarray(ids), jnp.asarray(mask))))
  for r, row in enumerate(rows):
    alone = np.asarray(model.lm_logits(model.hidden_states(jnp.asarray(row[None]))))[0]
    np.testing.assert_allclose(padded[r, 6 - len(row):], alone, atol=1e-5, rtol=0)
  ours = np.asarray(gen.generate(model, ids, mask, max_new_tokens=12))
  with torch.no_grad():
    theirs = reference.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                                max_new_tokens=12, do_sample=False, eos_token_id=None,
                                pad_token_id=0).numpy()[:, 6:]
  np.testing.assert_array_equal(ours, theirs)
  assert len({tuple(r) for r in ours}) > 1 and len(set(ours.ravel())) > 4   # not degenerate
  for r, row in enumerate(rows):   # each prompt alone, unpadded: the same tokens
    alone = gen.generate(model, row[None], np.ones((1, len(row))), max_new_tokens=12)
    np.testing.assert_array_equal(np.asarray(alone)[0], ours[r])


def test_load_save_load_is_bitwise_and_transformers_reads_the_save(ckpt, tmp_path):
  import transformers
  path, reference = ckpt
  first = hf_neox.load(path)
  cfg = hf_neox.read_config(path)
  hf_neox.save(str(tmp_path / "one"), first, cfg)
  hf_neox.save(str(tmp_path / "sharded"), first, cfg, max_shard_bytes=20_000)
  original = hf_neox.read_tensors(path)
  ids = torch.tensor(np.random.RandomState(5).randint(0, 300, (2, 7)))
  with torch.no_grad():
    want = reference(ids).logits
  for out in ("one", "sharded"):
    again = hf_neox.load(str(tmp_path / out))
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again), strict=True):
      assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    saved = hf_neox.read_tensors(str(tmp_path / out))
    assert saved.keys() == original.keys()
    assert all(saved[k].tobytes() == original[k].tobytes() for k in original)
    back = transformers.GPTNeoXForCausalLM.from_pretrained(str(tmp_path / out)).eval()
    with torch.no_grad():
      assert torch.equal(back(ids).logits, want)


def test_a_ladder_mixes_families_and_the_untied_head_is_its_own(ckpt, tmp_path):
  path, _ = ckpt
  save_tiny_gpt2(tmp_path / "gpt2")
  spec = InputSpec((8,), "tokens", 2, 300)
  for name in (f"hf:{tmp_path / 'gpt2'}", f"hf:{path}"):
    models.check(name, spec)   # both families pass the same checks as ladder rungs
  model = _model(path)
  assert model.pos is None and model.rotary_dim == 2      # Pythia's 25% of head_dim 8
  assert not np.array_equal(np.asarray(model.unembed[...]), np.asarray(model.embed.embedding[...]))
  logits = model(jnp.asarray(np.random.RandomState(3).randint(1, 300, (2, 8))))
  assert logits.shape == (2, 2) and np.isfinite(np.asarray(logits)).all()


def _one_line(excinfo, *parts):
  message = str(excinfo.value)
  assert "\n" not in message, message
  for part in parts:
    assert part in message, message


def test_bad_neox_checkpoints_are_one_line(tmp_path):
  odd = tmp_path / "odd"
  save_tiny_neox(odd, hidden_act="relu")
  with pytest.raises(ConfigError) as e:
    models.validate_name(f"hf:{odd}")
  _one_line(e, "hidden_act='relu'", "'gelu'")

  wrong = tmp_path / "wrong"
  save_tiny_neox(wrong)
  cfg = json.loads((wrong / "config.json").read_text())
  (wrong / "config.json").write_text(json.dumps({**cfg, "hidden_size": 64}))
  with pytest.raises(ConfigError) as e:
    hf_neox.load(str(wrong))
  _one_line(e, "has shape", "needs", "hidden_size=64")

  odd_rotary = tmp_path / "odd_rotary"
  save_tiny_neox(odd_rotary, rotary_pct=0.125)     # 1 of 8 head dimensions
  with pytest.raises(ConfigError) as e:
    models.validate_name(f"hf:{odd_rotary}")
  _one_line(e, "partial_rotary_factor=0.125", "even number")

  scaled = tmp_path / "scaled"
  save_tiny_neox(scaled)
  cfg = json.loads((scaled / "config.json").read_text())
  cfg["rope_parameters"] = {**cfg["rope_parameters"], "rope_type": "linear", "factor": 2.0}
  (scaled / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ConfigError) as e:
    models.validate_name(f"hf:{scaled}", "w2s.ladder")
  _one_line(e, "w2s.ladder=hf:", "rope_type='linear'")


@pytest.mark.e2e
def test_weak_gpt2_supervises_a_strong_pythia_end_to_end(tmp_path):
  """``experiments/w2s/gpt2.py`` with a mixed ladder: a GPT-2 weak model, a GPT-NeoX strong one
  (the same tokenizer), fine-tuned on a small generated sciq set."""
  import shutil
  from conftest import write_gpt2_ladder
  from experiments.w2s import gpt2
  from superalign import runners
  dirs, data = write_gpt2_ladder(tmp_path / "ladder")
  weak = dirs.split(":")[0]
  strong = tmp_path / "pythia"
  save_tiny_neox(strong, seed=3)
  shutil.copy(f"{weak}/tokenizer.json", strong)
  config = gpt2.get_config(f"smoke,dirs={weak}:{strong},data={data},seeds=1")
  config.mesh.num_devices = 1
  runners.validate(config)
  results = runners.execute(config, str(tmp_path / "run"))
  assert results["ladder"] == [f"hf:{weak}", f"hf:{strong}"]
  pair = results["pairs"][0]["losses"]["xent"]
  assert 0 <= pair["w2s_accuracy"]["mean"] <= 1
  assert results["models"][f"hf:{strong}"]["ceiling_accuracy"]["mean"] > 0.6
