"""Process supervision: the selection rules and metrics on hand-made pools, the PRM's reading of
step terminators, the smoke config end to end, and its one-line errors."""

from __future__ import annotations


import jax.numpy as jnp
import numpy as np
import pytest

from conftest import _assert_one_line_error, launch
from superalign.results.estimates import schema_violations
from superalign.process import chains, metrics, policy, reward

CONFIG = "--config=experiments/process/chains.py:smoke"


def test_best_of_n_picks_the_top_score_and_majority_the_common_answer():
  # One problem, a pool of 4: scores pick solution 2 (right); answers vote for 7 (wrong).
  correct = np.array([[False, False, True, False]])
  scores = np.array([[0.1, 0.2, 0.9, 0.3]])
  answers = np.array([[7, 7, 3, 1]])
  out = metrics.best_of_n({"score": scores, "vote": ("majority", answers, 10)}, correct, [1, 4],
                          count=2000, seed=0, extra={"flawed": np.array([[1, 1, 0, 1]], bool)})
  assert out["accuracy"]["score"][4]["mean"] == 1.0 and out["accuracy"]["vote"][4]["mean"] == 0.0
  assert out["accuracy"]["score"][1]["mean"] == pytest.approx(0.25, abs=0.03)  # a random one
  assert out["picks"]["score/flawed"][4].tolist() == [False]
  # An answer of -1 (none) never wins a vote while some solution has an answer.
  idx = np.array([[0, 1, 2]])
  assert metrics.majority_picks(np.array([-1, -1, 4]), idx, 10).tolist() == [2]


def test_trace_error_processbench_step_f1_and_sgr():
  e = metrics.trace_error([True, True, True, False], [True, False, False, True])
  assert e["mean"] == pytest.approx(1 / 3) and e["n"] == 3
  pb = metrics.processbench(np.array([1, 2, -1, -1]), np.array([1, 0, -1, 3]))
  assert pb["erroneous_accuracy"] == pytest.approx(1 / 3) and pb["correct_accuracy"] == 1.0
  assert pb["f1"] == pytest.approx(0.5)
  sf = metrics.step_f1(np.array([[True, False, True]]), np.array([[0, 1, -1]]))
  assert (sf["precision"], sf["recall"], sf["steps"]) == (1.0, 1.0, 2)
  assert metrics.sgr(0.8, 0.9, 0.5) == pytest.approx(0.75)
  assert np.isnan(metrics.sgr(0.8, 0.5, 0.5))              # no gap to recover


def test_the_prm_reads_each_step_at_its_terminator():
  """``step_probs_fn`` gathers the head's probability at the i-th ';' (then EOS), and
  ``prm_loss`` weighs exactly the labelled terminators: checked with a stand-in model whose
  'probability' is the position itself."""
  problems = chains.sample(2, 3, 10, seed=0)
  prompt = chains.prompts(problems)
  x = chains.sequences(prompt, chains.solutions(problems, chains.true_values(problems)), 32)
  x[1, prompt.shape[1] + 2 * chains.TOKENS_PER_STEP:] = chains.PAD    # row 1: two steps only

  class Stand:
    pad_id = 0

    def hidden_states(self, tokens):
      return jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.float32)[None, :, None],
                              (*tokens.shape, 1))

    def head(self, h):        # logit 0 for "wrong", log-odds of "right" = position / 100
      return jnp.concatenate([jnp.zeros_like(h), h / 100.0], -1)

  class State:
    def model(self):
      return Stand()

  probs = np.asarray(reward.step_probs_fn(4)(State(), {"x": jnp.asarray(x)}))
  ends = [np.nonzero(chains.terminator_index(x, prompt.shape[1])[r] >= 0)[0] for r in range(2)]
  sigmoid = lambda z: 1 / (1 + np.exp(-z))
  np.testing.assert_allclose(probs[0], sigmoid(ends[0] / 100.0), rtol=1e-6)
  assert np.isnan(probs[1, 2:]).all() and len(ends[1]) == 2
  labels = jnp.asarray([[1, 0, -1, -1], [1, 1, -1, -1]])
  loss, aux = reward.prm_loss(Stand(), {"x": jnp.asarray(x), "y": labels}, None, 0)
  z = np.concatenate([ends[0][:2], ends[1][:2]]) / 100.0
  want = -np.mean(np.log(np.array([sigmoid(z[0]), 1 - sigmoid(z[1]), sigmoid(z[2]),
                                   sigmoid(z[3])])))
  assert float(loss) == pytest.approx(want, rel=1e-5)


@pytest.mark.e2e
@pytest.mark.xdist_group("smoke-process")   # beside its shared smoke run
def test_smoke_end_to_end(smoke):
  results, tmp_path = smoke("process")   # the session's shared smoke run (conftest)
  r = results
  assert schema_violations(results) == []
  assert r["plots"] and all((tmp_path / p).is_file() for p in r["plots"])
  assert r["ns"] == [1, 2, 4, 8, 16]
  for rule in ("prm_product", "prm_min", "orm", "majority"):
    curve = r["best_of_n"][rule]
    assert set(curve) == {"1", "2", "4", "8", "16"}
    assert all(0 <= curve[n]["mean"] <= 1 for n in curve)
  # At N = 1 every rule picks a random sample: the same expected accuracy.
  assert len({round(r["best_of_n"][k]["1"]["mean"], 6) for k in ("orm", "prm_product")}) <= 2
  assert set(r["sabotage"]["triggered"]["let_through"]) == {"orm", "orm_generative",
                                                            "prm_product", "majority"}
  assert r["rollout_labels"]["steps"] > 0
  assert "easy_to_hard" in r and r["easy_to_hard"]["hard"] == [3]
  assert (tmp_path / "plots" / "best_of_n.png").exists()
  assert "Lightman" in r["summary"] and "Uesato" in r["summary"]


@pytest.mark.parametrize("override, message", [
    ("--config.process.task=sudoku", "process.task='sudoku': valid: chains"),
    ("--config.process.trace_n=64", "process.trace_n=64: N above the sample budget "
                                    "(process.pool=16)"),
    ("--config.process.easy=3", "process.easy=3: outside the trained range"),
    ("--config.process.difficulties=(2,9)", "difficulty 9 needs 76 positions; data.max_len=32"),
    ("--config.process.difficulties=(3,2)",
     "process.difficulties=(3, 2): needs increasing positive integers"),
    ("--config.process.sabotage=lazy", "process.sabotage='lazy': valid: hidden, wrong_answer"),
    ("--config.process.rm_train.batch_size=0", "process.rm_train.batch_size=0: must be positive"),
])
def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys, override, message):
  out = launch(monkeypatch, capsys, CONFIG, f"--workdir={tmp_path}", override)
  _assert_one_line_error(out, message)


def test_a_generative_prm_scores_what_each_step_wrote():
  """A step's probability is the product of the probabilities of its tokens (the ending's: the
  EOS), and the loss counts only the tokens of steps labelled right: a stand-in LM that
  favours one token."""
  problems = chains.sample(1, 2, 10, seed=1)
  prompt = chains.prompts(problems)
  solution = chains.solutions(problems, chains.true_values(problems))[0]
  x = chains.sequences(prompt, solution[None], 24)
  vocab, favoured = chains.vocab_size(10), chains.DIGIT0 + 3

  class Stand:
    pad_id = 0

    def hidden_states(self, tokens):
      return jnp.zeros((*tokens.shape, 1))

    def lm_logits(self, h):
      return jnp.broadcast_to(2.0 * (jnp.arange(vocab) == favoured), (*h.shape[:-1], vocab))

  class State:
    def model(self):
      return Stand()

  probs = np.asarray(reward.step_probs_fn(3, generative=True)(State(), {"x": jnp.asarray(x)}))
  z = np.exp(2.0) + vocab - 1
  p = lambda token: np.exp(2.0) / z if token == favoured else 1 / z
  size = chains.TOKENS_PER_STEP
  want = [np.prod([p(t) for t in solution[j * size:(j + 1) * size]]) for j in range(2)]
  want.append(p(chains.EOS))
  np.testing.assert_allclose(probs[0], want, rtol=1e-4)
  loss, _ = reward.generative_prm_loss(Stand(), {"x": jnp.asarray(x),
                                                 "y": jnp.asarray([[1, 0, -1]])}, None, 0)
  assert float(loss) == pytest.approx(-np.log(want[0]) / size, rel=1e-5)   # step 0's tokens


def test_sampling_runs_through_the_batched_apply(tmp_path):
  """The policy samples in batches of its ``eval_batch_size``, sharded over the mesh and
  gathered: eight devices draw what one draws, and batch ``i`` is the KV-cached generation of
  its rows with the key ``fold_in(key(seed), i)`` (20 rows: batches of 8, 8 and 4 padded)."""
  import jax
  from superalign.core.spec import MeshSpec, Train, TrainSpec
  from superalign.models.generate import Sampler, generate
  from superalign.parties.classifier import Model, trainer

  problems = chains.sample(5, 2, 10, seed=0)

  def sample(devices):
    spec = TrainSpec(train=Train(eval_batch_size=8), mesh=MeshSpec(num_devices=devices))
    init = trainer(spec, Model("gpt_nano", max_len=24), policy.input_spec(24, 10),
                   str(tmp_path), tag=f"policy_{devices}").init()
    return init, policy.sample(init, problems, 4, seed=3)

  one, tokens = sample(1)
  eight, sharded = sample(8)
  assert len(eight.mesh.devices.flat) == 8 and tokens.shape == (20, chains.solution_length(2))
  np.testing.assert_array_equal(sharded, tokens)
  prompt = np.repeat(chains.prompts(problems), 4, 0)
  for i, rows in enumerate((slice(0, 8), slice(8, 16))):
    want = generate(one.state.model(), prompt[rows], np.ones_like(prompt[rows]),
                    max_new_tokens=tokens.shape[1], sampler=Sampler(temperature=1.0),
                    eos_id=chains.EOS, pad_id=chains.PAD,
                    rng=jax.random.fold_in(jax.random.key(3), i))
    np.testing.assert_array_equal(tokens[rows], np.asarray(want))
