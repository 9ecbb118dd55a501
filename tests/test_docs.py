"""The documentation site (``docs/``): what it generates, what it refuses, and the built site.

The first tests need no Sphinx and run in the default selection. Those marked ``docs`` check the
site that ``sphinx-build -W docs docs/_build/html`` built (``pytest -m docs``, after the build;
``.ci/run`` does both): its links, its API reference, its notebooks, small sites that must fail
to build, and the pages as headless Chromium renders them.
"""

from __future__ import annotations

import functools
import html.parser
import json
import os
import pathlib
import pkgutil
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse

import pytest

from conftest import ROOT, SAFETY_S, docs_module

docsite = docs_module("_ext/docsite.py")

DOCS = ROOT / "docs"
SITE = DOCS / "_build" / "html"
SCREENSHOTS = DOCS / "_build" / "screenshots"
MD_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _walked_modules() -> set[str]:
  """Every importable public module, found by import rather than by file (a second opinion)."""
  import superalign
  names = {"superalign"}
  for info in pkgutil.walk_packages(superalign.__path__, "superalign."):
    if not any(part.startswith("_") for part in info.name.split(".")):
      names.add(info.name)
  return names


def test_every_public_module_is_in_the_api_reference():
  modules = docsite.public_modules()
  assert set(modules) == _walked_modules()
  pages = "\n".join(docsite.api_pages(modules).values())
  documented = set(re.findall(r"^\.\. automodule:: (\S+)$", pages, re.M))
  assert documented == set(modules)
  assert "superalign.core.trainer" in documented and "superalign.interp.hooks" in documented


def test_every_public_object_has_a_docstring():
  missing = docsite.undocumented(docsite.public_modules())
  assert not missing, "\n".join(missing)


def test_the_docstring_check_finds_a_planted_gap(tmp_path, monkeypatch):
  (tmp_path / "planted.py").write_text(
      '"""A module."""\nimport dataclasses\n\ndef documented():\n  """Says so."""\n\n'
      "def bare():\n  pass\n\n@dataclasses.dataclass\nclass Fields:\n  x: int\n\n"
      "class Thing:\n  '''A thing.'''\n  def method(self):\n    pass\n"
      "  @property\n  def size(self):\n    return 1\n  def _private(self):\n    pass\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  found = docsite.undocumented(["planted"])
  names = sorted(line.split(": ")[1] for line in found)
  assert names == ["planted.Fields", "planted.Thing.method", "planted.Thing.size", "planted.bare"]
  assert all("planted.py:" in line for line in found)


def _notebook(source: str) -> dict:
  return {"cells": [{"cell_type": "markdown", "id": "title", "source": "# Planted", "metadata": {}},
                    {"cell_type": "code", "id": "code", "source": source, "metadata": {},
                     "outputs": [], "execution_count": None}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_an_executed_copy_is_rendered_only_while_it_is_current(tmp_path):
  source, executed = tmp_path / "nb.ipynb", tmp_path / "executed"
  executed.mkdir()
  source.write_text(json.dumps(_notebook("print(1)")))
  assert docsite.stage_notebook(source, executed)[1] == "no executed copy"
  copy = _notebook("print(1)")
  copy["cells"][1].update(execution_count=1, outputs=[{"output_type": "stream", "name": "stdout",
                                                        "text": "1\n"}])
  (executed / "nb.ipynb").write_text(json.dumps(docsite.mark_executed(copy)))
  nb, how = docsite.stage_notebook(source, executed)
  assert how == "executed copy" and nb["metadata"]["mystnb"] == {"execution_mode": "off"}
  assert nb["cells"][1]["outputs"][0]["text"] == "1\n"
  source.write_text(json.dumps(_notebook("print(2)")))      # the tutorial changed since
  nb, how = docsite.stage_notebook(source, executed)
  assert how == "stale" and nb["cells"][1]["outputs"] == [] and "mystnb" not in nb["metadata"]


def _relative_links(path: pathlib.Path) -> list[str]:
  text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
  return [link for link in MD_LINK.findall(text)
          if not re.match(r"[a-z]+:", link) and not link.startswith("#")]


def test_the_readme_is_a_front_door_whose_links_resolve():
  readme = ROOT / "README.md"
  assert len(readme.read_text().splitlines()) <= 200
  links = _relative_links(readme)
  assert len(links) >= 10   # every room's guide, and the docs' own pages
  for link in links:
    assert (ROOT / link.split("#")[0]).is_file(), f"README.md: {link} does not exist"


def test_every_link_between_pages_resolves():
  pages = [p for p in DOCS.rglob("*.md") if "_build" not in p.parts]
  # The pages the build writes, which a clean clone does not have yet.
  generated = {DOCS / "published_figures.md"} | {
      DOCS / "api" / name for name in docsite.api_pages(docsite.public_modules())}
  targets = set(pages) | generated
  checked = 0
  for page in pages:
    for link in _relative_links(page):
      target = (page.parent / link.split("#")[0]).resolve()
      assert target in targets or target.is_file(), f"{page.relative_to(ROOT)}: {link}"
      checked += 1
  assert checked > 20


def test_gathered_results_come_from_the_documented_commands(tmp_path):
  gather_results = docs_module("gather_results.py")
  workdir = tmp_path / "run"
  workdir.mkdir()
  config = gather_results.default_config(ROOT / "experiments/w2s/misfit.py")
  (workdir / "results.json").write_text("{}")
  config["seed"] = 7                      # a run with an override is not the command's
  (workdir / "config.json").write_text(json.dumps(config))
  with pytest.raises(SystemExit, match="keys seed differ"):
    gather_results.gather("experiments/w2s/misfit.py", str(workdir))


def test_every_gathered_run_has_its_published_figures():
  from superalign.launch.runners import published_comparisons
  runs = sorted((DOCS / "results").glob("*.json"))
  assert len(runs) >= 6
  for path in runs:
    run = json.loads(path.read_text())
    rows = published_comparisons(run["kind"], run["results"])
    assert rows, f"{path.name}: no published figure"
    assert all(row.ours and row.theirs and row.source for row in rows), path.name
  page = docsite.figures_page(runs)
  assert page.count("| quantity") == len(runs) and "superalign --config=experiments/" in page


# ---------------------------------------------------------------------------------------------
# The built site (pytest -m docs, after sphinx-build).

def _built() -> pathlib.Path:
  if not (SITE / "index.html").exists():
    pytest.fail("no built site: run `sphinx-build -W docs docs/_build/html` first")
  return SITE


class _Links(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.links, self.ids = [], set()

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if attrs.get("id"):
      self.ids.add(attrs["id"])
    for key in ("href", "src"):
      if attrs.get(key):
        self.links.append(attrs[key])


@functools.lru_cache(maxsize=None)
def _parse(path: pathlib.Path) -> _Links:
  parser = _Links()
  parser.feed(path.read_text(errors="replace"))
  return parser


@pytest.mark.docs
def test_the_built_site_has_no_broken_internal_link():
  site = _built()
  pages = [p for p in site.rglob("*.html") if "_static" not in p.parts]   # not theme templates
  broken, checked = [], 0
  for page in pages:
    for link in _parse(page).links:
      parts = urllib.parse.urlsplit(link)
      if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")):
        continue
      target = page if not parts.path else (page.parent / urllib.parse.unquote(parts.path))
      target = target.resolve()
      if target.is_dir():
        target = target / "index.html"
      checked += 1
      if not target.exists():
        broken.append(f"{page.relative_to(site)}: {link}")
      elif parts.fragment and target.suffix == ".html" and \
          urllib.parse.unquote(parts.fragment) not in _parse(target).ids:
        broken.append(f"{page.relative_to(site)}: {link} (no such anchor)")
  assert checked > 500
  assert not broken, "\n".join(broken[:30])


@pytest.mark.docs
def test_the_built_api_reference_documents_every_public_module():
  site = _built()
  ids = set()
  for page in (site / "api").glob("*.html"):
    ids |= _parse(page).ids
  missing = sorted(m for m in docsite.public_modules() if f"module-{m}" not in ids)
  assert not missing, missing
  trainer = (site / "api" / "core.html").read_text()
  assert 'id="superalign.core.trainer.Trainer.fit"' in trainer   # members, not just titles


@pytest.mark.docs
@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_every_tutorial_page_shows_its_outputs(name):
  page = (_built() / "tutorials" / f"{name}.html").read_text()
  assert page.count("cell_output") >= 3, f"{name}: the rendered notebook has no outputs"
  assert re.search(r'<img [^>]*src="[^"]+\.png"', page), f"{name}: no plot on its page"


def _mini_site(tmp_path: pathlib.Path, index: str, *, module: str = "", notebook: str = ""
               ) -> subprocess.CompletedProcess:
  """``sphinx-build -W`` of a small site that loads the site's extension, with one module of
  its own for the API reference and one notebook."""
  src = tmp_path / "site"
  (src / "notebooks").mkdir(parents=True)
  modules = []
  if module:
    (tmp_path / "planted.py").write_text(module)
    modules = ["planted"]
  if notebook:
    (src / "notebooks" / "planted.ipynb").write_text(json.dumps(_notebook(notebook)))
  (src / "conf.py").write_text(
      f"import sys\nsys.path[:0] = [{str(DOCS / '_ext')!r}, {str(tmp_path)!r}]\n"
      "extensions = ['myst_nb', 'sphinx.ext.autodoc', 'superalign_docs']\n"
      f"superalign_modules = {modules!r} or ['superalign.core.specs']\n"
      f"superalign_notebooks = {str(src / 'notebooks')!r}\n"
      f"superalign_executed = {str(tmp_path / 'executed')!r}\n"
      "superalign_results = None\n"
      "nb_execution_mode = 'force'\nnb_execution_raise_on_error = True\n"
      "exclude_patterns = ['_build', 'notebooks']\n")
  (src / "index.md").write_text(index + "\n\n```{toctree}\n:hidden:\n\napi/index\n"
                                + ("tutorials/planted\n" if notebook else "") + "```\n")
  return subprocess.run([sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(src),
                         str(tmp_path / "out")], capture_output=True, text=True,
                        timeout=SAFETY_S, env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.mark.docs
def test_a_small_site_builds_clean(tmp_path):
  result = _mini_site(tmp_path, "# Home\n\nSee {py:class}`superalign.core.specs.InputSpec`.",
                      notebook="print(6 * 7)")
  assert result.returncode == 0, result.stderr
  assert "42" in (tmp_path / "out" / "tutorials" / "planted.html").read_text()


@pytest.mark.docs
@pytest.mark.parametrize("case", ["broken page link", "broken api reference", "failing notebook",
                                  "undocumented function"])
def test_bad_input_fails_the_build_naming_the_file(tmp_path, case):
  index, module, notebook, named = "# Home", "", "", "index.md"
  if case == "broken page link":
    index += "\n\n[a page](no_such_page.md)"
  elif case == "broken api reference":
    index += "\n\n{py:func}`superalign.core.specs.no_such_function`"
  elif case == "failing notebook":
    notebook, named = "raise ValueError('planted')", "planted.ipynb"
  else:
    module, named = '"""A module."""\n\ndef bare(x):\n  return x\n', "planted.py:3"
  result = _mini_site(tmp_path, index, module=module, notebook=notebook)
  assert result.returncode != 0, f"{case}: the build passed"
  assert named in result.stderr, result.stderr[-2000:]


def _chromium() -> str:
  path = shutil.which("chromium") or shutil.which("chromium-browser")
  if not path or not shutil.which("chromedriver"):
    pytest.fail("the browser check needs Debian's chromium and chromium-driver "
                "(apt-get install chromium chromium-driver; .ci/run installs them)")
  return path


@pytest.mark.docs
def test_pages_render_in_headless_chromium_without_console_errors():
  import http.server
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  site = _built()
  class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
      pass

  handler = functools.partial(Quiet, directory=str(site))
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  options = webdriver.ChromeOptions()
  options.binary_location = _chromium()
  for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1600",
               "--disable-dev-shm-usage"):
    options.add_argument(flag)
  options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
  SCREENSHOTS.mkdir(parents=True, exist_ok=True)
  try:
    for page, heading in (("index.html", "superalign"),
                          ("rooms/w2s.html", "Weak-to-strong generalization")):
      driver.get(f"http://127.0.0.1:{server.server_port}/{page}")
      assert heading in driver.find_element("css selector", "article.bd-article h1").text
      # The theme's sidebar and its scripts ran: the navigation lists every room.
      nav = driver.find_element("css selector", "nav.bd-links").text
      assert "Debate" in nav and "API reference" in nav
      errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
      assert not errors, f"{page}: {errors}"
      shot = SCREENSHOTS / page.replace("/", "_").replace(".html", ".png")
      driver.save_screenshot(str(shot))
      assert shot.stat().st_size > 20_000, f"{shot}: a blank page"
  finally:
    driver.quit()
    server.shutdown()
