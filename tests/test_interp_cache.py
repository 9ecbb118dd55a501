"""TransformerLens's daily analyses in the interp room, against TransformerLens 3.9 itself on a
tiny GPT-2 and a tiny Llama (unprocessed weights, as ours are): the activation cache's analyses,
the resid_pre patching grid, the head detectors; the family cases TransformerLens's peer lacks
(parallel residual, Gemma's sandwich norms and soft-caps) by their sums; path patching by the
properties that pin it down."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from conftest import hf_model, one_line, save_tiny_decoder, save_tiny_gpt2, transformer_lens_model
from superalign.interp import cache as cache_lib, heads, hooks, path_patching, patching
from superalign.models.transformer import Options, Transformer

TOL = dict(rtol=1e-4, atol=1e-4)
DEFAULT_ROPE = {"rope_type": "default", "rope_theta": 1000.0}


def _np(x):
  return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def assert_close(ours, theirs, labels=None):
  """Ours equals TransformerLens's (labels too, when given) within ``TOL``."""
  if labels is not None:
    assert ours.labels == tuple(labels)
  np.testing.assert_allclose(_np(ours), _np(theirs), **TOL)


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
  """``peers(family)``: our model and TransformerLens's on one tiny checkpoint, and both caches
  of one batch (built once per family, when first asked for)."""
  built = {}

  def get(family):
    if family not in built:
      path = tmp_path_factory.mktemp(family)
      hf = (save_tiny_gpt2(path) if family == "gpt2" else
            save_tiny_decoder("llama", path, num_hidden_layers=2, rope_parameters=DEFAULT_ROPE))
      model, tl = hf_model(str(path)), transformer_lens_model(hf)
      tokens = np.random.default_rng(0).integers(1, 300, (3, 10))
      logits, cache = cache_lib.run_with_cache(model, tokens)
      tl_logits, tl_cache = tl.run_with_cache(torch.tensor(tokens))
      built[family] = dict(model=model, tl=tl, tokens=tokens, logits=logits, cache=cache,
                           tl_logits=tl_logits, tl_cache=tl_cache)
    return built[family]

  return get


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def peer(request, peers):
  return peers(request.param)


@pytest.fixture(scope="module")
def gpt2(peers):
  return peers("gpt2")


def test_run_with_cache_matches_transformer_lens(peer):
  cache, tl_cache = peer["cache"], peer["tl_cache"]
  assert_close(peer["logits"], peer["tl_logits"])
  for name in ("blocks.1.resid_pre", "blocks.0.attn.z", "blocks.1.attn.pattern"):
    assert_close(cache[name], tl_cache[name.rsplit(".", 1)[0] + ".hook_" + name.rsplit(".", 1)[1]])
  assert cache.axes["blocks.0.attn.z"] == ("batch", "pos", "head", "head_dim")
  np.testing.assert_array_equal(cache["blocks.0.hook_resid_post"], cache["blocks.0.resid_post"])
  _, only = cache_lib.run_with_cache(peer["model"], peer["tokens"], names=["blocks.*.attn_out"])
  assert sorted(only.keys()) == ["blocks.0.attn_out", "blocks.1.attn_out"]
  with pytest.raises(hooks.HookError) as e:
    only.decompose_resid()
  one_line(e, "'embed'", "run_with_cache(names=...)")


@pytest.mark.parametrize("kw", [{}, dict(incl_mid=True), dict(apply_ln=True),
                                dict(layer=1, apply_ln=True, incl_mid=True, mlp_input=True),
                                dict(pos_slice=-1, apply_ln=True), dict(pos_slice=(2, 6))])
def test_accumulated_resid(peer, kw):
  ours = peer["cache"].accumulated_resid(**kw)
  theirs, labels = peer["tl_cache"].accumulated_resid(return_labels=True, **kw)
  assert_close(ours, theirs, labels)
  assert ours.axes == (("component", "batch", "embed") if kw.get("pos_slice") == -1 else
                       ("component", "batch", "pos", "embed"))


@pytest.mark.parametrize("kw", [{}, dict(apply_ln=True, pos_slice=-1),
                                dict(layer=1, mlp_input=True, apply_ln=True),
                                dict(mode="attn", incl_embeds=False)])
def test_decompose_resid(peer, kw):
  ours = peer["cache"].decompose_resid(**kw)
  theirs, labels = peer["tl_cache"].decompose_resid(return_labels=True, **kw)
  assert_close(ours, theirs, labels)
  # The components sum to the residual stream they decompose.
  if not kw:
    np.testing.assert_allclose(np.asarray(ours).sum(0), peer["cache"]["blocks.1.resid_post"],
                               **TOL)


@pytest.mark.parametrize("kw", [{}, dict(apply_ln=True, incl_remainder=True),
                                dict(layer=1, pos_slice=-1, apply_ln=True)])
def test_stack_head_results(peer, kw):
  ours = peer["cache"].stack_head_results(**kw)
  theirs, labels = peer["tl_cache"].stack_head_results(return_labels=True, **kw)
  assert_close(ours, theirs, labels)
  model = peer["model"]
  layers = kw.get("layer", len(model.blocks))
  heads_per_layer = model.blocks[0].attn.num_heads
  assert len(ours.labels) == layers * heads_per_layer + kw.get("incl_remainder", False)
  assert ours.axes[0] == "component" and ours.axes[-1] == "embed"


@pytest.mark.parametrize("kw", [{}, dict(expand_neurons=False, apply_ln=True),
                                dict(layer=1, mlp_input=True, pos_slice=-1)])
def test_full_resid_decomposition(peer, kw):
  ours = peer["cache"].get_full_resid_decomposition(**kw)
  theirs, labels = peer["tl_cache"].get_full_resid_decomposition(return_labels=True, **kw)
  assert_close(ours, theirs, labels)
  if not kw:
    np.testing.assert_allclose(np.asarray(ours).sum(0), peer["cache"]["blocks.1.resid_post"],
                               **TOL)


def test_apply_ln_to_stack(peer):
  cache, tl_cache = peer["cache"], peer["tl_cache"]
  stack = cache.decompose_resid(layer=1)
  tl_stack = tl_cache.decompose_resid(layer=1)
  for layer, mlp_input in ((None, False), (1, False), (0, True)):
    assert_close(cache.apply_ln_to_stack(stack, layer, mlp_input),
          tl_cache.apply_ln_to_stack(tl_stack, layer, mlp_input))
  with pytest.raises(hooks.HookError) as e:
    cache.apply_ln_to_stack(cache.decompose_resid(pos_slice=-1))
  one_line(e, "pos_slice")


def test_logit_lens(peer):
  lens = peer["cache"].logit_lens()
  assert_close(lens, peer["tl"].unembed(peer["tl_cache"].accumulated_resid(apply_ln=True)))
  assert lens.axes == ("component", "batch", "pos", "vocab") and lens.labels[-1] == "final_post"
  np.testing.assert_allclose(lens["final_post"].array, peer["logits"], **TOL)


def test_logit_attrs(peer):
  """Unfolded, TransformerLens's number on its unprocessed model; folded (the default), on the
  model with the final norm folded into the unembedding; and then a full decomposition's
  attributions sum to the logit difference (less the final norm's bias term)."""
  cache, tl_cache, tokens = peer["cache"], peer["tl_cache"], peer["tokens"]
  answer, wrong = tokens[:, -1], (tokens[:, -1] + 1) % 300
  stack = cache.decompose_resid(pos_slice=-1)
  ours = cache.logit_attrs(stack, answer, wrong, pos_slice=-1, fold_ln=False)
  theirs = tl_cache.logit_attrs(tl_cache.decompose_resid(pos_slice=-1), torch.tensor(answer),
                                torch.tensor(wrong), pos_slice=-1)
  assert_close(ours, theirs, stack.labels)
  assert ours.axes == ("component", "batch")
  folded = copy.deepcopy(peer["tl"])
  folded.process_weights_(fold_ln=True, center_writing_weights=False, center_unembed=False)
  _, folded_cache = folded.run_with_cache(torch.tensor(tokens))
  full = cache.get_full_resid_decomposition(pos_slice=-1, expand_neurons=False)
  ours = cache.logit_attrs(full, answer, wrong, pos_slice=-1)
  assert_close(ours, folded_cache.logit_attrs(
      folded_cache.get_full_resid_decomposition(pos_slice=-1, expand_neurons=False),
      torch.tensor(answer), torch.tensor(wrong), pos_slice=-1))
  rows = np.arange(3)
  diff = np.asarray(peer["logits"])[rows, -1, answer] - np.asarray(peer["logits"])[rows, -1, wrong]
  ln_f = peer["model"].ln_f
  bias = getattr(ln_f, "bias", None)
  table = np.asarray(peer["model"].embed.embedding[...] if peer["model"].unembed is None
                     else peer["model"].unembed[...])
  bias_term = 0.0 if bias is None else (table[answer] - table[wrong]) @ np.asarray(bias[...])
  np.testing.assert_allclose(np.asarray(ours).sum(0) + bias_term, diff, **TOL)


@pytest.mark.parametrize("family", ["gpt2", pytest.param("llama", marks=pytest.mark.slow)])
def test_resid_pre_patching_grid_matches_transformer_lens(peers, family):
  from transformer_lens.patching import get_act_patch_resid_pre
  peer = peers(family)
  model, tl, clean = peer["model"], peer["tl"], peer["tokens"]
  corrupted = clean.copy()
  corrupted[:, 4] = (clean[:, 4] + 50) % 300
  answer, wrong = 7, 8
  metric = patching.logit_diff(answer, wrong)
  graphdef, params = nnx.split(model)
  forward = lambda p, x: cache_lib.lm_forward(nnx.merge(graphdef, p), x)
  sites = [f"blocks.{l}.resid_pre" for l in range(len(model.blocks))]
  ours = patching.patching_grid(forward, params, clean, corrupted, metric, sites, axes="pos")
  _, clean_cache = tl.run_with_cache(torch.tensor(clean))
  theirs = get_act_patch_resid_pre(
      tl, torch.tensor(corrupted), clean_cache,
      lambda logits: (logits[:, -1, answer] - logits[:, -1, wrong]).mean())
  grid = patching.stack({s: ours[s] for s in sites})
  assert_close(grid, theirs)
  assert grid.shape == (len(sites), clean.shape[1])
  # Patching layer 0 at the corrupted position restores the clean metric exactly (the whole
  # difference enters there); elsewhere in layer 0 it leaves the corrupted one.
  np.testing.assert_allclose(grid[0, 4], ours["clean"], **TOL)
  np.testing.assert_allclose(np.delete(np.asarray(grid[0]), 4), ours["corrupted"], **TOL)


def test_head_detectors_match_transformer_lens(peer, monkeypatch):
  from transformer_lens import head_detector
  row = np.random.default_rng(1).integers(3, 300, 5)
  tokens = np.concatenate([[1], row, row])[None]                     # repeats: nonzero scores
  monkeypatch.setattr(peer["tl"], "to_tokens", lambda *a, **k: torch.tensor(tokens))
  _, ours_cache = cache_lib.run_with_cache(peer["model"], tokens, names=["blocks.*.attn.pattern"])
  _, tl_cache = peer["tl"].run_with_cache(torch.tensor(tokens), remove_batch_dim=True)
  for name in heads.HEAD_NAMES:
    for measure, kw in (("mul", {}), ("abs", {}),
                        ("mul", dict(exclude_bos=True, exclude_current_token=True))):
      ours = heads.detect_head(ours_cache, tokens, name, error_measure=measure, **kw)
      theirs = head_detector.detect_head(peer["tl"], "", name, cache=tl_cache,
                                         error_measure=measure, **kw)
      # "abs" rounds to 3 decimals: one rounding step apart at most.
      np.testing.assert_allclose(_np(ours), _np(theirs), atol=1.01e-3 if measure == "abs" else 1e-5)
      assert ours.axes == ("layer", "head")
  every = np.asarray(heads.detect_head(ours_cache, tokens, "previous_token_head"))
  some = heads.detect_head(peer["model"], tokens, "previous_token_head", heads=[(1, 0)])
  want = np.full_like(every, -1.0)
  want[1, 0] = every[1, 0]
  np.testing.assert_allclose(some, want, rtol=1e-6)
  with pytest.raises(hooks.HookError) as e:
    heads.detect_head(ours_cache, tokens, "copy_head")
  one_line(e, "copy_head", "induction_head")


@pytest.mark.parametrize("family", ["gpt2", pytest.param("llama", marks=pytest.mark.slow)])
def test_induction_scores_are_the_tutorial_stripe(peers, family):
  peer = peers(family)
  tokens = heads.repeated_tokens(jax.random.key(0), 300, 6, batch=2, bos=1)
  assert tokens.shape == (2, 13)
  np.testing.assert_array_equal(tokens[:, 1:7], tokens[:, 7:])
  ours = heads.induction_scores(peer["model"], tokens, 6)
  _, tl_cache = peer["tl"].run_with_cache(torch.tensor(np.asarray(tokens)))
  theirs = torch.stack([tl_cache["pattern", l].diagonal(dim1=-2, dim2=-1, offset=-5)
                        .mean((0, 2)) for l in range(peer["cache"].n_layers)])
  assert_close(ours, theirs)


def test_plot_attention_has_a_panel_per_head_with_token_labels(gpt2):
  peer = gpt2
  labels = [f"t{i}" for i in range(10)]
  fig = heads.plot_attention(peer["cache"], 1, labels=labels)
  panels = [ax for ax in fig.axes if ax.get_title().startswith("L1H")]
  assert len(panels) == peer["cache"].n_heads
  assert [t.get_text() for t in panels[0].get_xticklabels()] == labels
  fig.clear()


def _randomized(model, seed):
  """``model`` with every parameter moved at random (a fresh model's zero biases and unit norm
  scales would hide a misplaced one)."""
  graphdef, state = nnx.split(model)
  leaves, tree = jax.tree.flatten(state)
  rng = np.random.default_rng(seed)
  leaves = [x + 0.2 * rng.standard_normal(x.shape).astype(x.dtype) for x in leaves]
  return nnx.merge(graphdef, jax.tree.unflatten(tree, leaves))


# The families TransformerLens's peer here lacks: GPT-NeoX's parallel residual and rotary
# positions; Gemma 2's RMSNorm (1 + w) with sandwich norms, grouped-query attention, soft-caps and
# an embedding scale (with an attention output bias, which Gemma has not, so that the bias is
# taken through the post-attention norm); and sandwich LayerNorms (centred, with a bias).
FAMILIES = {
    "neox": dict(rotary_dim=4, parallel_residual=True, gelu_approximate=False,
                 tied_lm_head=False),
    "gemma2": dict(rotary_dim=16, options=Options(
        norm="rms", norm_offset=1.0, gated_mlp=True, mlp_bias=False, fused_qkv=False,
        num_kv_heads=2, head_dim=16, qkv_bias=False, out_bias=True, attn_softcap=3.0,
        final_softcap=5.0, embed_scale=True, sandwich_norms=True, sliding_window=5,
        query_scale=0.2)),
    "sandwich_layernorm": dict(options=Options(sandwich_norms=True)),
}


@pytest.fixture(scope="module", params=["neox", "gemma2", pytest.param(
    "sandwich_layernorm", marks=pytest.mark.slow)])
def family(request):
  with nnx.use_eager_sharding(False):   # logical axis names, no mesh (as models.builder)
    model = Transformer(300, 16, 2, 2, 32, 4, rngs=nnx.Rngs(0), **FAMILIES[request.param])
  model = _randomized(model, 1)
  logits, cache = cache_lib.run_with_cache(model, np.random.default_rng(2).integers(1, 300, (2, 8)))
  return request.param, model, logits, cache


def test_every_family_decomposes_exactly(family):
  """Heads (through a post-attention norm), neurons (through a post-MLP norm), embeddings and
  biases sum to the final residual stream; the logit lens ends at the (soft-capped) logits."""
  name, model, logits, cache = family
  final = np.asarray(cache[f"blocks.{cache.n_layers - 1}.resid_post"])
  for expand in (True, False):
    full = cache.get_full_resid_decomposition(expand_neurons=expand)
    np.testing.assert_allclose(np.asarray(full).sum(0), final, **TOL)
  mid = cache.get_full_resid_decomposition(layer=1, mlp_input=True, expand_neurons=False)
  np.testing.assert_allclose(np.asarray(mid).sum(0), cache.accumulated_resid(
      1, mlp_input=True)["1_mid"].array if name != "neox" else cache["blocks.1.resid_pre"]
      + cache["blocks.1.attn_out"], **TOL)
  np.testing.assert_allclose(np.asarray(cache.decompose_resid()).sum(0), final, **TOL)
  np.testing.assert_allclose(cache.logit_lens()["final_post"].array, logits, **TOL)
  if name == "neox":
    with pytest.raises(hooks.HookError) as e:
      cache.accumulated_resid(incl_mid=True)
    one_line(e, "resid_mid", "parallel")


# ---- path patching (on the GPT-2: each grid is one compiled program) ----


@pytest.fixture(scope="module")
def ioi_like(gpt2):
  """Clean and corrupted prompts differing at one position, and a logit-difference metric."""
  clean = gpt2["tokens"]
  corrupted = clean.copy()
  corrupted[:, 3] = (clean[:, 3] + 77) % 300
  return gpt2["model"], clean, corrupted, patching.logit_diff(5, 6)


def test_path_patching_with_nothing_frozen_is_activation_patching(ioi_like):
  """Nothing frozen, each head as a sender is activation patching of its z; all of block 0's
  heads together, of its attn_out."""
  model, clean, corrupted, metric = ioi_like
  n_heads = model.blocks[0].attn.num_heads
  senders = [(l, h) for l in range(2) for h in range(n_heads)] + ["blocks.0.attn_out"]
  out = path_patching.path_patching(model, clean, corrupted, metric, senders=senders, freeze=())
  graphdef, params = nnx.split(model)
  forward = lambda p, x: cache_lib.lm_forward(nnx.merge(graphdef, p), x)
  sites = [f"blocks.{l}.attn.z" for l in range(2)]
  # Noising: the corrupted heads written into the clean run.
  act = patching.patching_grid(forward, params, corrupted, clean, metric, sites, axes="head")
  grid = np.asarray(out["grid"].array)
  np.testing.assert_allclose(grid[:-1], patching.stack({s: act[s] for s in sites}).ravel(), **TOL)
  np.testing.assert_allclose(out["clean"], act["corrupted"], **TOL)
  _, source = hooks.run(lambda x: forward(params, x), corrupted, capture="blocks.0.attn_out")
  patched, _ = hooks.run(lambda x: forward(params, x), clean, interventions={
      "blocks.0.attn_out": hooks.replace(source["blocks.0.attn_out"])})
  np.testing.assert_allclose(grid[-1], metric(patched), **TOL)
  assert out["grid"].axes == ("sender",) and out["grid"].labels[-1] == "0_attn_out"
  assert out["grid"].labels[:2] == ("L0H0", "L0H1")


def test_path_patching_frozen_paths_carry_only_the_senders_direct_effect(ioi_like):
  """Everything but the sender frozen: the residual a receiver reads is the clean one plus the
  sender head's change in result (z times its rows of W_O), nothing else; a receiver head
  computes its z from that residual; its q, k and v as receivers (of which alone its z is a
  function) patch as the head does."""
  model, clean, corrupted, metric = ioi_like
  _, clean_cache = cache_lib.run_with_cache(model, clean)
  _, corrupt_cache = cache_lib.run_with_cache(model, corrupted)
  delta = corrupt_cache.head_results(0).array - clean_cache.head_results(0).array  # [b,p,h,e]
  forward = lambda x: cache_lib.lm_forward(model, x)
  frozen = ("attn.z", "mlp_out")
  to_resid = path_patching.path_patching(model, clean, corrupted, metric,
                                         receivers="blocks.1.resid_pre", freeze=frozen)
  n_heads = clean_cache.n_heads
  assert to_resid["grid"].axes == ("layer", "head") and to_resid["grid"].shape == (1, n_heads)
  to_heads = path_patching.path_patching(model, clean, corrupted, metric,
                                         senders=[(0, h) for h in range(n_heads)],
                                         receivers=[(1, 0), (1, 2)], freeze=frozen)
  mask = np.zeros(n_heads, bool)
  mask[[0, 2]] = True
  mask = mask[None, None, :, None]
  for h in range(n_heads):
    add = {"blocks.1.resid_pre": hooks.add(delta[:, :, h])}
    want, recorded = hooks.run(forward, clean, interventions=add, capture="blocks.1.attn.z")
    np.testing.assert_allclose(to_resid["grid"].array[0, h], metric(want), **TOL)
    want, _ = hooks.run(forward, clean, interventions={
        "blocks.1.attn.z": hooks.replace(recorded["blocks.1.attn.z"], mask)})
    np.testing.assert_allclose(to_heads["grid"].array[h], metric(want), **TOL)
  assert to_heads["grid"].labels == tuple(f"L0H{h}" for h in range(n_heads))
  to_inputs = path_patching.path_patching(model, clean, corrupted, metric,
                                          senders=[(0, h) for h in range(n_heads)],
                                          receivers=[(1, h, c) for h in (0, 2) for c in "qkv"],
                                          freeze=frozen)
  np.testing.assert_allclose(to_inputs["grid"].array, to_heads["grid"].array, atol=1e-5, rtol=0)
  assert np.ptp(np.asarray(to_resid["grid"].array)) > 1e-6   # the senders differ


@pytest.mark.parametrize("bad, parts", [
    (dict(senders=[(1, 0)], receivers=[(1, 2)]), ("L1H0", "no path")),
    (dict(senders=[(1, 0)], receivers="blocks.1.resid_pre"), ("L1H0", "no path")),
    (dict(senders=["blocks.1.mlp_out"], receivers="blocks.1.resid_mid"), ("1_mlp_out",)),
    (dict(senders=[(0, 99)]), ("(0, 99)", "head 0..")),
    (dict(receivers="blocks.0.resid_pre"), ("senders='heads'", "block 0")),
    (dict(receivers="blocks.0.attn_in"), ("blocks.0.attn_in", "resid_pre")),
    (dict(receivers="blocks.9.resid_pre"), ("no block 9", "valid: 0..")),
    (dict(senders=["blocks.0.mlp"]), ("blocks.0.mlp", "mlp_out")),
    (dict(freeze=("resid_pre",)), ("resid_pre", "attn.z, mlp_out")),
    (dict(receivers=[(1, 0, "z")]), ("(1, 0, 'z')", "'q', 'k', 'v'")),
    (dict(receivers=(1, 9, "q")), ("(1, 9, 'q')", "no such head", "head 0..3")),
    (dict(receivers=[(1, 0, 0)]), ("(1, 0, 0)", "(layer, head, 'q'|'k'|'v')")),
])
def test_path_patching_rejects_what_is_not_a_path(ioi_like, bad, parts):
  model, clean, corrupted, metric = ioi_like
  with pytest.raises(hooks.HookError) as e:
    path_patching.path_patching(model, clean, corrupted, metric, **bad)
  one_line(e, *parts)


def test_path_patching_to_a_value_input_is_patching_it_by_hand(ioi_like):
  """Nothing frozen, the receiver (1, 1, "v"): the clean run with one sender's z corrupted gives
  head 1's values at block 1, and the clean run with only those written is the effect."""
  model, clean, corrupted, metric = ioi_like
  senders = (1, 3)
  out = path_patching.path_patching(model, clean, corrupted, metric, freeze=(),
                                    senders=[(0, h) for h in senders], receivers=(1, 1, "v"))
  forward = lambda x: cache_lib.lm_forward(model, x)
  _, source = hooks.run(forward, corrupted, capture="blocks.0.attn.z")
  for i, h in enumerate(senders):
    _, recorded = hooks.run(forward, clean, capture="blocks.1.attn.v", interventions={
        "blocks.0.attn.z": hooks.replace(source["blocks.0.attn.z"], hooks.at(head=h))})
    want, _ = hooks.run(forward, clean, interventions={
        "blocks.1.attn.v": hooks.replace(recorded["blocks.1.attn.v"], hooks.at(head=1))})
    np.testing.assert_allclose(out["grid"].array[i], metric(want), **TOL)
  assert np.ptp(np.asarray(out["grid"].array)) > 1e-6


@pytest.fixture(scope="module")
def gqa():
  """A tiny rotary model with grouped-query attention: 4 query heads, 2 key/value heads, every
  parameter random (built abstractly, then filled: no initializer runs)."""
  options = Options(fused_qkv=False, num_kv_heads=2, norm="rms", gated_mlp=True)
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: Transformer(300, 16, 2, 2, 32, 4, rotary_dim=8,
                                                  options=options, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  leaves, tree = jax.tree.flatten(state)
  rng = np.random.default_rng(3)
  model = nnx.merge(graphdef, jax.tree.unflatten(tree, [
      jnp.asarray(0.3 * rng.standard_normal(x.shape), x.dtype) for x in leaves]))
  clean = np.random.default_rng(4).integers(1, 300, (2, 8))
  corrupted = clean.copy()
  corrupted[:, 2] = (clean[:, 2] + 77) % 300
  return model, clean, corrupted, patching.logit_diff(5, 6)


def test_path_patching_key_value_receivers_under_grouped_query_attention(gqa):
  """A k / v receiver names a key/value head: block 1's query heads 2 and 3 share key/value head
  1, so their q with that head's k and v patch as the two heads do; a key/value head past the
  last is one line."""
  model, clean, corrupted, metric = gqa
  whole = path_patching.path_patching(model, clean, corrupted, metric, receivers=[(1, 2), (1, 3)])
  inputs = path_patching.path_patching(model, clean, corrupted, metric, receivers=[
      (1, 2, "q"), (1, 3, "q"), (1, 1, "k"), (1, 1, "v")])
  np.testing.assert_allclose(inputs["grid"].array, whole["grid"].array, atol=1e-5, rtol=0)
  assert np.ptp(np.asarray(whole["grid"].array)) > 1e-4   # the senders differ
  with pytest.raises(hooks.HookError) as e:
    path_patching.path_patching(model, clean, corrupted, metric, receivers=[(1, 2, "v")])
  one_line(e, "(1, 2, 'v')", "key/value head", "0..1")
