"""Data sets bundled with scikit-learn (no download): digits and breast_cancer."""

from __future__ import annotations

import numpy as np

from superalign.core.specs import InputSpec
from superalign.data.source import Source


def digits() -> Source:
  """1,797 8x8 grey-scale digits, 10 classes; pixels scaled from 0..16 to [0, 1]."""
  from sklearn.datasets import load_digits
  d = load_digits()
  x = (d.images / 16.0).astype(np.float32)[..., None]
  return Source("digits", x, d.target.astype(np.int32), InputSpec((8, 8, 1), "image", 10))


def breast_cancer() -> Source:
  """569 tumours x 30 features, binary (malignant 0 / benign 1); standardized after splitting."""
  from sklearn.datasets import load_breast_cancer
  d = load_breast_cancer()
  return Source("breast_cancer", d.data.astype(np.float32), d.target.astype(np.int32),
                InputSpec((30,), "vector", 2))
