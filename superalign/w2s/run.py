"""Weak-to-strong pipeline: ``kind = "w2s"``.

Protocol (Burns et al. 2023 and its reference implementation), on disjoint splits:

1. pretrain every ladder model on a proxy task (``pretrain`` split, see ``pretrain.py``);
2. supervisor: each model trained on ground truth of ``train_a``; its soft predictions on
   ``train_b`` and ``val`` are the weak labels (saved as ``weak_labels/<model>.npz``, reused);
3. ceiling: each model trained on ground truth of ``train_b``;
4. student: for each pair weak < strong and each loss, the strong model trained on the weak
   model's labels of ``train_b``, early-stopped on agreement with weak labels of val (never on
   ground truth);
5. everything is scored against ground truth on ``test``.

Every stage trains all seeds (and, for students, all weak models and losses) of one strong model
as one stack of runs through one vmapped, jitted step (``stages.py``).
"""

from __future__ import annotations

from superalign import data as data_lib
from superalign import models
from superalign.config import schema
from superalign.core.errors import ConfigError
from superalign.core.spec import TrainSpec
from superalign.parties.classifier import Model
from superalign.w2s import losses, plots, report
from superalign.w2s.cleaning import Cleaning
from superalign.w2s.config import RULES, SPLITS  # noqa: F401 (read by the launcher)

LORA_MODELS = ("w2s.ladder",)   # the models model.lora adapts (read by the launcher)
from superalign.w2s.pretrain import Pretraining, pretrain
from superalign.w2s.stages import Ladder, Objective


def validate(config) -> None:
  """The rules across keys: the ``pretrain`` split unless there is no pretraining; the ladder's
  models; each loss's hyperparameters."""
  if config.pretrain.task != "none":
    schema.require_splits(config.data.splits, ("pretrain",))
  for name in config.w2s.ladder:
    models.validate_name(name, "w2s.ladder")
  for name, hp in config.w2s.loss_hparams.items():
    try:
      losses.get(name, **dict(hp))
    except ValueError as e:
      raise ConfigError(f"w2s.loss_hparams.{name}: {e}") from None


def run(config, workdir: str) -> dict:
  """Pretrains every ladder model, trains each as the weak supervisor and as the ceiling, then
  the students of every weak-strong pair with every loss (cleaning the weak labels as
  ``w2s.cleaning`` says); returns ``report.summarize``'s results, PGR per pair and loss."""
  w, p = config.w2s, config.pretrain
  source, splits = data_lib.load_splits(config.data)
  for name in w.ladder:
    models.check(name, source.spec)
  n = len(splits["train_b"].y)   # the kNN cleaning probe's neighbours: other train_b examples
  if w.cleaning.startswith("knn") and w.knn_k >= n:
    raise ConfigError(f"w2s.knn_k={w.knn_k}: must be below the {n} train_b examples")
  spec = TrainSpec.from_config(config)
  seeds = [spec.seed + i for i in range(w.num_seeds)]
  stage_spec = spec.with_train(early_stop_metric="target_agreement" if w.early_stop else "")
  objective = Objective(w.mode == "probe", w.l2, w.loss_hparams.to_dict())
  model = Model.from_blocks(config.model, config.data)
  ladder = Ladder(stage_spec, model, objective, source.spec, splits, workdir, seeds)
  pretraining = Pretraining(p.task, tuple(p.coarse_map), p.load_from)
  pretrain_spec = spec.with_train(p.train, early_stop_metric="")

  backbones, weak, ceiling = {}, {}, {}
  for name in w.ladder:
    backbones[name] = pretrain(pretrain_spec, ladder.model.named(name), pretraining,
                               splits.get("pretrain"), source.spec, workdir, seeds)
    weak[name] = ladder.supervise(name, backbones[name])
    ceiling[name] = ladder.ceiling(name, backbones[name])

  cleaning = Cleaning(w.cleaning, w.drop_frac, w.knn_k)
  students = {strong: ladder.students(strong, {wk: weak[wk] for wk in w.ladder[:j]},
                                      backbones[strong], w.losses, cleaning, w.s2s_rounds)
              for j, strong in enumerate(w.ladder[1:], start=1)}
  return report.summarize(splits, weak, ceiling, students, seeds, data=config.data.name,
                          ladder=w.ladder, losses=w.losses, mode=w.mode, pretrain_task=p.task,
                          cleaning=w.cleaning, s2s_rounds=w.s2s_rounds)


def plot(results: dict, out_dir: str) -> list[str]:
  """Writes ``pgr_by_loss.png`` (PGR per loss on the main pair) and
  ``accuracy_by_strong_model.png`` (test accuracy against the strong model) under ``out_dir``;
  returns their paths."""
  return [plots.pgr_by_loss(results, out_dir), plots.accuracy_by_strong_model(results, out_dir)]


summary = report.table
