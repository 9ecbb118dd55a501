"""Linear probes on activations ``[n, d]``: logistic regression, difference of means, random floor.

Every probe has ``scores(acts) -> [n]`` (larger = more positive), a unit ``direction`` in the
raw activation space, and a ``threshold`` on its scores for accuracy, with ``threshold_from``
saying where it came from (0.5 on probabilities, or the midpoint fitted on the fit split).
``evaluate`` turns scores and labels into the metrics probing papers report (accuracy, AUROC,
recall at a low false-positive rate) as estimates with 95% intervals; ``sweep`` runs one fit
recipe (``fitter``, by name) over the layers of a model.

* ``fit_logistic``: logistic regression trained by the core ``Trainer`` as a ``TrainSpec`` says
  (default ``PROBE_SPEC``; weight decay is its ``optim.weight_decay``) on inputs standardized
  with the fit split's mean and std.
* ``fit_mass_mean``: difference of means (Marks and Tegmark 2023), no training, raw or
  whitened by the within-class covariance (their IID-corrected variant, ``whiten``);
  ``from_contrast_pairs``: the mean of ``pos - neg`` over generic contrast pairs (the
  defection-probe recipe: "Are you doing something dangerous? yes / no"), raw or whitened.
* ``random_probe`` / ``random_floor``: random unit directions, the floor a probe must beat.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from superalign.core import steps
from superalign.results import estimates as metrics
from superalign.core.errors import ConfigError
from superalign.config.registry import Registry
from superalign.core.spec import Optim, Train, TrainSpec
from superalign.core.trainer import Trainer
from superalign.models import layers

PROBABILITY = "0.5 on probabilities"
FIT_MIDPOINT = "midpoint of the class-mean scores on the fit split"
PAIR_MIDPOINT = "midpoint of the contrast pairs' mean scores"


# A linear probe's training: a few hundred full-width AdamW steps, no evaluation during training
# and no periodic checkpoints (``checkpoint_every`` 0; the loop still saves the final state, see
# ``fit_logistic``). A run's own recipe: ``dataclasses.replace(PROBE_SPEC, seed=...)``,
# ``PROBE_SPEC.with_optim(weight_decay=...)``.
PROBE_SPEC = TrainSpec(
    optim=Optim(name="adamw", learning_rate=3e-2, weight_decay=1e-3, schedule="cosine",
                warmup_steps=0, clip_norm=0.0),
    train=Train(batch_size=256, eval_batch_size=1024, num_steps=300, num_epochs=0,
                eval_every=0, log_every=100, checkpoint_every=0, early_stop_metric=""))


# ------------------------------------------------------------------------------------ inputs

def _acts(acts, name: str = "acts") -> np.ndarray:
  acts = np.asarray(acts, np.float32)
  if acts.ndim != 2:
    raise ConfigError(f"{name}: activations must be [n, d], got shape {acts.shape}")
  return acts


def _labels(labels, n: int, binary: bool = True) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.shape != (n,):
    raise ConfigError(f"labels: shape {labels.shape}, expected ({n},) to match the activations")
  if not np.all(labels == labels.astype(np.int32)):
    raise ConfigError("labels: must be integer class ids")
  labels = labels.astype(np.int32)
  if binary and not np.isin(labels, (0, 1)).all():
    raise ConfigError(f"labels: must be 0 or 1, got values {np.unique(labels)[:5].tolist()}")
  if len(np.unique(labels)) < 2:
    raise ConfigError("labels: both classes must be present to fit a probe")
  return labels


def _unit(v: np.ndarray) -> np.ndarray:
  v = np.asarray(v, np.float64)
  norm = np.linalg.norm(v, axis=-1, keepdims=True)
  if np.any(norm == 0):
    raise ConfigError("probe direction is zero (the two classes have the same mean)")
  return (v / norm).astype(np.float32)


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


# ------------------------------------------------------------------------------------ probes

@dataclasses.dataclass(frozen=True)
class Probe(abc.ABC):
  """What every probe shares. ``direction``: unit vector ``[d]`` in the raw activation space."""
  direction: np.ndarray
  threshold: float          # scores above it are predicted positive
  threshold_from: str       # where ``threshold`` came from

  @abc.abstractmethod
  def scores(self, acts) -> np.ndarray:
    """``[n]`` scores, larger = more positive."""

  def evaluate(self, acts, labels, **kw) -> dict:
    """``evaluate`` of this probe's scores, with its own threshold for accuracy."""
    return evaluate(self.scores(acts), labels, threshold=self.threshold,
                    threshold_from=self.threshold_from, **kw)


@dataclasses.dataclass(frozen=True)
class ProjectionProbe(Probe):
  """Score = projection on ``direction`` (mass-mean, contrast-pair and random probes).

  ``probs`` passes the score through the 1-D Gaussian (LDA) log-odds fitted with the threshold:
  ``sigmoid(slope * (score - threshold))``, ``slope = (m_pos - m_neg) / pooled variance``.
  """
  slope: float = 1.0
  kind: str = "mass_mean"

  def scores(self, acts) -> np.ndarray:
    return _acts(acts) @ self.direction

  def probs(self, acts) -> np.ndarray:
    """``[n]`` the probability of the positive class for activations ``acts`` ``[n, d]``: the
    score through the fitted log-odds, ``sigmoid(slope * (score - threshold))``."""
    return _sigmoid(self.slope * (self.scores(acts) - self.threshold))

  def calibrated(self, acts, labels) -> "ProjectionProbe":
    """The same direction with threshold and slope fitted on labelled ``acts``."""
    acts = _acts(acts)
    threshold, slope = _midpoint(acts @ self.direction, _labels(labels, len(acts)))
    return dataclasses.replace(self, threshold=threshold, slope=slope, threshold_from=FIT_MIDPOINT)


def _midpoint(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
  pos, neg = scores[labels == 1], scores[labels == 0]
  m_pos, m_neg = float(pos.mean()), float(neg.mean())
  var = (((pos - m_pos) ** 2).sum() + ((neg - m_neg) ** 2).sum()) / max(len(scores) - 2, 1)
  return 0.5 * (m_pos + m_neg), (m_pos - m_neg) / max(float(var), 1e-12)


def fit_mass_mean(acts, labels, whitened: bool = False) -> ProjectionProbe:
  """Difference-of-means probe: direction ``mean(pos) - mean(neg)`` (raw space; ``whitened``:
  through ``whiten``, the IID-corrected variant), threshold the midpoint of the two class
  means' projections."""
  acts = _acts(acts)
  labels = _labels(labels, len(acts))
  pos, neg = acts[labels == 1], acts[labels == 0]
  direction = pos.mean(0) - neg.mean(0)
  direction = _unit(whiten(direction, pos, neg) if whitened else direction)
  threshold, slope = _midpoint(acts @ direction, labels)
  return ProjectionProbe(direction, threshold, FIT_MIDPOINT, slope,
                         "mass_mean_iid" if whitened else "mass_mean")


def whiten(direction: np.ndarray, pos_acts: np.ndarray, neg_acts: np.ndarray) -> np.ndarray:
  """``Sigma^-1 direction``, Sigma the within-class covariance of the two sides (each centred
  on its own mean) shrunk by Ledoit-Wolf: Marks and Tegmark's "IID-corrected" mass-mean, the
  LDA direction. Shrinkage keeps it defined when rows are fewer than dimensions."""
  from sklearn.covariance import ledoit_wolf   # lazy: scikit-learn is slow to import
  within = np.concatenate([pos_acts - pos_acts.mean(0), neg_acts - neg_acts.mean(0)])
  covariance, _ = ledoit_wolf(within.astype(np.float64), assume_centered=True)
  return np.linalg.solve(covariance, direction.astype(np.float64)).astype(np.float32)


def from_contrast_pairs(pos_acts, neg_acts, whitened: bool = False) -> ProjectionProbe:
  """Direction = mean over pairs of ``pos - neg`` (row ``i`` of each is one pair), learned with
  no labels of the target behaviour (``whitened``: through ``whiten``); threshold the midpoint
  of the pos and neg mean scores (``calibrated(acts, labels)`` refits it on labelled data)."""
  pos_acts, neg_acts = _acts(pos_acts, "pos_acts"), _acts(neg_acts, "neg_acts")
  if pos_acts.shape != neg_acts.shape:
    raise ConfigError(f"contrast pairs: pos_acts {pos_acts.shape} and neg_acts "
                      f"{neg_acts.shape} must have the same shape (row i = pair i)")
  direction = (pos_acts - neg_acts).mean(0)
  if whitened:
    direction = whiten(direction, pos_acts, neg_acts)
  direction = _unit(direction)
  scores = np.concatenate([pos_acts @ direction, neg_acts @ direction])
  labels = np.concatenate([np.ones(len(pos_acts), np.int32), np.zeros(len(neg_acts), np.int32)])
  threshold, slope = _midpoint(scores, labels)
  kind = "contrast_pairs_whitened" if whitened else "contrast_pairs"
  return ProjectionProbe(direction, threshold, PAIR_MIDPOINT, slope, kind)


RANDOM_STREAM = 0x72616E64  # salts the random probe's seed: its direction is never the first
                            # draw of a plain default_rng(seed) (say, a planted direction)


def random_probe(acts, labels, seed: int | Sequence[int]) -> ProjectionProbe:
  """A seeded random unit direction (its sign not learned), threshold fitted on ``acts``;
  ``seed`` is an int or a sequence of ints."""
  acts = _acts(acts)
  rng = np.random.default_rng([*np.atleast_1d(seed).tolist(), RANDOM_STREAM])
  direction = _unit(rng.normal(size=acts.shape[1]))
  probe = ProjectionProbe(direction, 0.0, FIT_MIDPOINT, 1.0, "random")
  return probe.calibrated(acts, labels)


class LinearProbe(nnx.Module):
  """``d -> 1`` logit (binary) or ``d -> classes`` logits."""

  def __init__(self, d: int, outputs: int, rngs: nnx.Rngs):
    self.linear = layers.dense(d, outputs, ("embed", None), jnp.float32, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.linear(x)


def binary_loss(model: nnx.Module, batch, rng, step):
  """Sigmoid cross-entropy of the one logit against 0/1 labels ``batch['y']``."""
  del rng, step
  logits = model(batch["x"])[:, 0].astype(jnp.float32)
  loss = optax.sigmoid_binary_cross_entropy(logits, batch["y"].astype(jnp.float32)).mean()
  return loss, {"accuracy": ((logits > 0) == (batch["y"] == 1)).mean()}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LogisticProbe(Probe):
  """A fitted logistic-regression probe; inputs are standardized with the fit split's
  ``mean``/``std`` before ``kernel``/``bias``, so ``direction`` (raw space) is ``kernel / std``
  normalized. Multi-class: ``probs`` only, and ``direction`` is ``[classes, d]``."""
  kernel: np.ndarray   # [d, 1] or [d, classes], on standardized inputs
  bias: np.ndarray     # [1] or [classes]
  mean: np.ndarray     # [d]
  std: np.ndarray      # [d]

  @property
  def num_classes(self) -> int:
    """The classes the probe tells apart (2 for a binary probe's one logit)."""
    return max(2, self.kernel.shape[1])

  def logits(self, acts) -> np.ndarray:
    """``[n, 1]`` (binary) or ``[n, classes]`` logits of activations ``acts`` ``[n, d]``,
    standardized with the fit split's ``mean`` and ``std``."""
    return ((_acts(acts) - self.mean) / self.std) @ self.kernel + self.bias

  def probs(self, acts) -> np.ndarray:
    """Class probabilities ``[n, classes]``."""
    z = self.logits(acts)
    if self.kernel.shape[1] == 1:
      p = _sigmoid(z[:, 0])
      return np.stack([1.0 - p, p], axis=1)
    z = z - z.max(1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(1, keepdims=True)

  def scores(self, acts) -> np.ndarray:
    """The probability of the positive class (binary probes)."""
    if self.kernel.shape[1] != 1:
      raise ConfigError(f"scores() is a binary probe's positive-class probability; this probe "
                        f"has {self.num_classes} classes: use probs()")
    return _sigmoid(self.logits(acts)[:, 0])


def fit_logistic(acts, labels, workdir: str, spec: TrainSpec = PROBE_SPEC, *,
                 tag: str = "probe", seed: int | None = None) -> LogisticProbe:
  """Logistic regression on ``acts`` through the core ``Trainer``, trained as ``spec`` says
  (seeded ``seed``, default ``spec.seed``). Labels 0/1 train one logit with a sigmoid loss;
  more classes, softmax cross-entropy.

  The loop saves the final state under ``workdir/checkpoints/<tag>`` and a later fit with the
  same workdir and tag resumes it (returns that probe whatever the data): give each probe its
  own tag (``sweep`` / ``fitter`` add the layer name).
  """
  acts = _acts(acts)
  labels = _labels(labels, len(acts), binary=False)
  if labels.min() < 0:
    raise ConfigError("labels: class ids must be >= 0")
  classes = int(labels.max()) + 1
  mean = acts.mean(0)
  std = acts.std(0)
  std = np.where(std > 0, std, 1.0).astype(np.float32)
  d, outputs = acts.shape[1], 1 if classes == 2 else classes
  job = Trainer(lambda rngs: LinearProbe(d, outputs, rngs), spec, workdir, tag,
                seeds=int(spec.seed if seed is None else seed),
                loss_fn=binary_loss if outputs == 1 else steps.cross_entropy_loss,
                cache_key=("linear_probe", d, outputs), name="linear probe")
  trained = job.fit({"x": (acts - mean) / std, "y": labels})
  params = jax.device_get(trained.state.params.to_pure_dict())["linear"]
  kernel, bias = np.asarray(params["kernel"], np.float32), np.asarray(params["bias"], np.float32)
  raw = (kernel / std[:, None]).T
  direction = _unit(raw[0] if outputs == 1 else raw)
  return LogisticProbe(direction=direction, threshold=0.5, threshold_from=PROBABILITY,
                       kernel=kernel, bias=bias, mean=mean, std=std)


# -------------------------------------------------------------------------------- evaluation

def recall_at_fpr(scores, labels, fpr: float) -> tuple[float, float, float]:
  """``(recall, threshold, achieved fpr)``: threshold = the ``1 - fpr`` quantile of the negative
  scores (linear interpolation), recall = the fraction of positives strictly above it."""
  scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
  if labels.all() or not labels.any():
    return math.nan, math.nan, math.nan
  threshold = float(np.quantile(scores[~labels], 1.0 - fpr))
  return (float(np.mean(scores[labels] > threshold)), threshold,
          float(np.mean(scores[~labels] > threshold)))


def _fpr_key(fpr: float) -> str:
  return f"recall_at_{fpr * 100:g}pct_fpr"


def _interval(point: float, draws: np.ndarray, n: int, level: float) -> dict:
  draws = draws[np.isfinite(draws)]
  if len(draws) == 0:
    return {"mean": point, "lo": math.nan, "hi": math.nan, "n": n}
  lo, hi = np.quantile(draws, [0.5 - level / 2, 0.5 + level / 2])
  return {"mean": point, "lo": float(lo), "hi": float(hi), "n": n}


def evaluate(scores, labels, *, threshold: float = 0.5, threshold_from: str = PROBABILITY,
             fprs: Sequence[float] = (0.01,), resamples: int = 1000, seed: int = 0,
             level: float = 0.95) -> dict:
  """Accuracy, AUROC and recall at each false-positive rate in ``fprs``, as estimates
  ``{"mean", "lo", "hi", "n"}``.

  Accuracy: ``scores > threshold`` against ``labels``, Wilson interval (``proportion_ci``); its
  entry records ``threshold`` and ``threshold_from`` (pass a probe's own, ``Probe.evaluate``
  does). AUROC and recall: percentile intervals from ``resamples`` bootstrap resamples of the
  rows (seeded; resamples missing a class are dropped); recall entries (``recall_at_1pct_fpr``)
  also record the threshold on the full rows and the false-positive rate it achieves.
  """
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels)
  if scores.shape != labels.shape or scores.ndim != 1:
    raise ConfigError(f"evaluate: scores {scores.shape} and labels {labels.shape} must both be "
                      "[n]")
  labels = labels.astype(np.int32)
  n = len(labels)
  accuracy = metrics.proportion_ci((scores > threshold) == (labels == 1), level)
  out = {"accuracy": {**accuracy, "threshold": float(threshold),
                      "threshold_from": threshold_from}}
  rng = np.random.default_rng(seed)
  boot = np.empty((resamples, 1 + len(fprs)))
  for r in range(resamples):  # one resample at a time: [resamples, n] indices may not fit
    i = rng.integers(0, n, n)
    boot[r] = [metrics.auroc(scores[i], labels[i]),
               *(recall_at_fpr(scores[i], labels[i], f)[0] for f in fprs)]
  out["auroc"] = _interval(metrics.auroc(scores, labels), boot[:, 0], n, level)
  for j, fpr in enumerate(fprs):
    recall, t, achieved = recall_at_fpr(scores, labels, fpr)
    out[_fpr_key(fpr)] = {**_interval(recall, boot[:, 1 + j], n, level), "threshold": t,
                          "fpr": achieved}
  return out


def random_floor(fit_acts, fit_labels, eval_acts, eval_labels, *, draws: int = 5,
                 seed: int = 0, fprs: Sequence[float] = (0.01,)) -> dict:
  """Point metrics of ``draws`` random directions (draw ``k`` seeded ``(seed, k)``, thresholds
  fitted on the fit split): for each metric the mean with a t interval over draws
  (``mean_ci``), its ``std``, and the per-draw values under ``draws``."""
  eval_acts = _acts(eval_acts, "eval_acts")
  eval_labels = _labels(eval_labels, len(eval_acts))
  rows = []
  for k in range(draws):
    probe = random_probe(fit_acts, fit_labels, seed=(seed, k))
    s = probe.scores(eval_acts)
    row = {"accuracy": float(np.mean((s > probe.threshold) == (eval_labels == 1))),
           "auroc": metrics.auroc(s, eval_labels)}
    row.update({_fpr_key(f): recall_at_fpr(s, eval_labels, f)[0] for f in fprs})
    rows.append(row)
  out = {}
  for key in rows[0]:
    values = [r[key] for r in rows]
    out[key] = {**metrics.mean_ci(values), "std": float(np.nanstd(values)), "draws": values}
  return out


# --------------------------------------------------------------------------------- sweeps

FitFn = Callable[[np.ndarray, np.ndarray, str], Probe]   # (acts, labels, layer) -> probe
# name -> (workdir, spec, tag) -> FitFn
FITTERS: Registry[Callable[..., FitFn]] = Registry("probe fitter")


@FITTERS.register("logistic")
def _logistic(workdir: str | None, spec: TrainSpec, tag: str) -> FitFn:
  if workdir is None:
    raise ConfigError("probe fitter 'logistic': needs a workdir (it trains through the core "
                      "Trainer)")
  return lambda acts, labels, layer: fit_logistic(acts, labels, workdir, spec,
                                                  tag=f"{tag}.{layer}")


FITTERS.register("mass_mean", lambda workdir, spec, tag: (
    lambda acts, labels, layer: fit_mass_mean(acts, labels)))
FITTERS.register("mass_mean_iid", lambda workdir, spec, tag: (
    lambda acts, labels, layer: fit_mass_mean(acts, labels, whitened=True)))


def fitter(kind: str, workdir: str | None = None, spec: TrainSpec = PROBE_SPEC,
           tag: str = "probe") -> FitFn:
  """A ``sweep`` fit function by name (``FITTERS``): ``logistic`` (trained as ``spec`` says,
  tag ``<tag>.<layer>`` under ``workdir``), ``mass_mean`` or ``mass_mean_iid`` (whitened)."""
  return FITTERS[kind](workdir, spec, tag)


def check_layers(available: Sequence[str], layers: Sequence[str], what: str = "activations"):
  """ConfigError, one line, for a requested layer the mapping lacks."""
  missing = [name for name in layers if name not in available]
  if missing:
    raise ConfigError(f"probe layer {missing[0]!r}: not in the {what}; valid: "
                      f"{', '.join(available) or '(none)'}")


def sweep(acts_by_layer: Mapping[str, np.ndarray], labels, fit_fn: FitFn, *,
          layers: Sequence[str] | None = None,
          eval_acts_by_layer: Mapping[str, np.ndarray] | None = None, eval_labels=None,
          eval_fraction: float = 0.3, seed: int = 0, **eval_kw) -> dict[str, dict]:
  """``{layer: evaluate(...)}`` of ``fit_fn(acts, labels, layer)`` at each of ``layers``
  (default all), scored on ``eval_acts_by_layer``/``eval_labels`` or, without them, on a seeded
  ``eval_fraction`` of the rows held out from fitting. ``eval_kw`` goes to ``evaluate``."""
  layers = list(acts_by_layer) if layers is None else list(layers)
  check_layers(list(acts_by_layer), layers)
  labels = np.asarray(labels)
  if eval_acts_by_layer is None:
    if not 0.0 < eval_fraction < 1.0:
      raise ConfigError(f"sweep eval_fraction={eval_fraction}: must be in (0, 1)")
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = len(labels) - max(1, int(round(eval_fraction * len(labels))))
    fit_rows, eval_rows = order[:cut], order[cut:]
  else:
    check_layers(list(eval_acts_by_layer), layers, "evaluation activations")
    if eval_labels is None:
      raise ConfigError("sweep: eval_acts_by_layer needs eval_labels")
  out = {}
  for layer in layers:
    acts = _acts(acts_by_layer[layer], layer)
    if len(acts) != len(labels):
      raise ConfigError(f"probe layer {layer!r}: {len(acts)} rows but {len(labels)} labels")
    if eval_acts_by_layer is None:
      fit_x, fit_y = acts[fit_rows], labels[fit_rows]
      eval_x, eval_y = acts[eval_rows], labels[eval_rows]
    else:
      fit_x, fit_y = acts, labels
      eval_x, eval_y = _acts(eval_acts_by_layer[layer], layer), np.asarray(eval_labels)
    probe = fit_fn(fit_x, fit_y, layer)
    out[layer] = probe.evaluate(eval_x, eval_y, **eval_kw)
  return out
