"""The process-supervision tables beside Lightman et al.'s and Uesato et al.'s figures, and the
best-of-N and trace-error plots."""

from __future__ import annotations

import functools

import numpy as np

from superalign.results.estimates import format_estimate
from superalign.results.published import Comparison, number

NAMES = {"prm_product": "PRM (product)", "prm_min": "PRM (min)",
         "orm_generative": "ORM, generative", "orm": "ORM, classifier",
         "majority": "majority vote"}


# Estimates in percent: "mean [lo, hi]", the mean alone without an interval.
_pct = functools.partial(format_estimate, pct=True, digits=1, undefined="nan")


def summary(results: dict) -> str:
  """The process-supervision run's printed tables: best-of-N per selection rule beside Lightman
  et al.'s best-of-1860, trace errors among right answers beside Uesato et al.'s, the PRM's
  first-error localization, easy-to-hard generalization, sabotage and the rollout labels'
  agreement."""
  r, pub = results, results["published"]
  bon, ns = r["best_of_n"], r["ns"]
  shown = [n for n in ns if n in (1, 4, 16, 64, 256, 1024) or n == ns[-1]]
  lines = [f"Process supervision on chains mod {r['modulus']}, difficulties {r['difficulties']}, "
           f"{r['test_problems']} test problems, pool {r['pool']}, {r['subsets']} subsets per N "
           "(accuracy %, 95% CI over problems)",
           "| best-of-N | " + " | ".join(f"N = {n}" for n in shown) + " | Lightman et al., N = 1860 |",
           "|---|" + "---|" * (len(shown) + 1)]
  lightman = {"prm_product": pub["lightman_best_of_1860"]["prm"],
              "orm_generative": pub["lightman_best_of_1860"]["orm"],
              "majority": pub["lightman_best_of_1860"]["majority"]}
  for name in NAMES:
    cells = " | ".join(_pct(bon[name][str(n)]) for n in shown)
    lines.append(f"| {NAMES[name]} | {cells} | {lightman.get(name, '')} |")
  lines += ["", "| trace error among right answers | ours (%) | Uesato et al. (%) |", "|---|---|---|"]
  uesato = pub["uesato_trace_error"]
  for name, e in r["trace_error"].items():
    ref = (uesato["outcome_supervised"] if name.startswith("orm") else
           uesato["process_supervised"] if name.startswith("prm") else "")
    lines.append(f"| {name} | {_pct(e)} | {ref} |")
  pb, sd = r["localization"]["processbench"], r["localization"]["step_detection"]
  lines += ["", f"PRM first-error localization: ProcessBench F1 {pb['f1']:.3f} (accuracy "
            f"{pb['erroneous_accuracy']:.3f} on {pb['erroneous']} erroneous, "
            f"{pb['correct_accuracy']:.3f} on {pb['correct']} correct); wrong-step detection "
            f"F1 {sd['f1']:.3f} (precision {sd['precision']:.3f}, recall {sd['recall']:.3f})"]
  e = r["easy_to_hard"]
  sel = e["selection"]
  lines += ["", f"Easy-to-hard (reward models trained on difficulties <= {r['easy']}, tested on "
            f"{e['hard']}, best-of-{e['n']}; unsupervised = {e['unsupervised']}):",
            "| selection on hard problems | accuracy % |", "|---|---|"]
  for name in ("policy_alone", "majority", "orm_generative_easy", "orm_generative",
               "prm_product_easy", "prm_product"):
    lines.append(f"| {name} | {_pct(sel[name])} |")
  pol = e["policy"]
  lines += [f"SGR: PRM {e['sgr_prm']:.2f}, ORM {e['sgr_orm']:.2f} (Hase et al.: "
            f"{pub['hase_sgr_range'][0]}-{pub['hase_sgr_range'][1]}%); policy trained on easy "
            f"only {100 * pol['trained_on_easy']:.1f}% vs on all {100 * pol['trained_on_all']:.1f}% "
            f"on hard problems (chance {100 * pol['chance']:.0f}%), SGR {pol['sgr']:.2f}"]
  s = r["sabotage"]
  lines += ["", f"Sabotage ({s['kind']}, {s['triggered_problems']} of {s['problems']} problems "
            f"triggered): share of picks at N = {s['n']} that are sabotaged, and of sabotaged "
            "solutions a monitor accepts",
            "| | samples | ORM, classifier | ORM, generative | PRM (product) | majority |",
            "|---|---|---|---|---|---|"]
  accepted = s.get("accepted_at_threshold", {})
  if accepted:
    lines.append("| sabotaged solutions accepted at a threshold passing 95% of honest valid ones "
                 "| | " + " | ".join(_pct(accepted[n]) for n in ("orm", "orm_generative",
                                                                "prm_product")) + " | |")
  for where in ("triggered", "untriggered"):
    if where in s:
      t = s[where]
      lines.append(f"| {where} | {_pct(t['sabotaged_samples'])} | "
                   + " | ".join(_pct(t["let_through"][n]) for n in
                                ("orm", "orm_generative", "prm_product", "majority"))
                   + " |")
  ro = r["rollout_labels"]
  lines += ["", f"Rollout labels (Math-Shepherd, {ro['rollouts']} completions per step, "
            f"{ro['steps']} labelled steps): agreement with the exact labels "
            f"{100 * ro['agreement']:.1f}%; wrong steps labelled good "
            f"{100 * ro['wrong_steps_labelled_good']:.1f}% of {ro['wrong_steps']}; good steps "
            f"labelled wrong {100 * ro['good_steps_labelled_wrong']:.1f}% of {ro['good_steps']}"]
  return "\n".join(lines)


def published_comparisons(results: dict) -> list[Comparison]:
  """The published figures beside a process run's (its ``results.json``), from
  ``results["published"]`` (``run.PUBLISHED``, which every run stores): best-of-N accuracy % at
  the run's largest N against Lightman et al.'s best-of-1860 (PRM, ORM, majority vote); trace
  error % of ORM and PRM picks against Uesato et al.'s outcome- and process-supervised figures;
  the easy-to-hard Supervision Gap Recovered against Hase et al.'s range, and the easy-trained
  PRM's accuracy on the hard problems against Sun et al.'s. Percentages have the tables' one
  decimal and 95% interval, SGR two decimals."""
  r, pub = results, results["published"]
  on = f"chains mod {r['modulus']}"
  rows = []
  lightman, n = pub["lightman_best_of_1860"], r["ns"][-1]
  for name, key in (("prm_product", "prm"), ("orm_generative", "orm"), ("majority", "majority")):
    rows.append(Comparison(f"best-of-N accuracy %, {NAMES[name]} (ours: {on}, N = {n}; theirs: "
                           "MATH500, N = 1860)", _pct(r["best_of_n"][name][str(n)]),
                           f"{lightman[key]:.1f}", "Lightman et al. 2023"))
  uesato = pub["uesato_trace_error"]
  for label, e in r["trace_error"].items():
    name = label.split(" (")[0]
    if not name.startswith(("orm", "prm")):
      continue
    supervised = "outcome_supervised" if name.startswith("orm") else "process_supervised"
    rows.append(Comparison(
        f"trace error % among right answers, {NAMES.get(name, name)} picks at "
        f"{label.split(' (')[1].rstrip(')')} (ours: {on}; theirs: GSM8K, "
        f"{supervised.replace('_', '-')})", _pct(e), f"{uesato[supervised]:.1f}",
        "Uesato et al. 2022"))
  e = r["easy_to_hard"]
  lo, hi = pub["hase_sgr_range"]
  where = (f"trained on difficulties <= {r['easy']}, best-of-{e['n']} on difficulties "
           f"{', '.join(map(str, e['hard']))}")
  rows += [Comparison(f"Supervision Gap Recovered, {name} ({where})", number(e[key], 2),
                      f"{lo / 100:.2f}-{hi / 100:.2f}", "Hase et al. 2024")
           for name, key in (("PRM", "sgr_prm"), ("ORM, generative", "sgr_orm"))]
  sun = pub["sun_easy_to_hard_prm_math500"]
  rows.append(Comparison(f"accuracy % of selection by a PRM trained on easy problems only "
                         f"(ours: {on}, {where}; theirs: MATH levels 1-3, on MATH500)",
                         _pct(e["selection"]["prm_product_easy"]),
                         f"{sun['7b_rl']:.1f} (7B, RL) / {sun['34b_rerank_1024']:.1f} "
                         "(34B, rerank@1024)", "Sun et al. 2024"))
  return rows


def plot(results: dict, out_dir: str) -> list[str]:
  """Writes ``best_of_n.png`` (accuracy against N per selection rule, 95% bands) and
  ``trace_error.png`` (the share of right answers with a wrong step, per rule) under
  ``out_dir``; returns their paths."""
  from superalign.results import figures as plots
  import matplotlib.pyplot as plt
  ns = results["ns"]
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for name, label in NAMES.items():
    curve = results["best_of_n"][name]
    mean = np.array([100 * curve[str(n)]["mean"] for n in ns])
    lo = np.array([100 * curve[str(n)]["lo"] for n in ns])
    hi = np.array([100 * curve[str(n)]["hi"] for n in ns])
    ax.plot(ns, mean, marker="o", ms=3, label=label)
    ax.fill_between(ns, lo, hi, alpha=0.15)
  ax.set_xscale("log", base=2)
  ax.set_xlabel("N (solutions sampled per problem)")
  ax.set_ylabel("% problems solved (best-of-N)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  paths = [plots.save(fig, out_dir, "best_of_n.png")]
  trace = {k: v for k, v in results["trace_error"].items() if v is not None}
  fig, ax = plt.subplots(figsize=(5, 3.2))
  names = list(trace)
  err = lambda a, b: np.nan_to_num(np.clip([100 * (b[n] - a[n]) for n in names], 0, None))
  means = {n: trace[n]["mean"] for n in names}
  ax.bar(range(len(names)), [100 * means[n] for n in names], capsize=3,
         yerr=[err({n: trace[n]["lo"] for n in names}, means),
               err(means, {n: trace[n]["hi"] for n in names})])
  ax.set_xticks(range(len(names)), names, fontsize=7, rotation=15)
  ax.set_ylabel("% of right answers with a wrong step")
  ax.grid(alpha=0.3, axis="y")
  paths.append(plots.save(fig, out_dir, "trace_error.png"))
  return paths
