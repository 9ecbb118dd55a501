"""Reward models over whole solutions, trained by the core engine on policy samples that the
exact checker labels, and the selection rules best-of-N compares.

* ORM: the probability that the final answer is correct, read at the last token (the registry
  transformer as a classifier).
* PRM: the probability that each step is correct, read at each step's terminator (``;``, or EOS
  for the ending), trained on PRM800K's labels: every step up to and including the first error.
  A solution's score is the product of its step probabilities, or their minimum.
* Majority vote over final answers (no model).
* Process labels from rollouts (Math-Shepherd): a step is labelled good when one of ``m``
  completions that the policy writes from it reaches the right answer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from superalign.core.trainer import Trained
from superalign.process import chains, policy as policy_lib
from superalign.supervised.classifier import trainer


def _terminators(x: jax.Array) -> jax.Array:
  """Which terminator each position is (0 = the first step's ``;``), -1 elsewhere: ``;`` and EOS
  appear only in solutions, so no prompt length is needed."""
  is_end = (x == chains.SEP) | (x == chains.EOS)
  return jnp.where(is_end, jnp.cumsum(is_end, axis=1) - 1, -1)


def prm_loss(model, batch, rng, step):
  """Cross-entropy of the per-position head at each labelled terminator; ``batch['y']``
  ``[batch, T]`` holds each terminator's label (-1: unlabelled)."""
  del rng, step
  x, labels = batch["x"], batch["y"]
  logits = model.head(model.hidden_states(x)).astype(jnp.float32)        # [B, L, 2]
  index = _terminators(x)
  label = jnp.take_along_axis(labels, jnp.clip(index, 0, labels.shape[1] - 1), axis=1)
  weight = ((index >= 0) & (index < labels.shape[1]) & (label >= 0)).astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(label, 0))
  count = jnp.maximum(weight.sum(), 1.0)
  accuracy = ((logits.argmax(-1) == label) * weight).sum() / count
  return (ce * weight).sum() / count, {"step_accuracy": accuracy}


_STEP_PROBS: dict[int, callable] = {}


def step_probs_fn(terminators: int):
  """``fn(state, batch) -> [B, terminators]``: the PRM's probability that each step is correct,
  NaN where the solution has no such terminator."""
  if terminators not in _STEP_PROBS:
    def fn(state, batch):
      model, x = state.model(), batch["x"]
      probs = jax.nn.softmax(model.head(model.hidden_states(x)).astype(jnp.float32), -1)[..., 1]
      index = _terminators(x)
      hit = index[:, :, None] == jnp.arange(terminators)[None, None, :]      # [B, L, T]
      found = hit.any(1)
      return jnp.where(found, jnp.einsum("blt,bl->bt", hit, probs), jnp.nan)
    _STEP_PROBS[terminators] = fn
  return _STEP_PROBS[terminators]


def train_orm(config, x: np.ndarray, correct: np.ndarray, workdir: str, tag: str,
              warm: Trained | None = None) -> Trained:
  """The ORM, started from ``warm``'s weights (the policy: a reward model starts from the
  language model, as Lightman et al.'s do) when given."""
  job = trainer(config, policy_lib.spec(config), workdir, tag=tag, model_name=config.model.name,
                train=config.process.rm_train, warm=policy_lib.weights(warm))
  return job.fit({"x": x, "y": correct.astype(np.int32)})


def train_prm(config, x: np.ndarray, labels: np.ndarray, workdir: str, tag: str,
              warm: Trained | None = None) -> Trained:
  """The PRM on PRM800K-style labels ``[n, T]``, started from ``warm``'s weights if given."""
  job = trainer(config, policy_lib.spec(config), workdir, tag=tag, model_name=config.model.name,
                train=config.process.rm_train, loss_fn=prm_loss, warm=policy_lib.weights(warm))
  return job.fit({"x": x, "y": labels.astype(np.int32)})


def orm_scores(orm: Trained, x: np.ndarray) -> np.ndarray:
  return orm.predict(x)[:, 1]


def prm_step_probs(prm: Trained, x: np.ndarray, k: int) -> np.ndarray:
  """``[n, k + 1]`` step probabilities; a missing terminator counts as a certain error (0)."""
  return np.nan_to_num(prm.apply(x, step_probs_fn(k + 1)), nan=0.0)


def prm_scores(step_probs: np.ndarray) -> dict[str, np.ndarray]:
  """Lightman et al.'s product of the step probabilities, and the minimum."""
  return {"prm_product": np.prod(step_probs, axis=1), "prm_min": step_probs.min(axis=1)}


def first_error_prediction(step_probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
  """The first step the PRM judges wrong (probability below ``threshold``), -1 if none."""
  wrong = step_probs < threshold
  return np.where(wrong.any(1), wrong.argmax(1), -1)


def rollout_labels(policy: Trained, problems: chains.Problems, solution: np.ndarray,
                   rollouts: int, seed: int) -> np.ndarray:
  """Math-Shepherd's soft labels ``[n, k]``: the share of ``rollouts`` completions, written by
  the policy from the end of each step of ``solution``, whose final answer is right."""
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
