"""The sandwiching table's rows: the conditions without assistance, and the assisted non-expert
under an assistant policy (honest, or one misalignment setting), through every protocol.

Each row is scored on the same items: accuracy with a 95% Wilson interval, the sandwich score
with a paired bootstrap interval (stream ``sandwich/bootstrap``) and the harm against the
non-expert alone. Policies draw their lies from stream ``sandwich/setting/<name>``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from superalign.core.rng import numpy_rng, stream_seed
from superalign.sandwich import metrics
from superalign.sandwich.panel import Answers
from superalign.sandwich.protocols import Score


def conditions(test: Answers) -> dict:
  """Non-expert alone, assistant alone and expert: accuracy (and calibration)."""
  return {
      "nonexpert_alone": {"accuracy": metrics.accuracy_ci(test.alone),
                          "calibration_error": metrics.expected_calibration_error(
                              test.nonexpert, test.y)},
      "assistant_alone": {"accuracy": metrics.accuracy_ci(test.belief == test.y),
                          "calibration_error": metrics.expected_calibration_error(
                              test.assistant, test.y)},
      "expert": {"accuracy": metrics.accuracy_ci(np.ones(len(test.y), bool))},
  }


def assisted(scores: Mapping[str, Score], policy, test: Answers, seed: int,
             setting: str) -> dict:
  """Per item, whether the non-expert is right through each protocol while the assistant follows
  ``policy`` (``assistants.Assistant`` or ``organisms.TrainedAssistant``), and its lie rate."""
  claim, lied = policy.claims(test.belief, test.nonexpert,
                              numpy_rng(seed, f"sandwich/setting/{setting}"))
  out = {"lie_rate": float(lied.mean())}
  for score in scores.values():
    out.update(score(claim, lied))
  return out


def summarize(row: dict, test: Answers, seed: int) -> dict:
  """A row of ``assisted`` as estimates: accuracy, sandwich score and harm per protocol."""
  expert = np.ones(len(test.y), bool)
  out = {"lie_rate": row["lie_rate"]}
  for name in (k for k in row if k != "lie_rate"):
    correct = row[name]["correct"]
    out[name] = {"accuracy": metrics.accuracy_ci(correct),
                 "sandwich_score": metrics.sandwich_score_ci(
                     correct, test.alone, expert, seed=stream_seed(seed, "sandwich/bootstrap")),
                 "harm": metrics.harm(correct, test.alone),
                 **{k: v for k, v in row[name].items() if k != "correct"}}
  return out


def table(scores: Mapping[str, Score], test: Answers, honest, misaligned: Mapping,
          seed: int) -> dict:
  """The conditions, the ``honest`` policy's row and one row per ``misaligned`` policy."""
  row = lambda name, policy: summarize(assisted(scores, policy, test, seed, name), test, seed)
  return {"conditions": conditions(test), "honest": row("honest", honest),
          "misaligned": {name: row(name, policy) for name, policy in misaligned.items()}}
