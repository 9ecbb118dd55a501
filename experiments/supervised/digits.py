"""Supervised classification of scikit-learn's 8x8 digits (bundled, no download).

  superalign --config=experiments/supervised/digits.py             # MLP, about 97-98% test
  superalign --config=experiments/supervised/digits.py:model=cnn   # CNN variant
  superalign --config=experiments/supervised/digits.py:smoke       # seconds, for tests
"""

from superalign import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False, model="mlp")
  c = config_lib.base()
  c.kind = "supervised"
  c.model.name = {"mlp": "mlp_base", "cnn": "cnn_small"}.get(args.model, args.model)
  c.data.name = "digits"
  c.data.splits = {"train": 0.7, "val": 0.1, "test": 0.2}
  c.train.batch_size = 64
  c.train.num_epochs = 30
  c.train.eval_every = 100
  c.train.checkpoint_every = 100
  c.optim.learning_rate = 2e-3
  if args.smoke:
    config_lib.smoke_train(c, num_steps=30, every=10)
  return c
