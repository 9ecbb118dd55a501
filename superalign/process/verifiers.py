"""The run's reward models, trained on the policy's samples, and the scores they give a pool.

Each starts from a policy's weights, as Lightman et al.'s start from the language model: on every
difficulty from the policy, and on the easy ones alone from the policy that saw only those (no
supervision of hard problems). A score is a ``[problems, per]`` grid over a pool's solutions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from superalign.core.spec import TrainSpec
from superalign.core.specs import InputSpec
from superalign.core.trainer import Trained
from superalign.parties.classifier import Model
from superalign.process import reward
from superalign.process.pools import Pool, padded_labels

# The rules scored by a generative reward model's product of step probabilities, and its field.
PRODUCT = {"orm_generative": "orm_generative", "prm_product": "prm",
           "orm_generative_easy": "orm_generative_easy", "prm_product_easy": "prm_easy"}


@dataclasses.dataclass(frozen=True)
class Verifiers:
  """The run's trained reward models: the ORM classifier, the generative ORM and the PRM, the
  easy-only generative ORM and PRM, and the ``terminators`` their step probabilities span."""
  orm: Trained                   # a classifier on the final answer
  orm_generative: Trained        # generative, every step labelled by the answer
  prm: Trained                   # generative, on PRM800K's step labels
  orm_generative_easy: Trained   # the same two on the easy difficulties alone
  prm_easy: Trained
  terminators: int               # step probabilities per solution: one program for every k

  def step_probs(self, name: str, pool: Pool, k: int) -> np.ndarray:
    """``[solutions, k + 1]``: the reward model ``name``'s probability that each step is right."""
    return reward.prm_step_probs(getattr(self, name), pool.x, k, terminators=self.terminators)

  def scores(self, rule: str, pool: Pool, k: int) -> np.ndarray:
    """The rule ``orm`` (the classifier's probability) or one of ``PRODUCT``."""
    if rule == "orm":
      return pool.grid(reward.orm_scores(self.orm, pool.x))
    return pool.grid(reward.prm_scores(self.step_probs(PRODUCT[rule], pool, k))["prm_product"])


def train(spec: TrainSpec, model: Model, inputs: InputSpec, workdir: str, rm: dict[int, Pool],
          easy, policy: Trained, easy_policy: Trained) -> Verifiers:
  """The reward models on the pools ``rm`` (every difficulty; ``easy``: the easy ones)."""
  ks = list(rm)
  terminators = ks[-1] + 1
  x = {k: p.x for k, p in rm.items()}
  correct = {k: p.checked.correct for k, p in rm.items()}
  steps = {k: padded_labels(p.checked, terminators) for k, p in rm.items()}
  outcome = {k: np.where(v[:, None], 1, -1) * np.ones((1, terminators), np.int64)
             for k, v in correct.items()}           # every step labelled by the answer
  cat = lambda d, which: np.concatenate([d[k] for k in which])
  prm = lambda labels, which, tag, warm: reward.train_prm(
      spec, model, inputs, cat(x, which), cat(labels, which), workdir, tag, warm)
  return Verifiers(
      orm=reward.train_orm(spec, model, inputs, cat(x, ks), cat(correct, ks), workdir, "orm",
                           policy),
      orm_generative=prm(outcome, ks, "orm_generative", policy),
      prm=prm(steps, ks, "prm", policy),
      orm_generative_easy=prm(outcome, easy, "orm_generative_easy", easy_policy),
      prm_easy=prm(steps, easy, "prm_easy", easy_policy),
      terminators=terminators)


def score(verifiers: Verifiers, test: dict[int, Pool], hard) -> dict[int, dict]:
  """Per difficulty, every rule's scores of the test pool and the PRM's ``step_probs``; the
  easy-only reward models on the ``hard`` difficulties alone."""
  scored = {}
  for k, pool in test.items():
    step = verifiers.step_probs("prm", pool, k)
    scored[k] = {"orm": verifiers.scores("orm", pool, k),
                 "orm_generative": verifiers.scores("orm_generative", pool, k),
                 **{name: pool.grid(v) for name, v in reward.prm_scores(step).items()},
                 "step_probs": step}
    if k in hard:
      for rule in ("orm_generative_easy", "prm_product_easy"):
        scored[k][rule] = verifiers.scores(rule, pool, k)
  return scored
