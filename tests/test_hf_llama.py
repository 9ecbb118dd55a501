"""Llama, Mistral, Qwen2, Qwen3, Gemma 2 and Gemma 3 checkpoints: parity with ``transformers``
(logits and every layer's hidden states in float32 with eager attention; greedy tokens, padded and
unpadded, past the sliding window), the bitwise load-save-load that transformers reads back, and
one-line errors. Every checkpoint is a random tiny model that ``transformers`` saves here."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import (TINY_FAMILIES, assert_greedy_generation_matches,
                      assert_hidden_states_and_logits_match, assert_round_trip, hf_model, one_line,
                      save_tiny_decoder)
from superalign import models
from superalign.core.errors import ConfigError
from superalign.models import hf_llama

FAMILIES = sorted(TINY_FAMILIES)


@pytest.fixture(scope="module", params=FAMILIES)
def ckpt(request, tmp_path_factory):
  """``(directory, transformers' model, ours)`` per family, built once for its tests."""
  path = tmp_path_factory.mktemp(request.param)
  reference = save_tiny_decoder(request.param, path, seed=0)
  return str(path), reference, hf_model(str(path))


def test_logits_and_every_hidden_state_match_transformers(ckpt):
  _, reference, model = ckpt
  ids = np.random.RandomState(0).randint(0, 300, (3, 17))
  assert_hidden_states_and_logits_match(model, reference, ids,
                                        reference.config.num_hidden_layers)


def test_greedy_generation_matches_transformers_padded_and_past_the_window(ckpt):
  _, reference, model = ckpt
  rs = np.random.RandomState(2)
  rows = [rs.randint(3, 300, n) for n in (9, 6, 9, 6)]   # two lengths: two programs alone
  assert_greedy_generation_matches(model, reference, rows)


def test_load_save_load_is_bitwise_and_transformers_reads_the_save(ckpt, tmp_path):
  import transformers
  path, reference, _ = ckpt
  read = lambda d: transformers.AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager")
  assert_round_trip(hf_llama, path, reference,
                    {tmp_path / "one": {}, tmp_path / "sharded": {"max_shard_bytes": 60_000}}, read)


def test_sites_keep_their_names_and_are_per_query_head(tmp_path):
  """Every interp tool reads the same site names on a Llama as on GPT-2; with grouped-query
  attention the pattern and z are per query head, and patching a head's z changes the output."""
  from superalign.interp import hooks
  save_tiny_decoder("llama", tmp_path)
  model = hf_model(str(tmp_path))
  ids = jnp.asarray(np.random.RandomState(1).randint(3, 300, (2, 7)))
  lm = lambda m, x: m.lm_logits(m.hidden_states(x))
  out, captured = hooks.run(lm, model, ids, capture=True)
  names = set(captured)
  for i in range(3):
    for s in ("resid_pre", "attn.pattern", "attn.z", "attn_out", "resid_mid", "mlp.pre",
              "mlp.pre_linear", "mlp.post", "mlp_out", "resid_post"):
      assert f"blocks.{i}.{s}" in names, s
  assert captured["blocks.0.attn.pattern"].shape == (2, 4, 7, 7)       # 4 query heads, 2 kv
  assert captured["blocks.0.attn.z"].shape == (2, 7, 4, 16)
  assert captured.axes["blocks.0.attn.z"] == ("batch", "pos", "head", "head_dim")
  assert model.init_cache(1, 8)[0][0].shape == (1, 8, 2, 16)   # the cache holds the 2 kv heads
  np.testing.assert_allclose(np.asarray(captured["blocks.0.attn.pattern"]).sum(-1), 1, atol=1e-5)
  ablated, _ = hooks.run(lm, model, ids, interventions={
      "blocks.1.attn.z": hooks.zero(where=hooks.at(head=3))})
  assert not np.allclose(np.asarray(ablated), np.asarray(out))


def test_bfloat16_compute_is_within_bfloat16_tolerance_of_float32(tmp_path):
  save_tiny_decoder("qwen3", tmp_path)
  ids = jnp.asarray(np.random.RandomState(3).randint(3, 300, (2, 12)))
  logits = {}
  for dtype in ("float32", "bfloat16"):
    m = hf_model(str(tmp_path), compute_dtype=dtype)
    logits[dtype] = np.asarray(m.lm_logits(m.hidden_states(ids)), np.float32)
  scale = np.abs(logits["float32"]).max()
  err = np.abs(logits["bfloat16"] - logits["float32"]).max()
  assert 0 < err < 0.05 * scale, (err, scale)   # bf16 has 8 bits of mantissa; 3 layers deep
  agree = (logits["bfloat16"].argmax(-1) == logits["float32"].argmax(-1)).mean()
  assert agree > 0.8


def test_older_config_keys_read_as_their_transformers_5_form(tmp_path):
  """``rope_theta`` / ``rope_scaling`` (and Gemma 3's ``rope_local_base_freq``) as configs
  written before transformers 5 hold them: the same architecture."""
  for family, old in [
      ("llama", {"rope_theta": 500.0, "rope_scaling": {
          "rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 2.0,
          "original_max_position_embeddings": 16}}),
      ("qwen2", {"rope_theta": 1000.0, "rope_scaling": {"type": "linear", "factor": 2.0}}),
      ("gemma3_text", {"rope_theta": 5000.0, "rope_local_base_freq": 100.0,
                       "rope_scaling": {"rope_type": "linear", "factor": 4.0}})]:
    directory = tmp_path / family
    save_tiny_decoder(family, directory)
    cfg = json.loads((directory / "config.json").read_text())
    new = hf_llama.architecture(hf_llama.read_config(str(directory)))
    del cfg["rope_parameters"]
    (directory / "config.json").write_text(json.dumps({**cfg, **old}))
    assert hf_llama.architecture(hf_llama.read_config(str(directory))) == new, family


def _with_config(directory, family="llama", **changes):
  save_tiny_decoder(family, directory)
  cfg = json.loads((directory / "config.json").read_text())
  (directory / "config.json").write_text(json.dumps({**cfg, **changes}))
  return cfg


@pytest.mark.parametrize("changes, parts", [
    ({"model_type": "mixtral"}, ("model_type 'mixtral'", "'llama'")),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}},
     ("rope_parameters.rope_type='yarn'", "'llama3'")),
    ({"hidden_act": "relu"}, ("hidden_act='relu'", "'silu'")),
    ({"num_local_experts": 8}, ("num_local_experts=8", "dense")),
    ({"num_key_value_heads": 3}, ("num_key_value_heads=3", "multiple")),
    ({"layer_types": ["full_attention"]}, ("layer_types=", "per layer (3)")),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4, "factor": 4.0}},
     ("rope_parameters (llama3)", "low_freq_factor")),
], ids=["model_type", "rope_type", "activation", "experts", "kv_heads", "layer_types",
        "rope_numbers"])
def test_what_the_transformer_does_not_compute_is_one_line(tmp_path, changes, parts):
  _with_config(tmp_path, **changes)
  with pytest.raises(ConfigError) as e:
    models.validate_name(f"hf:{tmp_path}", "w2s.ladder")
  one_line(e, "w2s.ladder=hf:", *parts)


def test_a_checkpoint_that_disagrees_with_its_config_is_one_line(tmp_path):
  _with_config(tmp_path, intermediate_size=80)
  with pytest.raises(ConfigError) as e:
    hf_llama.load(str(tmp_path))
  one_line(e, "mlp.gate_proj.weight", "has shape", "needs (80, 64)")
  tied = tmp_path / "tied"
  _with_config(tied, tie_word_embeddings=True)    # lm_head.weight stored, and it differs
  with pytest.raises(ConfigError) as e:
    hf_llama.load(str(tied))
  one_line(e, "tie_word_embeddings is true", "lm_head.weight differs")
