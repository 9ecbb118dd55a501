"""Weak-to-strong on pretrained GPT-2 checkpoints: Burns et al. (2023)'s sciq setting.

The ladder is a list of local Hugging Face checkpoint directories, weakest first (``dirs``,
separated by ``:`` like PATH); every run starts from its checkpoint's weights with a fresh
binary head, either fine-tuned (``mode=finetune``, the paper's setting) or as a linear probe on
the last token's hidden state (``mode=probe``). The text task (``task``: sciq, boolq,
amazon_polarity, cosmos_qa, anthropic_hh) is read from ``data`` (JSONL, parquet or a
``datasets.save_to_disk`` directory) with the reference's prompt templates, and tokenized with
the first checkpoint's ``tokenizer.json`` (the GPT-2 family shares one; so does Pythia's).
Directories may be GPT-2 or GPT-NeoX (Pythia) checkpoints; ``config.json`` says which.

  superalign --config=experiments/w2s/gpt2.py:dirs=$HF/gpt2:$HF/gpt2-medium:$HF/gpt2-large,data=$DATA/sciq
  superalign --config=experiments/w2s/gpt2.py:dirs=$HF/pythia-70m:$HF/pythia-410m,data=$DATA/sciq

The reference trains 2 epochs at batch 32, learning rate 5e-5 (GPT-2 family), on 20,000 training
documents (split in halves: weak supervisor, then strong student) and tests on 10,000.
"""

import os

from superalign import config as config_lib
from superalign.w2s import config as w2s_config


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False, dirs="~/hf/gpt2:~/hf/gpt2-medium", task="sciq",
                              data="~/data/sciq", seeds=3, mode="finetune", max_len=512)
  c = w2s_config.base()
  ladder = tuple(f"hf:{d}" for d in args.dirs.split(":") if d)
  c.data.name = f"text:{args.task}"
  c.data.path = args.data
  c.data.tokenizer = os.path.expanduser(ladder[0][3:]) if ladder else ""
  c.data.max_len = args.max_len
  c.data.source_seed = 0
  # No pretraining stage: the checkpoints are the pretrained models. The reference's two
  # training halves are train_a (supervisors) and train_b (students).
  c.data.splits = {"train_a": 0.45, "train_b": 0.45, "val": 0.1, "test": 1.0}
  c.pretrain.task = "none"
  c.w2s.ladder = ladder
  c.w2s.num_seeds = args.seeds
  c.w2s.mode = args.mode
  c.w2s.losses = ("xent", "logconf")
  c.w2s.early_stop = True
  c.model.compute_dtype = "bfloat16"
  c.mesh.data = -1

  c.optim.learning_rate = 5e-5
  c.optim.weight_decay = 0.0
  c.optim.schedule = "warmup_cosine"
  c.optim.warmup_steps = 50
  w2s_config.schedule(c, batch_size=32, eval_batch_size=128, epochs=2, pretrain_epochs=1,
                      eval_every=200)
  if args.smoke:  # seconds on a CPU: the tests run it on tiny random checkpoints
    c.model.compute_dtype = "float32"
    c.data.max_len = min(args.max_len, 32)
    c.w2s.num_seeds = min(args.seeds, 2)
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 2
    w2s_config.schedule(c, batch_size=16, eval_batch_size=64, epochs=2, pretrain_epochs=1,
                        eval_every=10)
  return c
