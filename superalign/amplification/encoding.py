"""Episodes as token sequences for the core transformer, and the overseer's calls counted.

A sequence is the instance's facts, flattened in order, a separator, then the question: every
token shifted by ``OFFSET`` so 0 and 1 stay free for padding and the separator. A task's facts have
a fixed count per size, so every sequence of a (task, size) has the same length: one compiled step.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from superalign.amplification.tasks import Ask, Episodes

PAD, SEP, OFFSET = 0, 1, 2


def vocab_size(task, max_difficulty: int) -> int:
  return task.max_token(max_difficulty) + OFFSET + 1


def encode(ep: Episodes) -> np.ndarray:
  """``[batch, facts * fact_len + 1 + question_len]`` int32 tokens."""
  n = len(ep.questions)
  facts = ep.facts.reshape(n, -1) + OFFSET
  return np.concatenate([facts, np.full((n, 1), SEP), ep.questions + OFFSET], 1).astype(np.int32)


@dataclasses.dataclass
class CountingAsk:
  """Wraps an ``ask`` and counts the subquestions put to it (the overseer's calls on the model)."""
  ask: Ask
  calls: int = 0

  def __call__(self, ep: Episodes, questions: np.ndarray) -> np.ndarray:
    self.calls += len(questions)
    return self.ask(ep, questions)
