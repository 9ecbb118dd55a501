"""The parties of sandwiching, trained, and their answers on the items they are scored on.

The non-expert is debate's sparse-pixel judge: it answers from one fixed draw of ``k`` pixels of
each item. The assistant is a strong classifier that sees the whole image; what it answers is
what it believes. The expert is the ground truth. A trained liar is an assistant taught to lie
on one class (``parties.organisms``), the lie in its weights.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from superalign.core.rng import stream_seed
from superalign.core.spec import TrainSpec
from superalign.core.specs import InputSpec
from superalign.core.trainer import Trained
from superalign.data.splits import Split
from superalign.parties import organisms
from superalign.parties.classifier import Model, train_classifier
from superalign.parties.judge import sparse_view, train_judge


def stage(spec: TrainSpec, steps: int) -> TrainSpec:
  """``spec`` for a model trained ``steps`` steps, evaluated and saved four times."""
  every = max(steps // 4, 1)
  return spec.with_train(num_steps=steps, eval_every=every, checkpoint_every=every,
                         log_every=min(spec.train.log_every, every))


def first(split: Split, limit: int) -> Split:
  """The first ``limit`` items of ``split`` (0: all)."""
  n = min(limit, len(split)) if limit else len(split)
  return dataclasses.replace(split, x=split.x[:n], y=split.y[:n], ids=split.ids[:n])


@dataclasses.dataclass(frozen=True)
class Answers:
  """Both parties' answer probabilities ``[items, classes]`` on a set of items, and the truth."""
  y: np.ndarray
  nonexpert: np.ndarray    # on its k pixels
  assistant: np.ndarray    # on the whole items

  @property
  def belief(self) -> np.ndarray:
    """What the assistant believes (and claims when honest)."""
    return self.assistant.argmax(1)

  @property
  def confidence(self) -> np.ndarray:
    """``[items]`` the assistant's probability of its belief (its stated confidence)."""
    return self.assistant.max(1)

  @property
  def alone(self) -> np.ndarray:
    """Per item: the non-expert alone is right."""
    return self.nonexpert.argmax(1) == self.y


@dataclasses.dataclass(frozen=True)
class Panel:
  """The trained parties of sandwiching and their answers: the non-expert (``judge``), the
  ``assistant``, and both parties' ``Answers`` on the scored test items and on the
  expert-labelled validation items."""
  judge: Trained           # the non-expert
  assistant: Trained
  test: Answers            # the scored items
  val: Answers             # expert-labelled items (the advice combiner learns on them)


def train_panel(spec: TrainSpec, judge: Model, assistant_spec: TrainSpec, assistant: Model,
                evidence, splits: dict[str, Split], test: Split, inputs: InputSpec, k: int,
                workdir: str) -> Panel:
  """Trains the non-expert (``judge``, for ``k`` pixels) and the ``assistant``, and records their
  answers on ``test`` and on the validation split (sparse views from streams
  ``sandwich/nonexpert_view`` and ``sandwich/val_view`` of ``spec.seed``)."""
  train, val = splits["train"], splits["val"]
  nonexpert = train_judge(spec, judge, evidence, train, val, inputs, k, workdir)
  strong = train_classifier(assistant_spec, assistant, train, inputs, workdir, tag="assistant",
                            val=val)
  view = lambda split, name: sparse_view(evidence, split, k,
                                         seed=stream_seed(spec.seed, f"sandwich/{name}")).x
  return Panel(
      nonexpert, strong,
      test=Answers(test.y, nonexpert.predict(view(test, "nonexpert_view")), strong.predict(test.x)),
      val=Answers(val.y, nonexpert.predict(view(val, "val_view")), strong.predict(val.x)))


def trained_liar(spec: TrainSpec, model: Model, splits: dict[str, Split], test: Split,
                 inputs: InputSpec, lie_class: int, workdir: str
                 ) -> tuple[organisms.TrainedAssistant, dict]:
  """An assistant trained to answer the next class on ``lie_class`` items, as a sandwiching
  assistant on ``test``, and how it lies there (``organisms.liar_metrics``)."""
  lie_to = (lie_class + 1) % inputs.num_classes
  liar = organisms.train_liar(spec, model, splits["train"], splits["val"], inputs, workdir, "liar",
                              lie_class, lie_to)
  return (organisms.TrainedAssistant.from_model(liar, test.x),
          {"lie_class": lie_class, "lie_to": lie_to,
           **organisms.liar_metrics(liar, test, lie_class, lie_to)})
