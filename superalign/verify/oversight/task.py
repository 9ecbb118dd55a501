"""What the certificate analyses share: the task (training spec, model, data, the backdoor to
plant), the settings of the ``certify`` block, and the registry of analyses by the names
``certify.analyses`` uses. An analysis is ``fn(task, settings, workdir) -> dict`` (its results)."""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

from superalign.config.registry import Registry
from superalign.core.spec import TrainSpec
from superalign.core.specs import InputSpec
from superalign.data.splits import Split
from superalign.parties import organisms
from superalign.parties.classifier import Model
from superalign.parties.evidence import PixelEvidence
from superalign.verify.certify import BoundOptions

ANALYSES: Registry[Callable] = Registry("certificate analysis")


@dataclasses.dataclass(frozen=True)
class Backdoor:
  """The backdoor planted in the organism (the config's ``organism`` block)."""
  trigger: organisms.Trigger
  target_class: int
  poison_fraction: float

  @classmethod
  def from_config(cls, block: Mapping) -> Backdoor:
    """From the config's ``organism`` block."""
    return cls(organisms.patch_trigger(block), int(block["target_class"]),
               float(block["poison_fraction"]))


@dataclasses.dataclass(frozen=True)
class Task:
  """What an analysis trains on: the training ``spec``, the ``model`` (the judge, the organism
  and its clean twin alike), the ``inputs`` spec, the named ``splits``, the judge's ``evidence``,
  and the ``backdoor`` to plant (None without an ``organism`` block)."""
  spec: TrainSpec
  model: Model                      # the judge, the organism and its clean twin
  inputs: InputSpec
  splits: Mapping[str, Split]
  evidence: PixelEvidence           # what the judge's players reveal
  backdoor: Backdoor | None = None


@dataclasses.dataclass(frozen=True)
class Settings:
  """The config's ``certify`` block."""
  eps: tuple[float, ...]
  domain: tuple[float, float]
  bound_methods: tuple[str, ...]
  scan_methods: tuple[str, ...]
  scan_stride: int
  judge_k: int
  judge_images: int
  backdoor_images: int
  pgd_steps: int
  options: BoundOptions

  @classmethod
  def from_config(cls, block: Mapping) -> Settings:
    """From the config's ``certify`` block."""
    return cls(eps=tuple(block["eps"]), domain=tuple(block["domain"]),
               bound_methods=tuple(block["bound_methods"]),
               scan_methods=tuple(block["scan_methods"]), scan_stride=int(block["scan_stride"]),
               judge_k=int(block["judge_k"]), judge_images=int(block["judge_images"]),
               backdoor_images=int(block["backdoor_images"]), pgd_steps=block["pgd_steps"],
               options=BoundOptions.from_config(block))
