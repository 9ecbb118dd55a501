"""Steering in cached generation (interp.steering): every pass intervened, the KV cache the steered
run's (tokens equal re-running the whole sequence steered and taking the argmax), absolute
positions, the SAE clamp's error term, and the one-line errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import hf_model, left_padded, one_line, save_tiny_decoder, save_tiny_gpt2

from superalign.interp import hooks, sae as sae_lib, steering
from superalign.models import generate as gen

NEW = 8
ROWS = [[5, 17, 42, 9, 33, 71], [88, 3, 120, 6], [14, 15, 92, 200, 7, 61]]


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request, tmp_path_factory):
  path = tmp_path_factory.mktemp(request.param)
  if request.param == "gpt2":
    save_tiny_gpt2(path)
  else:
    save_tiny_decoder("llama", path, num_hidden_layers=2,
                      rope_parameters={"rope_type": "default", "rope_theta": 1000.0})
  return hf_model(str(path))


@pytest.fixture(scope="module")
def plain(model):
  """The unsteered greedy tokens."""
  return np.asarray(gen.generate(model, *_prompts(), max_new_tokens=NEW))


def _prompts():
  ids, mask = left_padded(ROWS, max(map(len, ROWS)))
  return jnp.asarray(ids, jnp.int32), jnp.asarray(mask)


def _uncached(model, prompt, mask, interventions, new=NEW):
  """Greedy tokens by re-running the whole sequence with the interventions at every position
  (no cache), one argmax per step. The sequence is held at its final length (one compiled
  program): columns after the one read are not yet generated, and causal attention keeps them
  from affecting it."""
  @jax.jit
  def step(seq, seq_mask, column):
    forward = lambda s: model.lm_logits(model.forward(s, attention_mask=seq_mask)[0])
    logits = hooks.run(forward, seq, interventions=interventions)[0]
    token = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, column, 1, False), axis=-1)
    return seq.at[:, column + 1].set(token.astype(seq.dtype))

  length = prompt.shape[1]
  seq = jnp.concatenate([prompt, jnp.zeros((len(prompt), new), prompt.dtype)], axis=1)
  seq_mask = jnp.concatenate([mask, jnp.ones((len(prompt), new), mask.dtype)], axis=1)
  for i in range(new):
    seq = step(seq, seq_mask, length - 1 + i)
  return np.asarray(seq[:, length:])


def _width(model):
  return model.embed.embedding.shape[1]


def _sae(model):
  return sae_lib.Architecture(kind="relu", width=48).make(_width(model), seed=3)


def _interventions(model):
  """One of each kind, at different blocks, one of them masked to absolute positions that fall in
  the prompt (column 2) and among the new tokens (columns 7 and 9)."""
  rng = np.random.default_rng(0)
  d = _width(model)
  return {
      "blocks.0.resid_pre": hooks.add(rng.normal(size=d).astype(np.float32), scale=2.0),
      "blocks.0.attn_out": hooks.ablate_direction(rng.normal(size=d).astype(np.float32)),
      "blocks.1.resid_pre": hooks.add(rng.normal(size=d).astype(np.float32), scale=4.0,
                                      where=hooks.at(pos=[2, 7, 9])),
      "blocks.1.resid_mid": steering.clamp_latent(_sae(model), 5, 6.0),
  }


def test_steered_cached_generation_equals_the_uncached_reference(model, plain):
  prompt, mask = _prompts()
  interventions = _interventions(model)
  ours = np.asarray(steering.generate(model, prompt, mask, interventions=interventions,
                                      max_new_tokens=NEW))
  np.testing.assert_array_equal(ours, _uncached(model, prompt, mask, interventions))
  assert (ours != plain).any()   # the interventions did something


def test_a_zero_vector_is_unsteered_and_a_large_one_steers(model, plain):
  prompt, mask = _prompts()
  vector = np.random.default_rng(1).normal(size=_width(model)).astype(np.float32)
  steer = lambda scale: np.asarray(steering.generate(
      model, prompt, mask, max_new_tokens=NEW,
      interventions={"blocks.1.resid_pre": hooks.add(vector, scale=scale)}))
  np.testing.assert_array_equal(steer(0.0), plain)
  strong = steer(50.0)   # the same compiled program: the scale is an argument
  assert (strong != plain).mean() > 0.5


@pytest.mark.parametrize("model", ["llama"], indirect=True)
def test_masked_steering_acts_only_from_its_position(model, plain):
  """at(pos=p) with p the k-th new token's column leaves the first k tokens alone."""
  prompt, mask = _prompts()
  vector = np.random.default_rng(2).normal(size=_width(model)).astype(np.float32)
  k = 4
  ours = np.asarray(steering.generate(
      model, prompt, mask, max_new_tokens=NEW, interventions={
          "blocks.0.resid_pre": hooks.add(vector, scale=50.0,
                                          where=hooks.at(pos=prompt.shape[1] + k - 1))}))
  np.testing.assert_array_equal(ours[:, :k], plain[:, :k])
  assert (ours[:, k:] != plain[:, k:]).any()


@pytest.mark.parametrize("model", ["gpt2"], indirect=True)
def test_the_clamp_keeps_the_sae_error_term(model):
  prompt, mask = _prompts()
  sae = _sae(model)
  site = "blocks.1.resid_mid"
  forward = lambda s: model.lm_logits(model.forward(s, attention_mask=mask)[0])
  run = jax.jit(lambda interventions, capture: hooks.run(forward, prompt, capture=capture,
                                                          interventions=interventions),
                static_argnums=1)
  logits, acts = run({}, site)
  x = acts[site]
  z = sae.encode(x)
  latent = int(jnp.argmax((z > 0).sum(axis=(0, 1))))   # a latent that fires somewhere
  assert float(z[..., latent].max()) > 0
  # Clamped to its own value (per token): exactly the unclamped run.
  same, _ = run({site: steering.clamp_latent(sae, latent, z[..., latent])}, ())
  np.testing.assert_array_equal(np.asarray(same), np.asarray(logits))
  # Clamped to 3: the activation moves by 3 - z along the latent's decoder row, and what the SAE
  # does not reconstruct (x - sae(x)) stays.
  _, moved = run({site: steering.clamp_latent(sae, latent, 3.0)}, site)
  clamped = moved[site]
  z_new = z.at[..., latent].set(3.0)
  np.testing.assert_allclose(np.asarray(clamped - sae.decode(z_new)), np.asarray(x - sae(x)),
                             atol=2e-5)
  expected = (3.0 - z[..., latent])[..., None] * sae.decoder()[latent]
  np.testing.assert_allclose(np.asarray(clamped - x), np.asarray(expected), atol=2e-5)


@pytest.mark.parametrize("model", ["llama"], indirect=True)
def test_one_line_errors(model):
  prompt, mask = _prompts()
  d = _width(model)
  with pytest.raises(hooks.HookError) as excinfo:
    steering.generate(model, prompt, mask, max_new_tokens=2,
                      interventions={"blocks.9.resid_pre": hooks.add(np.ones(d, np.float32))})
  one_line(excinfo, "'blocks.9.resid_pre'", "blocks.<0..1>.resid_pre")
  with pytest.raises(hooks.HookError) as excinfo:
    steering.generate(model, prompt, mask, max_new_tokens=2, interventions={
        "blocks.0.resid_pre": hooks.add(np.ones(d, np.float32), where=hooks.at(pos=-1))})
  one_line(excinfo, "'blocks.0.resid_pre'", "pos=-1", "absolute positions")
  with pytest.raises(hooks.HookError) as excinfo:
    steering.generate(model, prompt, mask, max_new_tokens=2, interventions={
        "blocks.0.resid_pre": steering.clamp_latent(
            sae_lib.Architecture(kind="relu", width=8).make(d + 1), 0, 1.0)})
  one_line(excinfo, "'blocks.0.resid_pre'", f"{d + 1} inputs", f"width {d}")
