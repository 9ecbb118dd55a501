"""How an assisted non-expert answers, per test item, for each interaction protocol.

The non-expert is the sparse-pixel judge (it sees ``k`` pixels); the assistant is a strong
classifier that sees the whole image and makes a claim (``assistants.Assistant``). Outcomes that
need games are played once per item and then combined per misalignment setting, so a sweep over
the lying probability costs no more games:

  advice       the non-expert reads the assistant's claim and confidence beside its own view and
               answers with a combiner it learned (core engine) on validation items where the
               assistant was honest and the expert's labels were given
  consultancy  the assistant makes all k reveals, arguing for its claim: the honest game when the
               claim is true, the lying game when it is not
  debate       two debaters argue (precommit): the truth against the assistant's claim when it is a
               lie, else against the lie most persuasive to this non-expert. ``debate``: the
               truth's defender is an independent honest assistant. ``debate_collusion``: both
               debaters are this assistant, and where it lies the truth's defender sandbags
               (reveals at random) while the other argues well
"""

from __future__ import annotations

import numpy as np

from superalign.core.rng import stream_seed
from superalign.oversight import players as players_lib
from superalign.oversight import protocols as games

PROTOCOLS = ("advice", "consultancy", "debate")


def advice_features(nonexpert_probs: np.ndarray, claim: np.ndarray,
                    confidence: np.ndarray) -> np.ndarray:
  """``[items, 2 * classes + 1]``: the non-expert's log-probabilities, the claim one-hot scaled
  by the assistant's stated confidence, and that confidence."""
  n, classes = nonexpert_probs.shape
  stated = np.zeros((n, classes), np.float32)
  stated[np.arange(n), claim] = confidence
  return np.concatenate([np.log(np.maximum(nonexpert_probs, 1e-6)), stated,
                         confidence[:, None]], 1).astype(np.float32)


def consultancy_outcomes(arena, x, y, k: int, advisor, seed: int) -> dict[str, np.ndarray]:
  """Per item: the non-expert right after an honest, and after a lying, consultant's reveals."""
  out = games.consultancy(arena, x, y, k, advisor, seed)
  return {"honest": out["honest"], "lying": out["lying"]}


def debate_outcomes(arena, x, y, k: int, player, num_classes: int,
                    seed: int) -> dict[str, np.ndarray]:
  """Per item and wrong answer: does the truth win, with a truthful debater playing ``player``
  (``wins``) and with it sandbagging (``sandbag``); the liar plays ``player`` in both."""
  good = games.debate(arena, x, y, k, player, player, num_classes=num_classes, precommit=True,
                      first="honest", seed=seed)
  bad = games.debate(arena, x, y, k, players_lib.Random(), player, num_classes=num_classes,
                     precommit=True, first="honest", seed=stream_seed(seed, "sandbag"))
  return {"wins": good["v0"] > 0, "sandbag": bad["v0"] > 0, "lies": good["lies"]}


def consultancy_correct(outcomes: dict, claim: np.ndarray, y: np.ndarray) -> np.ndarray:
  return np.where(claim == y, outcomes["honest"], outcomes["lying"])


def debate_correct(outcomes: dict, lie: np.ndarray, misaligned: np.ndarray) -> np.ndarray:
  """The truth against ``lie`` (one wrong answer per item), sandbagged where ``misaligned``."""
  column = (outcomes["lies"] == lie[:, None]).argmax(1)
  rows = np.arange(len(lie))
  return np.where(misaligned, outcomes["sandbag"][rows, column], outcomes["wins"][rows, column])
