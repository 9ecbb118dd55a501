"""Reward models over whole solutions, trained by the core engine on policy samples that the
exact checker labels, and the selection rules best-of-N compares.

* ORM: the probability that the final answer is correct, read at the last token (the registry
  transformer as a classifier).
* PRM: the probability that each step is correct, trained on PRM800K's labels (every step up to
  and including the first error). Generative (the default): the next-token loss on what each
  right-labelled step wrote, and a step's probability is the one it gives every token the step
  wrote, as a verifier that learned the right steps. Trained the same way on outcome labels
  (every step of a right-answer solution) it is a generative ORM. Or a classifier head read at
  each step's terminator (``;``, or EOS for the ending). A solution's score is the product of
  its step probabilities, or their minimum.
* Majority vote over final answers (no model).

Process labels from the policy's rollouts (Math-Shepherd) are in ``process.rollouts``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from superalign.core.spec import TrainSpec
from superalign.core.specs import InputSpec
from superalign.core.trainer import Trained
from superalign.parties.classifier import Model, trainer
from superalign.process import chains, policy as policy_lib


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


def _step_of_token(x: jax.Array) -> jax.Array:
  """Which step each solution token belongs to (its terminator included; the ending is the EOS
  alone), -1 for the prompt and padding: a generative PRM scores every token of a step."""
  is_end = (x == chains.SEP) | (x == chains.EOS)
  before = jnp.cumsum(is_end, axis=1) - is_end                    # terminators strictly before
  solution = (jnp.cumsum(x == chains.QUERY, axis=1) > 0) & (x != chains.QUERY) & (
      x != chains.PAD)
  return jnp.where(solution, before, -1)


def _token_logprobs(model, x: jax.Array) -> jax.Array:
  """``[B, L]``: log-probability of each token given the ones before it (0 at position 0)."""
  logits = model.lm_logits(model.hidden_states(x[:, :-1])).astype(jnp.float32)
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits), x[:, 1:, None], axis=-1)[..., 0]
  return jnp.concatenate([jnp.zeros((x.shape[0], 1), jnp.float32), logp], axis=1)


def generative_prm_loss(model, batch, rng, step):
  """A generative PRM learns what a right step writes: the next-token loss on every token of
  each step labelled right (``batch['y']`` ``[batch, T]``, -1 unlabelled). With outcome labels
  (every step of a right-answer solution labelled right) the same loss trains a generative ORM."""
  del rng, step
  x, labels = batch["x"], batch["y"]
  index = _step_of_token(x)
  label = jnp.take_along_axis(labels, jnp.clip(index, 0, labels.shape[1] - 1), axis=1)
  weight = ((index >= 0) & (index < labels.shape[1]) & (label == 1)).astype(jnp.float32)
  logp = _token_logprobs(model, x)
  count = jnp.maximum(weight.sum(), 1.0)
  return -(logp * weight).sum() / count, {"token_likelihood": (jnp.exp(logp) * weight).sum()
                                          / count}


_STEP_PROBS: dict[tuple, callable] = {}


def step_probs_fn(terminators: int, generative: bool = False):
  """``fn(state, batch) -> [B, terminators]``: the PRM's probability that each step is right,
  NaN where the solution has no such step. A classifier PRM reads its head at each step's
  terminator; a generative one gives the probability it assigns to the step's tokens."""
  key = (terminators, generative)
  if key not in _STEP_PROBS:
    def fn(state, batch):
      model, x = state.model(), batch["x"]
      if generative:   # a step's probability: the product of its tokens' probabilities
        index = _step_of_token(x)
        hit = index[:, :, None] == jnp.arange(terminators)[None, None, :]    # [B, L, T]
        step_logp = jnp.einsum("blt,bl->bt", hit, _token_logprobs(model, x))
        return jnp.where(hit.any(1), jnp.exp(step_logp), jnp.nan)
      logits = model.head(model.hidden_states(x)).astype(jnp.float32)
      hit = _terminators(x)[:, :, None] == jnp.arange(terminators)[None, None, :]
      probs = jax.nn.softmax(logits, -1)[..., 1]
      return jnp.where(hit.any(1), jnp.einsum("blt,bl->bt", hit, probs), jnp.nan)
    _STEP_PROBS[key] = fn
  return _STEP_PROBS[key]


def train_orm(spec: TrainSpec, model: Model, inputs: InputSpec, x: np.ndarray,
              correct: np.ndarray, workdir: str, tag: str, warm: Trained | None = None
              ) -> Trained:
  """The ORM, started from ``warm``'s weights (the policy: a reward model starts from the
  language model, as Lightman et al.'s do) when given."""
  job = trainer(spec, model, inputs, workdir, tag=tag, warm=policy_lib.weights(warm))
  return job.fit({"x": x, "y": correct.astype(np.int32)})


def train_prm(spec: TrainSpec, model: Model, inputs: InputSpec, x: np.ndarray,
              labels: np.ndarray, workdir: str, tag: str, warm: Trained | None = None,
              generative: bool = True) -> Trained:
  """The PRM on PRM800K-style labels ``[n, T]``, started from ``warm``'s weights if given:
  generative (``generative_prm_loss``) or a classifier head (``prm_loss``)."""
  job = trainer(spec, model, inputs, workdir, tag=tag, warm=policy_lib.weights(warm),
                loss_fn=generative_prm_loss if generative else prm_loss)
  return job.fit({"x": x, "y": labels.astype(np.int32)})


def orm_scores(orm: Trained, x: np.ndarray) -> np.ndarray:
  """``[rows]`` the ORM's probability that each solution in ``x`` ``[rows, length]`` reaches
  the right answer."""
  return orm.predict(x)[:, 1]


def prm_step_probs(prm: Trained, x: np.ndarray, k: int, generative: bool = True,
                   terminators: int | None = None) -> np.ndarray:
  """``[n, k + 1]`` step probabilities; a missing step counts as a certain error (0).
  ``terminators`` (at least ``k + 1``) fixes the program's width, so that every difficulty
  shares one compiled program."""
  probs = prm.apply(x, step_probs_fn(terminators or k + 1, generative))[:, :k + 1]
  return np.nan_to_num(probs, nan=0.0)


def prm_scores(step_probs: np.ndarray) -> dict[str, np.ndarray]:
  """Lightman et al.'s product of the step probabilities, and the minimum."""
  return {"prm_product": np.prod(step_probs, axis=1), "prm_min": step_probs.min(axis=1)}


def first_error_prediction(step_probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
  """The first step the PRM judges wrong (probability below ``threshold``), -1 if none."""
  wrong = step_probs < threshold
  return np.where(wrong.any(1), wrong.argmax(1), -1)
