"""The weak-to-strong stages after pretraining: supervisor, ceiling and students of a ladder.

Every stage trains all seeds (and, for students, all weak models and losses) of one model as one
stack of runs through one vmapped, jitted step, with one objective (``make_loss``): the stage's
loss against soft targets (weak labels, or one-hot ground truth), on a linear head over the
frozen backbone (``probe``) or the whole model.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from superalign import models
from superalign.results.files import cached
from superalign.core.spec import TrainSpec
from superalign.core.specs import InputSpec
from superalign.core.trainer import Trained, num_train_steps
from superalign.data.splits import Split
from superalign.parties.classifier import Model, train_classifier
from superalign.w2s import cleaning as cleaning_lib, losses

WEAK_LABEL_SPLITS = ("train_b", "val", "test")   # the splits a weak model labels


def student_tag(strong: str, weak: Sequence[str]) -> str:
  """The stage of ``strong``'s students of ``weak``. Students learn from the weak models'
  labels, so weak checkpoints saved again (new identities, same config) name a new stage: a rerun
  never resumes students taught by the old ones."""
  taught_by = [models.label(name) for name in weak if models.checkpoint_dir(name)]
  return f"student/{models.label(strong)}" + (f"/from-{'+'.join(taught_by)}" if taught_by else "")


def _logits(model, x, probe: bool):
  if probe:  # a linear probe: no gradient reaches the (frozen) backbone
    return model.head(jax.lax.stop_gradient(model.features(x)))
  return model(x)


def make_loss(loss_fns, probe: bool, l2: float):
  """The weak-to-strong objective for stacked runs: each run picks its loss by ``loss_id``.

  Targets are ``batch['weak']`` (soft weak labels) or, for ground-truth runs, one-hot ``y``.
  ``l2`` penalizes the head's kernel (the reference students are L2-regularized probes). The
  run length comes in the batch (``num_steps``), not as a constant, so stages that differ only in
  length share one compiled step (through the persistent compilation cache).
  """

  def loss_fn(model, batch, rng, step):
    del rng
    logits = _logits(model, batch["x"], probe).astype(jnp.float32)
    target = batch["weak"] if "weak" in batch else jax.nn.one_hot(batch["y"], logits.shape[-1])
    frac = step.astype(jnp.float32) / batch["num_steps"][0]
    branches = [lambda lg, t, f=f: f(lg, t, frac) for f in loss_fns]
    loss = (branches[0](logits, target) if len(branches) == 1 else
            jax.lax.switch(batch["loss_id"][0], branches, logits, target))
    penalty = l2 * jnp.sum(model.head.kernel[...].astype(jnp.float32) ** 2)
    agree = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(target, -1))
    return loss + penalty, {"target_agreement": agree}

  return loss_fn


@dataclasses.dataclass(frozen=True)
class Objective:
  """How every stage trains: a linear head on the frozen backbone (``probe``) or the whole
  model, ``l2`` on the head's kernel, and each loss's hyperparameters over its defaults."""
  probe: bool = True
  l2: float = 0.0
  loss_hparams: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

  def loss_fn(self, loss_names: Sequence[str]):
    """The stacked runs' loss function (``make_loss``) over the losses ``loss_names``, each run
    picking its loss by ``loss_id``, with this objective's hyperparameters, probe mode and L2."""
    fns = [losses.get(n, **dict(self.loss_hparams.get(n, {}))) for n in loss_names]
    return make_loss(fns, self.probe, self.l2)


def one_hot_runs(split: Split, runs: int, num_classes: int) -> np.ndarray:
  """Ground truth as per-run targets ``[runs, N, classes]``."""
  eye = np.eye(num_classes, dtype=np.float32)
  return np.broadcast_to(eye[split.y], (runs, len(split), num_classes))


def take_runs(tree, index):
  """The runs ``index`` of a stacked tree (None stays None)."""
  return None if tree is None else jax.tree.map(lambda a: np.asarray(a)[index], tree)


def train_stack(spec: TrainSpec, model: Model, objective: Objective, train: Split,
                inputs: InputSpec, workdir: str, *, tag: str, seeds: Sequence[int],
                loss_names: Sequence[str], warm, val: Split | None = None,
                val_targets: np.ndarray | None = None, per_run: Mapping | None = None,
                run_consts: Mapping | None = None) -> Trained:
  """One stack of runs of ``model`` on ``train`` (targets: ``per_run['weak']``, else ground
  truth), early-stopped (if ``spec`` says) on each run's agreement with its ``val_targets``."""
  num_steps = num_train_steps(spec.train, len(train))
  run_consts = {**(run_consts or {}), "num_steps": np.full(len(seeds), num_steps, np.float32)}
  return train_classifier(
      spec, model, train, inputs, workdir, tag=tag, seeds=seeds,
      loss_fn=objective.loss_fn(loss_names), warm=warm,
      trainable="head" if objective.probe else None,
      evaluate=None if val_targets is None else _agreement(val, val_targets), per_run=per_run,
      run_consts=run_consts)


def _agreement(val: Split, targets: np.ndarray):
  """Each run's agreement with its own validation targets ``[runs, N, classes]``."""
  def evaluate(trained):
    return {"target_agreement": np.mean(
        trained.predict(val.x).argmax(-1) == targets.argmax(-1), axis=-1)}
  return evaluate


@dataclasses.dataclass(frozen=True)
class Ladder:
  """What the stages of one weak-to-strong run share: the stages' spec, the model settings
  (each stage names its ladder model), the objective, the data and the seeds."""
  spec: TrainSpec
  model: Model
  objective: Objective
  inputs: InputSpec
  splits: Mapping[str, Split]
  workdir: str
  seeds: Sequence[int]

  def _truth_stack(self, name: str, split: str, tag: str, warm) -> Trained:
    """``name`` trained on ground truth of ``split``, early-stopped on ``val`` accuracy."""
    val = self.splits["val"]
    return train_stack(
        self.spec, self.model.named(name), self.objective, self.splits[split], self.inputs,
        self.workdir, tag=f"{tag}/{models.label(name)}", seeds=self.seeds, loss_names=["xent"],
        warm=warm, val=val,
        val_targets=one_hot_runs(val, len(self.seeds), self.inputs.num_classes))

  def supervise(self, name: str, warm) -> dict[str, np.ndarray]:
    """Weak labels of ``name`` (``[seeds, N, classes]`` per split): trained on ``train_a``
    ground truth, predicting on the rest (``weak_labels/<name>.npz``, reused on a rerun)."""

    def compute():
      trained = self._truth_stack(name, "train_a", "supervisor", warm)
      return {k: trained.predict(self.splits[k].x).astype(np.float32) for k in WEAK_LABEL_SPLITS}

    return cached(self.workdir, f"weak_labels/{models.label(name)}", compute,
                  keys={k: (len(self.seeds), len(self.splits[k])) for k in WEAK_LABEL_SPLITS})

  def ceiling(self, name: str, warm) -> np.ndarray:
    """Test predictions ``[seeds, N, classes]`` of ``name`` trained on ``train_b`` ground truth."""
    return self._truth_stack(name, "train_b", "ceiling", warm).predict(self.splits["test"].x)

  def students(self, strong: str, weak: Mapping[str, dict], warm, loss_names: Sequence[str],
               cleaning: cleaning_lib.Cleaning, s2s_rounds: int):
    """``(runs, test predictions)`` of ``strong``'s students: one run ``(weak model, loss,
    seed index)`` for each model of ``weak`` (its weak labels), loss and seed, trained on the
    (cleaned) weak labels of ``train_b``; ``s2s_rounds`` more rounds each relabel ``train_b``
    with the last round's students."""
    S, train_b = len(self.seeds), self.splits["train_b"]
    runs = [(wk, loss, s) for wk in weak for loss in loss_names for s in range(S)]
    seed_idx = np.array([s for _, _, s in runs])
    weak_b = np.stack([weak[wk]["train_b"][s] for wk, _, s in runs])
    weak_val = np.stack([weak[wk]["val"][s] for wk, _, s in runs])
    model = self.model.named(strong)
    weak_b, keep = cleaning_lib.clean(cleaning, weak_b, train_b, self.spec, model, self.inputs,
                                      warm, self.seeds, seed_idx)
    if keep is not None:  # dropped examples get zero weight through their target
      weak_b = weak_b * keep[..., None]
    loss_ids = np.array([list(loss_names).index(loss) for _, loss, _ in runs], np.int32)
    for round_ in range(s2s_rounds + 1):
      tag = student_tag(strong, list(weak)) + (f"/round{round_}" if round_ else "")
      trained = train_stack(
          self.spec, model, self.objective, train_b, self.inputs, self.workdir, tag=tag,
          seeds=[self.seeds[s] for s in seed_idx], loss_names=list(loss_names),
          warm=take_runs(warm, seed_idx), val=self.splits["val"], val_targets=weak_val,
          per_run={"weak": weak_b}, run_consts={"loss_id": loss_ids})
      if round_ < s2s_rounds:  # strong-to-strong: the student relabels the split
        weak_b = trained.predict(train_b.x)
    return runs, trained.predict(self.splits["test"].x)
