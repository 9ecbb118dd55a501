"""Problem sets and the policy's pools of checked solutions to them.

Every problem set has its own random stream (``process/<kind>/<k>``) and every pool its own
sampling stream and cache file (``samples/<tag>_<kind>_<k>``), so a resumed run reads the pools
it drew, and adding a pool moves none of the others.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from superalign.results.files import cached
from superalign.core.rng import stream_seed
from superalign.core.trainer import Trained
from superalign.process import chains, policy as policy_lib


class Pool:
  """``per`` solutions of each of one difficulty's problems, checked: the token sequences the
  reward models read (``x``) and what the checker found (``checked``), a row per solution."""

  def __init__(self, problems: chains.Problems, solution: np.ndarray, length: int, per: int):
    self.problems, self.per = problems, per
    many = problems.repeat(per)
    self.checked = chains.check(many, solution)
    self.x = chains.sequences(chains.prompts(many), solution, length)

  def grid(self, values: np.ndarray) -> np.ndarray:
    """Per-solution values as ``[problems, per]``."""
    return np.asarray(values).reshape(len(self.problems), self.per)

  def field(self, name: str) -> np.ndarray:
    """A field of ``checked`` (``correct``, ``trace_error``, ``answer``) as ``[problems, per]``."""
    return self.grid(getattr(self.checked, name))


def stacked(pools: dict[int, Pool], ks, name: str) -> np.ndarray:
  """``Pool.field`` over the difficulties ``ks``, their problems one after another."""
  return np.concatenate([pools[k].field(name) for k in ks])


def padded_labels(checked: chains.Checked, terminators: int) -> np.ndarray:
  """PRM800K's labels ``[n, terminators]``: a difficulty's ``k + 1`` entries, then -1."""
  labels = chains.process_labels(checked)
  return np.pad(labels, ((0, 0), (0, terminators - labels.shape[1])), constant_values=-1)


@dataclasses.dataclass(frozen=True)
class Draws:
  """The run's problem sets and pools: ``modulus``, sequences of ``length`` positions, samples
  cached under ``workdir``."""
  seed: int
  modulus: int
  length: int
  workdir: str

  def problems(self, kind: str, k: int, n: int) -> chains.Problems:
    """``n`` problems of difficulty ``k`` from the set ``kind`` (its own stream
    ``process/<kind>/<k>``: the same problems on every call)."""
    return chains.sample(n, k, self.modulus, stream_seed(self.seed, f"process/{kind}/{k}"))

  def pool(self, policy: Trained, tag: str, kind: str, k: int, n: int, per: int) -> Pool:
    """``per`` samples of ``policy`` (named ``tag``) on ``n`` problems of the set ``kind``."""
    problems = self.problems(kind, k, n)
    stream = stream_seed(self.seed, f"process/sample/{tag}/{kind}/{k}")
    solution = cached(self.workdir, f"samples/{tag}_{kind}_{k}", lambda: {
        "tokens": policy_lib.sample(policy, problems, per, stream)}, keys=("tokens",))["tokens"]
    return Pool(problems, solution, self.length, per)

  def pools(self, policy: Trained, tag: str, kind: str, ks, n: int, per: int
            ) -> dict[int, Pool]:
    """``{k: Pool}``: ``pool`` for each difficulty in ``ks``."""
    return {k: self.pool(policy, tag, kind, k, n, per) for k in ks}
