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
  ep = sp.generate(np.random.default_rng(0), 400, 2)
  budget = ep.questions[:, 3]
  assert set(budget.tolist()) == {1, 2}
  # Within the budget the distance, else far; the targets are balanced over 1 .. k and far.
  assert ((ep.answers <= budget) | (ep.answers == sp.far)).all()
  counts = np.bincount(ep.answers[budget == 2], minlength=sp.far + 1)[[1, 2, sp.far]]
  assert counts.min() > 0.2 * counts.sum()
  wc = tasks.WildcardSearch(16)
  wild = (wc.generate(np.random.default_rng(0), 200, 2).questions == wc.wildcard).sum(1)
  assert set(wild.tolist()) == {0, 1, 2}


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_encoding_has_one_shape_per_size_and_fits_the_vocabulary(name):
  from superalign.amplification import encoding
  task = tasks.TASKS[name](size=16)
  lay = encoding.layout(task, max_difficulty=4)
  spec = lay.spec
  for difficulty in range(5):
    ep = task.generate(np.random.default_rng(difficulty), 8, difficulty)
    tokens = encoding.encode(ep, lay)
    assert tokens.shape == (8, *spec.shape)
    assert tokens.min() >= encoding.PAD and tokens.max() < spec.vocab_size
    assert (tokens[:, :-1, 0] == encoding.FACT).all() and (tokens[:, -1, 0] == encoding.QUESTION).all()
    # Each value field has its own id range, and decoding gives the episode back.
    q = tokens[:, -1, 1:1 + ep.questions.shape[1]] - encoding.OFFSET
    np.testing.assert_array_equal(q % lay.values, ep.questions)
    np.testing.assert_array_equal(q // lay.values, np.broadcast_to(np.arange(q.shape[1]), q.shape))
    f = tokens[:, :-1, 1:1 + ep.facts.shape[2]] - encoding.OFFSET
    np.testing.assert_array_equal(f % lay.values, ep.facts)


def test_counting_ask_counts_subquestions():
  from superalign.amplification import encoding
  task = tasks.WildcardSearch(16)
  ep = task.generate(np.random.default_rng(0), 10, 2)
  ask = encoding.CountingAsk(_oracle(task))
  np.testing.assert_array_equal(task.overseer(ep, ask), ep.answers)
  assert ask.calls == 10 * task.alphabet  # one round of one subquestion per letter


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_questions_that_reduce_to_facts_are_answered_from_them(name):
  task = tasks.TASKS[name](size=16)
  for difficulty in range(4):
    ep = task.generate(np.random.default_rng(difficulty), 64, difficulty)
    known, answers = task.from_facts(ep)
    np.testing.assert_array_equal(answers[known], ep.answers[known])
    if difficulty == 0:
      assert known.all()
  # H asks the model only what the facts do not settle, and still gets the truth from a solver.
  ep = task.generate(np.random.default_rng(7), 64, 2)
  from superalign.amplification import encoding
  ask = encoding.CountingAsk(_oracle(task))
  np.testing.assert_array_equal(task.overseer(ep, tasks.ask_with_facts(task, ask)), ep.answers)
  plain = encoding.CountingAsk(_oracle(task))
  task.overseer(ep, plain)
  assert ask.calls < plain.calls


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_overseer_asks_nothing_about_a_question_the_facts_settle(name):
  task = tasks.TASKS[name](size=16)
  ep = task.generate(np.random.default_rng(3), 64, 0)   # difficulty 0: every answer is a fact
  assert task.from_facts(ep)[0].all()

  def ask(sub_ep, questions):
    # Only subquestions that are facts themselves may reach ask_with_facts' inner ask; none may
    # reach the model.
    raise AssertionError(f"asked {len(questions)} subquestions of the model")

  np.testing.assert_array_equal(task.overseer(ep, tasks.ask_with_facts(task, ask)), ep.answers)


def test_shortest_path_budget_one_is_labelled_by_h_alone():
  """At budget 1 every subquestion (a neighbour, b, 0) is a fact, so H labels "is (a, b) an
  edge" without the model: the level the curriculum starts the model on finding edges."""
  task = tasks.ShortestPath(16)
  ep = task.generate(np.random.default_rng(5), 200, 1)
  assert (ep.questions[:, 3] == 1).all() and set(ep.answers.tolist()) == {1, task.far}

  def ask(sub_ep, questions):
    raise AssertionError(f"asked {len(questions)} subquestions of the model")

  np.testing.assert_array_equal(task.overseer(ep, tasks.ask_with_facts(task, ask)), ep.answers)


def test_shortest_path_pairs_are_one_token_in_facts_and_questions():
  task = tasks.ShortestPath(8)
  ep = task.generate(np.random.default_rng(2), 50, 2)
  u, v, edge = np.moveaxis(ep.facts, -1, 0)
  np.testing.assert_array_equal(edge, u * 8 + v)
  assert (u != v).all() and len(np.unique(edge[0])) == 8 * task.degree   # no loops, no repeats
  a, b, pair, _ = ep.questions.T
  np.testing.assert_array_equal(pair, a * 8 + b)
  # A budget-1 question is an edge exactly when its pair token is among the facts'.
  one = ep.questions[:, 3] == 1
  is_edge = (edge == pair[:, None]).any(1)
  np.testing.assert_array_equal((ep.answers == 1)[one], is_edge[one])


def test_ask_some_asks_only_the_rows_it_is_told():
  task = tasks.PermutationPowering(8)
  ep = task.generate(np.random.default_rng(0), 6, 1)
  asked = []
  ask = lambda sub_ep, q: (asked.append(len(q)), np.full(len(q), 5))[1]
  rows = np.array([True, False, True, False, False, False])
  out = tasks.ask_some(ask, ep, ep.questions, rows, fill=-1)
  np.testing.assert_array_equal(out, [5, -1, 5, -1, -1, -1])
  assert asked == [2]
  assert (tasks.ask_some(ask, ep, ep.questions, ~rows & False, fill=0) == 0).all() and asked == [2]
