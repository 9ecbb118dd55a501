"""Supervised training on ground truth: ``kind = "supervised"``."""

from __future__ import annotations

from superalign import data as data_lib
from superalign import models
from superalign.results.estimates import classification_metrics
from superalign.core.spec import TrainSpec
from superalign.parties.classifier import Model, train_classifier

SPLITS = ("train", "test")


def run(config, workdir: str) -> dict:
  """Trains ``config.model`` on the ``train`` split (evaluated on ``val`` when there is one) and
  returns its test accuracy and loss (and AUROC for two classes), the final training metrics, the
  validation history's last and best rows, and the run's size (parameters, steps, splits)."""
  source, splits = data_lib.load_splits(config.data)
  models.check(config.model.name, source.spec)
  model = Model.from_blocks(config.model, config.data)
  trained = train_classifier(TrainSpec.from_config(config), model,
                             splits["train"], source.spec, workdir, tag="supervised",
                             val=splits.get("val"))
  test = classification_metrics(trained.predict(splits["test"].x), splits["test"].y)
  fit = trained.fit
  return {
      "model": config.model.name,
      "data": config.data.name,
      "num_params": trained.num_params,
      "num_steps": trained.num_steps,
      "split_sizes": {k: len(v) for k, v in splits.items()},
      "final_train_loss": fit.train_metrics.get("loss"),
      "final_train_accuracy": fit.train_metrics.get("accuracy"),
      "val": fit.history[-1] if fit.history else None,
      "best_val": fit.best,
      "stopped_early": fit.stopped_early,
      "resumed_from_step": fit.resumed_from,
      "test_accuracy": test["accuracy"],
      "test_loss": test["loss"],
      **({"test_auroc": test["auroc"]} if "auroc" in test else {}),
  }


def summary(results: dict) -> str:
  """One line: the test accuracy and the final training loss."""
  return (f"{results['model']} on {results['data']}: test accuracy {results['test_accuracy']:.4f}, "
          f"final training loss {results['final_train_loss']:.6g} ({results['num_steps']} steps)")
