"""Amplification protocol: curriculum, what H may see, record tokens, the runner end to end."""

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from superalign.amplification import amplify, run, tasks
from superalign.core.spec import TrainSpec
from superalign.launch import runners


def _smoke(task_names=("permutation", "shortest_path")):
  from experiments.amplification import tasks as experiment
  config = experiment.get_config("smoke")
  config.amplification.tasks = tuple(task_names)
  config.mesh.num_devices = 1
  return config


def test_curriculum_raises_on_a_full_window_of_agreement_and_round_trips():
  c = amplify.Curriculum(start=0, top=2, threshold=0.9, window=3)
  for step, agreement in enumerate([1.0, 1.0, 0.5, 1.0, 1.0], 1):
    c.observe(step, {"accuracy": agreement})
  assert c.level == 0                      # no window of 3 averages 0.9 yet
  c.observe(6, {"accuracy": 1.0})
  assert c.level == 1 and c.raised_at == [6] and c.recent == []
  for step in range(7, 20):
    c.observe(step, {"accuracy": 1.0})
  assert c.level == 2 and c.raised_at == [6, 9]   # and never past the top
  c.counts["labels"] = 7
  other = amplify.Curriculum(start=0, top=2, threshold=0.9, window=3)
  other.load_state_dict(json.loads(json.dumps(c.state_dict())))
  assert other.state_dict() == c.state_dict()


def test_overseer_sees_neither_answers_nor_generator_state():
  task = tasks.SequentialAssignments(16)
  ep = task.generate(np.random.default_rng(0), 8, 2)
  seen = amplify.blind(ep)
  assert (seen.answers == -1).all() and seen.state == {}
  np.testing.assert_array_equal(seen.facts, ep.facts)
  np.testing.assert_array_equal(seen.questions, ep.questions)
  with pytest.raises(KeyError):                    # the brute-force solver needs the state
    task.solve(seen)


def test_transformer_reads_records_as_summed_field_embeddings():
  """A record's position carries the sum of its fields' embeddings: the hidden states equal those
  of a one-token-per-position model whose embedding rows are those sums (a model that read only
  field 0, or averaged the fields, would not match)."""
  from superalign.models.transformer import Transformer
  with nnx.use_eager_sharding(False):
    model = Transformer(20, 8, 3, num_layers=1, width=16, num_heads=2, rngs=nnx.Rngs(0))
    # Same key stream, so every parameter after the embedding table is identical.
    flat = Transformer(4, 8, 3, num_layers=1, width=16, num_heads=2, rngs=nnx.Rngs(0))
  records = jnp.array([[[1, 5, 9], [2, 6, 0], [0, 0, 0]]])   # two records, then a pad position
  np.testing.assert_array_equal(np.asarray(model.pos[...]), np.asarray(flat.pos[...]))
  emb = model.embed.embedding[...]
  flat.embed.embedding[...] = jnp.concatenate([jnp.zeros((1, 16)), emb[records[0]].sum(1)])
  ids = jnp.array([[1, 2, 3]])                               # position p reads row p + 1
  hidden = nnx.jit(lambda m, t: m.hidden_states(t))          # one program, not op by op
  h = hidden(model, records)
  assert h.shape == (1, 3, 16)
  np.testing.assert_allclose(np.asarray(h), np.asarray(hidden(flat, ids)), rtol=1e-5, atol=1e-6)
  flat.embed.embedding[...] = flat.embed.embedding[...].at[1:].set(emb[records[0, :, 0]])
  assert not np.allclose(np.asarray(h), np.asarray(hidden(flat, ids)), atol=1e-3)
  # The head reads the last record, not the pad: changing the pad row changes nothing.
  logits = nnx.jit(lambda m, t: m(t))
  padded_other = records.at[0, 2, 1:].set(7)
  np.testing.assert_allclose(np.asarray(logits(model, records)),
                             np.asarray(logits(model, padded_other)), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(logits(model, records)),
                             np.asarray(logits(model, records[:, :2])), rtol=1e-5)


def test_records_are_read_bidirectionally_and_pad_keys_are_masked():
  from superalign import models
  from superalign.amplification import encoding
  task = tasks.PermutationPowering(8)
  spec = encoding.layout(task, 1).spec
  assert spec.kind == "records"
  with nnx.use_eager_sharding(False):
    model = models.builder("gpt_nano", spec, max_len=16)(nnx.Rngs(0))
  ep = task.generate(np.random.default_rng(0), 2, 1)
  x = jnp.asarray(encoding.encode(ep, encoding.layout(task, 1)))
  hidden, logits = nnx.jit(lambda m, t: m.hidden_states(t)), nnx.jit(lambda m, t: m(t))
  h = hidden(model, x)
  later = x.at[:, 5, 2].set(x[:, 4, 2])      # change a later fact: an earlier one sees it
  assert not np.allclose(np.asarray(hidden(model, later)[:, 0]), np.asarray(h[:, 0]))
  # A pad position appended anywhere after the question is never attended to.
  padded = jnp.concatenate([x, jnp.zeros_like(x[:, :1])], 1)
  np.testing.assert_allclose(np.asarray(logits(model, padded)), np.asarray(logits(model, x)),
                             rtol=1e-5, atol=1e-6)


def test_level_zero_targets_are_the_truth_without_the_model():
  """At difficulty 0 every question reduces to facts: H's targets equal the answers whatever
  the model says (so amplification starts from correct targets)."""
  for name in tasks.TASKS:
    task = tasks.TASKS.build(name, size=16)
    ep = task.generate(np.random.default_rng(0), 64, 0)
    wrong = lambda e, q: np.full(len(q), task.num_answers() - 1)
    np.testing.assert_array_equal(task.overseer(amplify.blind(ep), wrong), ep.answers, name)


@pytest.mark.e2e
def test_smoke_end_to_end_and_exact_resume(tmp_path):

  config = _smoke()
  for name in ("permutation", "shortest_path"):   # at the top from the start: H asks the model
    config.amplification[name].start_difficulty = 2
  config.optim.ema_decay = 0.9                     # H asks the moving-average teacher
  runners.validate(config, num_devices=1)
  results = json.loads(json.dumps(runners.execute(config, str(tmp_path / "a"))))
  for name in ("permutation", "shortest_path"):
    t = results["tasks"][name]
    amp, sup = t["amplify"], t["supervised"]
    assert amp["counts"]["labels"] == 0 and amp["counts"]["h_calls"] == 40 * 32
    assert 0 < amp["counts"]["subquestions"] <= 4 * amp["counts"]["h_calls"]
    assert sup["counts"]["labels"] == 40 * 32 and sup["counts"]["h_calls"] == 0
    assert [row["step"] for row in amp["curve"]] == [20, 40]
    assert 0 <= amp["test_accuracy"] <= 1 and "amplify_over_supervised" in t
    assert 0 < t["no_model_accuracy"] < 1
  assert (tmp_path / "a" / "plots" / "amplification_accuracy_by_supervision.png").exists()
  assert "H calls" in results["summary"]

  # Interrupted after step 20: drop the last checkpoint of one run and rerun. The curriculum
  # level, the ledger and the teacher come back from the checkpoint, so the run ends exactly as
  # before.
  config.amplification.tasks = ("shortest_path",)
  shutil.copytree(tmp_path / "a", tmp_path / "b")
  shutil.rmtree(tmp_path / "b" / "checkpoints" / "shortest_path_amplify" / "40")
  again = json.loads(json.dumps(runners.execute(config, str(tmp_path / "b"))))
  first = results["tasks"]["shortest_path"]["amplify"]
  second = again["tasks"]["shortest_path"]["amplify"]
  for key in ("test_accuracy", "final_level", "level_raised_at", "counts", "curve"):
    assert second[key] == first[key], key


@pytest.mark.parametrize("key, value, message", [
    ("tasks", ("permutation", "sorting"), "amplification.tasks=('permutation', 'sorting'): "
                                          "valid: one or more of permutation, assignments, "),
    ("tasks", (), "amplification.tasks=(): valid: one or more of"),
    ("modes", ("amplify", "debate"), "amplification.modes=('amplify', 'debate'): valid: one or "
                                     "more of amplify, supervised"),
    ("shortest_path.threshold", 1.5,
     "amplification.shortest_path.threshold=1.5: must be in (0, 1]"),
    ("permutation.start_difficulty", 3, "amplification.permutation.start_difficulty=3: must be"),
    ("shortest_path.num_steps", -1,
     "amplification.shortest_path.num_steps=-1: must be zero or positive"),
    ("shortest_path.batch_size", 48, "amplification.shortest_path.batch_size=48: must be 0"),
    ("window", 0, "amplification.window=0: must be positive"),
    ("num_test", 0, "amplification.num_test=0: must be positive"),
])
def test_bad_amplification_config_is_one_clear_error(key, value, message):
  from superalign.core.errors import ConfigError

  config = _smoke()
  *block, key = key.split(".")
  (config.amplification[block[0]] if block else config.amplification)[key] = value
  with pytest.raises(ConfigError) as e:
    runners.validate(config, num_devices=1)
  assert message in str(e.value) and "\n" not in str(e.value)


def test_bad_task_option_and_checkpoint_cadence_are_one_line(tmp_path):
  from superalign.core.errors import ConfigError

  config = _smoke()
  config.amplification.wildcard.size = 100    # more strings than 3 letters of 2 make
  config.amplification.tasks = ("wildcard",)
  with pytest.raises(ConfigError, match=r"amplification.wildcard: wildcard: size=100"):
    runners.validate(config, num_devices=1)
  config = _smoke()
  config.train.checkpoint_every = 7
  with pytest.raises(ConfigError, match="multiple of train.log_every"):
    runners.validate(config, num_devices=1)
  config = _smoke()
  config.train.num_steps, config.train.num_epochs = 0, 1    # epochs mean nothing here
  with pytest.raises(ConfigError, match="train.num_steps=0: amplification draws fresh episodes"):
    runners.validate(config, num_devices=1)


def test_a_budget_too_short_for_the_curriculum_is_warned(caplog):
  config = _smoke()                  # 40 steps, window 5, log_every 5: the top from step 10
  assert all(run.curriculum_warning(config, name) is None for name in config.amplification.tasks)
  config.amplification.window = 15   # two levels need 30 steps, seen at step 40 (log_every 20)
  config.train.log_every = 20
  config.train.checkpoint_every = 0
  with caplog.at_level("WARNING", logger="superalign"):
    runners.validate(config, num_devices=1)
  line = run.curriculum_warning(config, "permutation")
  assert line == ("amplification.permutation: 40 steps cannot train at max_difficulty=2: from "
                  "start_difficulty=0, 2 levels of window=15 steps, seen every "
                  "train.log_every=20, reach it at step 40 at the earliest; the test set is "
                  "drawn there")
  assert line in caplog.text
  config.amplification.permutation.start_difficulty = 1   # one level: step 20 < 40
  assert run.curriculum_warning(config, "permutation") is None


def test_task_block_sets_its_own_steps_and_batch():
  config = _smoke()
  block = config.amplification.shortest_path
  block.num_steps, block.batch_size = 90, 64
  spec = TrainSpec.from_config(config)
  own = amplify.task_spec(spec, block.num_steps, block.batch_size).train
  assert (own.num_steps, own.batch_size) == (90, 64)
  assert (spec.train.num_steps, spec.train.batch_size) == (40, 32)   # the run's spec
  other = amplify.task_spec(spec, 0, 0).train                       # 0: the run's
  assert (other.num_steps, other.batch_size) == (40, 32)
  assert other.eval_batch_size == own.eval_batch_size == 32


def test_no_model_line_is_exact_where_facts_settle_and_the_majority_elsewhere():
  task = tasks.ShortestPath(8)
  easy = task.generate(np.random.default_rng(0), 64, 0)      # budget 0: all answered from facts
  assert amplify.no_model_accuracy(task, easy) == 1.0
  test = task.generate(np.random.default_rng(1), 256, 2)
  known, _ = task.from_facts(test)
  common = np.bincount(test.answers[~known]).max()
  assert amplify.no_model_accuracy(task, test) == pytest.approx((known.sum() + common) / 256)
