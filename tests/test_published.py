"""Ours beside theirs: every kind that reproduces published figures turns its smoke run's results
into rows (``launch.runners.published_comparisons``) whose "theirs" is the published constant and
whose "ours" is the number in the results; the markdown table and the registry on their own."""

import dataclasses
import json
import math
import re

import pytest

from conftest import SMOKE
from superalign.amplification import report as amplification
from superalign.control import report as control
from superalign.interp import defection, report as interp
from superalign.launch import runners
from superalign.oversight import report as debate
from superalign.process import run as process
from superalign.results.published import Comparison, markdown_table, number
from superalign.sandwich import report as sandwich
from superalign.verify import run as verify
from superalign.verify.oversight import report as verify_oversight
from superalign.w2s import report as w2s
from superalign.w2s.ccs import report as ccs
from superalign.w2s.misfit import report as misfit


def test_markdown_table_renders_rows_and_escapes_cells():
  rows = [Comparison("PGR, xent", "0.01 [-0.06, 0.08]", "0.33", "Burns et al. 2023"),
          Comparison("a | b\nc", "1", "2", "x")]
  assert markdown_table(rows).splitlines() == [
      "| quantity | ours | published | source |",
      "|---|---|---|---|",
      "| PGR, xent | 0.01 [-0.06, 0.08] | 0.33 | Burns et al. 2023 |",
      "| a \\| b c | 1 | 2 | x |"]
  assert markdown_table([]).count("\n") == 1
  with pytest.raises(dataclasses.FrozenInstanceError):
    rows[0].ours = "1"


def test_number_shows_a_missing_figure_as_missing():
  assert number(0.12345, 1, scale=100) == "12.3" and number(-0.5, 2) == "-0.50"
  assert number(None, 2) == number(float("nan"), 2) == "n/a"   # NaN is null in results.json


def test_the_registry_names_every_kind_with_figures_and_only_known_kinds():
  assert set(runners.COMPARISONS) <= set(runners.RUNNERS)
  assert set(runners.COMPARISONS) == set(EXPECTED) | {"verify_oversight"}
  assert runners.published_comparisons("supervised", {}) == []
  assert runners.published_comparisons("verify_oversight", {"anything": 1}) == []
  assert verify_oversight.published_comparisons({}) == []
  with pytest.raises(ValueError, match="kind 'nope': unknown; valid: amplification"):
    runners.published_comparisons("nope", {})


def test_workdir_comparisons_reads_the_kind_from_config_json(tmp_path):
  results = {"variants": {"realizable": {"fraction_gain_ge_misfit_minus_tol": 0.97,
                                         "fit": {"slope_through_origin": 0.98765}}}}
  (tmp_path / "config.json").write_text(json.dumps({"kind": "w2s_misfit", "seed": 0}))
  (tmp_path / "results.json").write_text(json.dumps(results))
  kind, rows = runners.workdir_comparisons(str(tmp_path))
  assert kind == "w2s_misfit"
  assert [(r.ours, r.theirs) for r in rows] == [("97%", "100% (Theorem 1)"),
                                                ("0.988", "about 1 (gain ~= misfit)")]


def test_a_w2s_run_on_a_published_text_task_is_set_beside_that_task_alone():
  pgr = lambda mean: {"pgr_accuracy": {"mean": mean, "lo": None, "hi": None, "n": 1}}
  results = {"data": "tfds:bool_q", "mode": "finetune", "pretrain_task": "none",
             "losses": ["xent", "logconf"], "main_pair": {"weak": "gpt_tiny", "strong": "gpt_base"},
             "pairs": [{"weak": "gpt_tiny", "strong": "gpt_base",
                        "losses": {"xent": pgr(0.2), "logconf": pgr(float("nan"))}}],
             "by_loss": {"xent": {"median_pgr": 0.2}, "logconf": {"median_pgr": None}}}
  rows = runners.published_comparisons("w2s", results)
  assert [(r.ours, r.theirs) for r in rows] == [("n/a", "-0.36"), ("0.20", "0.05"),
                                                ("0.20", "about 0.25"),
                                                ("flagged (no gap)", "about 0.80")]
  assert "theirs: boolq" in rows[0].quantity


# ---- each kind's smoke run: the rows, beside what the results and the constants say ----------
# EXPECTED[kind](results) -> [(a phrase of the quantity, our value, its decimals, theirs)], in
# the rows' order; "ours" must show that value rounded to those decimals.

def _w2s(r):
  pub, losses = w2s.PUBLISHED, ("logconf", "xent")
  main = w2s.pairs_by(r["pairs"], r["main_pair"]["weak"], r["main_pair"]["strong"])["losses"]
  out = [("median PGR over the ladder's pairs, " + loss, r["by_loss"][loss]["median_pgr"], 2,
          ", ".join(f"{t} {pub[t][loss]:.2f}" for t in ("sciq", "amazon_polarity", "cosmos_qa",
                                                         "boolq"))) for loss in losses]
  out += [("PGR of the largest student", main[loss]["pgr_accuracy"]["mean"], 2,
           f"about {pub['largest_students'][loss]:.2f}") for loss in ("xent", "logconf")]
  assert r["pretrain_task"] == "coarse" and r["mode"] == "probe"   # the smoke config's
  return out + [("pretrained on coarse groups", main["xent"]["pgr_accuracy"]["mean"], 2,
                 f"{pub['digits_sklearn_probe']['pgr_proxy_pretrained']:.2f}")]


def _w2s_misfit(r):
  v, pub = r["variants"], misfit.PUBLISHED
  return [("realizable: tasks with gain >= misfit",
           100 * v["realizable"]["fraction_gain_ge_misfit_minus_tol"], 0,
           f"{100 * pub['realizable_tasks_gain_ge_misfit']:.0f}% (Theorem 1)")] + [
      (f"{name}: slope", v[name]["fit"]["slope_through_origin"], 3,
       f"about {pub['slope_of_gain_on_misfit']:g} (gain ~= misfit)")
      for name in ("realizable", "pretrained")]


def _w2s_ccs(r):
  return [(name, 100 * r[key]["mean"], 2, f"{ccs.PUBLISHED[theirs]:.1f}")
          for name, key, theirs in (("zero-shot", "zero_shot_accuracy", "zero_shot"),
                                    ("CCS", "ccs_accuracy", "ccs"),
                                    ("LR ceiling", "ceiling_accuracy", "lr_ceiling"))]


def _debate(r):
  pub, out = debate.PUBLISHED, []
  for k, row in r["by_k"].items():
    if k not in pub["judge_alone"]:
      continue
    alone, precommit = (pub["judge_alone"][k], pub["debate_precommit_honest_win_rate"][k])
    p = row["protocols"]
    out += [(f"judge alone: judge accuracy % (k = {k}", 100 * p["judge_alone"]["judge_accuracy"]
             ["mean"], 1, f"{100 * alone:.1f}"),
            (f"debate, precommit: judge accuracy % (k = {k}",
             100 * p["debate_precommit"]["judge_accuracy"]["mean"], 1, f"{100 * precommit:.1f}"),
            (f"judge alone, points (k = {k}", 100 * row["debate_minus_judge_alone"], 1,
             f"{100 * (precommit - alone):.1f}")]
  return out


def _amplification(r):
  pub, out = amplification.PUBLISHED_FIGURES, []
  for name, t in r["tasks"].items():
    out += [(f"amplification / supervised test accuracy ({name}", t["amplify_over_supervised"],
             2, pub["amplify_over_supervised"]),
            (f"H calls, amplification ({name}", t["amplify"]["counts"]["h_calls"], 0,
             pub["h_calls"])]
  return out


def _sandwich(r):
  pub = sandwich.PUBLISHED
  theirs = lambda key: f"{pub[key]['MMLU']:.1f} / {pub[key]['QuALITY']:.1f}"
  cond = r["conditions"]
  protocols = [p for p in r["honest"] if p != "lie_rate"]
  assert protocols
  return ([("non-expert alone", 100 * cond["nonexpert_alone"]["accuracy"]["mean"], 1,
            theirs("nonexpert_alone")),
           ("assistant alone", 100 * cond["assistant_alone"]["accuracy"]["mean"], 1,
            theirs("assistant_alone"))] +
          [(f"assistant, {p.replace('_', ' ')} accuracy", 100 * r["honest"][p]["accuracy"]["mean"],
            1, theirs("assisted")) for p in protocols] +
          [("expert", 100 * cond["expert"]["accuracy"]["mean"], 1, theirs("expert"))])


def _interp(r):
  return [("defection probe AUROC", r["defection"]["test"]["auroc"]["mean"], 3,
           f"> {defection.PUBLISHED_AUROC:.2f}"),
          ("SAE explained variance", r["sae"]["metrics"]["explained_variance"], 3,
           " / ".join(f"{v:.2f}" for v in interp.PUBLISHED_SAE["explained_variance"].values())),
          ("SAE CE loss score", r["sae"]["ce_loss_score"], 3,
           " / ".join(f"{v:.3f}" for v in interp.PUBLISHED_SAE["ce_loss_score"].values()))]


def _process(r):
  pub, n = process.PUBLISHED, r["ns"][-1]
  lightman, uesato = pub["lightman_best_of_1860"], pub["uesato_trace_error"]
  e = r["easy_to_hard"]
  trace = {name.split(" (")[0]: v for name, v in r["trace_error"].items()}
  sun = pub["sun_easy_to_hard_prm_math500"]
  return ([(f"best-of-N accuracy %, {shown}", 100 * r["best_of_n"][name][str(n)]["mean"], 1,
            f"{lightman[key]:.1f}")
           for name, shown, key in (("prm_product", "PRM (product)", "prm"),
                                    ("orm_generative", "ORM, generative", "orm"),
                                    ("majority", "majority vote", "majority"))] +
          [(f"trace error % among right answers, {shown}",   # None: no right answer picked
            100 * trace[name]["mean"] if trace[name] else None, 1, f"{uesato[which]:.1f}")
           for name, shown, which in (("orm", "ORM, classifier", "outcome_supervised"),
                                      ("orm_generative", "ORM, generative", "outcome_supervised"),
                                      ("prm_product", "PRM (product)", "process_supervised"))] +
          [("Supervision Gap Recovered, PRM", e["sgr_prm"], 2, "0.70-1.00"),
           ("Supervision Gap Recovered, ORM", e["sgr_orm"], 2, "0.70-1.00"),
           ("PRM trained on easy problems only",
            100 * e["selection"]["prm_product_easy"]["mean"], 1,
            f"{sun['7b_rl']:.1f} (7B, RL) / {sun['34b_rerank_1024']:.1f} (34B, rerank@1024)")])


def _verify(r):
  out = []
  for method, source in (("ibp", "IBP"), ("crown_ibp", "CROWN-IBP")):
    for eps, row in r["models"][method]["eval"].items():
      paper = verify.PUBLISHED_MNIST.get(float(eps))
      if paper is None:
        continue
      paper = paper[method]
      best = min(row["verified_error"].values(), key=lambda e: e["mean"])
      out += [(f"clean error % ({source}-trained", 100 * row["clean_error"]["mean"], 2,
               f"{paper[0]:.2f}"),
              (f"PGD error % ({source}-trained", 100 * row["pgd_error"]["mean"], 2,
               f"{paper[1]:.2f}"),
              (f"bound) % ({source}-trained", 100 * best["mean"], 2, f"{paper[2]:.2f}")]
  return out


def _control(r):
  out = []
  assert set(control.PUBLISHED) <= set(r["protocols"])
  for name, row in r["protocols"].items():   # in the run's order, those the paper has
    if name not in control.PUBLISHED:
      continue
    usefulness, safety = control.PUBLISHED[name]
    out += [(f"{name.replace('_', ' ')}: usefulness", 100 * row["rescaled"]["mean"], 1,
             f"{usefulness}"),
            (f"{name.replace('_', ' ')}: safety", 100 * row["safety"]["mean"], 1, f"{safety}")]
  return out


def _interp_lm(r):
  return [(f"defection probe AUROC{label}", d["test"]["auroc"]["mean"], 3,
           f"> {defection.PUBLISHED_AUROC:.2f}")
          for label, d in (("", r["defection"]), (" after safety SFT",
                                                  r["safety_sft"]["defection"]))]


EXPECTED = {"w2s": _w2s, "w2s_misfit": _w2s_misfit, "w2s_ccs": _w2s_ccs, "debate": _debate,
            "amplification": _amplification, "sandwich": _sandwich, "interp": _interp,
            "process": _process, "verify": _verify, "control": _control,
            "interp_lm": _interp_lm, "control_text": _control}   # text: the same protocol table


def _number(text: str) -> float:
  """The number ``text`` starts with (``"0.39 [0.13, 0.66]"``, ``"100%"``, ``"102,400"``)."""
  match = re.match(r"(-?[\d,]+(?:\.\d+)?|nan)\b", text)
  assert match, f"ours {text!r} does not start with a number"
  return float(match.group(1).replace(",", ""))


def check(kind: str, results: dict) -> list[Comparison]:
  """``kind``'s rows from ``results``, asserted against ``EXPECTED[kind]``; returns them."""
  rows = runners.published_comparisons(kind, results)
  expected = EXPECTED[kind](results)
  assert rows and len(rows) == len(expected), (len(rows), [r.quantity for r in rows])
  for row, (phrase, value, digits, theirs) in zip(rows, expected):
    assert isinstance(row, Comparison) and row.source and row.quantity
    assert phrase in row.quantity, (phrase, row.quantity)
    assert row.theirs == theirs, (row.quantity, row.theirs, theirs)
    if value is None or math.isnan(value):   # NaN (null in results.json): no number to show
      assert row.ours.split()[0] in ("n/a", "nan", "flagged"), (row.quantity, row.ours)
    else:
      assert _number(row.ours) == round(value, digits), (row.quantity, row.ours, value)
  assert "| quantity | ours | published | source |" in markdown_table(rows)
  return rows


@pytest.mark.e2e
@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.xdist_group(f"smoke-{k}"))
                                  for k in sorted(EXPECTED)])   # each beside its kind's other readers
def test_smoke_run_sets_ours_beside_the_published_figures(kind, smoke):
  assert kind in SMOKE
  results, _ = smoke(kind)   # the session's shared smoke run (conftest)
  check(kind, results)
