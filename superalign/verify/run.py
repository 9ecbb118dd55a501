"""Certified training and its table: ``kind = "verify"``.

The same network (``config.model.name``) is trained naturally, with IBP and with CROWN-IBP
(Gowal et al. 2018; Zhang et al. 2020), each through the core engine with its own loss
(``training.certified_loss``). Each is then measured on the test set at every radius in
``verify.eps``: clean error, PGD error (empirical robustness) and verified error under each bound
method in ``verify.bound_methods`` (CROWN and alpha-CROWN on the first ``crown_examples`` test
images: their intermediate bounds cost a backward pass per neuron).
"""

from __future__ import annotations

import numpy as np

from superalign import data as data_lib
from superalign import models
from superalign.core.errors import ConfigError
from superalign.core.metrics import proportion_ci
from superalign.parties.classifier import train_classifier
from superalign.verify import bounds, certify, training

# Gowal et al. 2018 (IBP) and Zhang et al. 2020 (CROWN-IBP), MNIST, the released models:
# clean / PGD / verified error (%), REFERENCES.md.
PUBLISHED_MNIST = {
    0.1: {"ibp": (1.06, 2.01, 2.92), "crown_ibp": (0.97, 1.66, 2.25)},
    0.2: {"ibp": (1.66, 2.94, 4.53), "crown_ibp": (1.62, 2.72, 3.87)},
    0.3: {"ibp": (1.66, 3.97, 8.21), "crown_ibp": (1.62, 3.62, 6.68)},
    0.4: {"ibp": (1.66, 5.44, 15.01), "crown_ibp": (1.62, 5.05, 12.49)},
}
LINEAR = ("crown", "alpha_crown")   # the bound methods run on the crown_examples subset


def validate(config) -> None:
  v = config.verify
  for method in v.training:
    if method not in training.TRAINING:
      raise ConfigError(f"verify.training: {method!r} unknown; valid: "
                        f"{', '.join(training.TRAINING)}")
  bounds.check_methods("verify.bound_methods", v.bound_methods)
  bounds.check_radii("verify.eps", v.eps)
  if not (isinstance(v.train_eps, (int, float)) and v.train_eps > 0):
    raise ConfigError(f"verify.train_eps={v.train_eps!r}: must be a radius > 0")
  if not 0 <= v.kappa_end <= 1 or not 0 <= v.beta_end <= 1:
    raise ConfigError(f"verify.kappa_end={v.kappa_end}, verify.beta_end={v.beta_end}: each "
                      "must be in [0, 1]")
  for key in ("warmup_steps", "ramp_steps", "test_examples", "crown_examples", "chunk",
              "max_unstable"):
    if v[key] < 0:
      raise ConfigError(f"verify.{key}={v[key]}: must be >= 0")
  for key in ("pgd_steps", "alpha_steps", "crown_batch"):
    if v[key] < 1:
      raise ConfigError(f"verify.{key}={v[key]}: must be >= 1")
  lo, hi = v.domain
  if not lo < hi:
    raise ConfigError(f"verify.domain={tuple(v.domain)}: the lower end must be below the upper")


def schedule(v) -> training.Schedule:
  return training.Schedule(eps=float(v.train_eps), warmup=int(v.warmup_steps),
                           ramp=int(v.ramp_steps), kappa_end=float(v.kappa_end),
                           beta_end=float(v.beta_end))


def evaluate(trained, test, eps_list, v, num_classes: int) -> dict:
  """Clean, PGD and verified error (each a proportion with its CI) at every radius, on the first
  ``test_examples`` test images (0: all)."""
  n = _first(v.test_examples, len(test.x))
  x, y = test.x[:n].astype(np.float32), test.y[:n]
  clean_wrong = trained.predict(x).argmax(-1) != y
  spec = certify.margin_spec(y, num_classes)
  n_linear = _first(v.crown_examples, len(x))
  out = {}
  for eps in eps_list:
    lo, hi = certify.ball(x, eps, tuple(v.domain))
    row = {"clean_error": proportion_ci(clean_wrong),
           "pgd_error": proportion_ci(certify.pgd_fooled(trained, x, y, lo, hi,
                                                         steps=v.pgd_steps)),
           "verified_error": {}}
    for method in v.bound_methods:
      n = n_linear if method in LINEAR else len(x)
      ok = certify.certified(
          trained, method, lo[:n], hi[:n], spec[:n], chunk=int(v.chunk),
          alpha_steps=int(v.alpha_steps), alpha_lr=float(v.alpha_lr),
          max_unstable=int(v.max_unstable),
          batch_size=int(v.crown_batch) if method in LINEAR else None)
      row["verified_error"][method] = proportion_ci(~ok)
    if v.max_unstable and any(m in LINEAR for m in v.bound_methods):
      counts = certify.unstable_counts(trained, lo[:n_linear], hi[:n_linear])
      row["crown_exact_share"] = float((counts <= v.max_unstable).all(-1).mean())
    out[f"{eps:g}"] = row
  return out


def run(config, workdir: str) -> dict:
  v = config.verify
  source, splits = data_lib.load_splits(config.data)
  if source.spec.kind not in ("image", "vector"):
    raise ConfigError(f"data.name={config.data.name!r}: verification needs image or vector "
                      "data (boxes of real inputs)")
  models.check(config.model.name, source.spec)
  lo, hi = v.domain
  if splits["train"].x.min() < lo or splits["train"].x.max() > hi:
    raise ConfigError(f"verify.domain={tuple(v.domain)}: the data lie in "
                      f"[{splits['train'].x.min():g}, {splits['train'].x.max():g}]")
  sched, shape, k = schedule(v), tuple(source.spec.shape), source.spec.num_classes
  results = {"model": config.model.name, "data": config.data.name,
             "train_eps": float(v.train_eps), "eps": [float(e) for e in v.eps],
             "schedule": {"warmup_steps": sched.warmup, "ramp_steps": sched.ramp,
                          "kappa_end": sched.kappa_end, "beta_end": sched.beta_end},
             "test_examples": _first(v.test_examples, len(splits["test"].x)),
             "crown_examples": _first(v.crown_examples, _first(v.test_examples,
                                                                len(splits["test"].x))),
             "published_mnist": {f"{e:g}": p for e, p in PUBLISHED_MNIST.items()},
             "models": {}}
  for method in v.training:
    trained = train_classifier(
        config, splits["train"], source.spec, workdir, tag=method, val=splits.get("val"),
        loss_fn=training.certified_loss(method, sched, shape, k, tuple(v.domain)))
    results["models"][method] = {
        "num_steps": trained.num_steps, "num_params": trained.num_params,
        "final_train": {m: float(val) for m, val in trained.fit.train_metrics.items()},
        "eval": evaluate(trained, splits["test"], list(v.eps), v, k)}
  return results


def _first(limit: int, n: int) -> int:
  return n if limit == 0 else min(n, int(limit))


def _pct(p) -> str:
  return f"{100 * p['mean']:.2f}"


def summary(results: dict) -> str:
  first = next(iter(results["models"].values()))
  methods = list(next(iter(first["eval"].values()))["verified_error"])
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
