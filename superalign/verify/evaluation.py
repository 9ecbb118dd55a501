"""Clean, PGD and verified error of a trained classifier at every radius, on the test split.

The per-neuron bound methods (CROWN, alpha-CROWN: their intermediate bounds cost a backward
pass per neuron) run on the first ``crown_examples`` of the ``test_examples`` images, in batches
of ``crown_batch``; with ``max_unstable`` set, ``crown_exact_share`` is the share of those images
on which no layer has more IBP-unstable neurons than CROWN refines (so it is exact CROWN there).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from superalign.results.estimates import proportion_ci
from superalign.core.trainer import Trained
from superalign.data.splits import Split
from superalign.verify import bounds, certify


def first(limit: int, n: int) -> int:
  """How many of ``n`` items a ``limit`` keeps (0: all)."""
  return n if limit == 0 else min(n, int(limit))


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """What is measured (the config's ``verify`` block)."""
  eps: tuple[float, ...]
  bound_methods: tuple[str, ...]
  domain: tuple[float, float]
  test_examples: int
  crown_examples: int
  pgd_steps: int
  options: certify.BoundOptions

  @classmethod
  def from_config(cls, block: Mapping) -> Evaluation:
    """From the config's ``verify`` block."""
    return cls(eps=tuple(block["eps"]), bound_methods=tuple(block["bound_methods"]),
               domain=tuple(block["domain"]), test_examples=int(block["test_examples"]),
               crown_examples=int(block["crown_examples"]), pgd_steps=block["pgd_steps"],
               options=certify.BoundOptions.from_config(block))


def errors(trained: Trained, test: Split, setup: Evaluation, num_classes: int) -> dict:
  """Clean, PGD and verified error (each a proportion with its CI) at every radius, on the first
  ``test_examples`` test images (0: all)."""
  n = first(setup.test_examples, len(test.x))
  x, y = test.x[:n].astype(np.float32), test.y[:n]
  clean_wrong = trained.predict(x).argmax(-1) != y
  spec = certify.margin_spec(y, num_classes)
  n_linear = first(setup.crown_examples, len(x))
  per_neuron = [m for m in setup.bound_methods if bounds.METHODS[m].per_neuron]
  max_unstable = setup.options.max_unstable
  out = {}
  for eps in setup.eps:
    lo, hi = certify.ball(x, eps, setup.domain)
    row = {"clean_error": proportion_ci(clean_wrong),
           "pgd_error": proportion_ci(certify.pgd_fooled(trained, x, y, lo, hi,
                                                         steps=setup.pgd_steps)),
           "verified_error": {}}
    for method in setup.bound_methods:
      n = n_linear if method in per_neuron else len(x)
      ok = certify.certified(trained, method, lo[:n], hi[:n], spec[:n],
                             **setup.options.kwargs(method))
      row["verified_error"][method] = proportion_ci(~ok)
    if max_unstable and per_neuron:
      counts = certify.unstable_counts(trained, lo[:n_linear], hi[:n_linear])
      row["crown_exact_share"] = float((counts <= max_unstable).all(-1).mean())
    out[f"{eps:g}"] = row
  return out
