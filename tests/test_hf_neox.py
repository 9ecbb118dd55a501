"""Hugging Face GPT-NeoX (Pythia) checkpoints: parity with ``transformers`` (logits, every
layer's hidden states, greedy tokens, left padding) with the parallel residual on and off and a
partial or full rotary share, the bitwise round trip, the registry (``hf:<dir>`` of either family
in one ladder) and one-line errors. Every checkpoint is a random tiny model that ``transformers``
saves here."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import (assert_greedy_generation_matches, assert_hidden_states_and_logits_match,
                      assert_round_trip, hf_model, left_padded, one_line, save_tiny_gpt2,
                      save_tiny_neox)
from superalign import models
from superalign.core.errors import ConfigError
from superalign.core.specs import InputSpec
from superalign.models import hf_gpt2, hf_neox

# Sequential residual, every head dimension rotary, a rope base and epsilon of their own.
SEQUENTIAL = dict(use_parallel_residual=False, rotary_pct=1.0, rotary_emb_base=500.0,
                  layer_norm_eps=1e-3, hidden_size=48, num_attention_heads=6,
                  intermediate_size=80, num_hidden_layers=3)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  path = tmp_path_factory.mktemp("neox")
  return str(path), save_tiny_neox(path, seed=0)


@pytest.mark.parametrize("config", [{}, SEQUENTIAL, {"tie_word_embeddings": True}],
                         ids=["pythia", "sequential_full_rotary", "tied_head"])
def test_logits_and_every_hidden_state_match_transformers(tmp_path, config):
  reference = save_tiny_neox(tmp_path, seed=1, **config)
  if "rotary_pct" in config:   # the config really holds the share and base we asked for
    assert hf_neox.architecture(hf_neox.read_config(str(tmp_path)))["rotary_dim"] == 8
  ids = np.random.RandomState(0).randint(0, 300, (3, 17))
  assert_hidden_states_and_logits_match(hf_model(str(tmp_path)), reference, ids,
                                        reference.config.num_hidden_layers)


def test_left_padding_and_greedy_generation_match_transformers(ckpt):
  path, reference = ckpt
  model = hf_model(path)
  rs = np.random.RandomState(2)
  rows = [rs.randint(1, 300, n) for n in (6, 3, 6, 1)]
  ids, mask = left_padded(rows, 6)
  # Rotary positions come from the mask: a padded prompt computes what it computes alone.
  padded = np.asarray(model.lm_logits(model.hidden_states(jnp.asarray(ids), jnp.asarray(mask))))
  for r, row in enumerate(rows):
    alone = np.asarray(model.lm_logits(model.hidden_states(jnp.asarray(row[None]))))[0]
    np.testing.assert_allclose(padded[r, 6 - len(row):], alone, atol=1e-5, rtol=0)
  assert_greedy_generation_matches(model, reference, rows)


def test_load_save_load_is_bitwise_and_transformers_reads_the_save(ckpt, tmp_path):
  import transformers
  path, reference = ckpt
  assert_round_trip(hf_neox, path, reference,
                    {tmp_path / "one": {}, tmp_path / "sharded": {"max_shard_bytes": 20_000}},
                    transformers.GPTNeoXForCausalLM.from_pretrained)
  assert (tmp_path / "sharded" / hf_gpt2.INDEX).exists()


def test_a_ladder_mixes_families_and_the_untied_head_is_its_own(ckpt, tmp_path):
  path, _ = ckpt
  save_tiny_gpt2(tmp_path / "gpt2")
  spec = InputSpec((8,), "tokens", 2, 300)
  for name in (f"hf:{tmp_path / 'gpt2'}", f"hf:{path}"):
    models.check(name, spec)   # both families pass the same checks as ladder rungs
  model = hf_model(path)
  assert model.pos is None and model.rotary_dim == 2      # Pythia's 25% of head_dim 8
  assert not np.array_equal(np.asarray(model.unembed[...]), np.asarray(model.embed.embedding[...]))
  logits = model(jnp.asarray(np.random.RandomState(3).randint(1, 300, (2, 8))))
  assert logits.shape == (2, 2) and np.isfinite(np.asarray(logits)).all()


def _with_config(directory, **changes):
  """A tiny GPT-NeoX at ``directory`` whose config.json then gets ``changes``."""
  save_tiny_neox(directory)
  cfg = json.loads((directory / "config.json").read_text())
  (directory / "config.json").write_text(json.dumps({**cfg, **changes}))
  return cfg


def test_bad_neox_checkpoints_areone_line(tmp_path):
  odd = tmp_path / "odd"
  save_tiny_neox(odd, hidden_act="relu")
  with pytest.raises(ConfigError) as e:
    models.validate_name(f"hf:{odd}")
  one_line(e, "hidden_act='relu'", "'gelu'")

  wrong = tmp_path / "wrong"
  cfg = _with_config(wrong, hidden_size=64)
  with pytest.raises(ConfigError) as e:
    hf_neox.load(str(wrong))
  one_line(e, "has shape", "needs", "hidden_size=64")

  odd_rotary = tmp_path / "odd_rotary"
  save_tiny_neox(odd_rotary, rotary_pct=0.125)     # 1 of 8 head dimensions
  with pytest.raises(ConfigError) as e:
    models.validate_name(f"hf:{odd_rotary}")
  one_line(e, "partial_rotary_factor=0.125", "even number")

  scaled = tmp_path / "scaled"
  _with_config(scaled, rope_parameters={**cfg["rope_parameters"], "rope_type": "linear",
                                        "factor": 2.0})
  with pytest.raises(ConfigError) as e:
    models.validate_name(f"hf:{scaled}", "w2s.ladder")
  one_line(e, "w2s.ladder=hf:", "rope_type='linear'")


@pytest.mark.slow   # 37 s; the GPT-2 ladder e2e tests run the same pipeline by default
def test_weak_gpt2_supervises_a_strong_pythia_end_to_end(tmp_path):
  """``experiments/w2s/gpt2.py`` with a mixed ladder: a GPT-2 weak model, a GPT-NeoX strong one
  (the same tokenizer), fine-tuned on a small generated sciq set."""
  import shutil
  from conftest import write_gpt2_ladder
  from experiments.w2s import gpt2
  from superalign.launch import runners
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
