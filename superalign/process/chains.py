"""Chains of modular arithmetic: a multi-step task with an exact step checker.

A problem is a start value and ``k`` operations mod ``p`` (``k`` is the difficulty); a solution
writes one step per operation, each ``v op x = r ;`` with ``v`` the value carried in and ``r``
the value carried out, then EOS:

    prompt    BOS a0 (op x)*k ?
    solution  (v op x = r ;)*k EOS

A step is valid when it carries in the value the previous step wrote (``a0`` for the first),
restates its operation, and ``r`` is that operation applied to ``v``, mod ``p``: a checker (or a
grader of a written proof) can verify each step from the step itself and the one before. The final answer is the last step's ``r``. Mistakes follow an
error model (off by one, or the wrong operation) and later steps carry on from the wrong value,
so a wrong step usually, but not always, gives a wrong answer (``* 0`` erases it).

Every function here is NumPy on whole arrays of problems; nothing depends on JAX.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from superalign.core.errors import ConfigError

PAD, BOS, EOS, SEP, EQ, QUERY = 0, 1, 2, 3, 4, 5
OPS = ("+", "-", "*")
OP0 = 6                                      # token of OPS[0]; digits follow the operations
DIGIT0 = OP0 + len(OPS)
TOKENS_PER_STEP = 6                          # v op x = r ;
ERRORS = ("off_by_one", "wrong_op")          # the error model of a slip


def vocab_size(modulus: int) -> int:
  """The token vocabulary for chains mod ``modulus``: the special tokens, the operations and
  one digit token per residue."""
  return DIGIT0 + modulus


def prompt_length(k: int) -> int:
  """The tokens of a ``k``-step prompt: ``BOS a0 (op x)*k ?``."""
  return 3 + 2 * k


def solution_length(k: int) -> int:
  """The tokens of a ``k``-step solution: ``TOKENS_PER_STEP`` per step, then EOS."""
  return TOKENS_PER_STEP * k + 1


def sequence_length(k: int) -> int:
  """Prompt and solution of a ``k``-step problem: what a model's positions must hold."""
  return prompt_length(k) + solution_length(k)


def max_difficulty(max_len: int) -> int:
  """The largest ``k`` whose whole sequence fits in ``max_len`` positions."""
  return (max_len - 4) // (2 + TOKENS_PER_STEP)


@dataclasses.dataclass(frozen=True)
class Problems:
  """``n`` problems of one difficulty ``k``: start values ``[n]``, operations and operands
  ``[n, k]`` (operation ids index ``OPS``)."""
  start: np.ndarray
  ops: np.ndarray
  operands: np.ndarray
  modulus: int

  def __len__(self) -> int:
    return len(self.start)

  @property
  def k(self) -> int:
    """The problems' difficulty: their number of steps."""
    return self.ops.shape[1]

  def take(self, rows) -> "Problems":
    """The problems at ``rows`` (indices or a bool mask over the ``n`` problems)."""
    return Problems(self.start[rows], self.ops[rows], self.operands[rows], self.modulus)

  def repeat(self, n: int) -> "Problems":
    """Each problem ``n`` times in a row (a pool of ``n`` samples per problem)."""
    return self.take(np.repeat(np.arange(len(self)), n))


def sample(n: int, k: int, modulus: int, seed) -> Problems:
  """``n`` random ``k``-step problems mod ``modulus``, drawn by ``seed``: uniform start values,
  operations and operands."""
  if k < 1:
    raise ConfigError(f"difficulty {k}: a chain has at least one step")
  rng = np.random.default_rng(seed)
  return Problems(rng.integers(0, modulus, n), rng.integers(0, len(OPS), (n, k)),
                  rng.integers(0, modulus, (n, k)), modulus)


def apply_op(value, op, operand, modulus: int):
  """``value op operand`` mod ``modulus``, elementwise (op ids index ``OPS``)."""
  value, op, operand = np.broadcast_arrays(value, op, operand)
  out = np.where(op == 0, value + operand, np.where(op == 1, value - operand, value * operand))
  return np.mod(out, modulus)


def true_values(problems: Problems) -> np.ndarray:
  """The running values ``[n, k]`` of a correct solution; the answer is the last."""
  out = np.empty(problems.ops.shape, np.int64)
  value = problems.start
  for i in range(problems.k):
    value = apply_op(value, problems.ops[:, i], problems.operands[:, i], problems.modulus)
    out[:, i] = value
  return out


def slip(value, op, operand, kind, modulus: int):
  """What a slip on the step ``value op operand`` writes (``kind`` indexes ``ERRORS``): the
  right value plus one, or the next operation of ``OPS`` applied instead (which can agree with
  the right value, as ``0 + 0 = 0 * 0``: then it is no slip)."""
  right = apply_op(value, op, operand, modulus)
  other = apply_op(value, (np.asarray(op) + 1) % len(OPS), operand, modulus)
  return np.where(np.asarray(kind) == 0, np.mod(right + 1, modulus), other)


def written_values(problems: Problems, slips: np.ndarray, kinds: np.ndarray) -> np.ndarray:
  """The values a solution writes when it slips at the steps where ``slips`` ``[n, k]`` is
  true (slip kind ``kinds`` ``[n, k]``) and otherwise computes correctly from what it wrote."""
  out = np.empty(problems.ops.shape, np.int64)
  value = problems.start
  for i in range(problems.k):
    op, x = problems.ops[:, i], problems.operands[:, i]
    right = apply_op(value, op, x, problems.modulus)
    value = np.where(slips[:, i], slip(value, op, x, kinds[:, i], problems.modulus), right)
    out[:, i] = value
  return out


def prompts(problems: Problems) -> np.ndarray:
  """``[n, prompt_length(k)]`` token ids."""
  n, k = problems.ops.shape
  out = np.empty((n, prompt_length(k)), np.int32)
  out[:, 0], out[:, 1], out[:, -1] = BOS, DIGIT0 + problems.start, QUERY
  out[:, 2:-1:2] = OP0 + problems.ops
  out[:, 3:-1:2] = DIGIT0 + problems.operands
  return out


def solutions(problems: Problems, values: np.ndarray) -> np.ndarray:
  """``[n, solution_length(k)]`` token ids of the solution writing ``values`` ``[n, k]``."""
  n, k = problems.ops.shape
  carried = np.concatenate([problems.start[:, None], values[:, :-1]], 1)
  steps = np.stack([DIGIT0 + carried, OP0 + problems.ops, DIGIT0 + problems.operands,
                    np.full((n, k), EQ), DIGIT0 + values, np.full((n, k), SEP)],
                   -1).reshape(n, -1)
  return np.concatenate([steps, np.full((n, 1), EOS)], 1).astype(np.int32)


def sequences(prompt: np.ndarray, solution: np.ndarray, length: int) -> np.ndarray:
  """Prompt and solution rows joined and right-padded (or cut) to ``length``."""
  joined = np.concatenate([prompt, solution], 1)[:, :length]
  return np.pad(joined, ((0, 0), (0, length - joined.shape[1]))).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Checked:
  """What the checker finds in ``n`` solutions of ``k``-step problems.

  ``step_valid`` ``[n, k + 1]``: step ``i < k`` is valid (a missing step is invalid); entry ``k``
  is the ending, valid when EOS follows the ``k``-th step. ``first_error``: the first invalid
  entry, ``-1`` for a valid solution. ``answer``: the ``k``-th step's value, ``-1`` if the
  solution has no ``k``-th step; ``correct``: the answer is the true one.
  """
  step_valid: np.ndarray
  first_error: np.ndarray
  answer: np.ndarray
  correct: np.ndarray

  @property
  def trace_error(self) -> np.ndarray:
    """Some step is wrong (the solution as a whole is not valid)."""
    return self.first_error >= 0

  @property
  def terminators(self) -> int:
    """The entries of ``step_valid`` per solution: ``k`` steps and the ending, ``k + 1``."""
    return self.step_valid.shape[1]

  def take(self, rows) -> "Checked":
    """The checked solutions at ``rows`` (indices or a bool mask over the ``n`` solutions)."""
    return Checked(self.step_valid[rows], self.first_error[rows], self.answer[rows],
                   self.correct[rows])


def _digit(token: np.ndarray, modulus: int) -> np.ndarray:
  return np.where((token >= DIGIT0) & (token < DIGIT0 + modulus), token - DIGIT0, -1)


def check(problems: Problems, solution: np.ndarray) -> Checked:
  """Checks ``solution`` ``[n, length]`` (tokens after the prompt; padding after EOS ignored)."""
  n, k, p = len(problems), problems.k, problems.modulus
  solution = np.asarray(solution)
  width = TOKENS_PER_STEP * k
  if solution.shape[1] < width + 1:
    solution = np.pad(solution, ((0, 0), (0, width + 1 - solution.shape[1])))
  steps = solution[:, :width].reshape(n, k, TOKENS_PER_STEP)
  v, op, x, eq, r, sep = (steps[..., j] for j in range(TOKENS_PER_STEP))
  written, carried = _digit(r, p), _digit(v, p)
  # A step must carry in what the previous step wrote, restate its operation ...
  before = np.concatenate([problems.start[:, None], written[:, :-1]], 1)
  formed = ((carried == before) & (carried >= 0) & (op == OP0 + problems.ops)
            & (x == DIGIT0 + problems.operands) & (eq == EQ) & (written >= 0) & (sep == SEP))
  # ... and apply it.
  arithmetic = written == apply_op(carried, problems.ops, problems.operands, p)
  # A step exists only if every step before it ended with its separator.
  exists = np.cumprod(np.concatenate([np.ones((n, 1), bool), sep[:, :-1] == SEP], 1), 1) > 0
  valid = formed & arithmetic & exists
  ending = solution[:, width] == EOS
  step_valid = np.concatenate([valid, (ending & exists[:, -1] & (sep[:, -1] == SEP))[:, None]], 1)
  first = np.where(step_valid.all(1), -1, np.argmin(step_valid, 1))
  has_answer = exists[:, -1] & (written[:, -1] >= 0)
  answer = np.where(has_answer, written[:, -1], -1)
  truth = true_values(problems)[:, -1]
  return Checked(step_valid, first, answer, answer == truth)


def process_labels(checked: Checked) -> np.ndarray:
  """PRM800K's labels ``[n, k + 1]``: each entry's validity up to and including the first
  error, ``-1`` (unlabelled) after it."""
  index = np.arange(checked.terminators)[None, :]
  upto = (checked.first_error[:, None] < 0) | (index <= checked.first_error[:, None])
  return np.where(upto, checked.step_valid.astype(np.int32), -1)


def terminator_index(tokens: np.ndarray, prompt_len: int) -> np.ndarray:
  """For each position of ``tokens`` ``[n, L]``, which terminator (``;`` or EOS) of the solution
  it is (0 = the first step's ``;``), ``-1`` elsewhere: where a PRM reads each step's score."""
  tokens = np.asarray(tokens)
  is_end = (tokens == SEP) | (tokens == EOS)
  is_end[:, :prompt_len] = False
  return np.where(is_end, np.cumsum(is_end, 1) - 1, -1)


def hidden_error_values(problems: Problems, first: np.ndarray, fix: np.ndarray) -> np.ndarray:
  """Values of a sabotaged solution that reaches the right answer through wrong steps: off by
  one from step ``first`` on (carried on consistently), then at step ``fix`` (> ``first``) the
  true value again, which that step's arithmetic does not give (unless the slip was erased)."""
  truth = true_values(problems)
  slips = np.arange(problems.k)[None, :] == np.asarray(first)[:, None]
  carried = written_values(problems, slips, np.zeros_like(slips, np.int64))
  return np.where(np.arange(problems.k)[None, :] >= np.asarray(fix)[:, None], truth, carried)
