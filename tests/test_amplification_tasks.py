"""Amplification tasks: each generator's answers against a brute-force solver, and each overseer's
decomposition giving the true answer when its subquestions are answered correctly, at many sizes."""

import numpy as np
import pytest

from superalign.amplification import tasks

CASES = [
    (tasks.PermutationPowering, {"size": s}, d) for s in (8, 16, 32) for d in (0, 1, 3, 6)
] + [
    (tasks.SequentialAssignments, {"size": s}, d) for s in (8, 16, 32) for d in (0, 1, 3, 8)
] + [
    (tasks.WildcardSearch, {"size": s}, d) for s in (8, 16, 32) for d in (0, 1, 2, 3)
] + [
    (tasks.ShortestPath, {"size": s}, d) for s in (8, 16, 32) for d in (0, 1, 3, 8)
] + [
    (tasks.UnionFind, {"size": s}, d) for s in (8, 16, 32) for d in (0, 1, 3, 8)
]


def _oracle(task):
  return lambda ep, questions: task.solve(ep.asking(questions))


@pytest.mark.parametrize("cls, kwargs, difficulty", CASES)
def test_generator_agrees_with_brute_force_and_overseer_is_exact(cls, kwargs, difficulty):
  task = cls(**kwargs)
  ep = task.generate(np.random.default_rng(difficulty), 24, difficulty)
  assert ep.answers.min() >= 0 and ep.answers.max() < task.num_answers()
  np.testing.assert_array_equal(task.solve(ep), ep.answers)
  np.testing.assert_array_equal(task.overseer(ep, _oracle(task)), ep.answers)


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_overseer_fails_with_wrong_subanswers(name):
  """The decomposition really uses the subanswers: an oracle that lies changes H's answers."""
  task = tasks.TASKS[name](size=16)
  ep = task.generate(np.random.default_rng(0), 64, 3)
  rng = np.random.default_rng(1)
  liar = lambda e, q: rng.integers(0, task.num_answers(), len(q))
  assert (task.overseer(ep, liar) != ep.answers).any()


def test_difficulty_bounds_the_question():
  ep = tasks.PermutationPowering(16).generate(np.random.default_rng(0), 200, 2)
  assert ep.questions[:, 1].max() <= 4
  sp = tasks.ShortestPath(16)
  assert sp.generate(np.random.default_rng(0), 100, 2).answers.max() <= 2
  wc = tasks.WildcardSearch(16)
  assert ((wc.generate(np.random.default_rng(0), 50, 2).questions == wc.wildcard).sum(1) == 2).all()


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_encoding_has_one_length_per_size_and_fits_the_vocabulary(name):
  from superalign.amplification import encoding
  task = tasks.TASKS[name](size=16)
  vocab = encoding.vocab_size(task, max_difficulty=4)
  lengths = set()
  for difficulty in range(5):
    ep = task.generate(np.random.default_rng(difficulty), 8, difficulty)
    tokens = encoding.encode(ep)
    lengths.add(tokens.shape[1])
    assert tokens.min() >= encoding.SEP and tokens.max() < vocab
    assert (tokens[:, -ep.questions.shape[1] - 1] == encoding.SEP).all()
  assert len(lengths) == 1


def test_counting_ask_counts_subquestions():
  from superalign.amplification import encoding
  task = tasks.WildcardSearch(16)
  ep = task.generate(np.random.default_rng(0), 10, 2)
  ask = encoding.CountingAsk(_oracle(task))
  np.testing.assert_array_equal(task.overseer(ep, ask), ep.answers)
  assert ask.calls == 10 * task.alphabet  # one round of one subquestion per letter
