"""Chat templates: parity with ``transformers``' ``apply_chat_template`` (text and token ids) on
Llama-3-, Gemma- and ChatML/Qwen-style templates, each in a random tiny tokenizer that
``transformers`` saves here, in every form a checkpoint stores its template; one-line errors."""

from __future__ import annotations

import json
import os

import pytest

from superalign.data.source import DataError
from superalign.data.tokenizer import HFTokenizer

LLAMA3 = (
    "{{- bos_token }}\n"
    "{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}"
    "{%- endif %}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = '' %}\n"
    "{%- endif %}\n"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}\n"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}\n"
    "{%- if tools is not none %}\n"
    "    {%- for t in tools %}{{- t | tojson(indent=4) }}{{- '\\n\\n' }}{%- endfor %}\n"
    "{%- endif %}\n"
    "{{- system_message + '<|eot_id|>' }}\n"
    "{%- for message in messages %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n")

GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")

# Qwen2.5's layout with Qwen3's namespace and enable_thinking, a {% generation %} block (SmolLM3,
# OLMo) and a {% break %} (loopcontrols): every construct transformers' environment adds.
CHATML = """\
{%- set ns = namespace(last_user=-1) %}
{%- for message in messages %}{%- if message.role == 'user' %}{%- set ns.last_user = loop.index0 %}\
{%- endif %}{%- endfor %}
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}\
{%- else %}{{- 'You are Qwen, a helpful assistant.' }}{%- endif %}
    {{- "\\n\\n# Tools\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == "stop" %}{% break %}{% endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- generation %}
        {%- if message.reasoning_content and loop.index0 > ns.last_user %}
            {{- '\\n<think>\\n' + message.reasoning_content + '\\n</think>' }}
        {%- endif %}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}\
{%- set tool_call = tool_call.function %}{%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' + tool_call.name + '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
        {%- endgeneration %}
    {%- elif message.role == "tool" %}
        {{- '<|im_start|>user\\n<tool_response>\\n' + message.content }}
        {{- '\\n</tool_response><|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}
"""

SPECIAL = {
    "llama3": dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                   extra=["<|start_header_id|>", "<|end_header_id|>"]),
    "gemma": dict(bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                  extra=["<start_of_turn>", "<end_of_turn>"]),
    "chatml": dict(eos_token="<|im_end|>", pad_token="<|endoftext|>", extra=["<|im_start|>"]),
}
TEMPLATES = {"llama3": LLAMA3, "gemma": GEMMA, "chatml": CHATML}

TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Météo d'une ville",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
CHATS = [
    [{"role": "user", "content": "What is 3 plus 4?"}],
    [{"role": "system", "content": "  Answer tersely.  "},
     {"role": "user", "content": "What is 3 plus 4?"},
     {"role": "assistant", "content": "7"},
     {"role": "user", "content": "And <b>5</b> plus 2? é"}],
    [{"role": "user", "content": "Weather in Zürich?"},
     {"role": "assistant", "content": None, "reasoning": "Call the tool.",
      "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                                        "arguments": {"city": "Zürich"}}}]},
     {"role": "tool", "content": "21 C"},
     {"role": "stop", "content": "ignored"},
     {"role": "assistant", "content": "unreached"}],
]


def _checkpoint(directory, style, form="jinja"):
  """A random tiny byte-level BPE with ``style``'s special tokens, saved by transformers with its
  chat template in ``form``: "jinja" (chat_template.jinja, as transformers 5 saves it), "config"
  (a string in tokenizer_config.json) or "list" ([{name, template}] there)."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  from transformers import PreTrainedTokenizerFast
  special = dict(SPECIAL[style])
  extra = special.pop("extra")
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=list(special.values()) + extra,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator([TEMPLATES[style], json.dumps(CHATS, ensure_ascii=False)] * 3, trainer)
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=TEMPLATES[style],
                                 additional_special_tokens=extra, **special)
  directory = str(directory)
  fast.save_pretrained(directory)
  if form != "jinja":
    os.remove(os.path.join(directory, "chat_template.jinja"))
    config_file = os.path.join(directory, "tokenizer_config.json")
    with open(config_file) as f:
      config = json.load(f)
    config["chat_template"] = TEMPLATES[style] if form == "config" else [
        {"name": "tool_use", "template": "TOOLS {{ tools | length }}: {{ messages[-1].content }}"},
        {"name": "default", "template": TEMPLATES[style]}]
    with open(config_file, "w") as f:
      json.dump(config, f)
  return directory


def _one_line(e) -> str:
  message = str(e.value)
  assert "\n" not in message, message
  return message


def _assert_parity(directory, chats, **extra):
  from transformers import PreTrainedTokenizerFast    # AutoTokenizer's import takes 2 s more
  theirs = PreTrainedTokenizerFast.from_pretrained(directory)
  ours = HFTokenizer.from_dir(directory)
  assert theirs.chat_template is not None
  for chat in chats:
    for gen in (True, False):
      text = theirs.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen, **extra)
      ids = theirs.apply_chat_template(chat, tokenize=True, return_dict=False,
                                       add_generation_prompt=gen, **extra)
      assert ours.apply_chat_template(chat, add_generation_prompt=gen, **extra) == text
      assert ours.encode_chat(chat, add_generation_prompt=gen, **extra) == ids
  return ours


def test_llama3_template_matches_transformers(tmp_path):
  directory = _checkpoint(tmp_path, "llama3")
  assert os.path.isfile(os.path.join(directory, "chat_template.jinja"))  # transformers 5's file
  ours = _assert_parity(directory, CHATS[:2])
  _assert_parity(directory, CHATS[:2], tools=[TOOL], date_string="26 Jul 2024")
  text = ours.apply_chat_template(CHATS[0])
  assert text.startswith("<|begin_of_text|><|start_header_id|>system")
  assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
  ids = ours.encode_chat(CHATS[0])
  special = ours.tokenizer.token_to_id
  assert ids[0] == special("<|begin_of_text|>") and ids.count(special("<|eot_id|>")) == 2
  newlines = ours._ids(["\n\n"])[0]
  assert ids[-len(newlines) - 1:] == [special("<|end_header_id|>"), *newlines]


def test_gemma_template_matches_transformers_and_its_raise_exception_is_one_line(tmp_path):
  from transformers import PreTrainedTokenizerFast
  directory = _checkpoint(tmp_path, "gemma", form="config")     # a legacy string in the config
  ours = _assert_parity(directory, [CHATS[0], CHATS[1][1:]])
  assert ours.apply_chat_template(CHATS[0]) == (
      "<bos><start_of_turn>user\nWhat is 3 plus 4?<end_of_turn>\n<start_of_turn>model\n")
  with pytest.raises(Exception, match="System role not supported"):
    PreTrainedTokenizerFast.from_pretrained(directory).apply_chat_template(CHATS[1], tokenize=False)
  with pytest.raises(DataError, match="System role not supported") as e:
    ours.apply_chat_template(CHATS[1])
  assert _one_line(e).startswith(os.path.join(directory, "tokenizer_config.json"))


def test_chatml_template_matches_transformers_with_tools_thinking_and_tool_calls(tmp_path):
  directory = _checkpoint(tmp_path, "chatml", form="list")      # [{name, template}]: "default"
  _assert_parity(directory, CHATS)
  ours = _assert_parity(directory, CHATS, tools=[TOOL])         # tools: the "tool_use" one
  assert ours.apply_chat_template(CHATS[0], tools=[TOOL]).startswith("TOOLS 1")
  directory = _checkpoint(tmp_path / "jinja", "chatml")
  _assert_parity(directory, CHATS, tools=[TOOL], enable_thinking=False)
  ours = HFTokenizer.from_dir(directory)
  text = ours.apply_chat_template(CHATS[2], tools=[TOOL])
  assert '"description": "Météo d\'une ville"' in text                # tojson: no \u escapes
  assert "<think>\nCall the tool.\n</think>" in text and "unreached" not in text
  assert CHATS[2][1]["content"] is None                        # the caller's messages untouched


def test_the_jinja_file_wins_over_the_config(tmp_path):
  directory = _checkpoint(tmp_path, "gemma")
  config_file = os.path.join(directory, "tokenizer_config.json")
  with open(config_file) as f:
    config = json.load(f)
  with open(config_file, "w") as f:
    json.dump({**config, "chat_template": "{{ raise_exception('stale') }}"}, f)
  _assert_parity(directory, CHATS[:1])


def test_chat_errors_are_one_line(tmp_path):
  from conftest import train_tiny_bpe
  base = HFTokenizer.from_dir(train_tiny_bpe(tmp_path / "base", ["plain text"], 260))
  base.encode(["still a tokenizer"], 8)                          # no template: fine until asked
  with pytest.raises(DataError, match="no chat template") as e:
    base.apply_chat_template(CHATS[0])
  assert _one_line(e).startswith(f"data.tokenizer={str(tmp_path / 'base')!r}")

  ours = HFTokenizer.from_dir(_checkpoint(tmp_path / "gemma", "gemma"))
  file = os.path.join(str(tmp_path / "gemma"), "chat_template.jinja")
  for bad, what in (("hello", "not str"), ([], "non-empty list"), (["hi"], r"messages\[0\]"),
                    ([{"content": "no role"}], r"messages\[0\]"),
                    ([{"role": "user", "content": "a"}, {"role": "user"}], r"messages\[1\]")):
    with pytest.raises(DataError, match=what) as e:
      ours.apply_chat_template(bad)
    assert _one_line(e).startswith(file)
  with pytest.raises(DataError, match="roles must alternate") as e:
    ours.apply_chat_template(CHATS[0] * 2)
  _one_line(e)

  with open(file, "w") as f:
    f.write("{% for m in messages %}\n{{ m.content }\n{% endfor %}")
  with pytest.raises(DataError, match="chat template failed: .*unexpected '}'") as e:
    HFTokenizer.from_dir(str(tmp_path / "gemma")).apply_chat_template(CHATS[0])
  _one_line(e)
  for escape in ("{{ ''.__class__.__mro__ }}", "{{ messages.append(1) }}",   # the sandbox holds
                 "{% set ns = namespace() %}{% set ns._x = 1 %}", "{{ dict.update({}, a=1) }}"):
    with open(file, "w") as f:
      f.write(escape)
    with pytest.raises(DataError, match="failed: .*(unsafe|cannot store|no attribute)") as e:
      HFTokenizer.from_dir(str(tmp_path / "gemma")).apply_chat_template(CHATS[0])
    _one_line(e)

  directory = _checkpoint(tmp_path / "list", "chatml", form="list")
  config_file = os.path.join(directory, "tokenizer_config.json")
  with open(config_file) as f:
    config = json.load(f)
  config["chat_template"] = config["chat_template"][:1]          # tool_use alone: no default
  with open(config_file, "w") as f:
    json.dump(config, f)
  ours = HFTokenizer.from_dir(directory)
  with pytest.raises(DataError, match="templates tool_use and none named 'default'") as e:
    ours.apply_chat_template(CHATS[0])
  assert _one_line(e).startswith(directory)
  assert ours.apply_chat_template(CHATS[0], tools=[TOOL]) == "TOOLS 1: What is 3 plus 4?"
  config["chat_template"] = [{"name": "default"}]
  with open(config_file, "w") as f:
    json.dump(config, f)
  with pytest.raises(DataError, match="neither a template string nor a list") as e:
    HFTokenizer.from_dir(directory).apply_chat_template(CHATS[0])
  assert _one_line(e).startswith(config_file)
