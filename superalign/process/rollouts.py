"""Math-Shepherd's process labels from rollouts (Wang et al.): a step is good when a
completion the policy writes from it reaches the right answer; compared with the exact labels."""

from __future__ import annotations

import numpy as np

from superalign.core.rng import stream_seed
from superalign.core.trainer import Trained
from superalign.process import chains, policy as policy_lib
from superalign.process.pools import Pool


def rollout_labels(policy: Trained, problems: chains.Problems, solution: np.ndarray,
                   rollouts: int, seed: int) -> np.ndarray:
  """Soft labels ``[n, k]``: the share of ``rollouts`` completions, written by the policy from
  the end of each step of ``solution``, whose final answer is right."""
  n, k = len(problems), problems.k
  prompt = chains.prompts(problems)
  out = np.zeros((n, k))
  for i in range(k):
    cut = chains.TOKENS_PER_STEP * (i + 1)
    prefix = np.concatenate([prompt, solution[:, :cut]], 1)
    written = solution[:, :cut]
    # Each prefix is its own prompt: the policy continues from it, and the checker reads the
    # prefix with the continuation as one solution.
    tail = policy_lib.sample_from(policy, prefix, rollouts, chains.solution_length(k) - cut,
                                  seed=seed + i)
    full = np.concatenate([np.repeat(written, rollouts, 0), tail], 1)
    correct = chains.check(problems.repeat(rollouts), full).correct
    out[:, i] = correct.reshape(n, rollouts).mean(1)
  return out


def agreement(policy: Trained, test: dict[int, Pool], *, rollouts: int, solutions: int,
              seed: int) -> dict:
  """The rollout labels of the first ``solutions`` test samples (spread over the
  difficulties) against the exact ones: agreement, and each kind of disagreement."""
  per_k = max(1, solutions // len(test))
  agree, good_wrong, bad_right, steps = 0, 0, 0, 0
  soft_on_wrong, soft_on_good = [], []
  for k, pool in test.items():
    rows = np.arange(min(per_k, len(pool.x)))
    problems = pool.problems.repeat(pool.per).take(rows)
    start = chains.prompt_length(k)
    solution = pool.x[rows, start:start + chains.solution_length(k)]
    soft = rollout_labels(policy, problems, solution, rollouts,
                          stream_seed(seed, f"process/rollouts/{k}"))
    exact = chains.process_labels(pool.checked.take(rows))[:, :k]
    seen = exact >= 0
    hard = soft > 0
    agree += int((hard == (exact == 1))[seen].sum())
    good_wrong += int((hard & (exact == 0))[seen].sum())
    bad_right += int((~hard & (exact == 1))[seen].sum())
    steps += int(seen.sum())
    soft_on_wrong += soft[seen & (exact == 0)].tolist()
    soft_on_good += soft[seen & (exact == 1)].tolist()
  wrong = max(len(soft_on_wrong), 1)
  return {"rollouts": int(rollouts), "steps": steps,
          "agreement": agree / max(steps, 1),
          "wrong_steps": len(soft_on_wrong), "good_steps": len(soft_on_good),
          "wrong_steps_labelled_good": good_wrong / wrong,
          "good_steps_labelled_wrong": bad_right / max(len(soft_on_good), 1),
          "mean_soft_label_on_wrong": float(np.mean(soft_on_wrong)) if soft_on_wrong else None,
          "mean_soft_label_on_good": float(np.mean(soft_on_good)) if soft_on_good else None}
