"""Certified training and its table: ``kind = "verify"``.

The same network (``config.model.name``) is trained naturally, with IBP and with CROWN-IBP
(Gowal et al. 2018; Zhang et al. 2020), each through the core engine with its own loss
(``training.certified_loss``). Each is then measured on the test set at every radius in
``verify.eps`` (``evaluation.errors``): clean error, PGD error (empirical robustness) and verified
error under each bound method in ``verify.bound_methods`` (CROWN and alpha-CROWN on the first
``crown_examples`` test images: their intermediate bounds cost a backward pass per neuron).
"""

from __future__ import annotations

from superalign import data as data_lib
from superalign import models
from superalign.config import schema
from superalign.core.errors import ConfigError
from superalign.results.estimates import format_estimate
from superalign.results.published import Comparison
from superalign.core.spec import TrainSpec
from superalign.parties.classifier import Model, train_classifier
from superalign.verify import bounds, certify, config as verify_config, training
from superalign.verify.evaluation import Evaluation, errors, first

# Gowal et al. 2018 (IBP) and Zhang et al. 2020 (CROWN-IBP), MNIST, the released models:
# clean / PGD / verified error (%), REFERENCES.md.
PUBLISHED_MNIST = {
    0.1: {"ibp": (1.06, 2.01, 2.92), "crown_ibp": (0.97, 1.66, 2.25)},
    0.2: {"ibp": (1.66, 2.94, 4.53), "crown_ibp": (1.62, 2.72, 3.87)},
    0.3: {"ibp": (1.66, 3.97, 8.21), "crown_ibp": (1.62, 3.62, 6.68)},
    0.4: {"ibp": (1.66, 5.44, 15.01), "crown_ibp": (1.62, 5.05, 12.49)},
}
SPLITS = ("train", "test")     # and "val", when there, for the training curves
RULES = {**verify_config.RULES, "verify.training": schema.choices_of(*training.TRAINING.names),
         "verify.bound_methods": schema.choices_of(*bounds.METHODS.names)}


def run(config, workdir: str) -> dict:
  """Trains ``config.model`` once per method of ``verify.training``, each with its certified
  loss, and measures each on the test split at every radius of ``verify.eps``; returns per method
  its size, final training metrics and errors (clean, PGD, verified per bound method), beside the
  schedule and the published MNIST errors."""
  v = config.verify
  spec, model = TrainSpec.from_config(config), Model.from_blocks(config.model, config.data)
  source, splits = data_lib.load_splits(config.data)
  if source.spec.kind not in ("image", "vector"):
    raise ConfigError(f"data.name={config.data.name!r}: verification needs image or vector "
                      "data (boxes of real inputs)")
  models.check(model.name, source.spec)
  certify.check_domain(splits["train"].x, tuple(v.domain), "verify.domain")
  sched, setup, test = training.Schedule.from_config(v), Evaluation.from_config(v), splits["test"]
  shape, k = tuple(source.spec.shape), source.spec.num_classes
  results = {"model": model.name, "data": config.data.name,
             "train_eps": sched.eps, "eps": [float(e) for e in v.eps],
             "schedule": {"warmup_steps": sched.warmup, "ramp_steps": sched.ramp,
                          "kappa_end": sched.kappa_end, "beta_end": sched.beta_end},
             "test_examples": first(setup.test_examples, len(test.x)),
             "crown_examples": first(setup.crown_examples,
                                     first(setup.test_examples, len(test.x))),
             "published_mnist": {f"{e:g}": p for e, p in PUBLISHED_MNIST.items()},
             "models": {}}
  for method in v.training:
    trained = train_classifier(
        spec, model, splits["train"], source.spec, workdir, tag=method, val=splits.get("val"),
        loss_fn=training.certified_loss(method, sched, shape, k, setup.domain))
    results["models"][method] = {
        "num_steps": trained.num_steps, "num_params": trained.num_params,
        "final_train": {m: float(val) for m, val in trained.fit.train_metrics.items()},
        "eval": errors(trained, test, setup, k)}
  return results


def _pct(p) -> str:
  """An error in % to two decimals, the mean alone (the table's cells)."""
  return format_estimate({"mean": p["mean"]}, pct=True, digits=2)


def summary(results: dict) -> str:
  """The printed table: per trained model and radius, the clean, PGD and verified errors in %,
  and the published MNIST errors below."""
  some = next(iter(results["models"].values()))
  methods = list(next(iter(some["eval"].values()))["verified_error"])
  lines = [f"certified training of {results['model']} on {results['data']} (train eps "
           f"{results['train_eps']:g}); errors in % on {results['test_examples']} test images, CROWN "
           f"and alpha-CROWN on the first {results['crown_examples']}", "",
           "| trained | eps | clean | PGD | " + " | ".join(f"verified ({m})" for m in methods)
           + " |", "|---" * (4 + len(methods)) + "|"]
  for name, r in results["models"].items():
    for eps, row in r["eval"].items():
      lines.append(f"| {name} | {eps} | {_pct(row['clean_error'])} | {_pct(row['pgd_error'])} | "
                   + " | ".join(_pct(row["verified_error"][m]) for m in methods) + " |")
  lines += ["", "published, MNIST (clean / PGD / verified error %): "
            + "; ".join(f"eps {e}: IBP {'/'.join(map(str, p['ibp']))}, CROWN-IBP "
                        f"{'/'.join(map(str, p['crown_ibp']))}"
                        for e, p in results["published_mnist"].items())]
  return "\n".join(lines)


def published_comparisons(results: dict) -> list[Comparison]:
  """Gowal et al.'s (IBP) and Zhang et al.'s (CROWN-IBP) MNIST errors beside a verify run's (its
  ``results.json``), at each radius both have: clean, PGD and verified error % of the model our
  run trained the same way (two decimals, as printed; verified by the tightest of our bound
  methods, named). ``theirs`` comes from ``results["published_mnist"]``, else
  ``PUBLISHED_MNIST``."""
  pub = results.get("published_mnist") or {f"{e:g}": p for e, p in PUBLISHED_MNIST.items()}
  source = {"ibp": "Gowal et al. 2018", "crown_ibp": "Zhang et al. 2020"}
  trained = {"ibp": "IBP", "crown_ibp": "CROWN-IBP"}
  rows = []
  for method in ("ibp", "crown_ibp"):
    for eps, row in results["models"].get(method, {}).get("eval", {}).items():
      paper = next((p[method] for e, p in pub.items() if float(e) == float(eps)), None)
      if paper is None:
        continue
      bound = min(row["verified_error"], key=lambda m: row["verified_error"][m]["mean"])
      on = (f"{trained[method]}-trained {results['model']} on {results['data']}, eps {eps}; "
            "theirs: MNIST")
      rows += [Comparison(f"{what} % ({on})", _pct(e), f"{p:.2f}", source[method])
               for what, e, p in (("clean error", row["clean_error"], paper[0]),
                                  ("PGD error", row["pgd_error"], paper[1]),
                                  (f"verified error ({bound} bound)", row["verified_error"][bound],
                                   paper[2]))]
  return rows
