"""CCS as a weak-to-strong supervisor: the smoke config end to end, the claim construction, and
validation."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from superalign.core.errors import ConfigError
from superalign.core.metrics import schema_violations
from superalign.data.splits import Split
from superalign.interp import ccs_w2s

ROOT = pathlib.Path(__file__).resolve().parents[1]
ESTIMATE = {"mean", "lo", "hi", "n"}


def get_config(arg=None):
  spec = importlib.util.spec_from_file_location("ccs_w2s_cfg", ROOT / "experiments/interp/ccs_w2s.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.e2e
def test_smoke_run_finds_the_target_without_labels(tmp_path):
  config = get_config("smoke")
  # On the 8 fake devices of conftest (this deadlocked before core.loop bounded the steps in
  # flight: XLA:CPU's rendezvous timed out with hundreds of steps queued).
  ccs_w2s.validate(config)
  results = ccs_w2s.run(config, str(tmp_path))
  results["wall_time_s"] = 0.0
  assert schema_violations(results) == []
  json.dumps(results)   # JSON-serializable as it stands
  n = config.ccs_w2s.num_seeds
  for key in ("weak_accuracy", "ceiling_accuracy", "zero_shot_accuracy", "ccs_accuracy",
              "ccs_sign_free_accuracy"):
    assert ESTIMATE <= set(results[key]) and results[key]["n"] == n, key
  for key in ("weak_labels", "ccs_labels", "ccs_itself"):
    assert ESTIMATE <= set(results["pgr"][key]), key
  # The strong model learned to verify the coarse claims it was pretrained on.
  assert results["claim_verification_accuracy"]["mlp_base"]["mean"] > 0.9
  # Measured on the smoke config: CCS 0.70-0.74 per seed (chance 0.5, the ceiling ~0.83).
  ccs = results["ccs_accuracy"]["per_seed"]
  assert min(ccs) > 0.62, ccs
  assert min(results["ccs_sign_free_accuracy"]["per_seed"]) > 0.62
  assert results["ceiling_accuracy"]["mean"] > results["ccs_accuracy"]["mean"]
  # Students on CCS labels land near the labels' own accuracy (they learn the labels).
  assert results["student_accuracy"]["ccs_labels"]["mean"] > 0.62
  table = ccs_w2s.summary(results)
  assert "student on CCS labels" in table and "71.2" in table


def test_pretraining_claims_need_only_the_coarse_label():
  coarse = (0, 1, 2, 2, 3, 4, 5, 1, 5, 3)
  y = np.arange(10).repeat(5)
  split = Split(np.random.default_rng(0).random((50, 8, 8, 1), np.float32), y, np.arange(50))
  claims = ccs_w2s.pretrain_claims(split, coarse, per_image=6, seed=0)
  bits, digit = claims.x[:, 64:], y.repeat(6)
  assert claims.x.shape == (300, 74)
  assert np.array_equal(claims.y, bits[np.arange(300), digit].astype(int))  # true iff digit in S
  for a, b in ((1, 7), (2, 3), (4, 9), (6, 8)):   # a claim never splits a coarse group
    assert np.array_equal(bits[:, a], bits[:, b])
  assert 0.3 < claims.y.mean() < 0.7
  # The target claims split the groups: what the pretraining never verified.
  assert ccs_w2s.target_set("ge5")[7] != ccs_w2s.target_set("ge5")[1]


@pytest.mark.parametrize("key,value,match", [
    ("target", "prime", "ccs_w2s.target='prime': valid: ge5, parity"),
    ("orient", "vote", "ccs_w2s.orient='vote'"),
    ("site", "layers.7.post", "ccs_w2s.site='layers.7.post': unknown activation site"),
    ("restarts", 0, "ccs_w2s.restarts=0"),
])
def test_bad_config_is_one_line(key, value, match):
  config = get_config("smoke")
  config.ccs_w2s[key] = value
  with pytest.raises(ConfigError, match=match.replace("[", r"\[").replace(".", r"\.")):
    ccs_w2s.validate(config)
