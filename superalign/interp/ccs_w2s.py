"""CCS as a supervisor for weak-to-strong: ``kind = "interp_ccs_w2s"``.

Burns et al. 2022 find a truth direction in a language model's activations with no labels
(Contrast-Consistent Search, ``ccs.py``); Burns et al. 2023 train a strong model on a weak
model's labels. Here CCS on the STRONG model's activations is the supervisor, beside the weak
model, and each is scored by the PGR of a strong student trained on its labels.

The analogue of a contrast pair on 8x8 digits read by MLPs. CCS needs a model that processes a
statement and its negation and whose activations represent whether a statement is true. A
language model gets that from pretraining on text; here every model (weak and strong) is
pretrained, on the disjoint ``pretrain`` split, to verify claims "the digit is one of S": the
input is the 64 pixels and a 10-bit claim (S as a set of digits), the target whether the claim
is true. The pretraining claims are unions of the coarse shape groups of ``w2s`` digits
(``pretrain.coarse_map``), so their truth follows from the coarse label alone and the fine
labels are never seen, as in the w2s runner's coarse pretraining. The target task is binary
(``ccs_w2s.target``: digit >= 5, or odd): its claim S+ = {digits with target 1} and its
negation S- = the complement both split coarse groups ({1, 7} and {4, 9} for ``ge5``), so they
are statements in the language the model learned that it was never trained to verify: what the
model "knows" about them is what CCS can find, as with a language model's zero-shot questions.

* contrast pair: ``x+`` = activations at ``ccs_w2s.site`` on (image, S+), ``x-`` on (image, S-),
  normalized per side (``ccs.normalize``), which removes the claim's own constant offset;
* CCS is fitted on the pairs of ``train_b`` (no labels), its probabilities ``0.5 (p+ + 1 - p-)``
  are the soft labels of ``train_b``; the direction's sign is fixed by ``ccs_w2s.orient``:
  ``zero_shot`` (default, label-free) agrees with the pretrained model's own verdict on the
  claims (its claim head: the "zero-shot" of Burns et al.), ``labels`` uses
  ``orient_labels`` ground-truth labels of ``val``, ``none`` keeps the raw sign. No target-task
  label enters CCS unless ``orient = "labels"``, and then only for the sign;
* weak supervisor, ceiling and students are the w2s runner's, on the input (image, S+): a
  linear head (L2 ``ccs_w2s.l2``) on each model's frozen pretrained backbone; the weak model
  trained on ``train_a`` ground truth labels ``train_b``; the ceiling (the strong model on
  ``train_b`` ground truth: a logistic regression on its features, Burns et al.'s "LR
  ceiling") and the two students (strong, on weak or on CCS soft labels of ``train_b``) are one
  stack of runs; everything is scored on ``test``.

PGR = (student - weak) / (ceiling - weak) per seed, NaN (flagged) without a gap, exactly
``superalign.w2s.metrics.pgr``; it is restated here because the house plan lets ``interp``
import only ``supervised`` among the protocol rooms (tests/test_layering.py), and so is the
soft cross-entropy the w2s ``xent`` loss computes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from superalign import data as data_lib
from superalign import models
from superalign.core import mesh as mesh_lib
from superalign.core.errors import ConfigError
from superalign.core.metrics import mean_ci
from superalign.core.specs import InputSpec
from superalign.data.splits import Split
from superalign.interp import ccs as ccs_lib
from superalign.interp import hooks
from superalign.parties.classifier import train_classifier

SPLITS = ("pretrain", "train_a", "train_b", "val", "test")
TARGETS = {"ge5": lambda d: d >= 5, "parity": lambda d: d % 2 == 1}
ORIENTS = ("zero_shot", "labels", "none")
DIGITS = 10
MIN_GAP = 1e-6   # as superalign.w2s.metrics.MIN_GAP

# Burns et al. 2022, mean accuracy (%) over 10 data sets, excluding T0 (REFERENCES.md).
PUBLISHED = {"source": "Burns et al. 2022, mean accuracy over 10 data sets (excluding T0)",
             "zero_shot": 62.8, "calibrated_zero_shot": 67.2, "ccs": 71.2, "lr_ceiling": 83.7}


# ------------------------------------------------------------------------------- validation

def _spec() -> InputSpec:
  return InputSpec((64 + DIGITS,), "vector", 2)


def validate(config) -> None:
  w = config.ccs_w2s
  for name in SPLITS:
    if name not in config.data.splits:
      raise ConfigError(f"data.splits: CCS weak-to-strong needs a {name!r} split; has "
                        f"{', '.join(config.data.splits)}")
  if config.data.name != "digits":
    raise ConfigError(f"data.name={config.data.name!r}: the claim construction is for digits "
                      "(10 classes, 8x8 images); valid: digits")
  if w.target not in TARGETS:
    raise ConfigError(f"ccs_w2s.target={w.target!r}: valid: {', '.join(TARGETS)}")
  if w.orient not in ORIENTS:
    raise ConfigError(f"ccs_w2s.orient={w.orient!r}: valid: {', '.join(ORIENTS)}")
  for key in ("num_seeds", "claims_per_image", "restarts", "orient_labels"):
    if not isinstance(w[key], int) or w[key] < 1:
      raise ConfigError(f"ccs_w2s.{key}={w[key]!r}: must be a positive integer")
  if not w.l2 >= 0:
    raise ConfigError(f"ccs_w2s.l2={w.l2}: must be zero or positive")
  mapping = np.asarray(config.pretrain.coarse_map)
  if mapping.shape != (DIGITS,) or mapping.min() < 0:
    raise ConfigError(f"pretrain.coarse_map={tuple(config.pretrain.coarse_map)}: needs "
                      f"{DIGITS} non-negative group ids, one per digit")
  if len(np.unique(mapping)) < 2:
    raise ConfigError("pretrain.coarse_map: needs at least two groups for a claim to be false")
  for key in ("weak", "strong"):
    models.validate_name(w[key], f"ccs_w2s.{key}")
    models.check(w[key], _spec())
  model = models.builder(w.strong, _spec())(nnx.Rngs(0))
  shapes = hooks.site_shapes(model, jax.ShapeDtypeStruct((1, 64 + DIGITS), jnp.float32))
  hooks.check_sites([w.site], shapes, "ccs_w2s.site")


# ---------------------------------------------------------------------------------- claims

def target_set(target: str) -> np.ndarray:
  """The claim S+ of the target task as 10 bits: digits whose target is 1."""
  return TARGETS[target](np.arange(DIGITS)).astype(np.float32)


def with_claims(images: np.ndarray, claims: np.ndarray) -> np.ndarray:
  """Inputs ``[pixels | claim bits]``: one claim per image, row for row."""
  return np.concatenate([images.reshape(len(images), -1), claims], 1).astype(np.float32)


def pretrain_claims(split: Split, coarse_map, per_image: int, seed: int) -> Split:
  """The claim-verification proxy task: ``per_image`` claims per image, each S a random union
  of coarse groups (neither empty nor all of them), true iff the image's group is in S: its
  truth needs only the coarse label."""
  rng = np.random.default_rng(seed)
  mapping = np.asarray(coarse_map, np.int32)
  groups = int(mapping.max()) + 1
  n = len(split) * per_image
  chosen = rng.integers(0, 2, (n, groups)).astype(bool)
  bad = chosen.all(1) | ~chosen.any(1)
  while bad.any():
    chosen[bad] = rng.integers(0, 2, (int(bad.sum()), groups)).astype(bool)
    bad = chosen.all(1) | ~chosen.any(1)
  claims = chosen[:, mapping].astype(np.float32)            # group set -> digit bits
  image_of = np.repeat(np.arange(len(split)), per_image)
  truth = chosen[np.arange(n), mapping[split.y[image_of]]].astype(np.int32)
  return Split(with_claims(split.x[image_of], claims), truth, split.ids[image_of])


def task_split(split: Split, target: str, negate: bool = False) -> Split:
  """The binary target task on ``split``: inputs (image, S+) (or S-, ``negate``), labels the
  target of each digit."""
  s = target_set(target)
  claims = np.broadcast_to(1.0 - s if negate else s, (len(split), DIGITS))
  return Split(with_claims(split.x, claims), TARGETS[target](split.y).astype(np.int32),
               split.ids)


# ------------------------------------------------------------------------------- training

def _backbone(params) -> dict:
  """Every parameter but the head (the warm start of a new head; as w2s.pretrain.backbone)."""
  return {k: v for k, v in params.to_pure_dict().items() if k != "head"}


def make_head_loss(l2: float):
  """Soft cross-entropy of a linear head on the frozen backbone against ``batch['target']``
  (the w2s ``xent`` loss), plus ``l2`` on the head's kernel."""

  def loss_fn(model, batch, rng, step):
    del rng, step
    logits = model.head(jax.lax.stop_gradient(model.features(batch["x"]))).astype(jnp.float32)
    target = batch["target"]
    loss = -jnp.mean(jnp.sum(target * jax.nn.log_softmax(logits), -1))
    penalty = l2 * jnp.sum(model.head.kernel[...].astype(jnp.float32) ** 2)
    agree = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(target, -1))
    return loss + penalty, {"target_agreement": agree}

  return loss_fn


def _train_heads(config, split: Split, workdir, *, tag, model_name, seeds, warm, targets):
  return train_classifier(config, split, _spec(), workdir, tag=tag, model_name=model_name,
                          seeds=list(seeds), loss_fn=make_head_loss(config.ccs_w2s.l2),
                          warm=warm, trainable="head", per_run={"target": targets})


def _activations(trained, x: np.ndarray, site: str) -> np.ndarray:
  def capture(state, batch):
    return hooks.run(state.model(), batch["x"], capture=site)[1][site]
  return np.asarray(trained.apply(x, capture), np.float32)   # [runs, n, d]


def _ccs_config(config) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"seed": config.seed, "optim": config.ccs.optim.to_dict(),
                                    "train": config.ccs.train.to_dict(),
                                    "mesh": config.mesh.to_dict()})


def _pgr(weak: float, student: float, ceiling: float) -> float:
  gap = ceiling - weak
  return (student - weak) / gap if gap > MIN_GAP else math.nan


def _est(values) -> dict:
  values = [float(v) for v in values]
  return {"per_seed": values, **mean_ci(values)}


# ------------------------------------------------------------------------------------- run

def run(config, workdir: str) -> dict:
  w = config.ccs_w2s
  _, splits = data_lib.load_splits(config.data)
  seeds = [config.seed + i for i in range(w.num_seeds)]
  S = len(seeds)
  claims = pretrain_claims(splits["pretrain"], config.pretrain.coarse_map, w.claims_per_image,
                           config.data.split_seed)
  task = {k: task_split(splits[k], w.target) for k in ("train_a", "train_b", "val", "test")}
  neg = {k: task_split(splits[k], w.target, negate=True) for k in ("train_b", "val", "test")}
  eye = np.eye(2, dtype=np.float32)
  truth = lambda k: np.broadcast_to(eye[task[k].y], (S, len(task[k]), 2))

  # 1. claim-verification pretraining of both models (the whole network).
  pre = {}
  for name in (w.weak, w.strong):
    pre[name] = train_classifier(config, claims, _spec(), workdir,
                                 tag=f"pretrain/{models.label(name)}", model_name=name,
                                 seeds=seeds, train_block=config.pretrain.train)
  strong = pre[w.strong]
  claim_acc = {name: _est(np.mean(t.predict(claims.x).argmax(-1) == claims.y, -1))
               for name, t in pre.items()}

  # 2. the weak supervisor: a head on its backbone, ground truth of train_a.
  weak = _train_heads(config, task["train_a"], workdir, tag=f"supervisor/{models.label(w.weak)}",
                      model_name=w.weak, seeds=seeds,
                      warm=mesh_lib.to_host(_backbone(pre[w.weak].state.params)),
                      targets=truth("train_a"))
  weak_b = weak.predict(task["train_b"].x).astype(np.float32)        # [S, n, 2]
  weak_test_acc = np.mean(weak.predict(task["test"].x).argmax(-1) == task["test"].y, -1)

  # 3. CCS on the strong model's contrast pairs, and its zero-shot verdict on them.
  acts = {k: (_activations(strong, task[k].x, w.site), _activations(strong, neg[k].x, w.site))
          for k in ("train_b", "val", "test")}
  zero_shot = {k: 0.5 * (strong.predict(task[k].x)[..., 1] + 1.0 - strong.predict(neg[k].x)[..., 1])
               for k in ("train_b", "test")}
  ccs_b, ccs_rows = [], []
  for s in range(S):
    probe = ccs_lib.fit_ccs(acts["train_b"][0][s], acts["train_b"][1][s], workdir,
                            _ccs_config(config), restarts=w.restarts,
                            tag=f"ccs/{models.label(w.strong)}/seed{seeds[s]}", seed=seeds[s])
    raw_acc = probe.accuracy(acts["test"][0][s], acts["test"][1][s], task["test"].y)
    if w.orient == "zero_shot":
      probe = probe.orient(acts["train_b"][0][s], acts["train_b"][1][s],
                           (zero_shot["train_b"][s] > 0.5).astype(np.int32))
    elif w.orient == "labels":
      rows = np.arange(min(w.orient_labels, len(task["val"])))
      probe = probe.orient(acts["val"][0][s], acts["val"][1][s], task["val"].y[rows], rows=rows)
    p = probe.probs(acts["train_b"][0][s], acts["train_b"][1][s])
    ccs_b.append(np.stack([1.0 - p, p], -1).astype(np.float32))
    xp, xn, y = acts["test"][0][s], acts["test"][1][s], task["test"].y
    ccs_rows.append({"accuracy": probe.accuracy(xp, xn, y), "raw_accuracy": raw_acc,
                     "sign_free_accuracy": probe.accuracy(xp, xn, y, sign_free=True),
                     "train_b_accuracy": probe.accuracy(acts["train_b"][0][s],
                                                        acts["train_b"][1][s], task["train_b"].y),
                     "loss": probe.loss})
  ccs_b = np.stack(ccs_b)

  # 4. ceiling and both students: one stack of 3S runs of the strong model's head.
  runs = ["ceiling"] * S + ["weak_labels"] * S + ["ccs_labels"] * S
  stack = _train_heads(config, task["train_b"], workdir,
                       tag=f"students/{models.label(w.strong)}", model_name=w.strong,
                       seeds=seeds * 3,
                       warm=jax.tree.map(lambda a: np.concatenate([a] * 3),
                                         mesh_lib.to_host(_backbone(strong.state.params))),
                       targets=np.concatenate([truth("train_b"), weak_b, ccs_b]))
  test_acc = np.mean(stack.predict(task["test"].x).argmax(-1) == task["test"].y, -1)
  by = {r: test_acc[[i for i, x in enumerate(runs) if x == r]] for r in dict.fromkeys(runs)}

  y_b, y_t = task["train_b"].y, task["test"].y
  ccs_acc = [r["accuracy"] for r in ccs_rows]
  results = {
      "data": config.data.name, "target": w.target, "weak": w.weak, "strong": w.strong,
      "site": w.site, "orient": w.orient, "seeds": seeds, "restarts": w.restarts,
      "split_sizes": {k: len(v) for k, v in splits.items()},
      "pretrain_claims": len(claims),
      "claim_verification_accuracy": claim_acc,
      "weak_accuracy": _est(weak_test_acc),
      "ceiling_accuracy": _est(by["ceiling"]),
      "zero_shot_accuracy": _est(np.mean((zero_shot["test"] > 0.5) == y_t, -1)),
      "ccs_accuracy": _est(ccs_acc),
      "ccs_raw_sign_accuracy": _est([r["raw_accuracy"] for r in ccs_rows]),
      "ccs_sign_free_accuracy": _est([r["sign_free_accuracy"] for r in ccs_rows]),
      "label_accuracy_train_b": {
          "weak_labels": _est(np.mean(weak_b.argmax(-1) == y_b, -1)),
          "ccs_labels": _est(np.mean(ccs_b.argmax(-1) == y_b, -1))},
      "student_accuracy": {"weak_labels": _est(by["weak_labels"]),
                           "ccs_labels": _est(by["ccs_labels"])},
      "pgr": {
          "weak_labels": _est([_pgr(a, b, c) for a, b, c in
                               zip(weak_test_acc, by["weak_labels"], by["ceiling"])]),
          "ccs_labels": _est([_pgr(a, b, c) for a, b, c in
                              zip(weak_test_acc, by["ccs_labels"], by["ceiling"])]),
          # CCS's own test predictions as if they were the student: its gap recovered.
          "ccs_itself": _est([_pgr(a, b, c) for a, b, c in
                              zip(weak_test_acc, ccs_acc, by["ceiling"])])},
      "ccs_loss": _est([r["loss"] for r in ccs_rows]),
      "published": PUBLISHED,
  }
  return results


def _fmt(e: dict, pct: bool) -> str:
  k = 100.0 if pct else 1.0
  if math.isnan(e["mean"]):
    return "flagged (no gap)"
  if math.isnan(e["lo"]):
    return f"{k * e['mean']:.2f}"
  return f"{k * e['mean']:.2f} [{k * e['lo']:.2f}, {k * e['hi']:.2f}]"


def summary(results: dict) -> str:
  """Weak, zero-shot, CCS, ceiling and the two students' test accuracy and PGR, beside Burns
  et al. 2022's mean accuracies."""
  r, p = results, results["published"]
  rows = [
      ("weak " + r["weak"], r["weak_accuracy"], None, ""),
      ("zero-shot " + r["strong"], r["zero_shot_accuracy"], None, f"{p['zero_shot']:.1f}"),
      (f"CCS ({r['orient']} sign)", r["ccs_accuracy"], r["pgr"]["ccs_itself"], f"{p['ccs']:.1f}"),
      ("CCS sign-free", r["ccs_sign_free_accuracy"], None, ""),
      ("ceiling " + r["strong"], r["ceiling_accuracy"], None, f"{p['lr_ceiling']:.1f}"),
      ("student on weak labels", r["student_accuracy"]["weak_labels"], r["pgr"]["weak_labels"], ""),
      ("student on CCS labels", r["student_accuracy"]["ccs_labels"], r["pgr"]["ccs_labels"], ""),
  ]
  lines = [f"CCS as a supervisor on {r['data']} ({r['target']}), {r['weak']} -> {r['strong']} at "
           f"{r['site']}, {len(r['seeds'])} seeds, mean [95% CI]",
           f"{'':26s} {'test accuracy %':>22s} {'PGR':>22s} {'Burns et al. 2022 %':>20s}"]
  for name, acc, pgr, pub in rows:
    lines.append(f"{name:26s} {_fmt(acc, True):>22s} "
                 f"{_fmt(pgr, False) if pgr else '':>22s} {pub:>20s}")
  return "\n".join(lines)
