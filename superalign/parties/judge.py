"""The sparse-evidence judge: a classifier trained on k random legal items of each instance.

Training goes through the core trainer (``train_classifier``): the split holds
whole instances and the loss draws a fresh reveal of ``k`` legal items per example per step from
the step's key, so the judge sees a new sparse view every epoch and resume stays bitwise exact.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from superalign import data as data_lib
from superalign import models
from superalign.core import rng as rng_lib, steps
from superalign.core.errors import ConfigError
from superalign.results.estimates import classification_metrics
from superalign.core.spec import TrainSpec
from superalign.core.specs import InputSpec
from superalign.core.trainer import Trained
from superalign.data.source import Source
from superalign.data.splits import Split
from superalign.parties.evidence import PixelEvidence, random_reveal
from superalign.parties.classifier import Model, train_classifier


def sparse_loss(evidence, k: int) -> steps.LossFn:
  """Cross-entropy of the judge on ``k`` random legal items of each example in the batch."""

  def loss(model, batch, rng, step):
    del step
    x = batch["x"]
    revealed = random_reveal(rng, evidence.legal(x), k)
    logits = model(evidence.observe(x, revealed)).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
    return loss, {"accuracy": (logits.argmax(-1) == batch["y"]).mean()}

  return loss


def sparse_view(evidence, split: Split, k: int, seed: int) -> Split:
  """``split`` as the judge sees it with ``k`` random legal items revealed (a fixed draw)."""
  x = jnp.asarray(split.x)
  revealed = random_reveal(jax.random.key(seed), evidence.legal(x), k)
  return dataclasses.replace(split, x=np.asarray(evidence.observe(x, revealed)))


def judge_spec(evidence, spec: InputSpec) -> InputSpec:
  """The input spec the judge reads: ``spec`` with its shape the evidence's observed shape
  (for pixels, one channel more: the mask)."""
  return dataclasses.replace(spec, shape=evidence.observed_shape(spec.shape))


def train_judge(spec: TrainSpec, model: Model, evidence, train: Split, val: Split,
                inputs: InputSpec, k: int, workdir: str) -> Trained:
  """Trains ``model`` as the judge for ``k`` revealed items; validation accuracy is on one fixed
  sparse draw of ``val`` (stream ``judge/val_view``). Checkpoints go to
  ``checkpoints/judge_k<k>``."""
  val_view = sparse_view(evidence, val, k, seed=rng_lib.stream_seed(spec.seed, "judge/val_view"))
  return train_classifier(
      spec, model, train, judge_spec(evidence, inputs), workdir, tag=f"judge_k{k}",
      loss_fn=sparse_loss(evidence, k),
      evaluate=lambda trained: classification_metrics(trained.predict(val_view.x), val.y))


def load_pixel_task(data, model_name: str, protocol: str
                    ) -> tuple[Source, dict[str, Split], PixelEvidence]:
  """The image source and splits (of the ``data`` block) a sparse-pixel judge ``model_name``
  reads, with pixels as the evidence; a ConfigError names ``data.name`` when the data are not
  images."""
  source, splits = data_lib.load_splits(data)
  if source.spec.kind != "image":
    raise ConfigError(f"data.name={data.name!r}: {protocol} needs image data (pixels are "
                      "the evidence); valid: digits, idx:<dir>")
  evidence = PixelEvidence()
  models.check(model_name, judge_spec(evidence, source.spec))
  return source, splits, evidence


def check_reveals(evidence, spec: InputSpec, ks, key: str) -> None:
  """One line naming ``key`` when a game would reveal more items than an instance has (the judge's
  draw of ``k`` distinct items fails at the first training step)."""
  items = evidence.num_items(spec.shape)
  if max(ks) > items:
    raise ConfigError(f"{key}={ks!r}: k={max(ks)} reveals more than the {items} items (pixels) "
                      "of an image")


def predict(judge_state, observations: jax.Array) -> jax.Array:
  """The trained judge's answer probabilities for ``observations`` (traceable)."""
  return steps.predict_fn(judge_state, {"x": observations})
