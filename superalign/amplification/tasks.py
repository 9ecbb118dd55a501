"""The five algorithmic tasks of Christiano, Shlegeris and Amodei (2018), each with its overseer H.

Every task is batched in NumPy: ``generate`` draws ``Episodes`` (per-instance facts, a question,
the true answer), ``solve`` answers questions by brute force (an algorithm independent of the
generator's), and ``overseer`` is H: it decomposes each question into subquestions about the same
facts, asks them through ``ask(episodes, subquestions) -> answers`` (the model being amplified, or
a solver in tests), and combines the answers. H reads facts but never the answer to the question
it decomposes; a question that reduces to a fact H answers from the facts alone.

Subquestions are asked in rounds, every instance of the batch at once, so one call of ``ask`` is
one batched model evaluation. Questions are int arrays ``[batch, question_len]``; facts are int
arrays ``[batch, num_facts, fact_len]``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from superalign.config import registry


@dataclasses.dataclass(frozen=True)
class Episodes:
  """A batch of task instances, int arrays: ``facts`` ``[batch, num_facts, fact_len]``,
  ``questions`` ``[batch, question_len]``, ``answers`` ``[batch]`` (the generator's ground truth; -1
  where unknown) and ``state``, the instances in structured form for ``solve`` (arrays or lists
  indexed by instance)."""
  facts: np.ndarray       # [batch, num_facts, fact_len]
  questions: np.ndarray   # [batch, question_len]
  answers: np.ndarray     # [batch] ground truth (the generator's)
  state: dict = dataclasses.field(default_factory=dict)  # the instance in structured form

  def __len__(self) -> int:
    return len(self.answers)

  def take(self, idx: np.ndarray) -> "Episodes":
    """The instances at indices ``idx`` (``[k]`` ints), their ``state`` included."""
    state = {k: [v[i] for i in idx] if isinstance(v, list) else v[idx]
             for k, v in self.state.items()}
    return Episodes(self.facts[idx], self.questions[idx], self.answers[idx], state)

  def asking(self, questions: np.ndarray) -> "Episodes":
    """The same instances with other questions (answers unknown: -1)."""
    return dataclasses.replace(self, questions=questions, answers=np.full(len(self), -1))


Ask = Callable[[Episodes, np.ndarray], np.ndarray]


def ask_with_facts(task, ask: Ask) -> Ask:
  """H answers the subquestions that reduce to a fact itself (``task.from_facts``) and puts only
  the rest to ``ask``."""

  def wrapped(ep: Episodes, questions: np.ndarray) -> np.ndarray:
    known, answers = task.from_facts(ep.asking(questions))
    rest = np.flatnonzero(~known)
    if len(rest):
      answers = answers.copy()
      answers[rest] = ask(ep.take(rest), questions[rest])
    return answers

  return wrapped


def ask_some(ask: Ask, ep: Episodes, questions: np.ndarray, rows: np.ndarray,
             fill: int) -> np.ndarray:
  """``ask`` the subquestions of the instances where ``rows`` holds; the others get ``fill``
  (H does not spend a call on an answer it will not use)."""
  out = np.full(len(ep), fill, np.int64)
  idx = np.flatnonzero(rows)
  if len(idx):
    out[idx] = ask(ep.take(idx), questions[idx])
  return out


class PermutationPowering:
  """Facts ``(x, sigma(x))`` for a random permutation of ``size`` elements; question ``(x, n)``
  asks ``sigma^n(x)`` for ``1 <= n <= 2^difficulty``. H: ``sigma^(2m)(x) = sigma^m(sigma^m(x))``,
  and one more fact lookup when ``n`` is odd."""

  name = "permutation"

  def __init__(self, size: int):
    self.size = size

  def max_token(self, difficulty: int) -> int:
    """The largest token up to ``difficulty``: an element (``size - 1``) or a power
    ``n <= 2^difficulty``."""
    return max(self.size - 1, 2 ** difficulty)

  def num_answers(self) -> int:
    """The answer classes: the ``size`` elements."""
    return self.size

  def generate(self, rng: np.random.Generator, batch: int, difficulty: int) -> Episodes:
    """``batch`` episodes at ``difficulty``: facts ``[batch, size, 2]`` (each ``(x, sigma(x))``),
    questions ``[batch, 2]`` (``(x, n)``, ``1 <= n <= 2^difficulty``), answers ``sigma^n(x)``
    ``[batch]``; ``state["sigma"]`` is ``[batch, size]``."""
    sigma = np.stack([rng.permutation(self.size) for _ in range(batch)])
    x = rng.integers(0, self.size, batch)
    n = rng.integers(1, 2 ** difficulty + 1, batch)
    y = x.copy()
    rows = np.arange(batch)
    for step in range(int(n.max())):  # apply sigma n times
      y = np.where(step < n, sigma[rows, y], y)
    facts = np.stack([np.broadcast_to(np.arange(self.size), sigma.shape), sigma], -1)
    return Episodes(facts, np.stack([x, n], -1), y, {"sigma": sigma})

  def solve(self, ep: Episodes) -> np.ndarray:
    """Ground truth ``[batch]`` by brute force: ``x``'s cycle under ``sigma`` (from ``ep.state``),
    indexed at ``n`` modulo its length."""
    out = []
    for sigma, (x, n) in zip(ep.state["sigma"], ep.questions):
      cycle = [x]                     # x's cycle, then index n modulo its length
      while sigma[cycle[-1]] != x:
        cycle.append(sigma[cycle[-1]])
      out.append(cycle[n % len(cycle)])
    return np.array(out)

  def from_facts(self, ep: Episodes) -> tuple[np.ndarray, np.ndarray]:
    """``(known, answers)``, each ``[batch]``: the questions that are a fact (``n == 1``) and the
    fact ``sigma(x)`` (the answer only where ``known``)."""
    x, n = ep.questions[:, 0], ep.questions[:, 1]
    return n == 1, ep.facts[np.arange(len(ep)), x, 1]

  def overseer(self, ep: Episodes, ask: Ask) -> np.ndarray:
    """H's answers ``[batch]``: ``sigma^m(sigma^m(x))`` with ``m = n // 2``, asked in two rounds of
    ``ask``, then one fact lookup when ``n`` is odd; the fact itself when ``n == 1``."""
    x, n = ep.questions[:, 0], ep.questions[:, 1]
    rows = np.arange(len(ep))
    lookup = lambda v: ep.facts[rows, v, 1]
    half = np.maximum(n // 2, 1)
    a = ask(ep, np.stack([x, half], -1))
    b = ask(ep, np.stack([a, half], -1))
    b = np.where(n % 2 == 1, lookup(b), b)
    return np.where(n == 1, lookup(x), b)


class SequentialAssignments:
  """``size`` variables; the first quarter in a random order hold values, each later one is
  ``x := f(y, z)`` of two earlier ones, with ``f`` a lookup table over ``values`` values given as
  facts. Question: a variable at depth <= ``difficulty``; its value. H asks the values of ``y``
  and ``z`` and applies ``f``."""

  name = "assignments"
  VALUE, ASSIGN, TABLE = 0, 1, 2      # fact kinds: (kind, a, b, c)

  def __init__(self, size: int, values: int = 4):
    self.size, self.values = size, values

  def max_token(self, difficulty: int) -> int:
    """The largest token at any difficulty: a variable, a value or a fact kind (``TABLE``)."""
    return max(self.size - 1, self.values - 1, self.TABLE)

  def num_answers(self) -> int:
    """The answer classes: the ``values`` values."""
    return self.values

  def generate(self, rng: np.random.Generator, batch: int, difficulty: int) -> Episodes:
    """``batch`` episodes asking the value of a variable at depth <= ``difficulty``: facts
    ``[batch, size + values^2, 4]`` (``(kind, a, b, c)``: the given values, the assignments and the
    table of ``f``, shuffled), questions ``[batch, 1]``, answers ``[batch]``; ``state["inst"]``
    holds each instance's table, assignments and given values."""
    n, v = self.size, self.values
    base = max(2, n // 4)
    facts, questions, answers, states = [], [], [], []
    for _ in range(batch):
      order = rng.permutation(n)
      table = rng.integers(0, v, (v, v))
      value, depth, inputs, rows = {}, {}, {}, []
      for i, var in enumerate(order):
        if i < base:
          value[var], depth[var] = int(rng.integers(0, v)), 0
          rows.append((self.VALUE, var, value[var], 0))
        else:
          y, z = order[rng.choice(i, 2)]
          value[var] = int(table[value[y], value[z]])
          depth[var], inputs[var] = 1 + max(depth[y], depth[z]), (y, z)
          rows.append((self.ASSIGN, var, y, z))
      rows += [(self.TABLE, a, b, table[a, b]) for a in range(v) for b in range(v)]
      eligible = [var for var in order if depth[var] <= difficulty]
      q = eligible[rng.integers(0, len(eligible))]
      facts.append(np.array(rows)[rng.permutation(len(rows))])
      questions.append([q])
      answers.append(value[q])
      states.append((table, inputs, {k: val for k, val in value.items() if k not in inputs}))
    return Episodes(np.stack(facts), np.array(questions), np.array(answers), {"inst": states})

  def solve(self, ep: Episodes) -> np.ndarray:
    """Ground truth ``[batch]``: the asked variable's value, evaluated recursively from
    ``ep.state``."""
    out = []
    for (table, inputs, given), (q,) in zip(ep.state["inst"], ep.questions):
      memo = dict(given)

      def value(var):
        if var not in memo:
          y, z = inputs[var]
          memo[var] = int(table[value(y), value(z)])
        return memo[var]

      out.append(value(q))
    return np.array(out)

  def _find(self, facts: np.ndarray, kind: int, key: np.ndarray) -> np.ndarray:
    """Per instance, the fact of ``kind`` whose first operand is ``key`` (row of zeros if none)."""
    hit = (facts[..., 0] == kind) & (facts[..., 1] == key[:, None])
    return facts[np.arange(len(facts)), hit.argmax(1)] * hit.any(1)[:, None]

  def from_facts(self, ep: Episodes) -> tuple[np.ndarray, np.ndarray]:
    """``(known, answers)``, each ``[batch]``: whether the asked variable's value is given as a
    fact, and that value (the answer only where ``known``)."""
    f, q = ep.facts, ep.questions[:, 0]
    given = (f[..., 0] == self.VALUE) & (f[..., 1] == q[:, None])
    return given.any(1), f[np.arange(len(ep)), given.argmax(1), 2]

  def overseer(self, ep: Episodes, ask: Ask) -> np.ndarray:
    """H's answers ``[batch]``: a given value from the facts; otherwise H finds ``x := f(y, z)``,
    asks the values of ``y`` and ``z`` (a round each) and looks ``f`` up in the table's facts."""
    q = ep.questions[:, 0]
    known, own = self.from_facts(ep)
    assign = self._find(ep.facts, self.ASSIGN, q)
    a = ask_some(ask, ep, assign[:, 2:3], ~known, 0)
    b = ask_some(ask, ep, assign[:, 3:4], ~known, 0)
    hit = ((ep.facts[..., 0] == self.TABLE) & (ep.facts[..., 1] == a[:, None])
           & (ep.facts[..., 2] == b[:, None]))
    combined = ep.facts[np.arange(len(ep)), hit.argmax(1), 3]
    return np.where(known, own, combined)


class WildcardSearch:
  """``size`` distinct strings of ``length`` letters from ``alphabet``, each with a value in
  ``[0, values)``; a pattern with up to ``difficulty`` wildcards asks the sum (mod ``values``) of the
  values of the strings it matches. H fills the first wildcard with each letter and adds up."""

  name = "wildcard"

  def __init__(self, size: int, length: int = 3, alphabet: int = 4, values: int = 8):
    if length * math.log2(max(alphabet, 1)) >= 62:   # string codes are int64
      raise ValueError(f"wildcard: length={length}: {alphabet}^{length} strings are too many to "
                       "number (at most 2^62)")
    if size > alphabet ** length:
      raise ValueError(f"wildcard: size={size} > {alphabet}^{length} distinct strings")
    self.size, self.length, self.alphabet, self.values = size, length, alphabet, values
    self.wildcard = alphabet  # token

  def max_token(self, difficulty: int) -> int:
    """The largest token at any difficulty: the wildcard (``alphabet``) or a value."""
    return max(self.wildcard, self.values - 1)

  def num_answers(self) -> int:
    """The answer classes: sums modulo ``values``."""
    return self.values

  def generate(self, rng: np.random.Generator, batch: int, difficulty: int) -> Episodes:
    """``batch`` episodes with up to ``min(difficulty, length)`` wildcards per pattern: facts
    ``[batch, size, length + 1]`` (a string's letters, then its value), questions
    ``[batch, length]`` (the pattern; half of them need not match a stored string), answers
    ``[batch]``: the matching strings' values summed modulo ``values``."""
    L, A = self.length, self.alphabet
    w = rng.integers(0, min(difficulty, L) + 1, batch)   # wildcards per pattern
    codes = np.stack([rng.choice(A ** L, self.size, replace=False) for _ in range(batch)])
    strings = (codes[..., None] // A ** np.arange(L)[::-1]) % A
    values = rng.integers(0, self.values, (batch, self.size))
    # The pattern: a stored string (or, half the time, any string: H's subquestions fill
    # wildcards with every letter, so questions about strings that are not stored must be in the
    # distribution too) with w[i] random positions made wildcards.
    pattern = strings[np.arange(batch), rng.integers(0, self.size, batch)].copy()
    anything = rng.random(batch) < 0.5
    pattern[anything] = rng.integers(0, A, (int(anything.sum()), L))
    for i in range(batch):
      pattern[i, rng.choice(L, w[i], replace=False)] = self.wildcard
    match = ((strings == pattern[:, None]) | (pattern[:, None] == self.wildcard)).all(-1)
    answers = (values * match).sum(-1) % self.values
    return Episodes(np.concatenate([strings, values[..., None]], -1), pattern, answers)

  def solve(self, ep: Episodes) -> np.ndarray:
    """Ground truth ``[batch]``: the values of the strings the pattern matches, summed by brute
    force modulo ``values``."""
    out = []
    for facts, pattern in zip(ep.facts, ep.questions):
      total = sum(int(row[-1]) for row in facts
                  if all(p == self.wildcard or p == s for p, s in zip(pattern, row[:-1])))
      out.append(total % self.values)
    return np.array(out)

  def from_facts(self, ep: Episodes) -> tuple[np.ndarray, np.ndarray]:
    """``(known, answers)``, each ``[batch]``: a pattern without wildcards is a fact, answered by
    its string's value (0 if no stored string is that one)."""
    exact = (ep.facts[..., :-1] == ep.questions[:, None]).all(-1)
    own = (ep.facts[..., -1] * exact).sum(-1) % self.values   # 0 if no such string
    return ~(ep.questions == self.wildcard).any(-1), own

  def overseer(self, ep: Episodes, ask: Ask) -> np.ndarray:
    """H's answers ``[batch]``: the first wildcard filled with each letter (``alphabet`` rounds of
    ``ask``), the answers summed modulo ``values``; a pattern without wildcards from the facts."""
    pattern = ep.questions
    wild = pattern == self.wildcard
    first = wild.argmax(-1)
    rows = np.arange(len(ep))
    total = np.zeros(len(ep), np.int64)
    for letter in range(self.alphabet):
      sub = pattern.copy()
      sub[rows, first] = np.where(wild.any(-1), letter, sub[rows, first])
      total += ask(ep, sub)
    known, own = self.from_facts(ep)               # no wildcard: a fact (0 if no such string)
    return np.where(known, own, total % self.values)


class ShortestPath:
  """A random directed graph on ``size`` vertices, ``degree`` out-edges each (facts
  ``(u, v, edge(u, v))``); question ``(a, b, edge(a, b), k)``: the distance from ``a`` to ``b``
  if it is at most ``k`` steps, else ``far`` (answer ``cap``). Difficulty bounds the step budget
  ``k``. H: ``d_k(a, b) = 1 + min_v d_{k-1}(v, b)`` over the out-neighbours ``v`` of ``a``
  (``far`` if all are), ``0`` when ``a == b`` and ``far`` when ``k == 0``.

  The budget is what makes the curriculum teach: at ``k = 1`` every subquestion is a fact, so H
  alone labels "is ``(a, b)`` an edge" and the model learns to find edges before any level asks
  it to chain them. (Without a budget, level 1's pairs at distance <= 1 are answered by "0 if
  ``a == b`` else 1", no fact read, and neither mode ever learned edges.) Targets are balanced
  over ``1 .. k`` and ``far``, so the most common answer is no shortcut. The pair as one token
  makes finding an edge one lookup, as finding ``x``'s fact is in permutation powering: from
  ``(u, v)`` as two fields alone, this model did not learn the conjunction in 800 steps."""

  name = "shortest_path"

  def __init__(self, size: int, degree: int = 2, cap: int = 8):
    if not 0 < degree < size:
      raise ValueError(f"shortest_path: degree={degree}: must be in [1, size - 1={size - 1}]")
    if cap < 2:
      raise ValueError(f"shortest_path: cap={cap}: must be >= 2 (budgets 1 .. cap - 1)")
    self.size, self.degree, self.cap = size, degree, cap
    self.far = cap              # the answer "more than k steps"; budgets stop at cap - 1

  def max_token(self, difficulty: int) -> int:
    """The largest token up to ``difficulty``: an edge ``u * size + v`` or a budget
    ``k <= cap - 1``."""
    return max(self.size * self.size - 1, min(difficulty, self.cap - 1))

  def num_answers(self) -> int:
    """The answer classes: distances ``0 .. cap - 1`` and ``far`` (``cap``)."""
    return self.cap + 1

  def edge(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The pair ``(u, v)`` as one token: facts carry their edge so, and questions their pair."""
    return u * self.size + v

  def question(self, a: np.ndarray, b: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``(a, b, k)`` in the question layout ``(a, b, edge(a, b), k)``."""
    return np.stack([a, b, self.edge(a, b), k], -1)

  def generate(self, rng: np.random.Generator, batch: int, difficulty: int) -> Episodes:
    """``batch`` episodes with budgets ``k <= min(difficulty, cap - 1)``: facts
    ``[batch, size * degree, 3]`` (``(u, v, edge(u, v))``, by ``u``), questions ``[batch, 4]``
    (``(a, b, edge(a, b), k)``), answers ``[batch]``: the distance from ``a`` to ``b`` within ``k``
    steps, else ``far``, the targets balanced over ``1 .. k`` and ``far``."""
    n, r, rows = self.size, self.degree, np.arange(batch)
    top = min(difficulty, self.cap - 1)
    # ``degree`` distinct out-neighbours per vertex, never itself: the smallest random keys.
    keys = rng.random((batch, n, n)) + np.eye(n) * 2
    out = np.argsort(keys, axis=-1)[..., :r]                          # [batch, n, r]
    adjacency = np.zeros((batch, n, n), np.int32)
    np.put_along_axis(adjacency, out, 1, axis=-1)
    a, k = rng.integers(0, n, batch), rng.integers(min(1, top), top + 1, batch)
    # Breadth-first from ``a``, every instance at once, up to its budget ``k``.
    dist = np.full((batch, n), self.far)
    dist[rows, a] = 0
    frontier = dist == 0
    for d in range(1, top + 1):
      reached = np.einsum("bu,buv->bv", frontier, adjacency) > 0
      frontier = reached & (dist == self.far) & (d <= k)[:, None]
      dist[frontier] = d
    # A target among 1 .. k and far that some b != a has, then such a b (k = 0: b = a half the
    # time, a fact either way).
    dist[rows, a] = -1
    classes = np.append(np.arange(1, top + 1), self.far)
    present = (dist[:, None, :] == classes[None, :, None]).any(-1)     # [batch, classes]
    target = classes[np.argmax(rng.random(present.shape) * present, -1)]
    b = np.argmax(rng.random((batch, n)) * (dist == target[:, None]), -1)
    b = np.where((k == 0) & (rng.random(batch) < 0.5), a, b)
    answers = np.where(b == a, 0, dist[rows, b])
    u = np.broadcast_to(np.repeat(np.arange(n), r), (batch, n * r))
    v = out.reshape(batch, n * r)
    facts = np.stack([u, v, self.edge(u, v)], -1)
    return Episodes(facts, self.question(a, b, k), answers)

  def solve(self, ep: Episodes) -> np.ndarray:
    """Ground truth ``[batch]`` by breadth-first search from ``a``, at most ``k`` steps."""
    out = []
    for facts, (a, b, _, k) in zip(ep.facts, ep.questions):
      adjacency = facts[:, 1].reshape(self.size, self.degree)
      frontier, seen, d = {a}, {a}, 0
      while b not in frontier and frontier and d < k:
        d += 1
        frontier = {int(v) for u in frontier for v in adjacency[u]} - seen
        seen |= frontier
      out.append(d if b in frontier else self.far)
    return np.array(out)

  def from_facts(self, ep: Episodes) -> tuple[np.ndarray, np.ndarray]:
    """``(known, answers)``, each ``[batch]``: the questions answered without a subquestion,
    ``a == b`` (0) and ``k == 0`` (``far``)."""
    a, b, _, k = ep.questions.T
    return (a == b) | (k == 0), np.where(a == b, 0, self.far)

  def overseer(self, ep: Episodes, ask: Ask) -> np.ndarray:
    """H's answers ``[batch]``: ``1 + min`` over ``a``'s ``degree`` out-neighbours ``v`` of the
    answer to ``(v, b, k - 1)`` (a round of ``ask`` per neighbour), at most ``far``; 0 when
    ``a == b`` and ``far`` when ``k == 0``."""
    a, b, _, k = ep.questions.T
    neighbours = ep.facts[:, :, 1].reshape(len(ep), self.size, self.degree)[np.arange(len(ep)), a]
    best = np.full(len(ep), self.far)
    for j in range(self.degree):
      sub = self.question(neighbours[:, j], b, np.maximum(k - 1, 0))
      best = np.minimum(best, 1 + ask_some(ask, ep, sub, (a != b) & (k > 0), self.far))
    return np.where(a == b, 0, np.where(k == 0, self.far, np.minimum(best, self.far)))


class UnionFind:
  """Equalities ``x = y`` (facts ``(0, x, y)``) join ``size`` variables into trees of degree <= 3;
  one variable per tree holds a value (facts ``(1, x, value)``). Question ``(x, from)``: the value
  found in ``x``'s side of the tree away from neighbour ``from`` (``none`` if it holds none); about
  half the questions have ``from = none``, the rest come from a neighbour, as H's subquestions do.
  Difficulty: the tree distance from ``x`` to the value.
  H: ``x``'s own value, else the one answer among ``(y, x)`` for ``x``'s other neighbours."""

  name = "union_find"
  EQUAL, VALUE = 0, 1
  MAX_DEGREE = 3

  def __init__(self, size: int, values: int = 8, components: int = 4):
    if not 1 <= components <= size:   # each component has a root variable
      raise ValueError(f"union_find: components={components}: must be in [1, size={size}]")
    self.size, self.values, self.components = size, values, components
    self.none = size            # variable token "none" (also answer "none" = values)

  def max_token(self, difficulty: int) -> int:
    """The largest token at any difficulty: the variable ``none`` (``size``) or a value."""
    return max(self.none, self.values - 1)

  def num_answers(self) -> int:
    """The answer classes: the ``values`` values, then ``none`` (class ``values``)."""
    return self.values + 1      # the last is "none"

  def generate(self, rng: np.random.Generator, batch: int, difficulty: int) -> Episodes:
    """``batch`` episodes asking a variable at tree distance <= ``difficulty`` from its value: facts
    ``[batch, size, 3]`` (``size - components`` equalities ``(EQUAL, x, y)`` and ``components``
    values ``(VALUE, root, value)``, shuffled), questions ``[batch, 2]`` (``(x, from)``), answers
    ``[batch]`` (a value, or ``values`` for none); ``state["edges"]`` holds each instance's
    equalities."""
    n = self.size
    facts, questions, answers, states = [], [], [], []
    for _ in range(batch):
      order = rng.permutation(n)
      roots = order[:self.components]
      value = {int(r): int(rng.integers(0, self.values)) for r in roots}
      degree, depth, root_of, edges, parent = {}, {}, {}, [], {}
      for r in roots:
        degree[r], depth[r], root_of[r] = 0, 0, r
      for x in order[self.components:]:
        open_ = [u for u in depth if degree[u] < self.MAX_DEGREE]
        y = open_[rng.integers(0, len(open_))]
        degree[y] += 1
        degree[x], depth[x], root_of[x], parent[x] = 1, depth[y] + 1, root_of[y], y
        edges.append((x, y) if rng.random() < 0.5 else (y, x))
      rows = [(self.EQUAL, a, b) for a, b in edges] + [(self.VALUE, r, v) for r, v in value.items()]
      eligible = [x for x in depth if depth[x] <= difficulty]
      q = eligible[rng.integers(0, len(eligible))]
      # Asked away from nothing, from q's parent (no value that way: "none") or from one of its
      # children (the root's value): H's subquestions are of the last two kinds.
      children = [x for x, y in parent.items() if y == q]
      came_from, answer = self.none, value[root_of[q]]
      kind = rng.random()
      if kind < 0.25 and q in parent:
        came_from, answer = parent[q], self.values
      elif kind < 0.5 and children:
        came_from = children[rng.integers(0, len(children))]
      facts.append(np.array(rows)[rng.permutation(len(rows))])
      questions.append([q, came_from])
      answers.append(answer)
      states.append(edges)
    return Episodes(np.stack(facts), np.array(questions), np.array(answers), {"edges": states})

  def solve(self, ep: Episodes) -> np.ndarray:
    """Ground truth ``[batch]`` by depth-first search from ``x`` away from ``from``: the first value
    found, else ``values`` (none)."""
    out = []
    for facts, (x, came_from) in zip(ep.facts, ep.questions):
      values = {int(r[1]): int(r[2]) for r in facts if r[0] == self.VALUE}
      adjacency: dict[int, list[int]] = {}
      for kind, a, b in facts:
        if kind == self.EQUAL:
          adjacency.setdefault(int(a), []).append(int(b))
          adjacency.setdefault(int(b), []).append(int(a))
      seen, stack, found = {int(came_from), int(x)}, [int(x)], self.values
      while stack:                # depth-first search away from ``came_from``
        u = stack.pop()
        if u in values:
          found = values[u]
          break
        for v in adjacency.get(u, []):
          if v not in seen:
            seen.add(v)
            stack.append(v)
      out.append(found)
    return np.array(out)

  def from_facts(self, ep: Episodes) -> tuple[np.ndarray, np.ndarray]:
    """``(known, answers)``, each ``[batch]``: whether ``x`` holds a value itself, and that value
    (the answer only where ``known``)."""
    f, x = ep.facts, ep.questions[:, 0]
    own = (f[..., 0] == self.VALUE) & (f[..., 1] == x[:, None])
    return own.any(1), f[np.arange(len(ep)), own.argmax(1), 2]

  def overseer(self, ep: Episodes, ask: Ask) -> np.ndarray:
    """H's answers ``[batch]``: ``x``'s own value, else it asks ``(y, x)`` of each neighbour ``y``
    other than ``from`` (up to ``MAX_DEGREE`` rounds, only where nothing is found yet) and keeps the
    first answer that is not ``none``."""
    x, came_from = ep.questions[:, 0], ep.questions[:, 1]
    f = ep.facts
    known, own = self.from_facts(ep)
    # x's neighbours other than came_from, padded with "none" to MAX_DEGREE subquestions.
    equal = f[..., 0] == self.EQUAL
    other = np.where(equal & (f[..., 1] == x[:, None]), f[..., 2],
                     np.where(equal & (f[..., 2] == x[:, None]), f[..., 1], self.none))
    other = np.where(other == came_from[:, None], self.none, other)
    order = np.argsort(other == self.none, axis=1, kind="stable")[:, :self.MAX_DEGREE]
    neighbours = np.take_along_axis(other, order, 1)
    found = np.full(len(ep), self.values)
    for j in range(self.MAX_DEGREE):
      sub = np.stack([neighbours[:, j], x], -1)
      useful = ~known & (neighbours[:, j] != self.none) & (found == self.values)
      answer = ask_some(ask, ep, sub, useful, self.values)
      found = np.where(found == self.values, answer, found)
    return np.where(known, own, found)


# The tasks by the name ``amplification.tasks`` and the task blocks use.
TASKS = registry.table("amplification task", {
    t.name: t for t in (PermutationPowering, SequentialAssignments, WildcardSearch, ShortestPath,
                        UnionFind)})
