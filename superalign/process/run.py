"""Process supervision on chains of modular arithmetic: ``kind = "process"``.

1. A policy (the core transformer's LM head) learns to write step-by-step solutions that slip
   at a known rate (``policy``); it samples ``rm_samples`` solutions of the reward-model
   problems, which the exact checker labels (``pools``).
2. An ORM (is the final answer right?) and a PRM (is each step right, up to the first error?) are
   trained on those from the policy's weights, once on every difficulty and once on the easy
   ones alone (from a policy that saw only those); both generative (``verifiers``).
3. On held-out problems the policy samples a pool of ``pool`` solutions each; best-of-N by PRM
   (product and minimum), ORM and majority vote for N = 1, 2, 4, ..., ``pool``; trace error of
   the picks; the PRM's first-error localization (``selection``); Math-Shepherd's rollout
   labels against the exact ones (``rollouts``).
4. Easy-to-hard: reward models trained on easy difficulties select on hard problems, and a
   policy trained on easy difficulties solves hard ones; the Supervision Gap Recovered of each
   (``easy_to_hard``).
5. A sabotaging policy: on the problems its trigger selects it reaches the right answer through
   a wrong step (``hidden``) or writes plausible steps to a wrong answer (``wrong_answer``); how
   often ORM and PRM selection let its sabotage through (``sabotage``).
"""

from __future__ import annotations

from superalign import models
from superalign.config import schema
from superalign.core.errors import ConfigError
from superalign.results.estimates import proportion_ci
from superalign.core.rng import stream_seed
from superalign.core.spec import TrainSpec
from superalign.parties.classifier import Model
from superalign.process import (chains, easy_to_hard, policy as policy_lib, pools, rollouts,
                                sabotage, selection, verifiers)

TASKS = ("chains",)
# Lightman et al. 2023 (best-of-1860, MATH) and Uesato et al. 2022 (GSM8K), REFERENCES.md.
PUBLISHED = {
    "lightman_best_of_1860": {"prm": 78.2, "orm": 72.4, "majority": 69.6},
    "uesato_trace_error": {"outcome_supervised": 14.0, "process_supervised": 3.4},
    "hase_sgr_range": [70, 100],
    "sun_easy_to_hard_prm_math500": {"7b_rl": 34.0, "34b_rerank_1024": 52.5},
}

INCREASING = schema.Rule(
    lambda ks: (isinstance(ks, (tuple, list)) and bool(ks) and list(ks) == sorted(set(ks))
                and all(schema.COUNT.ok(k) for k in ks)), "needs increasing positive integers")
COUNTS = ("policy_problems", "rm_problems", "rm_samples", "test_problems", "pool",
          "easy_policy_steps", "subsets", "rollouts", "rollout_solutions", "sabotage_pool",
          "trace_n", "easy_to_hard_n", "sabotage_n")
RULES = {
    "process.task": schema.one_of(*TASKS),
    "process.modulus": schema.interval(2, 100, integer=True),
    "process.difficulties": INCREASING,
    "process.easy": schema.COUNT,    # the top easy difficulty, inside them: validate
    **{f"process.{key}": schema.COUNT for key in COUNTS},
    **{f"process.{key}": schema.PROBABILITY_BELOW_ONE
       for key in ("slip_rate", "misconception_rate", "misconception_strength")},
    "process.sabotage": schema.one_of(*policy_lib.SABOTAGE),
    "process.sabotage_fraction": schema.interval(0, 1, lo_open=True, hi_open=True),
}
BUDGETS = {"trace_n": "pool", "easy_to_hard_n": "pool", "sabotage_n": "sabotage_pool"}


def validate(config) -> None:
  """The rules across keys: difficulties against the positions, N against its pool, the model."""
  p = config.process
  ks = list(p.difficulties)
  most = chains.max_difficulty(int(config.data.max_len))
  if ks[-1] > most:
    raise ConfigError(f"process.difficulties={tuple(ks)}: difficulty {ks[-1]} needs "
                      f"{chains.sequence_length(ks[-1])} positions; data.max_len="
                      f"{config.data.max_len} holds difficulties up to {most}")
  if not ks[0] <= p.easy < ks[-1]:
    raise ConfigError(f"process.easy={p.easy}: outside the trained range; needs "
                      f"{ks[0]} <= easy < {ks[-1]} (some difficulties easy, some hard)")
  for key, budget in BUDGETS.items():
    if p[key] > p[budget]:
      raise ConfigError(f"process.{key}={p[key]}: N above the sample budget (process.{budget}="
                        f"{p[budget]}); valid: 1..{p[budget]}")
  if not config.model.name.startswith(("gpt_", "hf:")):
    raise ConfigError(f"model.name={config.model.name!r}: the policy needs a transformer with an "
                      "LM head (gpt_* or hf:<dir>)")
  models.check(config.model.name, policy_lib.input_spec(config.data.max_len, p.modulus))


def run(config, workdir: str) -> dict:
  """Trains the policy (on every difficulty, and on the easy ones alone), the reward models on
  its samples and the saboteur, and returns the results: best-of-N and trace errors per
  selection rule, the PRM's error localization, easy-to-hard generalization, sabotage and the
  rollout labels' agreement."""
  p, seed = config.process, config.seed
  spec, model = TrainSpec.from_config(config), Model.from_blocks(config.model, config.data)
  inputs = policy_lib.input_spec(model.max_len, p.modulus)
  ks = list(p.difficulties)
  easy, hard = [k for k in ks if k <= p.easy], [k for k in ks if k > p.easy]
  draws = pools.Draws(seed, p.modulus, model.max_len, workdir)
  sets = {k: draws.problems("policy", k, p.policy_problems) for k in ks}
  wrong = policy_lib.misconceptions(p.modulus, p.misconception_rate,
                                    stream_seed(seed, "process/misconceptions"))
  habits = policy_lib.Habits(p.slip_rate, wrong, p.misconception_strength, p.sabotage_fraction,
                             stream_seed(seed, "process/slips"))
  rows = lambda which, sabotage="": habits.rows([sets[k] for k in which], model.max_len, sabotage)
  policy_spec = spec.with_train(p.policy_train)
  policy = policy_lib.train(policy_spec, model, inputs, rows(ks), workdir, "policy")
  easy_policy = policy_lib.train(policy_spec.with_train(num_steps=p.easy_policy_steps), model,
                                 inputs, rows(easy), workdir, "policy_easy")

  rm = draws.pools(policy, "policy", "rm", ks, p.rm_problems, p.rm_samples)
  judges = verifiers.train(spec.with_train(p.rm_train), model, inputs, workdir, rm, easy, policy,
                           easy_policy)
  test = draws.pools(policy, "policy", "test", ks, p.test_problems, p.pool)
  scored = verifiers.score(judges, test, hard)
  results = {**_setting(p, test, rm, wrong),
             **selection.best_of_n(test, scored, modulus=p.modulus, subsets=p.subsets,
                                   trace_n=p.trace_n, seed=seed),
             "localization": selection.localization(test, scored), "published": PUBLISHED}

  easy_pools = draws.pools(easy_policy, "policy_easy", "test", hard, p.test_problems,
                           min(8, p.pool))
  results["easy_to_hard"] = {**easy_to_hard.selection(test, scored, hard, n=p.easy_to_hard_n,
                                                      subsets=p.subsets, modulus=p.modulus,
                                                      seed=seed),
                             "policy": easy_to_hard.policy(easy_pools, test, p.modulus)}
  tag = f"saboteur_{p.sabotage}"
  saboteur = policy_lib.train(spec.with_train(p.sabotage_train), model, inputs,
                              rows(ks, p.sabotage), workdir, tag, warm=policy)
  results["sabotage"] = sabotage.let_through(
      draws.pools(saboteur, tag, "test", ks, p.test_problems, p.sabotage_pool), judges,
      selection.thresholds(test, scored), kind=p.sabotage, fraction=p.sabotage_fraction,
      n=p.sabotage_n, subsets=p.subsets, modulus=p.modulus, seed=seed)
  results["rollout_labels"] = rollouts.agreement(policy, test, rollouts=p.rollouts,
                                                 solutions=p.rollout_solutions, seed=seed)
  return results


def _setting(p, test: dict, rm: dict, wrong) -> dict:
  """What the run was: the task, the policy's accuracy and habits, the reward models' data."""
  ks = list(test)
  rm_correct = pools.stacked(rm, ks, "correct")
  return {"task": p.task, "modulus": int(p.modulus), "difficulties": ks, "easy": int(p.easy),
          "pool": int(p.pool), "test_problems": len(ks) * int(p.test_problems),
          "subsets": int(p.subsets),
          "policy": {"accuracy_by_difficulty": {str(k): proportion_ci(test[k].checked.correct)
                                                for k in ks},
                     "slip_rate": float(p.slip_rate), "misconceptions": int(wrong.sum()),
                     "misconception_strength": float(p.misconception_strength)},
          "reward_data": {"solutions": rm_correct.size,
                          "correct_answer_rate": float(rm_correct.mean())}}


from superalign.process.report import plot, summary  # noqa: E402  (runner hooks)
