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

Each protocol is registered by the name the config's ``sandwich.protocols`` uses: built once from
a ``Context`` (training or playing what it needs), it returns how it scores an assistant's claims.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from superalign.results.files import cached
from superalign.config.registry import Registry
from superalign.core.rng import stream_seed
from superalign.core.spec import TrainSpec
from superalign.core.specs import InputSpec
from superalign.data.splits import Split
from superalign.oversight import players as players_lib
from superalign.oversight import protocols as games
from superalign.parties.classifier import Model, train_classifier
from superalign.sandwich import metrics
from superalign.sandwich.assistants import best_lie
from superalign.sandwich.panel import Panel

# A protocol is built once from the ``Context`` (it trains or plays what it needs) and returns
# how it scores a claim: ``score(claim, lied) -> {row name: {"correct": [items] bool, ...}}``.
Score = Callable[[np.ndarray, np.ndarray], dict]
PROTOCOLS: Registry[Callable[["Context"], Score]] = Registry("sandwiching protocol")


@dataclasses.dataclass(frozen=True)
class Context:
  """What the protocols draw on: the trained panel, the scored items, the arena games are played
  in (``player`` plays the consultant and the debaters), how the advice combiner trains."""
  panel: Panel
  x: np.ndarray               # the scored items (the panel's ``test``)
  val: Split                  # the expert-labelled items the advice combiner learns on
  k: int
  num_classes: int
  arena: games.Arena
  player_name: str
  player: Callable            # a debate player (``oversight.players``)
  advice_spec: TrainSpec
  advice_model: Model
  seed: int
  workdir: str

  def stream(self, name: str) -> int:
    """The seed of the stream ``sandwich/<name>`` of the run's seed."""
    return stream_seed(self.seed, f"sandwich/{name}")


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
  """``[items]`` bool: the non-expert is right after consultancy for the claims ``claim``
  ``[items]``: the honest game's outcome where the claim is the truth ``y``, the lying game's
  elsewhere (``outcomes`` from ``consultancy_outcomes``)."""
  return np.where(claim == y, outcomes["honest"], outcomes["lying"])


def debate_correct(outcomes: dict, lie: np.ndarray, misaligned: np.ndarray) -> np.ndarray:
  """The truth against ``lie`` (one wrong answer per item), sandbagged where ``misaligned``."""
  column = (outcomes["lies"] == lie[:, None]).argmax(1)
  rows = np.arange(len(lie))
  return np.where(misaligned, outcomes["sandbag"][rows, column], outcomes["wins"][rows, column])


@PROTOCOLS.register("advice")
def advice(ctx: Context) -> Score:
  """A combiner (``advice_model``) learns to weigh an honest assistant's claim on the validation
  items; the non-expert then answers through it."""
  val, test = ctx.panel.val, ctx.panel.test
  features = advice_features(val.nonexpert, val.belief, val.confidence)
  inputs = InputSpec((features.shape[1],), "vector", ctx.num_classes)
  combiner = train_classifier(ctx.advice_spec, ctx.advice_model,
                              Split(features, ctx.val.y, ctx.val.ids), inputs, ctx.workdir,
                              tag="advice")

  def score(claim, lied):
    probs = combiner.predict(advice_features(test.nonexpert, claim, test.confidence))
    return {"advice": {"correct": probs.argmax(1) == test.y,
                       "calibration_error": metrics.expected_calibration_error(probs, test.y)}}

  return score


@PROTOCOLS.register("consultancy")
def consultancy(ctx: Context) -> Score:
  """One row, ``consultancy``: the assistant as the consultant, making all k reveals for its
  claim; each item's honest and lying games are played once (cached) and picked by the claim."""
  y = ctx.panel.test.y
  outcomes = cached(ctx.workdir, f"games/consultancy_{ctx.player_name}",
                    lambda: consultancy_outcomes(ctx.arena, ctx.x, y, ctx.k, ctx.player,
                                                 ctx.stream("consultancy")),
                    keys=("honest", "lying"))
  return lambda claim, lied: {"consultancy": {"correct": consultancy_correct(outcomes, claim, y)}}


@PROTOCOLS.register("debate")
def debate(ctx: Context) -> Score:
  """Two rows: ``debate`` (an independent honest opponent defends the truth) and
  ``debate_collusion`` (both debaters are this assistant; where it lies, the truth's defender
  sandbags)."""
  test = ctx.panel.test
  outcomes = cached(ctx.workdir, f"games/debate_{ctx.player_name}", lambda: debate_outcomes(
      ctx.arena, ctx.x, test.y, ctx.k, ctx.player, ctx.num_classes, ctx.stream("debate")),
      keys=("wins", "sandbag", "lies"))

  def score(claim, lied):
    lie = np.where(claim != test.y, claim, best_lie(test.y, test.nonexpert))
    return {"debate": {"correct": debate_correct(outcomes, lie, np.zeros_like(lied))},
            "debate_collusion": {"correct": debate_correct(outcomes, lie, lied)}}

  return score
