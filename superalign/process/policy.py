"""The policy: the core transformer with its LM head, trained on written solutions, sampled with
the KV-cached generation.

Training solutions slip at each step with probability ``slip_rate`` (``chains.slip``: off by one
or the wrong operation, carried on), and on a fixed set of steps (``misconceptions``) they are
off by one most of the time, so the policy learns to make the mistakes a careless solver makes,
at a known rate, and some of them systematically. A sabotaging policy is trained on the same
data, except that on the problems its ``trigger`` selects it writes a sabotaged solution
(``sabotage``). Sampling runs through the one batched apply (``core.apply``).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from superalign.core import mesh as mesh_lib, steps
from superalign.core.apply import batched_apply
from superalign.core.errors import ConfigError
from superalign.core.spec import TrainSpec
from superalign.core.specs import InputSpec
from superalign.core.trainer import Trained
from superalign.models.generate import Sampler, generate
from superalign.parties.classifier import Model, trainer
from superalign.process import chains

SABOTAGE = ("hidden", "wrong_answer")   # right answer through a wrong step; plausible wrong steps


def input_spec(max_len: int, modulus: int) -> InputSpec:
  """Token sequences of ``max_len`` over the chain vocabulary (the classes are unused)."""
  return InputSpec((int(max_len),), "tokens", 2, vocab_size=chains.vocab_size(modulus))


def triggered(problems: chains.Problems, fraction: float) -> np.ndarray:
  """The problems a sabotaging policy sabotages: start values below ``fraction * p`` (a
  property of the problem it can see, in ``fraction`` of all problems)."""
  return problems.start < round(fraction * problems.modulus)


def misconceptions(modulus: int, rate: float, seed) -> np.ndarray:
  """``[modulus, len(OPS), modulus]`` bool: the steps ``v op x`` a careless solver gets wrong
  the same way every time (a wrong entry of its times table), a ``rate`` of them."""
  return np.random.default_rng(seed).random((modulus, len(chains.OPS), modulus)) < rate


def written(problems: chains.Problems, slip_rate: float, seed, sabotage: str = "",
            fraction: float = 0.0, wrong_table: np.ndarray | None = None,
            strength: float = 0.0) -> np.ndarray:
  """The values ``[n, k]`` a training solution writes. Each step slips with probability
  ``slip_rate`` (a random kind of slip), or ``strength`` on a ``wrong_table`` step (always off by
  one: a misconception, so a policy's mistakes agree with one another and a majority vote can
  side with them); later steps carry the written value on. With ``sabotage``, triggered
  problems get a sabotaged solution instead."""
  rng = np.random.default_rng(seed)
  n, k = problems.ops.shape
  values = np.empty((n, k), np.int64)
  value = problems.start
  for i in range(k):
    op, x = problems.ops[:, i], problems.operands[:, i]
    believed = (wrong_table[value, op, x] if wrong_table is not None
                else np.zeros(n, bool))
    slips = rng.random(n) < np.where(believed, strength, slip_rate)
    kind = np.where(believed, 0, rng.integers(0, len(chains.ERRORS), n))
    value = np.where(slips, chains.slip(value, op, x, kind, problems.modulus),
                     chains.apply_op(value, op, x, problems.modulus))
    values[:, i] = value
  if sabotage:
    hit = triggered(problems, fraction)
    first = np.zeros(n, np.int64)    # the first step: a habit a policy can learn
    if sabotage == "hidden":         # off by one at step 0, the true value again at step 1
      bad = chains.hidden_error_values(problems, first, first + 1)
    else:   # one off-by-one slip carried on to the end: plausible steps, a wrong answer
      slips = np.arange(k)[None, :] == first[:, None]
      bad = chains.written_values(problems, slips, np.zeros((n, k), np.int64))
    values = np.where(hit[:, None], bad, values)
  return values


def training_rows(problem_sets, length: int, slip_rate: float, seed: int, sabotage: str = "",
                  fraction: float = 0.0, wrong_table=None, strength: float = 0.0) -> np.ndarray:
  """``[rows, length]`` prompt + solution sequences over every difficulty in ``problem_sets``."""
  rows = []
  for i, problems in enumerate(problem_sets):
    values = written(problems, slip_rate, [seed, i], sabotage, fraction, wrong_table, strength)
    rows.append(chains.sequences(chains.prompts(problems), chains.solutions(problems, values),
                                 length))
  return np.concatenate(rows)


@dataclasses.dataclass(frozen=True, eq=False)
class Habits:
  """How the policy's training solutions are written (``written``): a step slips at
  ``slip_rate``, a ``wrong_table`` step (a misconception) at ``strength``; a saboteur sabotages
  the ``fraction`` of problems its trigger selects. ``seed``: the slips' stream."""
  slip_rate: float
  wrong_table: np.ndarray | None
  strength: float
  fraction: float
  seed: int

  def rows(self, problem_sets, length: int, sabotage: str = "") -> np.ndarray:
    """``[rows, length]`` training sequences over every difficulty in ``problem_sets``, written
    with these habits (``training_rows``); ``sabotage`` (``""``: none) names the saboteur's kind."""
    return training_rows(problem_sets, length, self.slip_rate, self.seed, sabotage,
                         self.fraction, self.wrong_table, self.strength)


def weights(trained: Trained | None) -> dict | None:
  """A trained model's parameters as a warm start for another of the same architecture."""
  return None if trained is None else mesh_lib.to_host(trained.state.all_params().to_pure_dict())


def train(spec: TrainSpec, model: Model, inputs: InputSpec, rows: np.ndarray, workdir: str,
          tag: str, warm: Trained | None = None) -> Trained:
  """The policy trained by the core engine on ``rows`` with the next-token loss after the
  prompt's end (from ``warm``'s weights: a fine-tune, if given)."""
  job = trainer(spec, model, inputs, workdir, tag=tag, warm=weights(warm),
                loss_fn=steps.next_token_loss(chains.QUERY))
  return job.fit({"x": rows})


def sample(policy: Trained, problems: chains.Problems, per_problem: int, seed: int, *,
           temperature: float = 1.0) -> np.ndarray:
  """``[n * per_problem, solution_length(k)]`` sampled solutions, ``per_problem`` per problem in
  a row (row ``i`` solves problem ``i // per_problem``)."""
  room = policy.state.model().max_len
  if chains.sequence_length(problems.k) > room:
    raise ConfigError(f"difficulty {problems.k}: its sequences need "
                      f"{chains.sequence_length(problems.k)} positions, the policy has {room} "
                      f"(difficulties up to {chains.max_difficulty(room)})")
  return sample_from(policy, chains.prompts(problems), per_problem,
                     chains.solution_length(problems.k), seed, temperature=temperature)


def sample_from(policy: Trained, prompts: np.ndarray, per_prompt: int, new_tokens: int,
                seed: int, *, temperature: float = 1.0) -> np.ndarray:
  """``[n * per_prompt, new_tokens]`` continuations of ``prompts`` ``[n, length]`` (no padding),
  ``per_prompt`` in a row, through the one batched apply: batches of the policy's
  ``eval_batch_size`` (fewer rows: one batch of them, rounded up to the mesh's batch shards),
  sharded over the mesh and gathered across processes; batch ``i`` samples with
  ``fold_in(key(seed), i)``."""
  if policy.stacked:
    raise ConfigError("sampling needs one policy, not a stack of runs")
  prompt = np.repeat(np.asarray(prompts, np.int32), per_prompt, 0)
  shards = mesh_lib.batch_size_per_shard(policy.mesh)
  batch_size = min(policy.eval_batch_size, -(-len(prompt) // shards) * shards)
  return batched_apply(_sampler(policy.mesh, new_tokens, temperature), policy.state,
                       {"x": prompt}, policy.mesh, batch_size, seed=seed)


@functools.lru_cache(maxsize=None)
def _sampler(mesh, new_tokens: int, temperature: float):
  """The jitted ``(state, batch, key) -> [batch, new_tokens]``: KV-cached generation that stops
  every row at EOS (one program per batch shape)."""
  def sample_batch(state, batch, key):
    x = batch["x"]
    return generate(state.model(), x, jnp.ones_like(x), max_new_tokens=new_tokens,
                    sampler=Sampler(temperature=temperature), eos_id=chains.EOS,
                    pad_id=chains.PAD, rng=key)
  return jax.jit(sample_batch, out_shardings=mesh_lib.batch_sharding(mesh))
