"""Protocol runners by ``config.kind``. A protocol plugs in with one line here.

Each runner module has ``validate(config)`` (protocol-specific checks, raising ConfigError) and
``run(config, workdir) -> dict`` (the results that go to ``results.json``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

RUNNERS = {
    "supervised": "superalign.supervised.run",
    "w2s": "superalign.w2s.run",
    "w2s_misfit": "superalign.w2s.misfit",
    "debate": "superalign.oversight.run",
    "amplification": "superalign.amplification.run",
    "sandwich": "superalign.sandwich.run",
}


def get(kind: str) -> ModuleType:
  return importlib.import_module(RUNNERS[kind])
