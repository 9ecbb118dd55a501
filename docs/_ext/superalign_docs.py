"""The site's Sphinx extension: generates the API pages, the notebooks and the published-figures
page before the sources are read (``docsite`` says how), and makes an undocumented public object
a warning naming its file and line, so that ``sphinx-build -W`` fails on it.

The generated files are git-ignored and rewritten only when their text changes, so an
incremental build stays incremental.
"""

from __future__ import annotations

import json
import pathlib

from sphinx.util import logging

import docsite

log = logging.getLogger(__name__)


def _write(path: pathlib.Path, text: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  if not path.exists() or path.read_text() != text:
    path.write_text(text)


def generate(app) -> None:
  """``builder-inited``: writes ``api/*.rst``, ``tutorials/*.ipynb`` and
  ``published_figures.md`` into the source directory."""
  src, config = pathlib.Path(app.srcdir), app.config
  modules = config.superalign_modules or docsite.public_modules()
  for name, text in docsite.api_pages(modules).items():
    _write(src / "api" / name, text)
  executed = pathlib.Path(config.superalign_executed)
  for source in sorted(pathlib.Path(config.superalign_notebooks).glob("*.ipynb")):
    nb, how = docsite.stage_notebook(source, executed)
    log.info(f"[superalign] {source}: "
             + ("rendered from its executed copy" if how == "executed copy"
                else f"executed in the build ({how})"))
    _write(src / "tutorials" / source.name, json.dumps(nb, indent=1) + "\n")
  if config.superalign_results:
    results = src / config.superalign_results
    runs = sorted(results.glob("*.json"))
    if not runs:
      log.warning("no gathered results: the published-figures page would be empty "
                  "(python docs/gather_results.py CONFIG=WORKDIR...)", location=str(results))
    _write(src / "published_figures.md", docsite.figures_page(runs))


def check_docstring(app, what, name, obj, options, lines) -> None:
  """``autodoc-process-docstring``: a public object without a docstring is a warning."""
  if docsite.flagged(name, what, obj, "\n".join(lines)):
    log.warning(docsite.message(name, what), location=docsite.where(obj) or None,
                type="superalign", subtype="docstring")


def check_reference(app, env, node, contnode):
  """``missing-reference``: a Python cross-reference that a guide makes (``{py:func}`...```) and
  that names nothing in the API reference is a warning (the API pages' own type hints may name
  numpy or jax types, which are not documented here)."""
  if node.get("refdomain") == "py" and not node.get("refdoc", "").startswith("api/"):
    log.warning(f"{node['reftarget']}: no such Python object in the API reference",
                location=node, type="superalign", subtype="reference")


def setup(app):
  """Registers the generator, the docstring check and their settings (the tests build small
  sites with their own modules and notebooks)."""
  app.add_config_value("superalign_modules", None, "env",   # None: every public module
                       types=frozenset({list, type(None)}))
  app.add_config_value("superalign_notebooks", str(docsite.NOTEBOOKS), "env")
  app.add_config_value("superalign_executed", str(docsite.EXECUTED), "env")
  app.add_config_value("superalign_results", "results", "env",   # None: no figures page
                       types=frozenset({str, type(None)}))
  app.connect("missing-reference", check_reference)
  app.connect("builder-inited", generate)
  app.connect("autodoc-process-docstring", check_docstring)
  return {"parallel_read_safe": True, "parallel_write_safe": True}
