"""CCS as a supervisor for weak-to-strong: ``kind = "w2s_ccs"``.

Burns et al. 2022 find a truth direction in a language model's activations with no labels
(Contrast-Consistent Search, ``superalign.interp.ccs``); Burns et al. 2023 train a strong model
on a weak model's labels. Here CCS on the STRONG model's activations is the supervisor, beside
the weak model, and each is scored by the PGR of a strong student trained on its labels.

The analogue of a contrast pair on 8x8 digits read by MLPs (``claims.py``): every model (weak and
strong) is pretrained, on the disjoint ``pretrain`` split, to verify claims "the digit is one of
S" (the input is the 64 pixels and a 10-bit claim); the pretraining claims are unions of the
coarse shape groups of ``w2s`` digits (``pretrain.coarse_map``), so their truth follows from the
coarse label alone and the fine labels are never seen, as in the w2s runner's coarse
pretraining. The target task is binary (``ccs_w2s.target``: digit >= 5, or odd): its claim S+
and its negation S- both split coarse groups ({1, 7} and {4, 9} for ``ge5``), so they are
statements in the language the model learned that it was never trained to verify: what the
model "knows" about them is what CCS can find, as with a language model's zero-shot questions.

* CCS (``supervisor.py``) reads the strong model's activations at ``ccs_w2s.site`` on (image,
  S+) and (image, S-) of ``train_b`` (no labels); its sign is fixed by ``ccs_w2s.orient``;
* weak supervisor, ceiling and students are w2s's (``superalign.w2s.stages``) on the input
  (image, S+): a linear head (L2 ``ccs_w2s.l2``) on each model's frozen pretrained backbone; the
  weak model trained on ``train_a`` ground truth labels ``train_b``; the ceiling (the strong
  model on ``train_b`` ground truth: Burns et al.'s "LR ceiling") and the two students (strong,
  on weak or on CCS soft labels of ``train_b``) are one stack of runs; everything is scored on
  ``test``, PGR by ``superalign.w2s.metrics.pgr``.
"""

from __future__ import annotations

import numpy as np

from superalign import data as data_lib
from superalign import models
from superalign.config import schema
from superalign.core.spec import TrainSpec
from superalign.interp import hooks
from superalign.parties.classifier import Model
from superalign.w2s.ccs import claims as claims_lib, report, training
from superalign.w2s.ccs.claims import DIGITS, INPUTS, TARGETS
from superalign.w2s.ccs.supervisor import ORIENTS, PAIRED, supervise
from superalign.w2s.stages import one_hot_runs

SPLITS = ("pretrain", "train_a", "train_b", "val", "test")
LORA_MODELS = ("ccs_w2s.weak", "ccs_w2s.strong")   # the models model.lora adapts


def _coarse_map(value) -> bool:
  try:
    mapping = np.asarray(value)
    return (mapping.shape == (DIGITS,) and mapping.dtype.kind in "iu" and mapping.min() >= 0
            and len(np.unique(mapping)) >= 2)
  except (TypeError, ValueError):
    return False


RULES = {
    "data.name": schema.Rule(lambda v: v == "digits", "the claim construction is for digits "
                             "(10 classes, 8x8 images); valid: digits"),
    "ccs_w2s.target": schema.one_of(*TARGETS.names),
    "ccs_w2s.orient": schema.one_of(*ORIENTS.names),
    **{f"ccs_w2s.{key}": schema.COUNT
       for key in ("num_seeds", "claims_per_image", "restarts", "orient_labels")},
    "ccs_w2s.l2": schema.NON_NEGATIVE,
    "ccs_w2s.weak": schema.NAME,     # the registry's: validate
    "ccs_w2s.strong": schema.NAME,
    "pretrain.coarse_map": schema.Rule(
        _coarse_map, f"needs {DIGITS} non-negative group ids, one per digit, in at least two "
        "groups (else no claim is false)"),
}


def validate(config) -> None:
  """The two models, and the activation site of the strong one."""
  w = config.ccs_w2s
  for key in ("weak", "strong"):
    models.validate_name(w[key], f"ccs_w2s.{key}")
    models.check(w[key], INPUTS)
  shapes = hooks.model_site_shapes(w.strong, INPUTS, config.model.compute_dtype,
                                   np.zeros((2,) + INPUTS.shape, np.float32))
  hooks.check_sites([w.site], shapes, "ccs_w2s.site")


def run(config, workdir: str) -> dict:
  """Pretrains the weak and strong models to verify claims, trains the weak supervisor on
  ``train_a``, fits CCS on the strong model's contrast pairs of ``train_b``, then trains the
  ceiling and the students on the weak model's and on CCS's labels (one stack of runs per seed
  each); returns ``report.summarize``'s results."""
  w = config.ccs_w2s
  spec, model = TrainSpec.from_config(config), Model.from_blocks(config.model, config.data)
  _, splits = data_lib.load_splits(config.data)
  seeds = [spec.seed + i for i in range(w.num_seeds)]
  S = len(seeds)
  claims = claims_lib.pretrain_claims(splits["pretrain"], config.pretrain.coarse_map,
                                      w.claims_per_image, config.data.split_seed)
  pos = {k: claims_lib.task_split(splits[k], w.target) for k in ("train_a", *PAIRED)}
  neg = {k: claims_lib.task_split(splits[k], w.target, negate=True) for k in PAIRED}

  # 1. claim-verification pretraining of both models (the whole network).
  pre = training.verifiers(spec.with_train(config.pretrain.train), model, claims,
                           (w.weak, w.strong), workdir, seeds)
  strong = pre[w.strong]
  # 2. the weak supervisor: a head on its backbone, ground truth of train_a.
  weak = training.train_heads(spec, model.named(w.weak), w.l2, pos["train_a"], workdir,
                              tag=f"supervisor/{models.label(w.weak)}", seeds=seeds,
                              warm=training.backbone_runs(pre[w.weak]),
                              targets=one_hot_runs(pos["train_a"], S, 2))
  weak_b = weak.predict(pos["train_b"].x).astype(np.float32)        # [S, n, 2]
  # 3. CCS on the strong model's contrast pairs, its sign fixed by ccs_w2s.orient.
  ccs_spec = spec.with_train(config.ccs.train).with_optim(config.ccs.optim)
  ccs = supervise(strong, pos, neg, w.site, spec=ccs_spec, workdir=workdir,
                  tag=f"ccs/{models.label(w.strong)}", seeds=seeds, restarts=w.restarts,
                  orient=w.orient, val_labels=pos["val"].y[:w.orient_labels])
  # 4. ceiling and both students: one stack of 3S runs of the strong model's head.
  stack = training.train_heads(
      spec, model.named(w.strong), w.l2, pos["train_b"], workdir,
      tag=f"students/{models.label(w.strong)}", seeds=seeds * 3,
      warm=training.backbone_runs(strong, copies=3),
      targets=np.concatenate([one_hot_runs(pos["train_b"], S, 2), weak_b, ccs.labels]))
  test_acc = training.accuracy(stack, pos["test"])

  return report.summarize(
      {"data": config.data.name, "target": w.target, "weak": w.weak, "strong": w.strong,
       "site": w.site, "orient": w.orient, "seeds": seeds, "restarts": w.restarts},
      split_sizes={k: len(v) for k, v in splits.items()}, pretrain_claims=len(claims),
      claim_accuracy={name: training.accuracy(t, claims) for name, t in pre.items()},
      weak_test=training.accuracy(weak, pos["test"]), weak_b=weak_b, ccs=ccs,
      students={"ceiling": test_acc[:S], "weak_labels": test_acc[S:2 * S],
                "ccs_labels": test_acc[2 * S:]},
      y_b=pos["train_b"].y, y_test=pos["test"].y)


summary = report.table
