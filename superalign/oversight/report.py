"""Debate results: the published figures, the printed table, and the plot."""

from __future__ import annotations

from superalign.results import figures
from superalign.results.estimates import format_estimate
from superalign.results.published import Comparison, number

PUBLISHED = {
    "source": "Irving, Christiano and Amodei 2018, sparse-pixel MNIST judge, MCTS players",
    "judge_alone": {"4": 0.482, "6": 0.594},
    "debate_precommit_honest_win_rate": {"4": 0.852, "6": 0.889},
    "measured_here_digits_mlp_greedy": {
        "note": "../shared/REFERENCES.md: 8x8 digits, MLP judge, greedy players, precommit, "
                "397 test images, reveals restricted to nonzero pixels",
        "judge_alone": {"4": 0.499, "6": 0.632},
        "debate_precommit_honest_win_rate": {"4": 0.854, "6": 0.909}},
    "consultancy_vs_debate": "Khan et al. 2024 (QuALITY): debate 76% (LLM judges) / 88% (human "
                             "judges) vs 48% / 60% baselines; Kenton et al. 2024: debate beats "
                             "consultancy across tasks",
}


def table(results: dict) -> str:
  """Protocols by k with 95% CIs, the paper's figures beside ours, then the player matrix."""
  lines = [f"Debate on {results['data']} ({results['num_images']} test images, judge "
           f"{results['judge_model']}), judge accuracy % [95% CI]; paper = Irving et al. 2018 MNIST",
           f"{'k':>2}  {'protocol':<28} {'ours':<22} {'paper':>6}"]
  for k, r in results["by_k"].items():
    paper = {"judge_alone": PUBLISHED["judge_alone"].get(k),
             "debate_precommit": PUBLISHED["debate_precommit_honest_win_rate"].get(k)}
    for name, row in r["protocols"].items():
      ref = paper.get(name)
      ref = f"{100 * ref:6.1f}" if ref is not None else f"{'':>6}"
      ours = format_estimate(row["judge_accuracy"], pct=True, digits=1, widths=(5, 0, 0))
      lines.append(f"{k:>2}  {name:<28} {ours:<22} {ref}")
    gap = r["debate_minus_judge_alone"]
    lines.append(f"{k:>2}  {'debate - judge alone (pts)':<28} {100 * gap:5.1f}")
  for k, r in results["by_k"].items():
    matrix = r.get("player_matrix")
    if not matrix:
      continue
    names = list(matrix)
    lines.append(f"k={k}: honest win rate % per image / per (image, lie) game, precommit, "
                 f"{r['player_matrix_images']} images (rows honest player, columns liar)")
    lines.append(f"{'':>8}" + "".join(f"{n:>24}" for n in names))
    for h in names:
      cells = [f"{100 * matrix[h][lie]['honest_win_rate']['mean']:5.1f} / "
               f"{100 * matrix[h][lie]['game_win_rate']['mean']:5.1f}" for lie in names]
      lines.append(f"{h:>8}" + "".join(f"{c:>24}" for c in cells))
    for pair, cmp in r.get("player_comparisons", {}).items():
      a, b = pair.split("_vs_")
      lines.append(
          f"k={k}: {a} vs {b}, honest win rate difference (same images): as honest "
          f"{100 * cmp['as_honest']['difference']:+.1f} pts (p={cmp['as_honest']['p_value']:.2g}), "
          f"as liar {100 * cmp['as_liar']['difference']:+.1f} pts "
          f"(p={cmp['as_liar']['p_value']:.2g}; positive = {a} is stronger)")
  return "\n".join(lines)


def published_comparisons(results: dict) -> list[Comparison]:
  """Irving et al.'s MNIST figures beside a debate run's (its ``results.json``), for each k the
  paper measured: judge accuracy % alone and with precommit debate (one decimal and the 95%
  interval, as printed), and debate's gain over the judge alone in points. ``theirs`` comes from
  ``results["published"]`` (``PUBLISHED`` for keys it lacks)."""
  pub = {**PUBLISHED, **results.get("published", {})}
  alone, debate = pub["judge_alone"], pub["debate_precommit_honest_win_rate"]
  source, rows = "Irving, Christiano and Amodei 2018", []
  for k, r in results["by_k"].items():
    protocols = r["protocols"]
    on = f"k = {k}, {results['data']}; theirs: MNIST"
    for name, shown, paper in (("judge_alone", "judge alone", alone),
                               ("debate_precommit", "debate, precommit", debate)):
      if k in paper and name in protocols:
        rows.append(Comparison(
            f"{shown}: judge accuracy % ({on})",
            format_estimate(protocols[name]["judge_accuracy"], pct=True, digits=1),
            f"{100 * paper[k]:.1f}", source))
    if k in alone and k in debate and "debate_minus_judge_alone" in r:
      rows.append(Comparison(f"debate (precommit) - judge alone, points ({on})",
                             number(r["debate_minus_judge_alone"], 1, scale=100),
                             f"{100 * (debate[k] - alone[k]):.1f}", source))
  return rows


def plot(results: dict, directory: str) -> list[str]:
  """Judge accuracy by protocol and k, with 95% CIs and the paper's figures as markers."""
  import matplotlib.pyplot as plt

  ks = list(results["by_k"])
  names = list(results["by_k"][ks[0]]["protocols"])
  fig, ax = plt.subplots(figsize=(1.2 + 1.6 * len(names), 3.6))
  width = 0.8 / len(ks)
  for i, k in enumerate(ks):
    rows = [results["by_k"][k]["protocols"][n]["judge_accuracy"] for n in names]
    xs = [j + i * width for j in range(len(names))]
    means = [100 * r["mean"] for r in rows]
    err = [[100 * (r["mean"] - r["lo"]) for r in rows], [100 * (r["hi"] - r["mean"]) for r in rows]]
    ax.bar(xs, means, width, yerr=err, capsize=3, label=f"k={k}")
    paper = {"judge_alone": PUBLISHED["judge_alone"].get(k),
             "debate_precommit": PUBLISHED["debate_precommit_honest_win_rate"].get(k)}
    for x, n in zip(xs, names):
      if paper.get(n) is not None:
        ax.plot([x], [100 * paper[n]], "k*", ms=9)
  ax.set_xticks([j + width * (len(ks) - 1) / 2 for j in range(len(names))])
  ax.set_xticklabels([n.replace("_", "\n") for n in names], fontsize=8)
  ax.set_ylabel("judge accuracy % (* = Irving et al.)")
  ax.set_ylim(0, 100)
  ax.legend(fontsize=8)
  return [figures.save(fig, directory, "judge_accuracy_by_protocol.png", dpi=120)]
