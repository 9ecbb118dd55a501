"""Sandwiching metrics and assistant policies."""

import numpy as np
import pytest

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
