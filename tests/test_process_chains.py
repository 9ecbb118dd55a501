"""The chain task's exact step checker against brute force, process labels on hand-made
solutions with a known first error, slips and sabotage."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from superalign.process import chains as c


def slow_check(start, ops, operands, modulus, tokens):
  """A plain reading of the rules, one token at a time."""
  k = len(ops)
  valid, prev, pos, answer = [], start, 0, -1
  for i in range(k):
    step = list(tokens[pos:pos + c.TOKENS_PER_STEP])
    if len(step) < c.TOKENS_PER_STEP or (i and not valid_sep):
      valid.append(False)
      valid_sep = False
      continue
    v, op, x, eq, r, sep = step
    value = r - c.DIGIT0 if c.DIGIT0 <= r < c.DIGIT0 + modulus else None
    right = {0: prev + operands[i], 1: prev - operands[i], 2: prev * operands[i]}[ops[i]] % modulus
    ok = (v == c.DIGIT0 + prev and op == c.OP0 + ops[i] and x == c.DIGIT0 + operands[i]
          and eq == c.EQ and value is not None and value == right and sep == c.SEP)
    valid.append(ok)
    valid_sep = sep == c.SEP
    if i == k - 1 and value is not None:
      answer = value
    prev = value if value is not None else -99
    pos += c.TOKENS_PER_STEP
  ending = len(tokens) > pos and all(valid_sep for _ in [0]) and tokens[pos] == c.EOS
  valid.append(bool(ending))
  first = next((i for i, v in enumerate(valid) if not v), -1)
  return valid, first, answer


def test_checker_agrees_with_brute_force_over_every_written_value():
  p, k = 5, 3
  problems = c.sample(6, k, p, seed=0)
  for row in range(len(problems)):
    one = problems.take([row])
    truth = c.true_values(one)[0]
    values = np.array(list(itertools.product(range(p), repeat=k)))       # all 125 solutions
    many = one.repeat(len(values))
    tokens = c.solutions(many, values)
    got = c.check(many, tokens)
    for i, v in enumerate(values):
      valid, first, answer = slow_check(one.start[0], one.ops[0], one.operands[0], p,
                                        list(tokens[i]))
      assert got.step_valid[i].tolist() == valid, (v, truth)
      assert got.first_error[i] == first and got.answer[i] == answer
      assert got.correct[i] == (answer == truth[-1])
    assert got.trace_error.sum() == len(values) - 1       # only the true values are all valid


def test_malformed_solutions_are_caught_where_they_break():
  p = 7
  problems = c.sample(1, 3, p, seed=1).repeat(5)
  good = c.solutions(problems, c.true_values(problems))[0]
  cases = np.stack([good] * 5)
  cases[1, c.TOKENS_PER_STEP - 1] = c.EQ                  # step 0 lacks its separator
  cases[2, 2 * c.TOKENS_PER_STEP:] = c.PAD               # stops after two steps
  cases[3, -1] = c.SEP                                   # no EOS after the last step
  cases[4, c.TOKENS_PER_STEP + 1] = c.OP0 + (problems.ops[0, 1] + 1) % 3   # the wrong op
  got = c.check(problems, cases)
  assert got.first_error.tolist() == [-1, 0, 2, 3, 1]
  assert got.correct.tolist() == [True, False, False, True, True]
  # A step that carries in another value than the previous one wrote is wrong, even with
  # right arithmetic on it.
  v = (problems.start[0] + 1) % p
  one = c.sample(1, 1, p, seed=9)
  carried = np.array([[c.DIGIT0 + (one.start[0] + 1) % p, c.OP0 + one.ops[0, 0],
                       c.DIGIT0 + one.operands[0, 0], c.EQ,
                       c.DIGIT0 + c.apply_op((one.start[0] + 1) % p, one.ops[0, 0],
                                             one.operands[0, 0], p), c.SEP, c.EOS]])
  assert c.check(one, carried).first_error.tolist() == [0] and v >= 0
  assert got.answer[2] == -1                              # no third step, no answer
  # A missing step makes every later step invalid, however its tokens read.
  assert not got.step_valid[1, 1:].any()


def test_process_labels_stop_after_the_first_error():
  p = 10
  problems = c.sample(1, 4, p, seed=2).repeat(3)
  truth = c.true_values(problems)
  values = truth.copy()
  values[1, 1] = (values[1, 1] + 3) % p                   # one wrong step, carried on wrongly
  values[2, 2] = (values[2, 2] + 1) % p                   # a wrong step, later steps consistent
  values[2, 3] = c.apply_op(values[2, 2], problems.ops[2, 3], problems.operands[2, 3], p)
  got = c.check(problems, c.solutions(problems, values))
  labels = c.process_labels(got)
  assert labels[0].tolist() == [1, 1, 1, 1, 1]
  assert labels[1].tolist() == [1, 0, -1, -1, -1]
  assert labels[2].tolist() == [1, 1, 0, -1, -1]
  assert got.step_valid[2].tolist() == [True, True, False, True, True]   # valid from the slip on


def test_terminator_index_marks_each_step_end():
  problems = c.sample(2, 3, 10, seed=3)
  prompt = c.prompts(problems)
  seq = c.sequences(prompt, c.solutions(problems, c.true_values(problems)),
                    c.sequence_length(3) + 4)
  index = c.terminator_index(seq, prompt.shape[1])
  ends = np.nonzero(index[0] >= 0)[0]
  assert index[0, ends].tolist() == [0, 1, 2, 3]
  assert seq[0, ends[-1]] == c.EOS and (seq[0, ends[:-1]] == c.SEP).all()
  assert c.max_difficulty(c.sequence_length(7)) == 7


def test_slips_write_a_wrong_value_and_carry_on():
  p = 10
  problems = c.sample(2000, 5, p, seed=4)
  slips = np.zeros((2000, 5), bool)
  slips[:, 2] = True
  kinds = np.random.default_rng(0).integers(0, 2, (2000, 5))
  values = c.written_values(problems, slips, kinds)
  got = c.check(problems, c.solutions(problems, values))
  off_by_one = kinds[:, 2] == 0
  assert (got.first_error[off_by_one] == 2).all()         # +1 is never the right value
  assert (got.step_valid[:, 3:] | ~(got.first_error == 2)[:, None]).all()   # carried on validly
  assert 0.5 < (got.first_error == 2).mean() < 1.0        # a wrong op sometimes agrees
  assert 0.05 < got.correct[got.first_error == 2].mean() < 0.5   # "* 0" can erase a slip


def test_hidden_errors_reach_the_right_answer_through_a_wrong_step():
  p = 10
  problems = c.sample(500, 4, p, seed=5)
  values = c.hidden_error_values(problems, np.full(500, 1), np.full(500, 3))
  got = c.check(problems, c.solutions(problems, values))
  assert got.correct.all()
  assert got.trace_error.mean() > 0.8                     # unless the slip was erased by * 0
  with pytest.raises(Exception, match="difficulty 0"):
    c.sample(1, 0, p, seed=0)
