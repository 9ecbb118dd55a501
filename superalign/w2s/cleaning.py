"""Weak-label cleaning from EleutherAI's weak-to-strong follow-up, one method name each.

Probes read the strong model's pretrained activations (its backbone features) on ``train_b``:

* ``knn_relabel``: each weak label becomes the mean weak label of its k nearest neighbours
  (cosine, itself excluded): errors that disagree with their neighbourhood are smoothed away;
* ``logreg_relabel``: each weak label becomes the prediction of a logistic-regression probe
  fitted on the *other* half of ``train_b`` (2-fold cross-fitting, so no example labels itself);
* ``knn_drop`` / ``logreg_drop``: keep the weak labels but drop the ``drop_frac`` of examples
  whose weak label the probe finds least plausible (lowest probe probability of the weak argmax).

Nothing here looks at ground truth.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from superalign import models
from superalign.core import steps
from superalign.core.rng import numpy_rng
from superalign.core.spec import TrainSpec
from superalign.core.specs import InputSpec
from superalign.data.splits import Split
from superalign.parties.classifier import Model, trainer


@dataclasses.dataclass(frozen=True)
class Cleaning:
  """A method (above; ``w2s.config.CLEANING`` lists them), the share of examples a ``*_drop``
  method drops, and the neighbours of the ``knn_*`` probe."""
  method: str = "none"
  drop_frac: float = 0.1
  knn_k: int = 10


def backbone_features(spec: TrainSpec, model: Model, inputs: InputSpec, warm: dict | None, seeds,
                      x: np.ndarray) -> np.ndarray:
  """``[seeds, N, features]``: ``model``'s features on ``x`` with each seed's pretrained
  backbone (stacked like ``warm``)."""
  init = trainer(spec, model, inputs, "", tag=f"features/{models.label(model.name)}",
                 seeds=[int(s) for s in seeds], warm=warm).init()
  return init.apply(x, steps.features_fn)


def knn_probe(features: np.ndarray, weak: np.ndarray, k: int) -> np.ndarray:
  """``[N, C]``: each row's mean weak label ``weak`` ``[N, C]`` over its ``k`` nearest
  neighbours by cosine similarity of ``features`` ``[N, features]``, itself excluded."""
  f = features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-8)
  sim = f @ f.T
  np.fill_diagonal(sim, -np.inf)
  nearest = np.argpartition(-sim, k, axis=1)[:, :k]
  return weak[nearest].mean(axis=1)


def logreg_probe(features: np.ndarray, weak: np.ndarray, seed: int) -> np.ndarray:
  """``[N, C]``: each row's class probabilities from a logistic regression on ``features``
  ``[N, features]`` fitted to the weak argmax of ``weak`` ``[N, C]`` on the other half of the rows
  (2-fold cross-fitting, halves drawn by ``seed``); classes absent from a half's fit get 0."""
  from sklearn.linear_model import LogisticRegression
  labels = weak.argmax(-1)
  order = numpy_rng(seed, "w2s/cleaning/folds").permutation(len(labels))
  folds = (order[: len(order) // 2], order[len(order) // 2:])
  out = np.zeros_like(weak)
  for fit, predict in (folds, folds[::-1]):
    probe = LogisticRegression(C=1.0, max_iter=500)
    probe.fit(features[fit], labels[fit])
    out[np.ix_(predict, probe.classes_)] = probe.predict_proba(features[predict])
  return out


def clean(cleaning: Cleaning, weak_b: np.ndarray, train_b: Split, spec: TrainSpec, strong: Model,
          inputs: InputSpec, warm, seeds, seed_idx):
  """Cleaned weak labels ``[runs, N, C]`` and a keep mask ``[runs, N]`` (None: keep all); run
  ``r`` uses seed ``seeds[seed_idx[r]]``'s backbone of the ``strong`` model (``warm`` is stacked
  over ``seeds``)."""
  method = cleaning.method
  if method == "none":
    return weak_b, None
  features = backbone_features(spec, strong, inputs, warm, seeds, train_b.x)
  out = np.empty_like(weak_b)
  keep = np.ones(weak_b.shape[:2], np.float32)
  for r, s in enumerate(seed_idx):
    feats = features[s]
    probe = (knn_probe(feats, weak_b[r], cleaning.knn_k) if method.startswith("knn")
             else logreg_probe(feats, weak_b[r], seeds[s]))
    if method.endswith("relabel"):
      out[r] = probe
    else:
      out[r] = weak_b[r]
      plausibility = probe[np.arange(len(probe)), weak_b[r].argmax(-1)]
      drop = np.argsort(plausibility)[: int(cleaning.drop_frac * len(plausibility))]
      keep[r, drop] = 0.0
  return out, (keep if method.endswith("drop") else None)
