"""CCS on the strong model's activations as a supervisor: soft labels without any label.

A contrast pair is the strong model's activations at one site on (image, S+) and on (image, S-)
(``claims.py``); CCS (``superalign.interp.ccs``) is fitted on the pairs of ``train_b`` for each
seed's model, and its probabilities ``0.5 (p+ + 1 - p-)`` are the soft labels of ``train_b``.
Which end of the direction is "true" is fixed by an orientation of ``ORIENTS``:

* ``zero_shot`` (label-free): agree with the model's own verdict on the claims, its claim head
  (the "zero-shot" of Burns et al.);
* ``labels``: a few ground-truth labels of ``val``, only for the sign;
* ``none``: the raw sign.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from superalign.config.registry import Registry
from superalign.core.spec import TrainSpec
from superalign.core.trainer import Trained
from superalign.data.splits import Split
from superalign.interp import ccs as ccs_lib, hooks

PAIRED = ("train_b", "val", "test")   # the splits whose contrast pairs are read
ORIENTS: Registry = Registry("CCS orientation")


@dataclasses.dataclass(frozen=True)
class SignEvidence:
  """What may fix one seed's sign: its pairs per split (``(x+, x-)``), the model's zero-shot
  verdict on ``train_b``'s pairs, and the first labels of ``val``."""
  pairs: Mapping[str, tuple[np.ndarray, np.ndarray]]
  zero_shot_b: np.ndarray
  val_labels: np.ndarray


@ORIENTS.register("zero_shot")
def _agree_with_zero_shot(probe: ccs_lib.CCS, e: SignEvidence) -> ccs_lib.CCS:
  return probe.orient(*e.pairs["train_b"], (e.zero_shot_b > 0.5).astype(np.int32))


@ORIENTS.register("labels")
def _agree_with_labels(probe: ccs_lib.CCS, e: SignEvidence) -> ccs_lib.CCS:
  return probe.orient(*e.pairs["val"], e.val_labels, rows=np.arange(len(e.val_labels)))


@ORIENTS.register("none")
def _raw_sign(probe: ccs_lib.CCS, e: SignEvidence) -> ccs_lib.CCS:
  del e
  return probe


@dataclasses.dataclass(frozen=True)
class Supervision:
  """CCS's soft labels of ``train_b`` ``[seeds, n, 2]``, each seed's scores (test accuracy
  oriented, raw and sign-free; ``train_b`` accuracy; loss), and the zero-shot verdicts
  ``[seeds, n]`` of ``train_b`` and ``test``."""
  labels: np.ndarray
  scores: list[dict]
  zero_shot: dict[str, np.ndarray]


def zero_shot(strong: Trained, pos: Split, neg: Split) -> np.ndarray:
  """The claim head's verdict that (image, S+) is the true half: ``0.5 (p+ + 1 - p-)``."""
  return 0.5 * (strong.predict(pos.x)[..., 1] + 1.0 - strong.predict(neg.x)[..., 1])


def supervise(strong: Trained, pos: Mapping[str, Split], neg: Mapping[str, Split], site: str,
              *, spec: TrainSpec, workdir: str, tag: str, seeds: Sequence[int], restarts: int,
              orient: str, val_labels: np.ndarray) -> Supervision:
  """CCS on each seed's contrast pairs at ``site`` of the stacked ``strong`` model, fitted on
  ``train_b`` (``restarts`` runs trained as ``spec`` says, checkpoints ``<tag>/seed<seed>``),
  its sign fixed by ``orient``; scored against the labels of ``pos``."""
  acts = {k: (hooks.activations(strong, pos[k].x, [site])[site],
              hooks.activations(strong, neg[k].x, [site])[site]) for k in PAIRED}
  verdicts = {k: zero_shot(strong, pos[k], neg[k]) for k in ("train_b", "test")}
  y_b, y_test = pos["train_b"].y, pos["test"].y
  labels, scores = [], []
  for s, seed in enumerate(seeds):
    pairs = {k: (acts[k][0][s], acts[k][1][s]) for k in PAIRED}
    probe = ccs_lib.fit_ccs(*pairs["train_b"], workdir, spec, restarts=restarts,
                            tag=f"{tag}/seed{seed}", seed=seed)
    raw_accuracy = probe.accuracy(*pairs["test"], y_test)
    probe = ORIENTS[orient](probe, SignEvidence(pairs, verdicts["train_b"][s], val_labels))
    p = probe.probs(*pairs["train_b"])
    labels.append(np.stack([1.0 - p, p], -1).astype(np.float32))
    scores.append({"accuracy": probe.accuracy(*pairs["test"], y_test),
                   "raw_accuracy": raw_accuracy,
                   "sign_free_accuracy": probe.accuracy(*pairs["test"], y_test, sign_free=True),
                   "train_b_accuracy": probe.accuracy(*pairs["train_b"], y_b),
                   "loss": probe.loss})
  return Supervision(np.stack(labels), scores, verdicts)
