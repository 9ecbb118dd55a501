"""The claims a digit classifier verifies: the analogue of a statement and its negation.

CCS needs a model that processes a statement and its negation and whose activations represent
whether a statement is true. Here the input is an 8x8 digit's 64 pixels and a 10-bit claim "the
digit is one of S"; the pretraining claims are unions of coarse shape groups (their truth needs
only the coarse label), the target task's claim S+ and its negation S- split those groups: what
the model was never trained to verify.
"""

from __future__ import annotations

import numpy as np

from superalign.config.registry import table
from superalign.core.specs import InputSpec
from superalign.data.splits import Split

DIGITS = 10
INPUTS = InputSpec((64 + DIGITS,), "vector", 2)   # [pixels | claim bits] -> true / false
# The binary target tasks: digit -> its target.
TARGETS = table("target", {"ge5": lambda d: d >= 5, "parity": lambda d: d % 2 == 1})


def target_set(target: str) -> np.ndarray:
  """The claim S+ of the target task as 10 bits: digits whose target is 1."""
  return TARGETS[target](np.arange(DIGITS)).astype(np.float32)


def with_claims(images: np.ndarray, claims: np.ndarray) -> np.ndarray:
  """Inputs ``[pixels | claim bits]``: one claim per image, row for row."""
  return np.concatenate([images.reshape(len(images), -1), claims], 1).astype(np.float32)


def pretrain_claims(split: Split, coarse_map, per_image: int, seed: int) -> Split:
  """The claim-verification proxy task: ``per_image`` claims per image, each S a random union
  of coarse groups (neither empty nor all of them), true iff the image's group is in S: its
  truth needs only the coarse label."""
  rng = np.random.default_rng(seed)
  mapping = np.asarray(coarse_map, np.int32)
  groups = int(mapping.max()) + 1
  n = len(split) * per_image
  chosen = rng.integers(0, 2, (n, groups)).astype(bool)
  bad = chosen.all(1) | ~chosen.any(1)
  while bad.any():
    chosen[bad] = rng.integers(0, 2, (int(bad.sum()), groups)).astype(bool)
    bad = chosen.all(1) | ~chosen.any(1)
  claims = chosen[:, mapping].astype(np.float32)            # group set -> digit bits
  image_of = np.repeat(np.arange(len(split)), per_image)
  truth = chosen[np.arange(n), mapping[split.y[image_of]]].astype(np.int32)
  return Split(with_claims(split.x[image_of], claims), truth, split.ids[image_of])


def task_split(split: Split, target: str, negate: bool = False) -> Split:
  """The binary target task on ``split``: inputs (image, S+) (or S-, ``negate``), labels the
  target of each digit."""
  s = target_set(target)
  claims = np.broadcast_to(1.0 - s if negate else s, (len(split), DIGITS))
  return Split(with_claims(split.x, claims), TARGETS[target](split.y).astype(np.int32),
               split.ids)
