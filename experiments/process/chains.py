"""Process supervision on chains of modular arithmetic (generated, no download): a policy that
slips, ORM against PRM against majority vote in best-of-N, trace error, first-error
localization, rollout labels, easy-to-hard, and a sabotaging policy.

  superalign --config=experiments/process/chains.py                       # this config (minutes)
  superalign --config=experiments/process/chains.py:sabotage=wrong_answer # the other saboteur
  superalign --config=experiments/process/chains.py:smoke                 # seconds
"""

import ml_collections

from superalign import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False, sabotage="hidden")
  c = config_lib.base()
  c.kind = "process"
  c.model.name = "gpt_tiny"         # the policy (its LM head), and the reward models it starts
  c.data.max_len = 52               # positions: difficulty 6 needs 52

  c.process = ml_collections.ConfigDict({
      "task": "chains",
      "modulus": 10,
      "difficulties": (2, 3, 4, 5, 6),   # steps per problem; each is trained and tested
      "easy": 3,                         # easy-to-hard: trained on <= 3 steps, tested on 4-6
      "slip_rate": 0.05,                 # per step, in the policy's training solutions
      "misconception_rate": 0.15,        # share of steps "v op x" the policy gets wrong ...
      "misconception_strength": 0.7,     # ... this often, always the same way
      "policy_problems": 3000,           # training problems per difficulty
      "rm_problems": 500,                # reward-model problems per difficulty ...
      "rm_samples": 4,                   # ... each with this many policy samples
      "test_problems": 10,               # held-out problems per difficulty
      "pool": 1024,                      # samples per test problem: best-of-N up to N = pool
      "subsets": 100,                    # random subsets per N (PRM800K's eval.py draws 400)
      "trace_n": 64,                     # N of the picks whose trace error is reported
      "easy_to_hard_n": 64,
      "sabotage": args.sabotage,         # "hidden" (right answer, wrong step) or "wrong_answer"
      "sabotage_fraction": 0.3,          # problems with a start value below 0.3 * modulus
      "sabotage_pool": 64,
      "sabotage_n": 16,
      "rollouts": 8,                     # Math-Shepherd completions per step
      "rollout_solutions": 120,
  })
  c.process.policy_train = config_lib.base().train   # eval_batch_size: the batch it samples in
  c.process.policy_train.update(batch_size=128, eval_batch_size=256, num_steps=1500,
                                num_epochs=0, eval_every=0, log_every=250, checkpoint_every=500)
  c.process.easy_policy_steps = 600    # the easy-only policy (shorter solutions learn sooner)
  c.process.sabotage_train = config_lib.base().train   # fine-tunes the policy into a saboteur
  c.process.sabotage_train.update(batch_size=128, eval_batch_size=256, num_steps=300,
                                  num_epochs=0, eval_every=0, log_every=200, checkpoint_every=0)
  c.process.rm_train = config_lib.base().train         # reward models, from a policy's weights
  # eval batches of 256: on a CPU, scoring runs 1.5x faster than in batches of 4096 (cache)
  c.process.rm_train.update(batch_size=64, eval_batch_size=256, num_steps=800, num_epochs=0,
                            eval_every=0, log_every=200, checkpoint_every=400)
  c.optim.learning_rate = 2e-3
  c.optim.weight_decay = 0.01
  if args.smoke:
    p = c.process
    p.difficulties, p.easy = (2, 3), 2
    p.policy_problems, p.rm_problems, p.rm_samples, p.test_problems = 300, 100, 2, 4
    p.pool, p.subsets, p.trace_n, p.easy_to_hard_n = 16, 10, 8, 8
    p.sabotage_pool, p.sabotage_n, p.rollouts, p.rollout_solutions = 8, 4, 2, 8
    p.easy_policy_steps = 60
    c.data.max_len = 32
    for block in (p.policy_train, p.rm_train, p.sabotage_train):
      block.update(num_steps=60, log_every=30, checkpoint_every=0)
  return c
