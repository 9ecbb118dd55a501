"""Sandwiching metrics and assistant policies."""

import json

import numpy as np
import pytest

from conftest import smoke_config
from superalign.launch import runners
from superalign.sandwich import assistants, metrics


def test_sandwich_score_and_harm():
  alone = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])       # 20%
  expert = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 0])      # 90%
  assisted = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])    # 50%
  assert metrics.sandwich_score(assisted, alone, expert) == pytest.approx(0.3 / 0.7)
  assert metrics.sandwich_score(expert, alone, expert) == pytest.approx(1.0)
  assert metrics.sandwich_score(alone, alone, expert) == pytest.approx(0.0)
  assert np.isnan(metrics.sandwich_score(assisted, expert, alone))   # no gap to close
  assert metrics.harm(alone * 0, alone) == pytest.approx(0.2)
  ci = metrics.sandwich_score_ci(np.tile(assisted, 20), np.tile(alone, 20), np.tile(expert, 20))
  assert ci["lo"] <= ci["mean"] <= ci["hi"] and ci["hi"] - ci["lo"] < 0.5


def test_expected_calibration_error():
  labels = np.array([0, 0, 0, 0, 1])
  perfect = np.array([[0.8, 0.2]] * 5)                   # 80% confident, 80% right
  assert metrics.expected_calibration_error(perfect, labels) == pytest.approx(0.0)
  overconfident = np.array([[1.0, 0.0]] * 5)
  assert metrics.expected_calibration_error(overconfident, labels) == pytest.approx(0.2)


def test_assistant_policies():
  rng = np.random.default_rng(0)
  belief = np.array([0, 1, 2, 0, 1, 2, 0, 1])
  nonexpert = np.full((8, 3), 0.1)
  nonexpert[np.arange(8), (belief + 1) % 3] = 0.8        # each item's likeliest wrong answer
  nonexpert[0, 1], nonexpert[0, 2] = 0.05, 0.95          # item 0: the most persuasive lie
  claim, lied = assistants.Assistant("honest").claims(belief, nonexpert, rng)
  assert not lied.any() and (claim == belief).all()
  claim, lied = assistants.Assistant("lie", p=1.0).claims(belief, nonexpert, rng)
  assert lied.all() and (claim != belief).all()
  np.testing.assert_array_equal(claim[1:], ((belief + 1) % 3)[1:])
  claim, lied = assistants.Assistant("target", target=2).claims(belief, nonexpert, rng)
  np.testing.assert_array_equal(lied, belief == 2)
  claim, lied = assistants.Assistant("persuasive", p=0.125).claims(belief, nonexpert, rng)
  assert lied.sum() == 1 and lied[0] and claim[0] == 2
  rates = [assistants.Assistant("lie", p=0.3).lies(np.zeros(4000, int), np.full((4000, 3), 1 / 3),
                                                  rng).mean()]
  assert abs(rates[0] - 0.3) < 0.03
  with pytest.raises(ValueError, match="valid: honest, lie, target, persuasive"):
    assistants.Assistant("sulk").lies(belief, nonexpert, rng)


def test_protocol_outcomes_follow_the_claims():
  from superalign.sandwich import protocols
  y = np.array([0, 1, 2])
  consult = {"honest": np.array([True, True, False]), "lying": np.array([False, True, False])}
  claim = np.array([0, 2, 1])                 # true, a lie, a lie
  np.testing.assert_array_equal(protocols.consultancy_correct(consult, claim, y),
                                [True, True, False])
  debate = {"lies": np.array([[1, 2], [0, 2], [0, 1]]),
            "wins": np.array([[True, False], [True, True], [False, True]]),
            "sandbag": np.array([[False, False], [False, True], [False, False]])}
  lie = np.array([2, 2, 1])
  np.testing.assert_array_equal(
      protocols.debate_correct(debate, lie, misaligned=np.array([False, True, False])),
      [False, True, True])
  features = protocols.advice_features(np.full((3, 3), 1 / 3), claim, np.array([0.9, 0.5, 1.0]))
  assert features.shape == (3, 7) and features[1, 3 + 2] == np.float32(0.5)


@pytest.mark.e2e
@pytest.mark.xdist_group("smoke-sandwich")   # beside its shared smoke run
def test_smoke_end_to_end(smoke, tmp_path):
  import shutil
  results, shared = smoke("sandwich")   # the session's shared smoke run (conftest)
  assert set(results["honest"]) == {"lie_rate", "advice", "consultancy", "debate",
                                    "debate_collusion"}
  assert results["honest"]["lie_rate"] == 0
  assert set(results["misaligned"]) == {"lie_p0", "lie_p1", "target_class0", "persuasive_0.25",
                                        "trained_liar_class0"}
  liar = results["trained_liar"]
  assert (liar["lie_class"], liar["lie_to"]) == (0, 1)
  assert 0 <= liar["lie_rate"]["lo"] <= liar["lie_rate"]["hi"] <= 1
  assert results["misaligned"]["lie_p1"]["lie_rate"] == 1
  for row in results["misaligned"].values():
    for name in ("advice", "consultancy", "debate", "debate_collusion"):
      ci = row[name]["accuracy"]
      assert 0 <= ci["lo"] <= ci["mean"] <= ci["hi"] <= 1 and ci["n"] == 16
  assert results["conditions"]["expert"]["accuracy"]["mean"] == 1
  # A lying consultant never helps more than an honest one on the same images.
  assert (results["misaligned"]["lie_p1"]["consultancy"]["accuracy"]["mean"]
          <= results["honest"]["consultancy"]["accuracy"]["mean"])
  assert (shared / "plots" / "sandwich_accuracy_by_lying.png").exists()
  assert "MMLU" in results["summary"]
  shutil.copytree(shared, tmp_path / "again")   # a rerun resumes every stage: same numbers
  again = json.loads(json.dumps(runners.execute(smoke_config("sandwich"), str(tmp_path / "again"))))
  assert again["misaligned"] == results["misaligned"]
  # An honest opponent is never worse for the truth than a sandbagging copy.
  lying = results["misaligned"]["lie_p1"]
  assert lying["debate"]["accuracy"]["mean"] >= lying["debate_collusion"]["accuracy"]["mean"]


@pytest.mark.parametrize("key, value, message", [
    ("protocols", ("advice", "vote"),
     "sandwich.protocols=('advice', 'vote'): valid: one or more of advice, consultancy, debate"),
    ("protocols", (), "sandwich.protocols=(): valid: one or more of"),
    ("player", "oracle", "sandwich.player='oracle': valid: random, greedy, mcts"),
    ("sweep", (0.0, 1.5), "sandwich.sweep=(0.0, 1.5): one or more values, each must be in [0, 1]"),
    ("persuasive_fraction", -0.5, "sandwich.persuasive_fraction=-0.5: must be in [0, 1]"),
    ("k", 0, "sandwich.k=0: must be positive"),
    ("assistant_model", "resnet", "sandwich.assistant_model='resnet': unknown model"),
])
def test_bad_sandwich_config_is_one_clear_error(key, value, message):
  from experiments.sandwich import digits
  from superalign.core.errors import ConfigError

  config = digits.get_config("smoke")
  config.sandwich[key] = value
  with pytest.raises(ConfigError) as e:
    runners.validate(config, num_devices=1)
  assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow  # ~1-2 min: a cnn_base judge and 784-pixel games on 28x28 images
@pytest.mark.e2e
def test_fashion_mnist_smoke_on_local_idx(tmp_path):
  from conftest import write_idx
  from experiments.sandwich import fashion_mnist

  data = write_idx(str(tmp_path / "idx"), n_train=300, n_test=40)
  config = fashion_mnist.get_config(f"smoke,dir={data}")
  config.mesh.num_devices = 1
  runners.validate(config)
  results = runners.execute(config, str(tmp_path / "run"))
  assert results["k"] == 6 and results["num_images"] == 8
  assert results["honest"]["debate"]["accuracy"]["n"] == 8
