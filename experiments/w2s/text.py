"""Weak-to-strong on text with the GPT-2-shaped transformer ladder, for GPU and TPU users.

Data through ``tfds.data_source`` (array_record, no TensorFlow): ``imdb_reviews`` (default) or
``bool_q``, prepared under ``data.tfds_dir``; the word tokenizer is fitted on the training split.
Pretraining uses the task's labels on the disjoint ``pretrain`` split (binary tasks have no
coarser proxy); ``pretrain=none`` is the control.

  superalign --config=experiments/w2s/text.py:data=bool_q --config.data.tfds_dir=/data/tfds
"""

from superalign import config as config_lib
from superalign.w2s import config as w2s_config


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False, data="imdb_reviews", pretrain="labels", seeds=3,
                              mode="finetune")
  c = w2s_config.base()
  c.data.name = f"tfds:{args.data}"
  c.data.splits = {"pretrain": 0.4, "train_a": 0.2, "train_b": 0.3, "val": 0.1, "test": 1.0}
  c.data.max_len = 256
  c.data.vocab_size = 16384
  c.w2s.ladder = ("gpt_tiny", "gpt_small", "gpt_medium")
  c.w2s.num_seeds = args.seeds
  c.w2s.mode = args.mode
  c.w2s.early_stop = True
  c.pretrain.task = args.pretrain
  c.model.compute_dtype = "bfloat16"

  c.optim.learning_rate = 3e-4
  c.optim.weight_decay = 0.01
  c.optim.schedule = "warmup_cosine"
  c.optim.warmup_steps = 100
  w2s_config.schedule(c, batch_size=32, eval_batch_size=256, epochs=2, pretrain_epochs=2,
                      eval_every=200)
  if args.smoke:  # seconds on a CPU; tests run it on tfds.testing.mock_data
    c.model.compute_dtype = "float32"
    c.data.max_len = 32
    c.data.vocab_size = 256
    c.data.tfds_limit = 200
    c.data.splits = {"pretrain": 0.3, "train_a": 0.2, "train_b": 0.3, "val": 0.2, "test": 1.0}
    c.w2s.num_seeds = 2
    c.w2s.ladder = ("gpt_nano", "gpt_tiny")
    c.pretrain.task = "none"  # the pretraining stage is exercised by the digits smoke test
    c.w2s.losses = ("xent", "logconf")
    c.optim.warmup_steps = 2
    w2s_config.schedule(c, batch_size=8, eval_batch_size=32, epochs=1, pretrain_epochs=1,
                        eval_every=5)
  return c
