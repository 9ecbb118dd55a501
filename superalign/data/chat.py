"""Chat templates: the prompt an instruction-tuned checkpoint was trained on.

A checkpoint's template is Jinja source in ``chat_template.jinja`` (what ``save_pretrained`` writes
since transformers 5) or in ``tokenizer_config.json``'s ``chat_template`` (older checkpoints: a
string, or a list of ``{name, template}``: "tool_use" when given tools, else "default"). It is
rendered as ``transformers``' ``apply_chat_template`` renders it, without importing transformers:
a sandboxed, immutable Jinja environment with ``trim_blocks`` and ``lstrip_blocks``, a ``tojson``
that escapes no HTML, ``raise_exception`` and ``strftime_now``, and the named special tokens
(``bos_token``, ...) as variables. A template from the Hub is foreign code, hence the sandbox.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from superalign.data.source import DataError
from superalign.results.files import load_json, read_guarded

FILE = "chat_template.jinja"
EXTRA_DIR = "additional_chat_templates"   # transformers 5 writes the non-default templates there
CONFIG = "tokenizer_config.json"
# The named special tokens transformers passes to every template (its SPECIAL_TOKENS_ATTRIBUTES).
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                  "mask_token")
# Older names of a message's reasoning; templates read "reasoning_content", gpt-oss's "thinking".
REASONING = ("reasoning_content", "thinking", "reasoning")


def _read_text(path: str) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read()


def find_templates(path: str) -> dict[str, tuple[str, str]]:
  """{name: (template source, the file it came from)} of checkpoint directory ``path``, empty if
  it has none. As transformers loads them: ``chat_template.jinja`` ("default") and
  ``additional_chat_templates/<name>.jinja`` win over ``tokenizer_config.json``'s
  ``chat_template``, a string ("default") or a list of ``{name, template}``."""
  fix = "save the tokenizer again (save_pretrained) or delete this file"
  found = {}
  if os.path.isfile(file := os.path.join(path, FILE)):
    found["default"] = (read_guarded(file, _read_text, fix), file)
  if os.path.isdir(extra := os.path.join(path, EXTRA_DIR)):
    for name in sorted(os.listdir(extra)):
      if name.endswith(".jinja"):
        file = os.path.join(extra, name)
        found.setdefault(name[:-len(".jinja")], (read_guarded(file, _read_text, fix), file))
  file = os.path.join(path, CONFIG)
  if found or not os.path.isfile(file):
    return found
  saved = read_guarded(file, load_json, fix)
  entry = saved.get("chat_template") if isinstance(saved, dict) else None
  if isinstance(entry, str):
    return {"default": (entry, file)}
  if entry is None:
    return {}
  if not (isinstance(entry, list) and all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                          and isinstance(t.get("template"), str) for t in entry)):
    raise DataError(f"{file}: chat_template is neither a template string nor a list of "
                    f"{{'name': str, 'template': str}}: {str(entry)[:80]!r}; {fix}")
  return {t["name"]: (t["template"], file) for t in entry}


def _plain(value: Any) -> Any:
  """``value`` rebuilt from plain JSON types, anything else a placeholder such as ``"<ndarray>"``:
  what transformers lets a template see, since a rich object's methods escape the sandbox. It is
  a copy, so the template's view never aliases the caller's messages."""
  if value is None or type(value) in (str, int, float, bool):
    return value
  for base in (str, int, float):      # subclasses (enums, str subclasses) back to their base type
    if isinstance(value, base):
      return base(value)
  if isinstance(value, np.generic):
    return _plain(value.item())
  if isinstance(value, Mapping):
    return {_plain(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return (list if isinstance(value, list) else tuple)(_plain(v) for v in value)
  return f"<{type(value).__name__}>"


@functools.lru_cache(maxsize=16)
def _compile(template: str):
  """A compiled template, built as transformers builds it (a raised jinja2.TemplateError on a
  syntax error)."""
  import jinja2
  import jinja2.ext
  from jinja2.sandbox import ImmutableSandboxedEnvironment

  class Generation(jinja2.ext.Extension):
    # {% generation %}...{% endgeneration %} marks assistant text for transformers' token masks;
    # here it renders its body unchanged.
    tags = {"generation"}

    def parse(self, parser):
      lineno = next(parser.stream).lineno
      body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
      return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
      return caller()

  class Dict:
    # The builtin dict type would let a template mutate through unbound methods (dict.update).
    def __call__(self, *args, **kwargs):
      return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
      return dict.fromkeys(*args, **kwargs)

  class Namespace(jinja2.utils.Namespace):
    # A namespace stores no underscore names, which reach CPython internals.
    def __init__(*args, **kwargs):   # Jinja's signature trick: namespace(self=...) still works
      self, attrs = args[0], dict(*args[1:], **kwargs)
      for name in attrs:
        Namespace._check(name)
      jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
      Namespace._check(name)
      jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
      if isinstance(name, str) and name.startswith("_"):
        raise jinja2.exceptions.SecurityError(f"a namespace cannot store {name!r}")

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)

  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                      extensions=[Generation, jinja2.ext.loopcontrols])
  env.filters["tojson"] = tojson
  env.globals.update(raise_exception=raise_exception, dict=Dict(), namespace=Namespace,
                     strftime_now=lambda fmt: datetime.datetime.now().strftime(fmt))
  return env.from_string(template)


def _one_line(e: BaseException) -> str:
  import jinja2
  text = " ".join(str(e).split())    # a syntax error's message spans lines
  text = text if isinstance(e, jinja2.TemplateError) else f"{type(e).__name__}: {text}"
  return text if len(text) <= 300 else text[:297] + "..."


def check_messages(messages: Any, where: str) -> None:
  """A ``DataError`` unless ``messages`` is a list of dicts, each with a string ``role`` and a
  ``content``."""
  if not isinstance(messages, (list, tuple)) or not messages:
    raise DataError(f"{where}: messages must be a non-empty list of "
                    f"{{'role': ..., 'content': ...}} dicts, not {type(messages).__name__} "
                    f"{str(messages)[:60]!r}")
  for i, m in enumerate(messages):
    if not (isinstance(m, Mapping) and isinstance(m.get("role"), str) and "content" in m):
      raise DataError(f"{where}: messages[{i}] must be a {{'role': str, 'content': ...}} dict, "
                      f"not {str(m)[:80]!r}")


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """A checkpoint's chat ``templates`` ({name: (Jinja source, the file errors name)}), the
  special ``tokens`` they see, and the directory ``where`` they came from."""
  templates: Mapping[str, tuple[str, str]]
  tokens: Mapping[str, str] = dataclasses.field(default_factory=dict)
  where: str = ""

  @classmethod
  def from_dir(cls, path: str, tokens: Mapping[str, str] | None = None,
               key: str = "data.tokenizer") -> "ChatTemplate":
    """The templates of checkpoint directory ``path``, seeing the special ``tokens``; a directory
    without one is a ``DataError`` naming ``key``."""
    found = find_templates(path)
    if not found:
      raise DataError(
          f"{key}={path!r}: no chat template (no {FILE}, no chat_template in {CONFIG}); a base "
          f"model has none: format its prompts as plain text, or use the instruction-tuned "
          f"checkpoint's directory")
    return cls(found, dict(tokens or {}), path)

  def pick(self, tools: Any = None) -> tuple[str, str]:
    """(source, file) of the template transformers uses: "tool_use" when given ``tools`` and
    there is one, else "default"."""
    if tools is not None and "tool_use" in self.templates:
      return self.templates["tool_use"]
    if "default" not in self.templates:
      raise DataError(f"{self.where}: chat templates {', '.join(sorted(self.templates))} and none "
                      f"named 'default', so none is the one to use")
    return self.templates["default"]

  def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
             **extra) -> str:
    """The conversation ``messages`` as the prompt text, as transformers' ``apply_chat_template(
    ..., tokenize=False)`` renders it. ``extra`` are more template variables (``tools`` as JSON
    schemas, ``documents``, ``enable_thinking``, ...); they override the special tokens."""
    source, file = self.pick(extra.get("tools"))
    check_messages(messages, file)
    chat = []
    for m in messages:
      # As transformers: None-valued keys are dropped (templates test for a missing key, not for
      # None), and reasoning is visible under each of its names.
      m = {k: _plain(v) for k, v in m.items() if v is not None}
      reasoning = next((m[k] for k in REASONING if k in m), None)
      chat.append(m if reasoning is None else
                  {"thinking": reasoning, **m, "reasoning_content": reasoning})
    variables = {"tools": None, "documents": None, **self.tokens, **_plain(extra),
                 "messages": chat, "add_generation_prompt": add_generation_prompt}
    import jinja2
    try:
      return _compile(source).render(**variables)
    except (jinja2.TemplateError, ArithmeticError, AttributeError, LookupError, TypeError,
            ValueError) as e:
      # Foreign template code failed (raise_exception's message included): the template's error.
      raise DataError(f"{file}: the chat template failed: {_one_line(e)}") from None
