"""Ours beside theirs: a reproduced published figure as one row, and a markdown table of rows.

Each protocol's report module turns its run's ``results.json`` into ``Comparison`` rows
(``published_comparisons(results)``); ``launch.runners.published_comparisons`` finds that function
by the run's kind, and the docs render the rows with ``markdown_table``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable


@dataclasses.dataclass(frozen=True)
class Comparison:
  """One published figure that a run reproduces, beside the run's own.

  ``quantity`` says what is measured (and where ours differs in setting, how); ``ours`` is the
  run's figure as its printed table shows it (``mean [lo, hi]`` where it prints an interval);
  ``theirs`` is the published figure as text (``"> 0.99"``, ``"57.2 (MMLU) / 48.6 (QuALITY)"``);
  ``source`` names the paper, e.g. ``"Burns et al. 2023"``.
  """
  quantity: str
  ours: str
  theirs: str
  source: str


def number(value: float | None, digits: int, *, scale: float = 1.0, missing: str = "n/a") -> str:
  """``value * scale`` with ``digits`` decimals; ``missing`` for None or NaN (a NaN is ``null``
  in ``results.json``)."""
  if value is None or not math.isfinite(value):
    return missing
  return f"{scale * value:.{digits}f}"


def _cell(text: str) -> str:
  return " ".join(str(text).split()).replace("|", "\\|")


def markdown_table(rows: Iterable[Comparison]) -> str:
  """``rows`` as a GitHub / MyST markdown table with the columns quantity | ours | published |
  source (a ``|`` inside a cell is escaped, line breaks become spaces); the header alone when
  there are no rows."""
  lines = ["| quantity | ours | published | source |", "|---|---|---|---|"]
  lines += [f"| {_cell(r.quantity)} | {_cell(r.ours)} | {_cell(r.theirs)} | {_cell(r.source)} |"
            for r in rows]
  return "\n".join(lines)
