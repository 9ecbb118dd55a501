"""Activation and attribution patching: exact ends of the grid, the first-order agreement, and
the grid as one jitted call."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax import nnx

from superalign import models
from superalign.core.specs import InputSpec
from superalign.interp import hooks, patching
from superalign.models.mlp import MLP

TOKENS = InputSpec((12,), "tokens", 3, vocab_size=40)
VECTOR = InputSpec((10,), "vector", 3)


@pytest.fixture(scope="module")
def gpt():
  model = models.builder("gpt_tiny", TOKENS)(nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  rng = np.random.default_rng(0)
  clean = jnp.asarray(rng.integers(1, 40, (8, 12)), jnp.int32)
  corrupted = clean.at[:, 3].set((clean[:, 3] + 7) % 39 + 1)   # one position differs
  return graphdef, params, clean, corrupted


def _forward(graphdef):
  return lambda params, x: nnx.merge(graphdef, params)(x)


METRIC = patching.logit_diff(0, 1)
RESID = [f"blocks.{i}.resid_pre" for i in range(2)] + ["blocks.1.resid_post"]


def test_patching_the_clean_run_into_itself_is_the_clean_metric(gpt):
  graphdef, params, clean, _ = gpt
  out = patching.patching_grid(_forward(graphdef), params, clean, clean, METRIC, RESID)
  for site in RESID:
    np.testing.assert_allclose(np.asarray(out[site]), float(out["clean"]), rtol=1e-5, atol=1e-5)


def test_the_grid_has_exact_ends(gpt):
  """Before the first block only the corrupted position carries the difference; after the last
  block only the last position is read by the head."""
  graphdef, params, clean, corrupted = gpt
  out = patching.patching_grid(_forward(graphdef), params, clean, corrupted, METRIC, RESID)
  clean_m, corrupt_m = float(out["clean"]), float(out["corrupted"])
  assert abs(clean_m - corrupt_m) > 1e-3
  first, last = np.asarray(out["blocks.0.resid_pre"]), np.asarray(out["blocks.1.resid_post"])
  np.testing.assert_allclose(first[3], clean_m, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.delete(first, 3), corrupt_m, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(last[-1], clean_m, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(last[:-1], corrupt_m, rtol=1e-4, atol=1e-5)
  heat = patching.normalized(patching.stack({s: out[s] for s in RESID}), clean_m, corrupt_m)
  assert heat.shape == (3, 12)
  np.testing.assert_allclose(np.asarray(heat)[[0, 2], [3, 11]], 1.0, atol=1e-4)


def test_a_head_grid_is_layers_by_heads(gpt):
  graphdef, params, clean, corrupted = gpt
  sites = [f"blocks.{i}.attn.z" for i in range(2)]
  out = patching.patching_grid(_forward(graphdef), params, clean, corrupted, METRIC, sites,
                               axes="head")
  assert patching.stack({s: out[s] for s in sites}).shape == (2, 2)


def test_grid_matches_single_patches(gpt):
  graphdef, params, clean, corrupted = gpt
  forward = _forward(graphdef)
  out = patching.patching_grid(forward, params, clean, corrupted, METRIC, ["blocks.1.resid_pre"])
  from superalign.interp import hooks
  _, acts = hooks.run(forward, params, clean, capture="blocks.1.resid_pre")
  act = acts["blocks.1.resid_pre"]
  for position in (0, 3, 7):
    where = (jnp.arange(12) == position)[None, :, None]
    logits, _ = hooks.run(forward, params, corrupted,
                          interventions={"blocks.1.resid_pre": hooks.replace(act, where)})
    np.testing.assert_allclose(float(METRIC(logits)), float(out["blocks.1.resid_pre"][position]),
                               rtol=1e-5, atol=1e-5)


def test_attribution_patching_is_activation_patching_to_first_order():
  """On corrupted inputs a small step from the clean ones the model is nearly linear between
  them: the gradient estimate agrees with the patched differences (float64, so that the tiny
  differences are not rounding)."""
  with jax.enable_x64(True):
    with nnx.use_eager_sharding(False):
      model = MLP((10,), 3, (32,), dtype=jnp.float64, rngs=nnx.Rngs(1))
    graphdef, params = nnx.split(model)
    params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
    forward = _forward(graphdef)
    rng = np.random.default_rng(0)
    clean = jnp.asarray(rng.normal(size=(16, 10)))
    sites = ["input", "layers.0.pre", "layers.0.post"]

    def grids(corrupted):  # every unit: axis 1 (named "features" at the input, "mlp" after)
      exact = patching.patching_grid(forward, params, clean, corrupted, METRIC, sites, axes=1)
      approx = patching.patching_grid(forward, params, clean, corrupted, METRIC, sites, axes=1,
                                      attribution=True)
      return {s: (np.asarray(exact[s]) - float(exact["corrupted"]), np.asarray(approx[s]))
              for s in sites}

    for site, (effect, estimate) in grids(clean + 1e-3 * rng.normal(size=(16, 10))).items():
      assert np.abs(effect).max() > 1e-6
      np.testing.assert_allclose(estimate, effect, atol=0.01 * np.abs(effect).max(),
                                 err_msg=site)
    # Far from linear (corrupted inputs unrelated to the clean ones) the estimate is off.
    effect, estimate = grids(jnp.asarray(3 * rng.normal(size=(16, 10))))["layers.0.pre"]
    assert np.abs(estimate - effect).max() > 0.1 * np.abs(effect).max()


def test_grids_are_indexed_by_axis_name(gpt):
  """The same grid by name and by number; one call indexes each site by its own axes."""
  graphdef, params, clean, corrupted = gpt
  by_name = patching.patching_grid(_forward(graphdef), params, clean, corrupted, METRIC,
                                   ["blocks.0.attn.z"], axes="head")
  by_number = patching.patching_grid(_forward(graphdef), params, clean, corrupted, METRIC,
                                     ["blocks.0.attn.z"], axes=2)
  np.testing.assert_array_equal(np.asarray(by_name["blocks.0.attn.z"]),
                                np.asarray(by_number["blocks.0.attn.z"]))
  # The head is axis 2 of attn.z ([batch, pos, head, head_dim]) and axis 1 of attn.pattern.
  both = patching.patching_grid(_forward(graphdef), params, clean, corrupted, METRIC,
                                ["blocks.0.attn.z", "blocks.0.attn.pattern"], axes="head")
  np.testing.assert_array_equal(np.asarray(both["blocks.0.attn.z"]),
                                np.asarray(by_name["blocks.0.attn.z"]))
  assert both["blocks.0.attn.pattern"].shape == by_name["blocks.0.attn.z"].shape
  with pytest.raises(hooks.HookError, match="has no axis 'head'"):
    patching.patching_grid(_forward(graphdef), params, clean, corrupted, METRIC,
                           ["blocks.0.resid_pre"], axes="head")
