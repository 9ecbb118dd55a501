"""Contrast-Consistent Search (Burns et al. 2022): a truth direction found without labels.

Each example is a contrast pair: the activations of a statement completed both ways (``x_pos``:
"... Yes", ``x_neg``: "... No"). After per-template normalization, a linear probe
``p = sigmoid(w . x + b)`` is trained so that the two completions get complementary
probabilities (consistency) and not both 0.5 (confidence):
``loss = mean((p+ - (1 - p-))^2) + mean(min(p+, p-)^2)``. The answer is
``0.5 * (p+ + 1 - p-)``, the probability that ``x_pos`` is the true completion.

Restarts are stacked runs of the core ``Trainer`` (one vmapped fit); the run with the lowest
loss on the full data, computed with its trained parameters, is kept.

Nothing in the loss names truth, so the direction's sign is arbitrary, and any binary feature
that flips between the two halves of a pair satisfies it as well (Farquhar et al. 2023):
``contrast_pairs_with_distractor`` plants such a feature and ``feature_report`` says which one
a probe found.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from superalign.core.errors import ConfigError
from superalign.core.spec import TrainSpec
from superalign.core.trainer import Trainer
from superalign.interp import probes
from superalign.models import layers

# The linear probe's recipe (``probes.PROBE_SPEC``: full-width AdamW steps, no evaluation during
# training, no periodic checkpoints) retuned for CCS: the paper's weight decay (0.01) at a
# constant learning rate, 500 steps.
CCS_SPEC = probes.PROBE_SPEC.with_optim(learning_rate=1e-2, weight_decay=1e-2,
                                        schedule="constant").with_train(num_steps=500)


def _pair(x_pos, x_neg) -> tuple[np.ndarray, np.ndarray]:
  x_pos, x_neg = np.asarray(x_pos, np.float32), np.asarray(x_neg, np.float32)
  if x_pos.ndim != 2 or x_pos.shape != x_neg.shape:
    raise ConfigError(f"contrast pairs: x_pos {x_pos.shape} and x_neg {x_neg.shape} must both be "
                      "[n, d] (row i = pair i)")
  return x_pos, x_neg


def normalize(x_pos, x_neg, template_ids=None) -> tuple[np.ndarray, np.ndarray]:
  """Per prompt template (``template_ids[i]`` of pair ``i``; None = one template), ``x_pos`` and
  ``x_neg`` are each mean-centred and divided by their average row norm after centring, as in
  the paper: what tells the halves apart (the "Yes"/"No" token itself) and each template's
  offset and scale are removed, so only what varies with the pair's content is left."""
  x_pos, x_neg = _pair(x_pos, x_neg)
  ids = np.zeros(len(x_pos), np.int32) if template_ids is None else np.asarray(template_ids)
  if ids.shape != (len(x_pos),):
    raise ConfigError(f"template_ids: shape {ids.shape}, expected ({len(x_pos)},), one per pair")
  out_pos, out_neg = np.empty_like(x_pos), np.empty_like(x_neg)
  for t in np.unique(ids):
    rows = ids == t
    for x, out in ((x_pos, out_pos), (x_neg, out_neg)):
      centred = x[rows] - x[rows].mean(0)
      norm = float(np.linalg.norm(centred, axis=1).mean())
      out[rows] = centred / (norm if norm > 0 else 1.0)
  return out_pos, out_neg


class CCSProbe(nnx.Module):
  """``p = sigmoid(w . x + b)``, applied to both halves of a pair."""

  def __init__(self, d: int, rngs: nnx.Rngs):
    self.linear = layers.dense(d, 1, ("embed", None), jnp.float32, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(self.linear(x)[:, 0].astype(jnp.float32))


def _loss_terms(p_pos, p_neg, xp=jnp):
  consistent = ((p_pos - (1.0 - p_neg)) ** 2).mean(0)
  confident = (xp.minimum(p_pos, p_neg) ** 2).mean(0)
  return consistent, confident


def ccs_loss(model: nnx.Module, batch, rng, step):
  """The CCS objective on a batch of normalized pairs ``batch['x_pos']``, ``batch['x_neg']``."""
  del rng, step
  consistent, confident = _loss_terms(model(batch["x_pos"]), model(batch["x_neg"]))
  return consistent + confident, {"consistent": consistent, "confident": confident}


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


@dataclasses.dataclass(frozen=True)
class CCS:
  """A fitted CCS probe on normalized activations (``normalize``).

  Unless ``oriented`` (``orient`` fixed the sign with labels), which end of the direction is
  "true" is arbitrary: ``probs``/``predict``/``accuracy`` give the raw orientation, and only
  ``accuracy(..., sign_free=True)`` reports ``max(acc, 1 - acc)``.
  """
  weight: np.ndarray          # [d], on normalized activations
  bias: float
  loss: float                 # full-data loss of the kept run
  losses: np.ndarray          # [restarts]: each run's full-data loss
  best_run: int
  oriented: bool = False

  @property
  def direction(self) -> np.ndarray:
    """Unit ``w``; normalization only shifts and rescales, so it is a direction of the raw
    activation space too (compare with ``abs`` of a cosine unless ``oriented``)."""
    return (self.weight / np.linalg.norm(self.weight)).astype(np.float32)

  def probs(self, x_pos, x_neg, template_ids=None) -> np.ndarray:
    """``0.5 * (p+ + 1 - p-)`` per pair: the probability that ``x_pos`` is the true half. The
    pairs are normalized with their own per-template statistics (score a set, not one pair)."""
    xp, xn = normalize(x_pos, x_neg, template_ids)
    p_pos, p_neg = _sigmoid(xp @ self.weight + self.bias), _sigmoid(xn @ self.weight + self.bias)
    return 0.5 * (p_pos + 1.0 - p_neg)

  def predict(self, x_pos, x_neg, template_ids=None) -> np.ndarray:
    """1 where ``x_pos`` is predicted true (raw orientation)."""
    return (self.probs(x_pos, x_neg, template_ids) > 0.5).astype(np.int32)

  def accuracy(self, x_pos, x_neg, labels, template_ids=None, *, sign_free: bool = False) -> float:
    """Accuracy against ``labels`` (1 = ``x_pos`` true) in the raw orientation; with
    ``sign_free=True``, ``max(acc, 1 - acc)``: what CCS reaches if the sign is known, the
    paper's number, and not an accuracy a user gets without labels."""
    labels = np.asarray(labels)
    acc = float(np.mean(self.predict(x_pos, x_neg, template_ids) == labels))
    return max(acc, 1.0 - acc) if sign_free else acc

  def orient(self, x_pos, x_neg, labels, template_ids=None, *, rows=None) -> "CCS":
    """This probe with its sign fixed by a few labels: ``labels`` of the pairs ``rows`` (all
    pairs if None). The set is normalized whole; only the labelled rows vote."""
    predicted = self.predict(x_pos, x_neg, template_ids)
    predicted = predicted if rows is None else predicted[np.asarray(rows)]
    labels = np.asarray(labels)
    if labels.shape != predicted.shape or len(labels) == 0:
      raise ConfigError(f"orient: {labels.shape} labels for {predicted.shape} labelled pairs")
    flip = float(np.mean(predicted == labels)) < 0.5
    return dataclasses.replace(self, weight=-self.weight if flip else self.weight,
                               bias=-self.bias if flip else self.bias, oriented=True)


def fit_ccs(x_pos, x_neg, workdir: str, spec: TrainSpec = CCS_SPEC, *, template_ids=None,
            restarts: int = 10, tag: str = "ccs", seed: int = 0) -> CCS:
  """CCS on unlabelled contrast pairs: ``restarts`` stacked runs of the core ``Trainer``
  (trained as ``spec`` says; its seed is unused: restart ``k`` is seeded ``restarts * seed +
  k``), keeping the lowest full-data loss. A later fit with the same workdir and tag resumes the
  saved final state: one tag per fit."""
  if restarts < 1:
    raise ConfigError(f"ccs restarts={restarts}: must be >= 1")
  xp, xn = normalize(x_pos, x_neg, template_ids)
  d = xp.shape[1]
  seeds = [restarts * seed + k for k in range(restarts)]
  job = Trainer(lambda rngs: CCSProbe(d, rngs), spec, workdir, tag, seeds=seeds,
                loss_fn=ccs_loss, cache_key=("ccs_probe", d), name="CCS probe")
  trained = job.fit({"x_pos": xp, "x_neg": xn})
  params = jax.device_get(trained.state.params.to_pure_dict())["linear"]
  w = np.asarray(params["kernel"], np.float64)[:, :, 0]     # [runs, d]
  b = np.asarray(params["bias"], np.float64)[:, 0]          # [runs]
  consistent, confident = _loss_terms(_sigmoid(xp @ w.T + b), _sigmoid(xn @ w.T + b), np)
  losses = consistent + confident
  best = int(np.argmin(losses))
  return CCS(w[best].astype(np.float32), float(b[best]), float(losses[best]), losses, best)


# ------------------------------------------------------------------- the distractor check

@dataclasses.dataclass(frozen=True)
class ContrastPairs:
  """Synthetic contrast-pair activations with a planted truth and a planted distractor."""
  x_pos: np.ndarray
  x_neg: np.ndarray
  labels: np.ndarray                 # truth: 1 where x_pos is the true completion
  distractor_labels: np.ndarray      # the distractor's value, independent of the truth
  template_ids: np.ndarray
  truth_direction: np.ndarray        # unit [d]
  distractor_direction: np.ndarray   # unit [d], orthogonal to the truth


def contrast_pairs_with_distractor(n: int, d: int, seed: int, distractor_strength: float, *,
                                   truth_strength: float = 1.0, noise: float = 0.3,
                                   content_strength: float = 2.0, content_rank: int = 4,
                                   templates: int = 2) -> ContrastPairs:
  """``n`` pairs in ``d`` dimensions, built as Farquhar et al.'s banana/shed prompts are: along
  the truth direction ``x_pos`` sits at ``+truth_strength`` when it is the true completion and
  ``x_neg`` opposite; along the distractor direction the pair carries a random binary attribute
  the same way (``+distractor_strength`` on ``x_pos`` when it is 1, ``x_neg`` opposite). Both
  therefore have CCS's consistency structure. Shared per-pair content (a rank-``content_rank``
  subspace), independent noise per half, and per-template offsets (different for the two
  halves) and scales (which ``normalize`` removes) make it look like activations."""
  if d < content_rank + 2:
    raise ConfigError(f"contrast pairs: d={d} must be at least content_rank + 2 = "
                      f"{content_rank + 2}")
  rng = np.random.default_rng(seed)
  basis, _ = np.linalg.qr(rng.normal(size=(d, content_rank + 2)))
  truth, distractor, content = basis[:, 0], basis[:, 1], basis[:, 2:]
  labels = rng.integers(0, 2, n)
  flips = rng.integers(0, 2, n)
  template_ids = rng.integers(0, templates, n)
  offsets = rng.normal(scale=3.0, size=(templates, 2, d))
  scales = rng.uniform(0.5, 3.0, templates)
  shared = rng.normal(scale=content_strength, size=(n, content_rank)) @ content.T
  signal = (truth_strength * np.outer(2 * labels - 1, truth) +
            distractor_strength * np.outer(2 * flips - 1, distractor))
  halves = []
  for side, sign in ((0, 1.0), (1, -1.0)):
    x = offsets[template_ids, side] + shared + sign * signal + rng.normal(scale=noise, size=(n, d))
    halves.append((x * scales[template_ids, None]).astype(np.float32))
  return ContrastPairs(halves[0], halves[1], labels.astype(np.int32), flips.astype(np.int32),
                       template_ids.astype(np.int32), truth.astype(np.float32),
                       distractor.astype(np.float32))


def feature_report(probe: CCS, pairs: ContrastPairs) -> dict:
  """Which planted feature ``probe`` found: ``|cos|`` of its direction with the truth and the
  distractor directions, sign-free accuracy against each feature's labels, and ``finds``: the
  feature it agrees with at >= 0.9 sign-free accuracy ("neither" otherwise)."""
  out = {}
  for name, direction, labels in (("truth", pairs.truth_direction, pairs.labels),
                                  ("distractor", pairs.distractor_direction,
                                   pairs.distractor_labels)):
    out[f"cos_{name}"] = abs(float(probe.direction @ direction))
    out[f"accuracy_{name}"] = probe.accuracy(pairs.x_pos, pairs.x_neg, labels,
                                             pairs.template_ids, sign_free=True)
  found = [k for k in ("truth", "distractor") if out[f"accuracy_{k}"] >= 0.9]
  out["finds"] = found[0] if len(found) == 1 else ("neither" if not found else "both")
  out["loss"] = probe.loss
  return out
