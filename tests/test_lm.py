"""``models.load("hf:<dir>")``: a language model for analysis in one line, its tokenizer glue, every
activation site against TransformerLens' ``run_with_cache``, and folded/centered weights
(``models.fold``) against TransformerLens' processed weights."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import (one_line, save_tiny_decoder, save_tiny_gpt2, train_tiny_bpe,
                      transformer_lens_model)

from superalign import models
from superalign.core.errors import ConfigError
from superalign.interp import hooks, patching
from superalign.models import fold, sites
from superalign.models.transformer import Transformer

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "the sun is hot today"] * 20
IDS = np.random.RandomState(1).randint(1, 300, (2, 9)).astype(np.int32)
DEFAULT_ROPE = {"rope_type": "default", "rope_theta": 1000.0}   # TransformerLens 3.9 has no llama3
# TransformerLens' process_weights_ flags per family: it skips centering writing weights of an
# RMSNorm model (superalign refuses it: test_an_rms_model_cannot_center_its_writing_weights).
PROCESSED = {"gpt2": dict(fold_ln=True, center_writing_weights=True, center_unembed=True),
             "llama": dict(fold_ln=True, center_unembed=True)}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
  """``{family: (dir, transformers model)}``: a tiny GPT-2 with a BPE tokenizer, a tiny Llama
  (default rope, every weight random) and a tiny Gemma 2 without one."""
  root = tmp_path_factory.mktemp("lm")
  tok = train_tiny_bpe(root / "tok", TEXTS)
  out = {"gpt2": (str(root / "gpt2"), save_tiny_gpt2(root / "gpt2", tokenizer_from=tok, n_embd=64,
                                                     n_head=4))}
  out["llama"] = (str(root / "llama"),
                  save_tiny_decoder("llama", root / "llama", rope_parameters=DEFAULT_ROPE))
  out["gemma2"] = (str(root / "gemma2"), save_tiny_decoder("gemma2", root / "gemma2"))
  return out


@pytest.fixture(scope="module")
def lms(ckpts):
  return {family: models.load(f"hf:{path}") for family, (path, _) in ckpts.items()}


def _log_probs(x):
  return np.asarray(jax.nn.log_softmax(np.asarray(x, np.float64), axis=-1))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_load_gives_transformers_logits_on_the_mesh(ckpts, lms, family):
  lm, (_, hf) = lms[family], ckpts[family]
  with torch.no_grad():
    want = hf(torch.tensor(IDS, dtype=torch.long)).logits.numpy()
  got = lm(IDS)
  assert got.shape == (2, 9, 300)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)
  # The pure form: parameters as an argument of a jitted function.
  np.testing.assert_array_equal(np.asarray(jax.jit(lm.apply)(lm.params, IDS)), np.asarray(got))
  assert isinstance(lm.transformer, Transformer) and lm.transformer.head.kernel.shape[1] == 1
  assert dict(lm.mesh.shape) == {"data": len(jax.local_devices()), "fsdp": 1, "model": 1}
  assert all(leaf.sharding.mesh == lm.mesh for leaf in jax.tree.leaves(lm.params))
  assert lm.cfg["n_key_value_heads"] == (2 if family == "llama" else 4)


def test_bad_names_are_one_line_errors(tmp_path):
  with pytest.raises(ConfigError) as e:
    models.load(f"hf:{tmp_path}/missing")
  one_line(e, "models.load=hf:", "no such checkpoint directory")
  with pytest.raises(ConfigError) as e:
    models.load(f"hf:{tmp_path}")
  one_line(e, "no config.json")
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
  with pytest.raises(ConfigError) as e:
    models.load(f"hf:{tmp_path}")
  one_line(e, "model_type 'bert'", "'gpt2'")
  with pytest.raises(ConfigError) as e:
    models.load("gpt_tiny")
  one_line(e, "models.load='gpt_tiny'", "hf:<checkpoint dir>")


def test_tokenizer_glue(lms):
  lm = lms["gpt2"]
  text = "the cat sat on the mat"
  tokens = lm.to_tokens(text)
  assert tokens.dtype == np.int32 and tokens.shape[0] == 1 and tokens[0, 0] == lm.bos_id == 0
  assert lm.to_string(tokens[0, 1:]) == text
  assert "".join(lm.to_str_tokens(text, prepend_bos=False)) == text
  assert lm.to_str_tokens(tokens) == lm.to_str_tokens(text)
  assert len(lm.to_str_tokens(text)) == tokens.shape[1]
  batch = lm.to_tokens([text, "the"])     # right-padded to the longest, with the pad id
  assert batch.shape == (2, tokens.shape[1]) and (batch[1, 2:] == lm.tokenizer.pad_id).all()
  np.testing.assert_array_equal(batch[0], tokens[0])
  # A row's real positions compute as the row alone: causal attention never reads right padding.
  np.testing.assert_allclose(np.asarray(lm(batch))[1, :2], np.asarray(lm(batch[1:, :2]))[0],
                             atol=1e-5)
  the = lm.to_single_token("the")
  assert lm.to_string([the]) == "the" and lm.to_tokens("the", prepend_bos=False)[0, 0] == the
  with pytest.raises(ConfigError) as e:
    lm.to_single_token(text)
  one_line(e, f"to_single_token({text!r})", "not one")


def test_a_checkpoint_without_a_tokenizer_loads(lms):
  lm = lms["llama"]
  assert lm.tokenizer is None and lm(IDS).shape == (2, 9, 300)
  for call in (lambda: lm.to_tokens("hi"), lambda: lm.to_str_tokens([1, 2]),
               lambda: lm.to_string([1, 2]), lambda: lm.to_single_token("hi")):
    with pytest.raises(ConfigError) as e:
      call()
    one_line(e, "has no tokenizer.json")


def _compare_caches(ours, theirs, names=None):
  """Our captured sites against TransformerLens' cache under the name mapping (where its
  attention scores are finite: it masks with -inf); the names compared."""
  matched = []
  for name, act in ours.items():
    hook = sites.to_transformer_lens(name)
    if hook is None or (names is not None and not any(n in name for n in names)):
      continue
    assert hook in theirs, f"{name} -> {hook}: no such TransformerLens hook"
    want, got = theirs[hook].numpy(), np.asarray(act)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], atol=1e-4, rtol=0, err_msg=name)
    matched.append(name)
  return matched


# Sites of each block that TransformerLens has too: resid_pre, ln1.scale, attn.q/k/v,
# attn_scores, pattern, z, attn_out, resid_mid, ln2.scale, mlp.pre/post, mlp_out, resid_post; Llama
# adds attn.rot_q/rot_k, ln1/ln2.normalized (RMSNorm) and mlp.pre_linear (its gated MLP).
BLOCK_SITES = {"gpt2": 15, "llama": 20}


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_every_site_equals_transformer_lens_run_with_cache(ckpts, lms, family):
  lm, (_, hf) = lms[family], ckpts[family]
  logits, ours = hooks.run(lm, IDS, capture=True)
  with torch.no_grad():
    tl_logits, cache = transformer_lens_model(hf).run_with_cache(torch.tensor(IDS).long())
  np.testing.assert_allclose(np.asarray(logits), tl_logits.numpy(), atol=1e-4, rtol=0)
  matched = _compare_caches(ours, cache)
  layers = lm.cfg["n_layers"]
  # embed, pos_embed (GPT-2) or ln_final.normalized (Llama), ln_final.scale, ln_final (TL's
  # unembed.hook_in), lm_logits (unembed.hook_out), and every block's.
  assert len(matched) == 5 + BLOCK_SITES[family] * layers, sorted(matched)
  for name in ("attn.q", "attn.k", "attn.v", "attn.attn_scores", "ln1.scale", "ln2.scale"):
    assert f"blocks.0.{name}" in matched
  assert "ln_final.scale" in matched
  if family == "llama":   # rotary, grouped-query keys and values, RMSNorm's normalized
    assert {"blocks.0.attn.rot_q", "blocks.0.attn.rot_k", "blocks.0.ln1.normalized"} <= set(matched)
    assert ours["blocks.0.attn.k"].shape[2] == 2 and ours["blocks.0.attn.q"].shape[2] == 4


def test_a_norm_scale_is_in_the_path(lms):
  """Freezing ``ln_final.scale`` (as path patching and direct logit attribution do) is an
  intervention: doubling it halves the final norm's output; writing its own value changes
  nothing."""
  lm = lms["gpt2"]
  plain, captured = hooks.run(lm, IDS, capture="ln_final.scale")
  scale = captured["ln_final.scale"]
  assert scale.shape == (2, 9, 1)
  same, _ = hooks.run(lm, IDS, interventions={"ln_final.scale": hooks.replace(scale + 0.0)})
  np.testing.assert_allclose(np.asarray(same), np.asarray(plain), atol=1e-5)
  doubled, _ = hooks.run(lm, IDS, interventions={"ln_final.scale": hooks.replace(2 * scale)})
  assert np.abs(np.asarray(doubled) - np.asarray(plain)).max() > 1e-2


def test_patching_grids_take_the_parameters(lms):
  """``lm.apply`` is ``patching_grid``'s ``model_fn``: clean and corrupted prompts differ at
  position 2 only, so patching block 0's input there restores the clean metric exactly, and
  anywhere else changes nothing."""
  lm = lms["llama"]
  clean, corrupted = IDS[:1], IDS[:1].copy()
  corrupted[0, 2] = (corrupted[0, 2] + 7) % 300
  metric = patching.logit_diff(5, 6)
  grid = patching.patching_grid(lm.apply, lm.params, clean, corrupted, metric,
                                ["blocks.0.resid_pre"])
  cells = np.asarray(grid["blocks.0.resid_pre"])
  np.testing.assert_allclose(cells[2], grid["clean"], atol=1e-5)
  np.testing.assert_allclose(np.delete(cells, 2), grid["corrupted"], atol=1e-5)
  assert abs(float(grid["clean"]) - float(grid["corrupted"])) > 1e-3


def test_transformer_lens_spelling_names_ours(lms):
  lm = lms["gpt2"]
  with pytest.raises(hooks.HookError) as e:
    hooks.run(lm, IDS, capture="blocks.0.hook_resid_pre")
  one_line(e, "'blocks.0.hook_resid_pre'", "TransformerLens' spelling", "'blocks.0.resid_pre'")
  with pytest.raises(hooks.HookError) as e:
    hooks.run(lm, IDS, interventions={"blocks.1.attn.hook_z": hooks.zero()})
  one_line(e, "'blocks.1.attn.z'")
  shapes = hooks.site_shapes(lm, IDS)
  with pytest.raises(hooks.HookError) as e:
    hooks.check_sites(["ln_final.hook_scale"], shapes, key="interp.site")
  one_line(e, "interp.site='ln_final.hook_scale'", "'ln_final.scale'")
  with pytest.raises(hooks.HookError) as e:   # no equivalent: the sites are listed
    hooks.check_sites(["blocks.0.ln1.hook_normalized"], shapes)
  one_line(e, "this model's sites")


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2"])
def test_each_weight_processing_keeps_the_logits(ckpts, lms, family):
  lm = lms[family]
  model, want = lm.transformer, np.asarray(lm(IDS))
  steps = [fold.fold_ln] + [fold.center_writing_weights] * (family == "gpt2") + \
      [fold.center_unembed] * (family != "gemma2")
  for step in steps:
    processed = step(model)
    got = np.asarray(lm.replace(processed)(IDS))
    if step is fold.center_unembed:   # logits shift per position; log-probs stay
      np.testing.assert_allclose(_log_probs(got), _log_probs(want), atol=1e-5, rtol=0)
      assert np.abs(got - want).max() > 1e-3
    else:
      np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=step.__name__)
  folded = fold.fold_ln(model)
  assert folded.unembed is not None   # untied from the embedding
  offset = getattr(folded.ln_f, "offset", 0.0)   # Gemma's 1 + w: w = 0 is the identity
  for norm in (folded.ln_f, folded.blocks[0].ln1, folded.blocks[-1].ln2):
    np.testing.assert_array_equal(np.asarray(norm.scale[...]), 1.0 - offset)
  # The argument is untouched.
  np.testing.assert_array_equal(np.asarray(model.blocks[0].ln1.scale[...]),
                                np.asarray(lm.transformer.blocks[0].ln1.scale[...]))
  assert (model.unembed is None) == (family != "llama")


def test_an_rms_model_cannot_center_its_writing_weights(lms):
  with pytest.raises(ConfigError) as e:
    fold.center_writing_weights(lms["llama"].transformer)
  one_line(e, "center_writing_weights", "RMSNorm", "LayerNorm models")
  with pytest.raises(ConfigError) as e:   # Gemma 2 soft-caps: a shift changes its log-probs
    fold.center_unembed(lms["gemma2"].transformer)
  one_line(e, "center_unembed", "soft-caps")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_processed_weights_equal_transformer_lens_processed(ckpts, family):
  path, hf = ckpts[family]
  lm = models.load(f"hf:{path}", **PROCESSED[family])
  tl = transformer_lens_model(hf)
  tl.process_weights_(**{"center_writing_weights": False, **PROCESSED[family]})
  logits, ours = hooks.run(lm, IDS, capture=True)
  with torch.no_grad():
    tl_logits, cache = tl.run_with_cache(torch.tensor(IDS).long())
  np.testing.assert_allclose(np.asarray(logits), tl_logits.numpy(), atol=1e-4, rtol=0)
  # The residual stream and what writes to it, and the norms' scales (TransformerLens also
  # folds value biases into the output bias, which moves attn.v and attn.z, not these).
  matched = _compare_caches(ours, cache, ("resid", "attn_out", "mlp_out", "embed", "scale",
                                          "ln_final"))
  # per block resid_pre, ln1.scale, attn_out, resid_mid, ln2.scale, mlp_out, resid_post; embed,
  # ln_final.scale, ln_final, and pos_embed (GPT-2) or ln_final.normalized (Llama)
  assert len(matched) == 7 * lm.cfg["n_layers"] + 4, matched
  np.testing.assert_allclose(np.asarray(lm.transformer.unembed[...]).T, tl.W_U.detach().numpy(),
                             atol=1e-5)


def test_logits_at_chosen_positions_only(lms):
  """``positions`` indexes the final activations before the unembedding: the logits there equal
  the full logits, the ``lm_logits`` site has the sliced shape, and a patching grid whose metric
  reads the last position is the same grid."""
  lm = lms["gpt2"]

  def sliced(params, x):
    last = lm.apply(params, x, positions=-1)
    some, acts = hooks.run(lm.apply, params, x, positions=jnp.array([0, 4, -1]),
                           capture=["lm_logits"])
    return lm.apply(params, x), last, some, acts["lm_logits"]

  full, last, some, site = (np.asarray(a) for a in jax.jit(sliced)(lm.params, IDS))
  np.testing.assert_allclose(last, full[:, -1], atol=1e-5, rtol=0)
  np.testing.assert_allclose(some, full[:, [0, 4, -1]], atol=1e-5, rtol=0)
  np.testing.assert_array_equal(site, some)
  for bad in (9, np.zeros((2, 1), np.int32), 1.5):
    with pytest.raises(ConfigError) as e:
      lm(IDS, positions=bad)
    one_line(e, "positions")
  corrupted = IDS.copy()
  corrupted[:, 2] = (corrupted[:, 2] + 7) % 300
  metric, names = patching.logit_diff(5, 6), ("blocks.1.resid_pre",)
  grids = jax.jit(lambda params: [patching.activation_patching(
      lambda x: fn(params, x), IDS, corrupted, metric, names) for fn in
      (lm.apply, lambda p, x: lm.apply(p, x, positions=-1))])
  want, got = grids(lm.params)
  np.testing.assert_allclose(np.asarray(got[names[0]]), np.asarray(want[names[0]]), atol=1e-5,
                             rtol=0)
