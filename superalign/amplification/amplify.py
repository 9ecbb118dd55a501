"""Amplify(H, model) and its supervised baseline, both trained by the core engine.

Each step draws fresh episodes at the curriculum's difficulty. The supervised baseline trains on
their ground-truth answers. Amplification never reads them: H decomposes each question, answers
the subquestions that reduce to a fact itself and asks the model being trained the rest (one
batched forward pass per round; with ``optim.ema_decay > 0`` it asks the model's moving-average
teacher instead), and the answers H combines are the targets the model is distilled on. The
curriculum raises the difficulty when the model agrees with its targets (the train step's
``accuracy``) on at least ``threshold`` of the last ``window`` steps; it needs no label either.
Progress is measured on a held-out set of episodes at the final difficulty, against ground truth.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax.numpy as jnp
import numpy as np

from superalign.amplification import encoding
from superalign.amplification.tasks import Episodes, ask_with_facts
from superalign.core import optim
from superalign.core.rng import numpy_rng
from superalign.core.spec import TrainSpec
from superalign.core.trainer import Trained
from superalign.parties.classifier import Model, trainer


@dataclasses.dataclass(frozen=True)
class Schedule:
  """One task's curriculum and test set: from ``start_difficulty`` up to ``max_difficulty``,
  raised when the agreement over the last ``window`` steps reaches ``threshold``; ``num_test``
  held-out episodes at ``max_difficulty``."""
  start_difficulty: int
  max_difficulty: int
  threshold: float
  window: int
  num_test: int


def task_spec(spec: TrainSpec, num_steps: int = 0, batch_size: int = 0) -> TrainSpec:
  """``spec`` with a task's own step budget and batch where they are nonzero."""
  return spec.with_train(num_steps=int(num_steps) or spec.train.num_steps,
                         batch_size=int(batch_size) or spec.train.batch_size)


def test_set(task, schedule: Schedule, seed: int) -> Episodes:
  """The held-out episodes at the task's top difficulty (the same for both modes)."""
  return task.generate(numpy_rng(seed, f"amplification/{task.name}/test"),
                       int(schedule.num_test), int(schedule.max_difficulty))


def no_model_accuracy(task, test: Episodes) -> float:
  """Accuracy without a model: H's answer from the facts where it has one, else the most common
  other answer. A run at this line learned nothing a lookup table would not give."""
  known, answers = task.from_facts(blind(test))
  rest = test.answers[~known]
  common = np.bincount(rest).argmax() if len(rest) else 0
  return float(np.mean(np.where(known, answers, common) == test.answers))


def answer_fn(state, batch) -> np.ndarray:
  """The model's answer (argmax class) for each episode."""
  return jnp.argmax(state.model()(batch["x"]), axis=-1)


def teacher_answer_fn(state, batch) -> np.ndarray:
  """The answer of the model's moving average (kept when ``optim.ema_decay > 0``): a teacher
  that changes slowly, so targets built from its answers do not chase the model's last step."""
  return jnp.argmax(state.model(optim.ema_params(state.opt_state))(batch["x"]), axis=-1)


class Curriculum:
  """Difficulty level, raised on agreement with targets; the label and H-call ledger.

  A ``core.loop.HostState``: saved with each checkpoint, so a resumed run draws the same batches.
  """

  def __init__(self, start: int, top: int, threshold: float, window: int):
    self.level, self.top = start, top
    self.threshold, self.window = threshold, window
    self.recent: list[float] = []
    self.raised_at: list[int] = []      # step at which each level after ``start`` began
    self.counts = {"examples": 0, "labels": 0, "h_calls": 0, "subquestions": 0}

  def observe(self, step: int, metrics: Mapping[str, float]) -> None:
    """Records one step's ``accuracy`` (the model's agreement with its targets) and raises the
    level, up to ``top``, when the mean over the last ``window`` steps reaches ``threshold``."""
    self.recent = (self.recent + [metrics["accuracy"]])[-self.window:]
    if (self.level < self.top and len(self.recent) == self.window
        and np.mean(self.recent) >= self.threshold):
      self.level += 1
      self.raised_at.append(step)
      self.recent = []

  def state_dict(self) -> dict:
    """The level, the recent agreements, the steps each level began at and the counts, as JSON for
    the checkpoint."""
    return {"level": self.level, "recent": self.recent, "raised_at": self.raised_at,
            "counts": dict(self.counts)}

  def load_state_dict(self, saved: dict) -> None:
    """Restores what ``state_dict`` saved (nothing when ``saved`` is empty)."""
    if saved:
      self.level, self.recent = saved["level"], list(saved["recent"])
      self.raised_at, self.counts = list(saved["raised_at"]), dict(saved["counts"])


def blind(ep: Episodes) -> Episodes:
  """What H may see: the facts and the question, not the answer or the generator's state."""
  return dataclasses.replace(ep.asking(ep.questions), state={})


def model_ask(trained: Trained, lay: encoding.Layout, teacher: bool = False):
  """``ask(episodes, subquestions)`` answered by the model (or its moving-average teacher) in
  one batched forward pass."""
  fn = teacher_answer_fn if teacher else answer_fn
  return lambda ep, questions: trained.apply(encoding.encode(ep.asking(questions), lay), fn)


@dataclasses.dataclass
class Result:
  """What ``train`` returns: the ``trained`` model, its ``curriculum`` (final level, label and
  H-call counts), the last evaluation's ``test_accuracy`` on the held-out episodes (NaN if none
  ran), the ``no_model_accuracy`` baseline on the same set, the episodes per step and the evaluation
  ``history``."""
  trained: Trained
  curriculum: Curriculum
  test_accuracy: float
  no_model_accuracy: float  # the same test set without a model (``no_model_accuracy``)
  batch_size: int           # episodes per step
  history: list[dict]     # per evaluation: step, accuracy, level, labels, h_calls, subquestions


def train(spec: TrainSpec, model: Model, task, mode: str, schedule: Schedule, workdir: str,
          *, tag: str) -> Result:
  """Trains ``model`` on ``task`` by amplification or supervision (``mode``): ``spec.train``'s
  steps and batch of episodes; H asks the moving-average teacher when ``spec.optim`` keeps one."""
  top = int(schedule.max_difficulty)
  lay = encoding.layout(task, top)
  curriculum = Curriculum(int(schedule.start_difficulty), top, float(schedule.threshold),
                          int(schedule.window))
  test = test_set(task, schedule, spec.seed)
  test_x = encoding.encode(test, lay)
  batch_size = int(spec.train.batch_size)
  teacher = float(spec.optim.ema_decay) > 0

  def batch_fn(step: int, trained: Trained) -> dict:
    ep = task.generate(numpy_rng(spec.seed, f"amplification/{task.name}/episodes", step),
                       batch_size, curriculum.level)
    counts = curriculum.counts
    if mode == "supervised":
      targets = ep.answers
      counts["labels"] += len(ep)
    else:
      ask = encoding.CountingAsk(model_ask(trained, lay, teacher))
      targets = task.overseer(blind(ep), ask_with_facts(task, ask))
      counts["h_calls"] += len(ep)
      counts["subquestions"] += ask.calls
    counts["examples"] += len(ep)
    return {"x": encoding.encode(ep, lay), "y": targets.astype(np.int32)}

  def evaluate(trained: Trained) -> dict:
    accuracy = float(np.mean(trained.apply(test_x, answer_fn) == test.answers))
    return {"accuracy": accuracy, "level": curriculum.level, **curriculum.counts}

  trained = trainer(spec, model, lay.spec, workdir, tag=tag,
                    host=curriculum).fit(batch_fn=batch_fn, evaluate=evaluate)
  history = trained.fit.history
  return Result(trained, curriculum, history[-1]["accuracy"] if history else float("nan"),
                no_model_accuracy(task, test), batch_size, history)
