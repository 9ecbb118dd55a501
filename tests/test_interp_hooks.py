"""Activation sites and hooks: names on every family, the four interventions, the invariances,
and the transforms (jit, vmap over stacked runs, an 8-device mesh)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import _config, spec_and_model

from superalign import models
from superalign.core import mesh as mesh_lib
from superalign.core.specs import InputSpec
from superalign.interp import hooks
from superalign.models import sites
from superalign.parties import classifier

from flax import nnx

VECTOR = InputSpec((12,), "vector", 3)
IMAGE = InputSpec((8, 8, 1), "image", 10)
TOKENS = InputSpec((16,), "tokens", 3, vocab_size=40)
CASES = {"mlp_small": VECTOR, "cnn_tiny": IMAGE, "gpt_tiny": TOKENS}


def _inputs(spec, n=6, seed=0):
  rng = np.random.default_rng(seed)
  if spec.kind == "tokens":
    return jnp.asarray(rng.integers(1, spec.vocab_size, (n, *spec.shape)), jnp.int32)
  return jnp.asarray(rng.normal(size=(n, *spec.shape)), jnp.float32)


def _model(name, seed=0):
  return models.builder(name, CASES[name])(nnx.Rngs(seed))


@pytest.mark.parametrize("name,expected", [
    ("mlp_small", ["input", "layers.0.pre", "layers.0.post", "logits"]),
    ("cnn_tiny", ["input", "convs.0.pre", "convs.0.post", "dense.pre", "dense.post", "logits"]),
    ("gpt_tiny", ["embed", "pos_embed", "ln_final.scale", "ln_final", "logits"] + [
        f"blocks.{i}.{s}" for i in range(2) for s in (
            "resid_pre", "ln1.scale", "attn.q", "attn.k", "attn.v", "attn.attn_scores",
            "attn.pattern", "attn.z", "attn_out", "resid_mid", "ln2.scale", "mlp.pre",
            "mlp.post", "mlp_out", "resid_post")]),
])
def test_every_family_has_its_sites(name, expected):
  shapes = hooks.site_shapes(_model(name), _inputs(CASES[name]))
  assert sorted(shapes) == sorted(expected)
  if name == "gpt_tiny":
    assert shapes["blocks.0.attn.pattern"].shape == (6, 2, 16, 16)
    assert shapes["blocks.1.attn.z"].shape == (6, 16, 2, 32)
    assert shapes["blocks.0.mlp.post"].shape == (6, 16, 256)
    assert shapes["blocks.0.attn.q"].shape == (6, 16, 2, 32)
    assert shapes["blocks.0.attn.attn_scores"].shape == (6, 2, 16, 16)
    assert shapes["ln_final.scale"].shape == (6, 16, 1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_site_names_its_axes(name):
  """Each site declares one name per axis where the model defines it; the capture carries them."""
  model, x = _model(name), _inputs(CASES[name])
  axes, shapes = hooks.site_axes(model, x), hooks.site_shapes(model, x)
  assert list(axes) == list(shapes)
  for site, names in axes.items():
    assert len(names) == len(shapes[site].shape) and len(set(names)) == len(names), site
    assert names[0] == "batch" or site == "pos_embed", site
  _, captured = jax.jit(lambda x: hooks.run(model, x, capture=True))(x)
  assert captured.axes == axes
  if name == "gpt_tiny":
    assert axes["blocks.0.resid_pre"] == ("batch", "pos", "embed")
    assert axes["blocks.1.attn.z"] == ("batch", "pos", "head", "head_dim")
    assert axes["blocks.0.attn.pattern"] == ("batch", "head", "query_pos", "key_pos")
  if name == "cnn_tiny":
    assert axes["convs.0.post"] == ("batch", "height", "width", "channel")


def test_a_mask_by_axis_name_is_the_mask_by_position():
  model, x = _model("gpt_tiny"), _inputs(TOKENS)
  z = "blocks.0.attn.z"
  _, named = hooks.run(model, x, capture=z,
                       interventions={z: hooks.zero(where=hooks.at(head=1, pos=[2, 5]))})
  mask = np.zeros((1, 16, 2, 1), bool)
  mask[:, [2, 5], 1] = True
  _, by_position = hooks.run(model, x, capture=z,
                             interventions={z: hooks.zero(where=jnp.asarray(mask))})
  np.testing.assert_array_equal(np.asarray(named[z]), np.asarray(by_position[z]))
  assert (np.asarray(named[z])[:, [2, 5], 1] == 0).all()
  assert (np.asarray(named[z])[:, 3, 1] != 0).any()
  with pytest.raises(hooks.HookError, match=r"'blocks.0.resid_pre' has no axis 'head'; its "
                     r"axes: batch, pos, embed"):
    hooks.run(model, x, interventions={"blocks.0.resid_pre": hooks.zero(where=hooks.at(head=0))})


@pytest.mark.parametrize("name", sorted(CASES))
def test_capturing_changes_no_logit(name):
  model, x = _model(name), _inputs(CASES[name])
  plain = jax.jit(lambda x: model(x))(x)
  hooked, captured = jax.jit(lambda x: hooks.run(model, x, capture=True))(x)
  np.testing.assert_array_equal(np.asarray(plain), np.asarray(hooked))
  np.testing.assert_array_equal(np.asarray(captured["logits"]), np.asarray(plain))


@pytest.mark.parametrize("name", sorted(CASES))
def test_writing_a_site_its_own_activation_changes_nothing(name):
  model, x = _model(name), _inputs(CASES[name])
  _, captured = hooks.run(model, x, capture=True)
  plain = model(x)
  for site, act in captured.items():
    out, _ = hooks.run(model, x, interventions={site: hooks.replace(act)})
    np.testing.assert_allclose(np.asarray(out), np.asarray(plain), rtol=1e-6, atol=1e-6,
                               err_msg=site)


def test_interventions_do_what_they_say():
  model, x = _model("mlp_small"), _inputs(VECTOR)
  _, base = hooks.run(model, x, capture=["layers.0.post", "logits"])
  steer = jnp.arange(3, dtype=jnp.float32)
  out, _ = hooks.run(model, x, interventions={"logits": hooks.add(steer, scale=2.0)})
  np.testing.assert_allclose(np.asarray(out), np.asarray(base["logits"] + 2 * steer), atol=1e-6)

  unit = jnp.arange(32) == 5
  _, got = hooks.run(model, x, capture="layers.0.post",
                     interventions={"layers.0.post": hooks.zero(where=unit)})
  act, ref = np.asarray(got["layers.0.post"]), np.asarray(base["layers.0.post"])
  assert (act[:, 5] == 0).all() and np.array_equal(np.delete(act, 5, 1), np.delete(ref, 5, 1))

  mean = ref.mean(axis=0)
  _, got = hooks.run(model, x, capture="layers.0.post",
                     interventions={"layers.0.post": hooks.mean_ablate(mean)})
  np.testing.assert_allclose(np.asarray(got["layers.0.post"]), np.broadcast_to(mean, ref.shape))

  other = _inputs(VECTOR, seed=1)
  _, source = hooks.run(model, other, capture="layers.0.post")
  resampled, _ = hooks.run(model, x, interventions={
      "layers.0.post": hooks.resample(source["layers.0.post"])})
  np.testing.assert_allclose(np.asarray(resampled), np.asarray(model(other)), atol=1e-6)


def test_padding_on_the_left_leaves_real_positions_alone():
  model = _model("gpt_tiny")
  tokens = _inputs(TOKENS, n=2)[:, :10]
  padded = jnp.concatenate([jnp.zeros((2, 6), jnp.int32), tokens], axis=1)
  mask = padded != 0
  forward = lambda t, m: model.forward(t, attention_mask=m)[0]
  _, real = hooks.run(forward, tokens, jnp.ones_like(tokens), capture="blocks.*")
  _, pad = hooks.run(forward, padded, mask, capture="blocks.*")
  for site in real:
    if site.endswith(("attn.pattern", "attn.attn_scores")):   # [batch, heads, queries, keys]
      a, b = real[site], pad[site][:, :, 6:, 6:]
    else:
      a, b = real[site], pad[site][:, 6:]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5, err_msg=site)


def test_an_unknown_site_names_the_valid_ones():
  model, x = _model("gpt_tiny"), _inputs(TOKENS)
  with pytest.raises(hooks.HookError, match=r"unknown activation site 'blocks.7.resid_pre'.*"
                     r"blocks.<0..1>.resid_pre.*ln_final"):
    hooks.run(model, x, interventions={"blocks.7.resid_pre": hooks.zero()})
  with pytest.raises(hooks.HookError, match="'blocks.*.mlp.hidden'"):
    hooks.run(model, x, capture="blocks.*.mlp.hidden")
  with pytest.raises(hooks.HookError, match=r"site='resid'.*blocks.<0..1>.resid_post"):
    hooks.check_sites(["resid"], hooks.site_shapes(model, x))


def test_a_value_of_the_wrong_shape_is_refused():
  model, x = _model("gpt_tiny"), _inputs(TOKENS)
  with pytest.raises(hooks.HookError, match=r"'blocks.0.resid_post': value of shape \(5, 64\) "
                     r"does not fit the activation's shape \(6, 16, 64\)"):
    hooks.run(model, x, interventions={"blocks.0.resid_post": hooks.replace(jnp.ones((5, 64)))})
  with pytest.raises(hooks.HookError, match="vector of shape"):
    hooks.run(model, x, interventions={"embed": hooks.add(jnp.ones(63))})


def test_hooks_do_not_leak_out_of_a_run():
  model, x = _model("mlp_small"), _inputs(VECTOR)
  with pytest.raises(RuntimeError):
    hooks.run(lambda: hooks.run(model, x))
  assert sites._hooks() is None
  np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(hooks.run(model, x)[0]))


def test_no_active_hook_traces_the_same_program(monkeypatch):
  """A model with no hook installed traces exactly the program without sites (train step)."""
  model, x = _model("gpt_tiny"), _inputs(TOKENS)
  graphdef, params = nnx.split(model)

  def loss(params, x):
    return nnx.merge(graphdef, params)(x).sum()

  with_sites = str(jax.make_jaxpr(jax.grad(loss))(params, x))
  monkeypatch.setattr(sites, "site", lambda name, x, axes: x)
  for module in ("transformer", "mlp", "cnn"):
    monkeypatch.setattr(f"superalign.models.{module}.site", lambda name, x, axes: x)
  without = str(jax.make_jaxpr(jax.grad(loss))(params, x))
  assert with_sites == without


@pytest.mark.parametrize("name", ["mlp_small", "gpt_tiny"])
def test_capture_over_stacked_runs_on_an_8_device_mesh(tmp_path, name):
  """Through the engine's batched apply: jitted, vmapped over three stacked runs, the batch
  sharded over 8 devices; each run's capture equals that run computed on its own."""
  spec = CASES[name]
  config = _config(model=name)
  mesh = mesh_lib.make_mesh({"data": 8}, devices=jax.devices()[:8])
  site = "layers.0.post" if name == "mlp_small" else "blocks.1.resid_mid"
  fn = lambda state, batch: hooks.run(state.model(), batch["x"], capture=site)[1][site]
  x = np.asarray(_inputs(spec, n=24))
  stacked = classifier.trainer(*spec_and_model(config), spec, str(tmp_path), tag="s",
                               seeds=[0, 1, 2], mesh=mesh).init()
  got = stacked.apply(x, fn)
  assert got.shape[:2] == (3, 24)
  for run, seed in enumerate([0, 1, 2]):
    single = classifier.trainer(*spec_and_model(config), spec, str(tmp_path), tag=f"r{seed}",
                                seeds=seed, mesh=mesh).init()
    np.testing.assert_allclose(got[run], single.apply(x, fn), rtol=1e-5, atol=1e-5)
  assert not np.allclose(got[0], got[1])
