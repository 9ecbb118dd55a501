"""Episodes as records for the core transformer, and the overseer's calls counted.

One position per record: each fact, then the question last (the classifier reads the last
position); the transformer reads records with bidirectional attention, so a fact can attend to the
facts it chains with. A record is a row of fields: field 0 is its kind (``FACT`` or ``QUESTION``), field
``j >= 1`` holds value ``v`` as id ``OFFSET + (j - 1) * values + v``, so each field has its own
embeddings and the transformer sums them into the position's input. Unused fields are ``PAD``.
A task's facts have a fixed count per size, so every episode of a (task, size) has the same shape:
one compiled step.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from superalign.amplification.tasks import Ask, Episodes
from superalign.core.specs import InputSpec

PAD, FACT, QUESTION, OFFSET = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class Layout:
  """Record shape of one (task, size, max difficulty)."""
  num_facts: int
  width: int          # fields per record, kind included
  values: int         # ids per value field (task tokens 0 .. values - 1)
  num_answers: int

  @property
  def spec(self) -> InputSpec:
    """The classifier's ``InputSpec``: records ``[num_facts + 1, width]``, ``num_answers`` classes,
    and a vocabulary of ``OFFSET + (width - 1) * values`` ids (each value field its own)."""
    return InputSpec((self.num_facts + 1, self.width), "records", self.num_answers,
                     vocab_size=OFFSET + (self.width - 1) * self.values)


def layout(task, max_difficulty: int) -> Layout:
  """The ``Layout`` of ``task`` up to ``max_difficulty``: its fact count and record width read off
  one sample episode, and ids per field enough for its largest token there."""
  sample = task.generate(np.random.default_rng(0), 1, 0)
  _, num_facts, fact_len = sample.facts.shape
  width = 1 + max(fact_len, sample.questions.shape[1])
  return Layout(num_facts, width, task.max_token(max_difficulty) + 1, task.num_answers())


def encode(ep: Episodes, lay: Layout) -> np.ndarray:
  """``[batch, num_facts + 1, width]`` int32 record tokens."""
  n, num_facts, fact_len = ep.facts.shape
  out = np.zeros((n, num_facts + 1, lay.width), np.int32)
  fields = OFFSET + np.arange(lay.width - 1) * lay.values
  out[:, :num_facts, 0] = FACT
  out[:, :num_facts, 1:1 + fact_len] = ep.facts + fields[:fact_len]
  q_len = ep.questions.shape[1]
  out[:, -1, 0] = QUESTION
  out[:, -1, 1:1 + q_len] = ep.questions + fields[:q_len]
  return out


@dataclasses.dataclass
class CountingAsk:
  """Wraps an ``ask`` and counts the subquestions put to it (the overseer's calls on the model)."""
  ask: Ask
  calls: int = 0

  def __call__(self, ep: Episodes, questions: np.ndarray) -> np.ndarray:
    self.calls += len(questions)
    return self.ask(ep, questions)
