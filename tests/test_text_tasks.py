"""``text:<task>``: the weak-to-strong text tasks (formatters, file layouts, one-line errors) and
the ``tokenizer.json`` tokenizer (padding, truncation, prompt buckets)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import datasets
import ml_collections
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, SAFETY_S, sciq_records, train_tiny_bpe, write_sciq_jsonl
from superalign import data as data_lib
from superalign.core.specs import InputSpec
from superalign.data import text_tasks
from superalign.data.source import DataError
from superalign.data.tokenizer import BUCKETS, HFTokenizer, bucket

TASKS = ("sciq", "boolq", "amazon_polarity", "cosmos_qa", "anthropic_hh")


class Fixed:
  """An rng stub: ``random()`` returns ``r``, ``choice`` the last option (so texts are exact)."""

  def __init__(self, r):
    self.r = r

  def random(self):
    return self.r

  def choice(self, options):
    return options[-1]


def _one_line(e) -> str:
  message = str(e.value)
  assert "\n" not in message, message
  return message


# ----------------------------------------------------------------------------- formatters

SCIQ = {"question": "What gas do plants absorb?", "correct_answer": "carbon dioxide",
        "distractor1": "oxygen", "distractor2": "helium", "distractor3": "neon", "support": "x"}
COSMOS = {"context": "I woke up late.", "question": "Why?", "label": 2,
          "answer0": "It rained .", "answer1": "I was tired .", "answer2": "The alarm broke .",
          "answer3": "None of the above choices ."}


def test_formatters_exact_text_and_label():
  assert text_tasks.format_sciq(SCIQ, Fixed(0.1)) == (
      "Q: What gas do plants absorb? A: carbon dioxide", 1)
  assert text_tasks.format_sciq(SCIQ, Fixed(0.9)) == ("Q: What gas do plants absorb? A: neon", 0)
  boolq = {"question": "is the sky blue", "passage": "The sky is blue.", "answer": True}
  assert text_tasks.format_boolq(boolq, Fixed(0.9)) == (
      "Passage: The sky is blue.\nQuestion: is the sky blue", 1)
  assert text_tasks.format_boolq({**boolq, "answer": False}, None)[1] == 0
  amazon = {"title": "Great", "content": "Works well.", "label": 1}
  assert text_tasks.format_amazon_polarity(amazon, None) == ("Great Works well.", 1)
  hh = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: no"}
  assert text_tasks.format_anthropic_hh(hh, Fixed(0.2)) == (hh["chosen"], 1)
  assert text_tasks.format_anthropic_hh(hh, Fixed(0.7)) == (hh["rejected"], 0)
  assert text_tasks.format_cosmos_qa(COSMOS, Fixed(0.1)) == (
      "Context: I woke up late.\nQuestion: Why?\nAnswer: The alarm broke .", 1)
  # A wrong answer: any of the other three (the stub takes the last one).
  assert text_tasks.format_cosmos_qa(COSMOS, Fixed(0.9)) == (
      "Context: I woke up late.\nQuestion: Why?\nAnswer: None of the above choices .", 0)


def test_cosmos_qa_none_of_the_above_is_always_negative():
  record = {**COSMOS, "label": 3}
  rng = random.Random(0)
  for _ in range(20):
    text, label = text_tasks.format_cosmos_qa(record, rng)
    assert label == 0 and "None of the above" not in text
  with pytest.raises(ValueError, match="None of the above"):
    text_tasks.format_cosmos_qa({**record, "answer3": "None of the above choices"}, rng)


# The reference's formatters (openai/weak-to-strong, weak_to_strong/datasets.py), as an oracle.
def ref_sciq(ex, rng):
  hard_label = int(rng.random() < 0.5)
  if hard_label:
    ans = ex["correct_answer"]
  else:
    ans = rng.choice([ex["distractor1"], ex["distractor2"], ex["distractor3"]])
  return dict(txt=f"Q: {ex['question']} A: {ans}", hard_label=hard_label)


def ref_cosmosqa(ex, rng):
  true_answer = ex["answer" + str(ex["label"])]
  if "None of the above choices ." in true_answer:
    hard_label = 0
  else:
    hard_label = int(rng.random() < 0.5)
  if hard_label:
    answer = true_answer
  else:
    candidate_answers = [ex["answer" + str(i)] for i in range(4)]
    answer = rng.choice([x for x in candidate_answers if x != true_answer])
  return dict(txt=f"Context: {ex['context']}\nQuestion: {ex['question']}\nAnswer: {answer}",
              hard_label=hard_label)


def ref_hh(ex, rng):
  hard_label = int(rng.random() < 0.5)
  return dict(txt=ex["chosen"] if hard_label else ex["rejected"], hard_label=hard_label)


@pytest.mark.parametrize("seed", [0, 7])
def test_formatters_follow_the_reference_rng_stream(seed):
  """A stream of records through one Random(seed) each: the same texts and labels."""
  rng = np.random.default_rng(seed)
  cosmos = [{**COSMOS, "label": int(rng.integers(4)), "question": f"q{i}"} for i in range(60)]
  hh = [{"chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(60)]
  for ours, ref, records in ((text_tasks.format_sciq, ref_sciq, sciq_records(60, seed)),
                             (text_tasks.format_cosmos_qa, ref_cosmosqa, cosmos),
                             (text_tasks.format_anthropic_hh, ref_hh, hh)):
    r1, r2 = random.Random(seed), random.Random(seed)
    got = [ours(ex, r1) for ex in records]
    want = [(d["txt"], d["hard_label"]) for d in (ref(ex, r2) for ex in records)]
    assert got == want
    assert 0 < np.mean([label for _, label in got]) < 1


def test_reference_test_splits():
  assert {t: text_tasks.TASKS[t].test_split for t in TASKS} == {
      "sciq": "test", "boolq": "validation", "amazon_polarity": "test",
      "cosmos_qa": "validation", "anthropic_hh": "test"}
  assert set(text_tasks.TASKS) == set(TASKS)


# ----------------------------------------------------------------------------- tokenizer


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
  texts = [f"{r['question']} {r['correct_answer']}" for r in sciq_records(200)]
  return train_tiny_bpe(str(tmp_path_factory.mktemp("tok")), texts, vocab_size=300)


@pytest.fixture(scope="module")
def tok(tok_dir):
  return HFTokenizer.from_dir(tok_dir)


def test_tokenizer_ids_and_round_trip(tok):
  assert 257 <= tok.vocab_size <= 300
  assert tok.eos_id == 0 and tok.pad_id == 0     # no pad token: EOS pads, as for GPT-2
  texts = ["Q: What is 3 plus 4? A: 7", "héllo wörld!"]
  ids = tok.encode(texts, 64)
  assert ids.dtype == np.int32 and ids.shape == (2, 64)
  assert tok.decode(ids) == texts


def test_tokenizer_pad_token_from_its_config(tok_dir, tmp_path):
  import shutil
  shutil.copy(os.path.join(tok_dir, "tokenizer.json"), tmp_path)
  tokenizer = HFTokenizer.from_dir(str(tmp_path))
  pad = tokenizer.tokenizer.token_to_id("Q")
  (tmp_path / "tokenizer_config.json").write_text(json.dumps(
      {"eos_token": "<|endoftext|>", "pad_token": {"content": "Q"}}))
  tokenizer = HFTokenizer.from_dir(str(tmp_path))
  assert (tokenizer.pad_id, tokenizer.eos_id) == (pad, 0)
  assert tokenizer.encode(["7"], 4)[0, 1:].tolist() == [pad] * 3


def test_encode_right_pads_and_keeps_the_last_tokens(tok):
  full = tok.encode(["Q: What is 3 plus 4? A: 7"], 64)[0]
  n = int((full != tok.pad_id).sum())
  assert n > 6 and (full[n:] == tok.pad_id).all()
  short = tok.encode(["Q: What is 3 plus 4? A: 7"], 5)[0]
  np.testing.assert_array_equal(short, full[n - 5:n])    # the answer end survives
  assert tok.decode([short])[0].endswith("A: 7")


def test_prompts_left_pad_to_a_shared_bucket(tok):
  ids, mask = tok.encode_prompts(["What is 1 plus 2?", "7"])
  assert ids.shape == mask.shape == (2, 16) and ids.dtype == mask.dtype == np.int32
  assert mask[1, -1] == 1 and mask[1, :-1].sum() == 0 and (ids[1, :-1] == tok.pad_id).all()
  assert tok.decode(ids) == ["What is 1 plus 2?", "7"]
  n = int(mask[0].sum())
  np.testing.assert_array_equal(ids[0, -n:], tok.encode(["What is 1 plus 2?"], 16)[0, :n])
  other, _ = tok.encode_prompts(["What is 9 plus 9?", "What is 5 plus 0?", "3"])
  assert other.shape[1] == ids.shape[1]                    # a different batch, the same program
  long_ids, _ = tok.encode_prompts(["What is 1 plus 2? " * 3])
  assert long_ids.shape[1] == 32
  assert bucket(1) == 16 and bucket(16) == 16 and bucket(17) == 32 and bucket(1024) == 1024
  assert bucket(5, (8, 4)) == 8 and BUCKETS[-1] == 1024
  with pytest.raises(ValueError, match="longer than the largest bucket") as e:
    tok.encode_prompts(["What is 1 plus 2? " * 10], buckets=(8, 16))
  _one_line(e)


def test_tokenizer_errors_are_one_line(tmp_path):
  for path, what in ((tmp_path / "nope", "no such directory"), (tmp_path, "no tokenizer.json")):
    with pytest.raises(DataError, match=f"data.tokenizer=.*{what}") as e:
      HFTokenizer.from_dir(str(path))
    assert "save_pretrained" in _one_line(e) and str(path) in str(e.value)
  (tmp_path / "tokenizer.json").write_text("{not json")
  with pytest.raises(DataError, match="cannot read") as e:
    HFTokenizer.from_dir(str(tmp_path), key="w2s.ladder")
  assert _one_line(e).startswith("w2s.ladder=")


# ----------------------------------------------------------------------------- sources


def _cfg(task, path, tok_dir, **kw):
  return ml_collections.ConfigDict({"name": f"text:{task}", "path": str(path),
                                    "tokenizer": tok_dir, "max_len": 24, **kw})


def _write_layouts(root, splits: dict[str, list[dict]]) -> dict[str, str]:
  """The same splits as jsonl, parquet (flat and the Hub's data/ layout) and save_to_disk."""
  layouts = {k: os.path.join(root, k) for k in ("jsonl", "parquet", "hub", "save_to_disk")}
  for d in layouts.values():
    os.makedirs(d, exist_ok=True)
  for split, rows in splits.items():
    with open(os.path.join(layouts["jsonl"], f"{split}.jsonl"), "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
    table = pa.Table.from_pylist(rows)
    for shard, part in enumerate((table.slice(0, 5), table.slice(5))):  # two shards, in order
      pq.write_table(part, os.path.join(layouts["parquet"], f"{split}-0000{shard}-of-00002.parquet"))
    os.makedirs(os.path.join(layouts["hub"], "data"), exist_ok=True)
    pq.write_table(table, os.path.join(layouts["hub"], "data", f"{split}-00000-of-00001.parquet"))
  disk = datasets.DatasetDict({s: datasets.Dataset.from_list(r) for s, r in splits.items()})
  disk.save_to_disk(layouts["save_to_disk"])
  return layouts


@pytest.mark.parametrize("task,test_split", [("sciq", "test"), ("boolq", "validation")])
def test_every_layout_gives_the_same_source(tmp_path, tok_dir, tok, task, test_split):
  if task == "sciq":
    train, test = sciq_records(30, 1), sciq_records(12, 2)
  else:
    rows = [{"question": f"is {i} even", "passage": f"{i} is a number.", "answer": i % 2 == 0}
            for i in range(42)]
    train, test = rows[:30], rows[30:]
  layouts = _write_layouts(str(tmp_path), {"train": train, test_split: test})
  sources = {k: data_lib.load(_cfg(task, d, tok_dir, source_seed=3)) for k, d in layouts.items()}
  first = sources["jsonl"]
  assert first.name == f"text:{task}" and first.x.shape == (30, 24) and first.test_x.shape == (12, 24)
  assert first.spec == InputSpec((24,), "tokens", 2, tok.vocab_size, pad_id=tok.pad_id)
  assert first.y.dtype == np.int32 and 0 < first.y.mean() < 1
  rng = random.Random(3)
  texts = [text_tasks.TASKS[task].format(r, rng)[0] for r in train]
  np.testing.assert_array_equal(first.x, tok.encode(texts, 24))
  for name, source in sources.items():
    for field in ("x", "y", "test_x", "test_y"):
      np.testing.assert_array_equal(getattr(source, field), getattr(first, field), err_msg=name)
    assert source.spec == first.spec


def test_seed_limit_and_splits(tmp_path, tok_dir):
  path = write_sciq_jsonl(str(tmp_path / "sciq"), n_train=50, n_test=20, seed=0)
  full = data_lib.load(_cfg("sciq", path, tok_dir))
  assert full.x.shape == (50, 24) and full.test_y.shape == (20,)
  # Each split starts its own Random(seed), as the reference's: the limit keeps a prefix.
  cut = data_lib.load(_cfg("sciq", path, tok_dir, limit=10))
  np.testing.assert_array_equal(cut.y, full.y[:10])
  np.testing.assert_array_equal(cut.test_x, full.test_x[:10])
  other = data_lib.load(_cfg("sciq", path, tok_dir, source_seed=1))
  assert (other.y != full.y).any()
  _, splits = data_lib.load_splits(_cfg("sciq", path, tok_dir, limit=0, split_seed=0,
                                        splits={"train": 0.8, "val": 0.2, "test": 1.0}))
  assert {k: len(s) for k, s in splits.items()} == {"train": 40, "val": 10, "test": 20}


def test_text_source_errors_are_one_line(tmp_path, tok_dir):
  load = lambda task, path, tokenizer=tok_dir: data_lib.load(_cfg(task, path, tokenizer))
  with pytest.raises(DataError, match=r"data.path=.*no such directory.*load_dataset\('Anthropic/hh-rlhf'\)") as e:
    load("anthropic_hh", tmp_path / "nope")
  _one_line(e)
  with pytest.raises(DataError, match=r"data.path=.*no train split.*train\.jsonl.*train\.parquet.*dataset_dict\.json") as e:
    load("sciq", tmp_path)
  _one_line(e)
  path = write_sciq_jsonl(str(tmp_path / "sciq"), n_train=6, n_test=3)
  lines = open(f"{path}/train.jsonl").read().splitlines()
  bad = json.loads(lines[3])
  del bad["distractor2"], bad["correct_answer"]
  (tmp_path / "sciq" / "train.jsonl").write_text("\n".join(lines[:3] + [json.dumps(bad)]) + "\n")
  with pytest.raises(DataError, match=r"train\.jsonl line 4 has no field '(correct_answer|distractor2)', which text:sciq needs") as e:
    load("sciq", path)
  _one_line(e)
  rows = [{"passage": "p", "question": "q"}]
  os.makedirs(tmp_path / "pq")
  pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / "pq" / "train.parquet"))
  with pytest.raises(DataError, match=r"train\.parquet row 0 has no field 'answer'") as e:
    load("boolq", tmp_path / "pq")
  _one_line(e)
  with pytest.raises(DataError, match=r"data.tokenizer=.*no tokenizer.json") as e:
    load("sciq", write_sciq_jsonl(str(tmp_path / "ok"), 4, 2), tokenizer=str(tmp_path))
  _one_line(e)
  with pytest.raises(DataError, match=r"'text:nope': unknown text task; valid: text:sciq, text:boolq") as e:
    load("nope", path)
  _one_line(e)


def test_registry_names_are_checked_without_heavy_imports():
  names = data_lib.valid_names()
  for task in TASKS:
    assert f"text:{task}" in names
    data_lib.check_name(f"text:{task}")
  for bad in ("text:", "text:SCIQ", "text:imdb"):
    with pytest.raises(DataError, match="unknown text task"):
      data_lib.check_name(bad)
  code = ("import sys; from superalign import data; data.check_name('text:sciq'); "
          "print(sorted(m for m in ('tokenizers', 'pyarrow', 'datasets') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=SAFETY_S)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "[]"
