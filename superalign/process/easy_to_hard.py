"""Easy-to-hard generalization (Sun et al.; Hase et al.): reward models and a policy
supervised on the easy difficulties alone, measured on the hard ones, and the Supervision Gap
Recovered against supervision on every difficulty."""

from __future__ import annotations

import numpy as np

from superalign.results.estimates import mean_ci
from superalign.core.rng import stream_seed
from superalign.process import metrics
from superalign.process.pools import Pool, stacked


def _at(scores, correct, n, count, seed, answers=None, classes=None) -> dict:
  rules = {"score": scores} if answers is None else {"score": ("majority", answers, classes)}
  return metrics.best_of_n(rules, correct, [n], count, seed)["accuracy"]["score"][n]


def selection(test: dict[int, Pool], scored: dict, hard, *, n: int, subsets: int, modulus: int,
              seed: int) -> dict:
  """Best-of-``n`` on the hard problems by the reward models trained on the easy difficulties
  and by those trained on all; majority vote is the unsupervised floor."""
  correct, answers = stacked(test, hard, "correct"), stacked(test, hard, "answer")
  grid = lambda key: np.concatenate([scored[k][key] for k in hard])
  s = stream_seed(seed, "process/easy_to_hard")
  sel = {name: _at(grid(name), correct, n, subsets, s) for name in
         ("prm_product", "prm_product_easy", "orm_generative", "orm_generative_easy")}
  sel["majority"] = _at(None, correct, n, subsets, s, answers, modulus)
  sel["policy_alone"] = mean_ci(correct.mean(1))
  unsup = sel["majority"]["mean"]
  return {"n": int(n), "hard": hard, "selection": sel,
          "sgr_prm": metrics.sgr(sel["prm_product_easy"]["mean"], sel["prm_product"]["mean"],
                                 unsup),
          "sgr_orm": metrics.sgr(sel["orm_generative_easy"]["mean"],
                                 sel["orm_generative"]["mean"], unsup),
          "unsupervised": "majority vote"}


def policy(easy: dict[int, Pool], test: dict[int, Pool], modulus: int) -> dict:
  """The policy trained on the easy difficulties alone (its pools ``easy`` on the hard
  problems) against the policy trained on all (the first samples of its ``test`` pools)."""
  hard = list(easy)
  acc_easy = [easy[k].checked.correct for k in hard]
  acc_all = [test[k].field("correct")[:, :easy[k].per].ravel() for k in hard]
  chance = 1.0 / modulus
  easy_acc = float(np.mean(np.concatenate(acc_easy)))
  all_acc = float(np.mean(np.concatenate(acc_all)))
  return {"trained_on_easy": easy_acc, "trained_on_all": all_acc, "chance": chance,
          "sgr": metrics.sgr(easy_acc, all_acc, chance),
          "by_difficulty": {str(k): {"trained_on_easy": float(np.mean(a)),
                                     "trained_on_all": float(np.mean(b))}
                            for k, a, b in zip(hard, acc_easy, acc_all)}}
