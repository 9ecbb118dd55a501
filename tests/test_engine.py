"""The core engine end to end: sharding parity, bitwise resume, SIGTERM, NaN check, early stop."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from superalign import data as data_lib
from superalign.core import loop
from superalign.core import mesh as mesh_lib
from superalign.parties import classifier as train_lib

from conftest import _config, _params, _train, spec_and_model


@pytest.mark.e2e
@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
@pytest.mark.parametrize("model,data,axes", [
    ("mlp_base", "digits", {"data": 8}),
    ("mlp_base", "digits", {"data": 4, "fsdp": 2}),
    ("mlp_base", "digits", {"data": 4, "model": 2}),
    ("gpt_tiny", "synthetic:majority", {"data": 2, "fsdp": 2, "model": 2}),
])
def test_sharded_losses_match_one_device(tmp_path, model, data, axes):
  config = _config(model=model, data=data, steps=12)
  one, losses_1, _ = _train(config, tmp_path / "one", {"data": 1})
  many, losses_n, splits = _train(config, tmp_path / "many", axes)
  assert len(losses_1) == 12
  np.testing.assert_allclose(losses_n, losses_1, rtol=2e-4, atol=1e-5)
  # The state really is laid out on the mesh: every device holds a piece of the parameters.
  leaves = jax.tree.leaves(many.state.params)
  assert all(len(x.sharding.device_set) == int(np.prod(list(axes.values()))) for x in leaves)
  if "fsdp" in axes or "model" in axes:
    assert any(not x.sharding.is_fully_replicated for x in leaves)
  np.testing.assert_allclose(many.predict(splits["test"].x), one.predict(splits["test"].x),
                             rtol=1e-3, atol=1e-4)


@pytest.mark.e2e
def test_resume_after_sigterm_is_bitwise_identical(tmp_path):
  config = _config(steps=24)
  full, full_losses, _ = _train(config, tmp_path / "full", {"data": 1})

  def batch_hook(step):
    if step == 12:  # a preemption notice arrives mid-run, after the step-8 checkpoint
      os.kill(os.getpid(), signal.SIGTERM)

  workdir = tmp_path / "interrupted"
  with pytest.raises(loop.Preempted) as stopped:
    _train(config, workdir, {"data": 1}, on_batch=batch_hook)
  assert stopped.value.step == 13
  assert (workdir / "checkpoints" / "t" / "13").is_dir()
  resumed, resumed_losses, _ = _train(config, workdir, {"data": 1})
  assert resumed.fit.resumed_from == 13
  for a, b in zip(_params(full), _params(resumed)):
    np.testing.assert_array_equal(a, b)
  # metrics.jsonl holds each step once, as in the uninterrupted run.
  np.testing.assert_array_equal(resumed_losses, full_losses)


@pytest.mark.e2e
def test_checkpoints_keep_last_k(tmp_path):
  config = _config(steps=40, checkpoint_every=8, keep_checkpoints=2)
  _train(config, tmp_path, {"data": 1})
  kept = sorted(int(p.name) for p in (tmp_path / "checkpoints" / "t").iterdir() if p.name.isdigit())
  assert kept == [32, 40]


@pytest.mark.e2e
def test_rerun_of_finished_run_restores_without_training(tmp_path):
  config = _config(steps=16)
  first, _, _ = _train(config, tmp_path, {"data": 1})
  calls = []
  again, _, _ = _train(config, tmp_path, {"data": 1}, on_batch=calls.append)
  assert calls == []
  assert again.fit.resumed_from == 16
  for a, b in zip(_params(first), _params(again)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.e2e
def test_nonfinite_loss_stops_naming_step_and_metric(tmp_path):
  config = _config(steps=10)

  def nan_after_3(model, batch, rng, step):
    import jax.numpy as jnp
    loss = model(batch["x"]).mean() ** 2
    return jnp.where(step >= 3, jnp.nan, loss), {}

  with pytest.raises(loop.NonFiniteError, match=r"'loss' is nan at step 4"):
    _train(config, tmp_path, {"data": 1}, loss_fn=nan_after_3)


@pytest.mark.e2e
def test_early_stopping_restores_best_parameters(tmp_path):
  config = _config(steps=60, eval_every=5, early_stop_metric="accuracy", patience=2)
  source = data_lib.load(config.data)
  splits = data_lib.make_splits(source, dict(config.data.splits), 0, 400)
  # A validation split with shuffled labels: accuracy wanders, so stopping must kick in early.
  rng = np.random.default_rng(0)
  val = splits["val"]
  noisy = data_lib.Split(val.x, rng.permutation(val.y), val.ids)
  mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
  trained = train_lib.train_classifier(*spec_and_model(config), splits["train"], source.spec,
                                       str(tmp_path), tag="t", val=noisy, mesh=mesh)
  fit = trained.fit
  assert fit.stopped_early
  assert fit.history[-1]["step"] < 60
  best = max(fit.history, key=lambda r: r["accuracy"])
  assert fit.best["step"] == best["step"] and fit.best["value"] == best["accuracy"]
  # The returned parameters are the best evaluation's, not the last step's.
  from superalign.results.estimates import accuracy
  assert accuracy(trained.predict(noisy.x), noisy.y) == pytest.approx(best["accuracy"])


@pytest.mark.e2e
def test_metrics_jsonl_and_tensorboard_written(tmp_path):
  _train(_config(steps=8), tmp_path, {"data": 1})
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows] == list(range(1, 9))
  assert all(r["run"] == "t" and np.isfinite(r["train/loss"]) for r in rows)
  events = list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
  assert events and events[0].stat().st_size > 0


def test_parameter_average_rides_in_the_optimizer_state():
  import dataclasses
  import optax
  from superalign.core import optim
  from superalign.core.spec import Optim

  cfg = Optim(name="sgd", learning_rate=0.5, momentum=0.0, schedule="constant", clip_norm=0.0,
              ema_decay=0.75)
  tx = optim.make(cfg, num_steps=3)
  params = {"w": np.array([4.0, -2.0])}
  opt_state, ema = tx.init(params), params["w"].copy()
  for grad in ([1.0, 0.0], [2.0, 2.0], [0.0, -4.0]):
    updates, opt_state = tx.update({"w": np.array(grad)}, opt_state, params)
    params = optax.apply_updates(params, updates)
    ema = 0.75 * ema + 0.25 * params["w"]
    np.testing.assert_allclose(optim.ema_params(opt_state)["w"], ema, rtol=1e-6)
  np.testing.assert_allclose(params["w"], [2.5, -1.0])   # the updates themselves are untouched
  with pytest.raises(ValueError, match="optim.ema_decay"):
    optim.ema_params(optim.make(dataclasses.replace(cfg, ema_decay=0.0), num_steps=3).init(params))


@pytest.mark.e2e
def test_per_run_targets_and_constants_reach_each_stacked_run(tmp_path):
  """Stacked run r trains on ``per_run[...][r]`` and ``run_consts[...][r]``: it ends where a
  single run of the same seed ends when given those targets and that constant."""
  import optax
  from superalign.parties.classifier import examples, trainer
  config = _config(model="mlp_tiny", steps=10)
  source, splits = data_lib.load_splits(config.data)
  train, test = splits["train"], splits["test"]
  targets = np.random.default_rng(0).dirichlet(np.ones(10), (2, len(train))).astype(np.float32)
  scales = np.array([1.0, 3.0], np.float32)

  def loss(model, batch, rng, step):
    per_example = optax.softmax_cross_entropy(model(batch["x"]), batch["weak"])
    return (per_example * batch["scale"]).mean(), {}

  mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
  job = lambda tag, seeds: trainer(*spec_and_model(config), source.spec, str(tmp_path / tag),
                                   tag=tag, seeds=seeds, loss_fn=loss, mesh=mesh)
  stacked = job("stacked", [3, 4]).fit(examples(train), per_run={"weak": targets},
                                       run_consts={"scale": scales})
  probs = stacked.predict(test.x)
  for r, seed in enumerate([3, 4]):
    one = job(f"one{r}", seed).fit({**examples(train), "weak": targets[r],
                                    "scale": np.full(len(train), scales[r])})
    np.testing.assert_allclose(probs[r], one.predict(test.x), rtol=1e-4, atol=1e-5)
  assert not np.allclose(probs[0], probs[1], atol=1e-3)
