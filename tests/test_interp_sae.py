"""Sparse autoencoders: the ground truth of a toy model of superposition, the estimators, the
unit decoder rows and the dead-latent counter, the metrics, the activation store, resume and the
SAELens layout."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from superalign.core.errors import ConfigError
from superalign.core.spec import MeshSpec
from superalign.core.trainer import Trainer
from superalign.interp import activations, sae, saelens, superposition as sp
from superalign.results.files import DamagedFileError

N_FEATURES, D, P = 64, 32, 0.05
# Per kind: its coefficients and steps (batch 256, Adam 3e-3). Measured mean max-cosine at seed 0:
# 0.993 (TopK), 0.990 (ReLU), 0.990 (JumpReLU); 0.975-0.997 over four seeds each (data and init)
# before the decoder renormalization and the dead counter. The bar is 0.9. TopK's latents are dead
# after an epoch (64 batches) without firing, so AuxK is at work here.
KINDS = {"topk": (dict(k=4, dead_steps=64), 400),
         "relu": (dict(l1_coefficient=0.3), 400),
         "jumprelu": (dict(l0_coefficient=0.1, bandwidth=0.05, init_threshold=0.1), 600)}


def _spec(steps, mesh=MeshSpec(num_devices=1), **train):
  spec = dataclasses.replace(sae.SAE_SPEC, mesh=mesh).with_optim(learning_rate=3e-3)
  return spec.with_train(**{"num_steps": steps, "batch_size": 256, "eval_batch_size": 1024,
                            "log_every": steps, "checkpoint_every": 0, **train})


@pytest.fixture(scope="module")
def toy():
  train = sp.toy_superposition(16384, N_FEATURES, D, P, seed=0)
  val = sp.toy_superposition(4096, N_FEATURES, D, P, seed=1, directions=train.directions)
  return train, val


@pytest.mark.parametrize("kind", list(KINDS))
def test_recovers_planted_features(kind, toy, tmp_path):
  train, val = toy
  hp, steps = KINDS[kind]
  trained = sae.train_sae(_spec(steps), sae.Architecture(kind=kind, width=2 * N_FEATURES, **hp),
                          train.x, workdir=str(tmp_path), tag=kind)
  model = sae.module(trained)
  mmc = sp.mean_max_cosine(np.asarray(model.decoder()), train.directions)
  metrics = sae.evaluate(trained, val.x)
  print(kind, f"mean max-cosine {mmc:.3f}", metrics)
  assert mmc >= 0.9, (kind, mmc)
  assert metrics["explained_variance"] > 0.75, metrics
  # evaluate (the batched apply) agrees with the module on the host
  z = np.asarray(model.encode(val.x))
  assert metrics["l0"] == pytest.approx((z > 0).sum(1).mean(), rel=1e-5)
  assert metrics["dead_fraction"] == pytest.approx(1 - (z > 0).any(0).mean())
  assert metrics["explained_variance"] == pytest.approx(
      sae.explained_variance(val.x, np.asarray(model(val.x))), abs=1e-4)
  if kind == "topk":
    assert 0.8 * hp["k"] <= metrics["l0"] <= hp["k"], metrics  # relu can zero a top-k entry
    assert (z > 0).sum(1).max() <= hp["k"]
  else:  # the sparsity penalty makes it sparse: a handful of latents of 128 (truth: 3.2)
    assert 1.0 < metrics["l0"] < 10.0, metrics


def test_resume_from_a_store_stream_is_bitwise(toy, tmp_path):
  """A run interrupted after its step-20 checkpoint resumes there and ends where an unbroken
  run ends, parameters and dead-latent counters alike: the store's batches are a function of the
  step, and the counters are checkpointed with the state."""
  store = activations.write_store(str(tmp_path / "acts"), toy[0].x, "toy", shard_rows=5000)
  spec = _spec(40, checkpoint_every=20)
  # Wide and one-hot: some latents never fire, so their counts run across the resume point, and
  # AuxK reads them from step 15 on.
  arch = sae.Architecture(kind="topk", width=256, k=1, k_aux=8, dead_steps=15)

  class Stop(Exception):
    pass

  def stop_at_30(step):
    if step == 30:
      raise Stop

  with pytest.raises(Stop):
    sae.train_sae(spec, arch, stream=store, workdir=str(tmp_path / "a"), on_batch=stop_at_30)
  resumed = sae.train_sae(spec, arch, stream=store, workdir=str(tmp_path / "a"))
  whole = sae.train_sae(spec, arch, stream=store, workdir=str(tmp_path / "b"))
  assert resumed.fit.resumed_from == 20 and whole.fit.resumed_from is None
  for a, b in zip(jax.tree.leaves((resumed.state.params, resumed.state.stats)),
                  jax.tree.leaves((whole.state.params, whole.state.stats))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  counts = np.asarray(whole.state.stats["steps_since_fired"][...])
  assert counts.max() == 40 and counts.min() == 0   # a count that restarted at 20 would be <= 20


def test_dead_counter_counts_steps_since_firing(toy):
  """Each loss call adds one to every latent that fired on no row and zeroes the rest; a latent
  is dead (AuxK reconstructs from it) once its count reaches ``dead_steps``."""
  model = sae.Architecture(kind="topk", width=64, k=2, k_aux=16, dead_steps=3).make(D, seed=1)
  model.W_enc[...] = model.W_enc[...].at[:, :16].multiply(1e-3)   # never in the top 2
  x = jnp.asarray(toy[0].x[:512])
  fired = np.asarray((model.encode(x) > 0).any(0))
  aux = []
  for step in range(1, 5):
    _, metrics = model.loss(x)
    counts = np.asarray(model.steps_since_fired[...])
    np.testing.assert_array_equal(counts, np.where(fired, 0, step))
    aux.append(float(metrics["aux_loss"]))
    assert float(metrics["dead_fraction"]) == pytest.approx((counts >= 3).mean())
  assert not fired[:16].any() and aux[:2] == [0.0, 0.0] and min(aux[2:]) > 0


def test_decoder_rows_stay_unit_norm_through_training(toy, tmp_path):
  """The post-update hook renormalizes ``W_dec``'s rows after every step (here at a learning
  rate that moves them far), and its gradient is tangent to them, so the optimizer never pushes
  along a row; the export writes the rows as stored."""
  rows = lambda trained: np.asarray(trained.state.params["W_dec"][...])
  for kind in KINDS:
    arch = sae.Architecture(kind=kind, width=32, **KINDS[kind][0])
    trained = sae.train_sae(_spec(25).with_optim(learning_rate=5e-2), arch, toy[0].x,
                            workdir=str(tmp_path / kind))
    start = rows(Trainer(arch.builder(D), _spec(25), str(tmp_path), "init").init())
    np.testing.assert_allclose(np.linalg.norm(rows(trained), axis=1), 1.0, rtol=1e-5)
    assert np.abs(rows(trained) - start).max() > 0.1, kind   # they moved, and stayed unit
  model = sae.module(trained)
  x = jnp.asarray(toy[0].x[:256])
  g = np.asarray(nnx.grad(lambda m: m.loss(x)[0])(model)["W_dec"][...])
  w = np.asarray(model.W_dec[...])
  assert np.abs(g).max() > 0
  np.testing.assert_allclose((g * w).sum(1), 0.0, atol=1e-6 * np.abs(g).max())
  saelens.export_saelens(model, str(tmp_path / "export"))
  from safetensors.numpy import load_file
  assert load_file(str(tmp_path / "export" / saelens.WEIGHTS))["W_dec"].tobytes() == w.tobytes()


def test_sharded_on_the_mesh_like_one_device(toy, tmp_path):
  """Latents split over ``model``, inputs over ``fsdp`` (the logical axes), and the same run."""
  x = toy[0].x
  arch = sae.Architecture(kind="jumprelu", width=64)
  one = sae.train_sae(_spec(10), arch, x, workdir=str(tmp_path / "1"))
  mesh = MeshSpec(axes=(("data", 2), ("fsdp", 2), ("model", 2)), num_devices=8)
  many = sae.train_sae(_spec(10, mesh), arch, x, workdir=str(tmp_path / "8"))
  params = many.state.params
  assert tuple(params["W_enc"].sharding.spec) == ("fsdp", "model")
  assert tuple(params["W_dec"].sharding.spec) == ("model", "fsdp")
  assert tuple(params["log_threshold"].sharding.spec) == ("model",)
  assert tuple(many.state.stats["steps_since_fired"].sharding.spec) == ("model",)
  for a, b in zip(jax.tree.leaves((one.state.params, one.state.stats)),
                  jax.tree.leaves((params, many.state.stats))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_stacked_restarts_evaluate_per_run(toy, tmp_path):
  trained = sae.train_sae(_spec(5), sae.Architecture(kind="relu", width=32), toy[0].x,
                          workdir=str(tmp_path), seeds=[0, 1])
  metrics = sae.evaluate(trained, toy[1].x)
  assert metrics["l0"].shape == (2,) and metrics["l0"][0] != metrics["l0"][1]
  for run in range(2):
    z = np.asarray(sae.module(trained, run=run).encode(toy[1].x))
    assert metrics["l0"][run] == pytest.approx((z > 0).sum(1).mean(), rel=1e-5)


def test_streams_a_generator_and_evaluates_during_training(toy, tmp_path):
  x = toy[0].x
  chunks = (x[i * 256:(i + 1) * 256].reshape(8, 32, D) for i in range(1000))  # [batch, pos, d]
  trained = sae.train_sae(_spec(12, eval_every=6), sae.Architecture(kind="topk", width=32, k=3),
                          stream=chunks, workdir=str(tmp_path), val=toy[1].x)
  assert [row["step"] for row in trained.fit.history] == [6, 12]
  assert trained.fit.history[-1]["l0"] == pytest.approx(sae.evaluate(trained, toy[1].x)["l0"])
  np.testing.assert_allclose(np.asarray(trained.state.params["b_dec"]), x[:256].mean(0),
                             atol=0.05)  # started at the first batch's mean, moved a little


# --- the estimators -------------------------------------------------------------------------


def test_jumprelu_straight_through_gradients():
  """The rectangle-kernel pseudo-derivative: per entry, -(theta/eps) (JumpReLU) and -1/eps (L0)
  inside the window and 0 outside; in expectation, the derivative of P(z > theta)."""
  eps, theta = 0.1, 0.5
  z = jnp.array([0.3, 0.47, 0.52, 0.9])
  t = jnp.full_like(z, theta)
  g_relu = jax.grad(lambda t: sae.jumprelu(z, t, eps).sum())(t)
  g_step = jax.grad(lambda t: sae.heaviside(z, t, eps).sum())(t)
  np.testing.assert_allclose(g_relu, [0, -theta / eps, -theta / eps, 0], rtol=1e-6)
  np.testing.assert_allclose(g_step, [0, -1 / eps, -1 / eps, 0], rtol=1e-6)
  np.testing.assert_allclose(jax.grad(lambda z: sae.jumprelu(z, t, eps).sum())(z), [0, 0, 1, 1])
  samples = jax.random.normal(jax.random.key(0), (400_000,))
  mean_grad = jax.grad(lambda t: sae.heaviside(samples, jnp.full_like(samples, t), eps).mean())(
      theta)
  pdf = np.exp(-theta ** 2 / 2) / np.sqrt(2 * np.pi)   # d/dtheta P(z > theta) = -pdf(theta)
  assert float(mean_grad) == pytest.approx(-pdf, rel=0.03)


def test_jumprelu_threshold_learns_through_the_loss(toy):
  model = sae.Architecture(kind="jumprelu", width=64, l0_coefficient=0.1, bandwidth=0.05,
                           init_threshold=0.1).make(D)
  x = jnp.asarray(toy[0].x[:1024])
  grads = nnx.grad(lambda m: m.loss(x)[0])(model)
  g = np.asarray(grads["log_threshold"][...])
  assert np.count_nonzero(g) > 32 and np.all(np.isfinite(g))
  no_penalty = sae.Architecture(kind="jumprelu", width=64, l0_coefficient=0.0, bandwidth=0.05,
                                init_threshold=0.1).make(D)
  g0 = np.asarray(nnx.grad(lambda m: m.loss(x)[0])(no_penalty)["log_threshold"][...])
  # raising a threshold lowers L0: the penalty's gradient is negative, so descent raises them
  assert np.mean(g) < np.mean(g0) - 0.005


def test_auxk_reaches_dead_latents(toy):
  """Dead latents get encoder gradient from AuxK only. Sixteen latents are made dead as in
  practice: weak pre-activations, positive but never in the top k; with ``dead_steps=1`` a
  latent that fires for no row of the batch is dead."""
  x = jnp.asarray(toy[0].x[:512])
  def grads(aux):
    model = sae.Architecture(kind="topk", width=64, k=2, k_aux=16, aux_coefficient=aux,
                             dead_steps=1).make(D, seed=1)
    model.W_enc[...] = model.W_enc[...].at[:, :16].multiply(1e-3)
    z = np.asarray(model.encode(x))
    g = np.asarray(nnx.grad(lambda m: m.loss(x)[0])(model)["W_enc"][...])
    return ~(z > 0).any(0), g
  dead, g_aux = grads(1 / 32)
  _, g_none = grads(0.0)
  assert dead[:16].all(), dead.sum()
  assert np.all(g_none[:, dead] == 0)
  assert np.all(np.abs(g_aux[:, dead]).sum(0) > 0)
  assert sae.Architecture(kind="topk", width=64, k=2).make(D).k_aux == 32  # min(256, m / 2)


# --- metrics --------------------------------------------------------------------------------


def test_explained_variance_and_ce_loss_score():
  x = np.random.default_rng(0).standard_normal((100, 8))
  assert sae.explained_variance(x, x) == 1.0
  assert sae.explained_variance(x, np.broadcast_to(x.mean(0), x.shape)) == pytest.approx(0.0)
  assert sae.explained_variance(x, 0.5 * x + 0.5 * x.mean(0)) == pytest.approx(0.75)
  assert sae.ce_loss_score(2.0, 2.0, 6.0) == 1.0
  assert sae.ce_loss_score(2.0, 6.0, 6.0) == 0.0
  assert sae.ce_loss_score(2.0, 3.0, 6.0) == pytest.approx(0.75)
  np.testing.assert_allclose(sae.ce_loss_score([1.0, 2.0], [1.5, 2.0], [3.0, 4.0]), [0.75, 1.0])
  for clean, zero in ((3.0, 3.0), (4.0, 3.0), (2.0, np.nan)):
    with pytest.raises(ValueError, match="ce_zero - ce_clean"):
      sae.ce_loss_score(clean, 2.5, zero)


def test_mean_max_cosine():
  dirs = sp.feature_directions(64, 32, seed=0)
  np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, rtol=1e-6)
  shuffled = 3.0 * dirs[np.random.default_rng(0).permutation(64)]
  assert sp.mean_max_cosine(np.concatenate([shuffled, -dirs]), dirs) == pytest.approx(1.0)
  assert sp.mean_max_cosine(-dirs, dirs) < 0.7
  assert sp.mean_max_cosine(sp.feature_directions(64, 32, seed=1), dirs) < 0.7
  data = sp.toy_superposition(2000, 64, 32, 0.05, seed=0)
  np.testing.assert_allclose(data.x, data.features @ data.directions, rtol=1e-5, atol=1e-6)
  assert 0.04 < (data.features > 0).mean() < 0.06 and data.features.max() <= 1.0


def test_bad_settings_are_one_line_config_errors():
  with pytest.raises(ConfigError, match="sae.kind='gated': valid: relu, topk, jumprelu"):
    sae.Architecture(kind="gated", width=8)
  with pytest.raises(ConfigError, match=r"sae.k=9: must be in \[1, sae.width=8\]"):
    sae.Architecture(kind="topk", width=8, k=9)
  with pytest.raises(ConfigError, match="sae.width=0"):
    sae.Architecture(kind="relu")
  with pytest.raises(ConfigError, match="sae.dead_steps=0"):
    sae.Architecture(kind="relu", width=8, dead_steps=0)
  with pytest.raises(ConfigError, match="sae.widht: unknown"):
    sae.Architecture.from_block({"kind": "relu", "widht": 8})
  with pytest.raises(ConfigError, match="exactly one of acts"):
    sae.train_sae(_spec(1), sae.Architecture(kind="relu", width=8), workdir="/nonexistent")


# --- the activation store -------------------------------------------------------------------


def test_store_round_trip_and_deterministic_batches(tmp_path):
  rows = np.random.default_rng(0).standard_normal((1000, 6)).astype(np.float32)
  with activations.ActivationWriter(str(tmp_path / "s"), "blocks.0.resid_post", 300) as w:
    for chunk in np.array_split(rows, 7):
      w.add(chunk)
  store = activations.ActivationStore(str(tmp_path / "s"))
  index = json.loads((tmp_path / "s" / activations.INDEX).read_text())
  assert index["site"] == "blocks.0.resid_post" and index["dtype"] == "float32"
  assert [s["rows"] for s in index["shards"]] == [300, 300, 300, 100]
  assert index["row_shape"] == [6] and len(store) == 1000
  np.testing.assert_array_equal(store.array(), rows)
  assert not [f for f in os.listdir(tmp_path / "s") if f.endswith(".tmp")]
  np.testing.assert_array_equal(store.rows(np.array([999, 0, 301, 0])), rows[[999, 0, 301, 0]])
  a, b = store.batch(3, 64, seed=1), store.batch(3, 64, seed=1)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, store.batch(4, 64, seed=1))
  assert not np.array_equal(a, store.batch(3, 64, seed=2))
  epoch = np.concatenate([store.batch(s, 100, seed=1) for s in range(10)])  # one permutation
  np.testing.assert_array_equal(np.sort(epoch, axis=0), np.sort(rows, axis=0))


def test_store_refuses_mixed_rows_and_unfinished_writes(tmp_path):
  w = activations.ActivationWriter(str(tmp_path / "s"), "x", 10)
  w.add(np.zeros((25, 4), np.float32))
  with pytest.raises(ConfigError, match="rows of shape"):
    w.add(np.zeros((5, 3), np.float32))
  with pytest.raises(DamagedFileError, match="index.json: no such file.*did not finish"):
    activations.ActivationStore(str(tmp_path / "s"))   # shards written, no index yet
  w.close()
  with pytest.raises(ConfigError, match="already holds"):
    activations.ActivationWriter(str(tmp_path / "s"), "x")


# --- the SAELens layout ---------------------------------------------------------------------


def _random_params(model, seed):
  rng = np.random.default_rng(seed)
  for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
    var = getattr(model, name)
    var[...] = jnp.asarray(0.3 * rng.standard_normal(var[...].shape), jnp.float32)
  sae.normalize_decoder(model)   # as training keeps them
  if isinstance(model, sae.JumpReluSAE):
    model.log_threshold[...] = jnp.asarray(np.log(rng.uniform(0.01, 0.2, model.width)),
                                           jnp.float32)
  return model


@pytest.mark.parametrize("kind", list(KINDS))
def test_saelens_export_round_trip(kind, tmp_path):
  from safetensors.numpy import load_file
  model = _random_params(sae.Architecture(kind=kind, width=40, k=5).make(16), 1)
  saelens.export_saelens(model, str(tmp_path), hook_name="blocks.1.resid_post", model_name="tiny")
  cfg = json.loads((tmp_path / saelens.CFG).read_text())
  assert cfg["architecture"] == sae.ARCHITECTURES[kind]
  assert (cfg["d_in"], cfg["d_sae"]) == (16, 40)
  assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"   # TransformerLens spelling
  assert cfg.get("k") == (5 if kind == "topk" else None)
  tensors = load_file(str(tmp_path / saelens.WEIGHTS))
  assert {n: t.shape for n, t in tensors.items()} == {
      "W_enc": (16, 40), "b_enc": (40,), "W_dec": (40, 16), "b_dec": (16,),
      **({"threshold": (40,)} if kind == "jumprelu" else {})}
  np.testing.assert_allclose(np.linalg.norm(tensors["W_dec"], axis=1), 1.0, rtol=1e-5)
  loaded, _ = saelens.load_saelens(str(tmp_path))
  assert type(loaded) is type(model)
  x = jnp.asarray(np.random.default_rng(2).standard_normal((64, 16)), jnp.float32)
  np.testing.assert_allclose(loaded.encode(x), model.encode(x), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-6)
  # SAELens' own forward pass on the file's tensors gives the same reconstruction
  pre = (np.asarray(x) - tensors["b_dec"]) @ tensors["W_enc"] + tensors["b_enc"]
  if kind == "topk":
    z = np.where(pre >= np.sort(pre, 1)[:, -5:-4], np.maximum(pre, 0), 0)
  elif kind == "jumprelu":
    z = np.where(pre > tensors["threshold"], pre, 0)
  else:
    z = np.maximum(pre, 0)
  np.testing.assert_allclose(model(x), z @ tensors["W_dec"] + tensors["b_dec"], rtol=1e-4,
                             atol=1e-5)


def test_saelens_loader_folds_decoder_norms_and_b_dec(tmp_path):
  """A foreign ReLU SAE with free decoder norms and no input bias is read as the same function."""
  from safetensors.numpy import save_file
  rng = np.random.default_rng(0)
  t = {"W_enc": rng.standard_normal((8, 20)), "b_enc": rng.standard_normal(20),
       "W_dec": rng.standard_normal((20, 8)) * rng.uniform(0.2, 3.0, (20, 1)),
       "b_dec": rng.standard_normal(8)}
  t = {k: v.astype(np.float32) for k, v in t.items()}
  save_file(t, str(tmp_path / saelens.WEIGHTS))
  (tmp_path / saelens.CFG).write_text(json.dumps(
      {"architecture": "standard", "d_in": 8, "d_sae": 20, "apply_b_dec_to_input": False,
       "hook_name": "blocks.0.hook_resid_pre"}))
  loaded, cfg = saelens.load_saelens(str(tmp_path))
  x = rng.standard_normal((32, 8)).astype(np.float32)
  expected = np.maximum(x @ t["W_enc"] + t["b_enc"], 0) @ t["W_dec"] + t["b_dec"]
  np.testing.assert_allclose(loaded(jnp.asarray(x)), expected, rtol=1e-4, atol=1e-4)
  assert cfg["hook_name"] == "blocks.0.hook_resid_pre"
