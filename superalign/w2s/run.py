"""Weak-to-strong pipeline: ``kind = "w2s"``.

Protocol (Burns et al. 2023 and its reference implementation), on disjoint splits:

1. pretrain every ladder model on a proxy task (``pretrain`` split, see ``pretrain.py``);
2. supervisor: each model trained on ground truth of ``train_a``; its soft predictions on
   ``train_b`` and ``val`` are the weak labels (saved as ``weak_labels/<model>.npz``, reused);
3. ceiling: each model trained on ground truth of ``train_b``;
4. student: for each pair weak < strong and each loss, the strong model trained on the weak
   model's labels of ``train_b``, early-stopped on agreement with weak labels of ``val`` (never on
   ground truth);
5. everything is scored against ground truth on ``test``.

Every stage trains all seeds (and, for students, all weak models and losses) of one strong model
as one stack of runs through one vmapped, jitted step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from superalign import data as data_lib
from superalign import models
from superalign.core.errors import ConfigError
from superalign.core.trainer import Trained, num_train_steps, override
from superalign.core.files import cached
from superalign.data.splits import Split
from superalign.parties.classifier import train_classifier
from superalign.w2s import cleaning, losses, plots, report
from superalign.w2s.pretrain import TASKS, pretrain


SPLITS = ("pretrain", "train_a", "train_b", "val", "test")
MODES = ("probe", "finetune")


def validate(config) -> None:
  w = config.w2s
  for name in SPLITS:
    if name not in config.data.splits and not (name == "pretrain" and config.pretrain.task == "none"):
      raise ConfigError(f"data.splits: weak-to-strong needs a {name!r} split; has "
                        f"{', '.join(config.data.splits)}")
  if len(w.ladder) < 2:
    raise ConfigError(f"w2s.ladder={tuple(w.ladder)}: needs at least two models, weakest first")
  for name in w.ladder:
    models.validate_name(name, "w2s.ladder")
  for name in w.losses:
    if name not in losses.LOSSES:
      raise ConfigError(f"w2s.losses: unknown loss {name!r}; valid: {', '.join(losses.LOSSES)}")
  for name, hp in w.loss_hparams.items():
    try:
      losses.get(name, **dict(hp))
    except ValueError as e:
      raise ConfigError(f"w2s.loss_hparams.{name}: {e}") from None
  if w.mode not in MODES:
    raise ConfigError(f"w2s.mode={w.mode!r}: valid: {', '.join(MODES)}")
  if w.num_seeds < 1:
    raise ConfigError(f"w2s.num_seeds={w.num_seeds}: must be positive")
  if config.pretrain.task not in TASKS:
    raise ConfigError(f"pretrain.task={config.pretrain.task!r}: valid: {', '.join(TASKS)}")
  if w.cleaning not in cleaning.METHODS:
    raise ConfigError(f"w2s.cleaning={w.cleaning!r}: valid: {', '.join(cleaning.METHODS)}")
  if w.knn_k < 1:
    raise ConfigError(f"w2s.knn_k={w.knn_k}: must be positive (the cleaning probe's neighbours)")
  if not 0 <= w.drop_frac < 1:
    raise ConfigError(f"w2s.drop_frac={w.drop_frac}: must be in [0, 1)")


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


def _train_stack(config, stage_train, train: Split, spec, workdir, *, tag, model_name, seeds,
                 loss_names, warm, val_targets=None, val=None, per_run=None,
                 run_consts=None) -> Trained:
  w = config.w2s
  probe = w.mode == "probe"
  num_steps = num_train_steps(stage_train, len(train))
  run_consts = {**(run_consts or {}), "num_steps": np.full(len(seeds), num_steps, np.float32)}
  fns = [losses.get(n, **dict(w.loss_hparams.get(n, {}))) for n in loss_names]
  evaluate = None
  if val_targets is not None:  # agreement with each run's own validation targets
    def evaluate(trained):
      return {"target_agreement": np.mean(
          trained.predict(val.x).argmax(-1) == val_targets.argmax(-1), axis=-1)}
  return train_classifier(
      config, train, spec, workdir, tag=tag, model_name=model_name, train_block=stage_train,
      seeds=seeds, loss_fn=make_loss(fns, probe, w.l2), warm=warm,
      trainable="head" if probe else None, evaluate=evaluate, per_run=per_run,
      run_consts=run_consts)


def _take_runs(tree, index):
  return None if tree is None else jax.tree.map(lambda a: np.asarray(a)[index], tree)


def run(config, workdir: str) -> dict:
  w = config.w2s
  source, splits = data_lib.load_splits(config.data)
  for name in w.ladder:
    models.check(name, source.spec)
  spec = source.spec
  seeds = [config.seed + i for i in range(w.num_seeds)]
  S = len(seeds)
  stage_train = override(config.train,
                         early_stop_metric="target_agreement" if w.early_stop else "")

  backbones, weak, ceiling = {}, {}, {}
  for name in w.ladder:
    backbones[name] = pretrain(config, name, splits.get("pretrain"), spec, workdir, seeds,
                               override(config.pretrain.train, early_stop_metric=""))
    weak[name] = _supervise(config, stage_train, name, splits, spec, workdir, seeds,
                            backbones[name])
    trained = _train_stack(config, stage_train, splits["train_b"], spec, workdir,
                           tag=f"ceiling/{models.label(name)}", model_name=name, seeds=seeds,
                           loss_names=["xent"], warm=backbones[name], val=splits["val"],
                           val_targets=_one_hot_runs(splits["val"], S, spec.num_classes))
    ceiling[name] = trained.predict(splits["test"].x)

  students = {}
  for j, strong in enumerate(w.ladder[1:], start=1):
    weaker = list(w.ladder[:j])
    runs = [(wk, loss, s) for wk in weaker for loss in w.losses for s in range(S)]
    seed_idx = np.array([s for _, _, s in runs])
    weak_b = np.stack([weak[wk]["train_b"][s] for wk, _, s in runs])
    weak_val = np.stack([weak[wk]["val"][s] for wk, _, s in runs])
    train_b = splits["train_b"]
    weak_b, keep = cleaning.clean(config, weak_b, train_b, spec, backbones[strong], seeds,
                                  seed_idx, strong)
    if keep is not None:  # dropped examples get zero weight through their target
      weak_b = weak_b * keep[..., None]
    loss_ids = np.array([list(w.losses).index(loss) for _, loss, _ in runs], np.int32)
    for round_ in range(w.s2s_rounds + 1):
      tag = f"student/{models.label(strong)}" + (f"/round{round_}" if round_ else "")
      trained = _train_stack(config, stage_train, train_b, spec, workdir, tag=tag,
                             model_name=strong, seeds=[seeds[s] for s in seed_idx],
                             loss_names=list(w.losses), warm=_take_runs(backbones[strong], seed_idx),
                             val=splits["val"], val_targets=weak_val, per_run={"weak": weak_b},
                             run_consts={"loss_id": loss_ids})
      if round_ < w.s2s_rounds:  # strong-to-strong: the student relabels the split
        weak_b = trained.predict(train_b.x)
    students[strong] = (runs, trained.predict(splits["test"].x))

  return report.summarize(config, splits, weak, ceiling, students, seeds)


def plot(results: dict, out_dir: str) -> list[str]:
  return [plots.pgr_by_loss(results, out_dir), plots.accuracy_by_strong_model(results, out_dir)]


summary = report.table


def _one_hot_runs(split: Split, runs: int, num_classes: int) -> np.ndarray:
  """Ground truth as per-run validation targets ``[runs, N, classes]``."""
  eye = np.eye(num_classes, dtype=np.float32)
  return np.broadcast_to(eye[split.y], (runs, len(split), num_classes))


def _supervise(config, stage_train, name, splits, spec, workdir, seeds, warm) -> dict:
  """Weak labels of ``name``: trained on ``train_a`` ground truth, predicting on the rest
  (``weak_labels/<name>.npz``, reused on a rerun)."""

  def compute():
    trained = _train_stack(
        config, stage_train, splits["train_a"], spec, workdir, tag=f"supervisor/{models.label(name)}",
        model_name=name, seeds=seeds, loss_names=["xent"], warm=warm, val=splits["val"],
        val_targets=_one_hot_runs(splits["val"], len(seeds), spec.num_classes))
    return {k: trained.predict(splits[k].x).astype(np.float32) for k in ("train_b", "val", "test")}

  return cached(workdir, f"weak_labels/{models.label(name)}", compute)
