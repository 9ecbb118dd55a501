"""Weak-to-strong generalization on scikit-learn's 8x8 digits (bundled): the embedded default.

A ladder of three MLPs, every model pretrained on a coarse proxy task (digits merged into six
shape groups) on a disjoint split, then weak supervisor -> strong student with every loss of the
literature, five seeds trained as stacked runs.

  superalign                                              # this config
  superalign --config=experiments/w2s/digits.py:smoke     # seconds
  superalign --config=experiments/w2s/digits.py:pretrain=none   # the control without pretraining
"""

from superalign import config as config_lib
from superalign.w2s import config as w2s_config

# Digit -> shape group: {0}, {1, 7}, {2, 3, 5}... chosen so that the proxy task never reveals the
# ten labels: each group but {0} and {9} holds several digits.
COARSE = (0, 1, 2, 2, 3, 4, 5, 1, 5, 3)


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False, pretrain="coarse", mode="probe", seeds=5,
                              cleaning="none")
  c = w2s_config.base()
  c.data.name = "digits"
  c.w2s.ladder = ("mlp_tiny", "mlp_small", "mlp_base")
  c.w2s.mode = args.mode
  c.w2s.num_seeds = args.seeds
  c.w2s.cleaning = args.cleaning
  c.w2s.l2 = 0.1            # an L2-regularized probe, as the reference students
  c.w2s.early_stop = False  # measured: early stopping on weak agreement lowers PGR here
  c.pretrain.task = args.pretrain
  c.pretrain.coarse_map = COARSE

  c.optim.learning_rate = 3e-3
  c.optim.weight_decay = 0.0
  w2s_config.schedule(c, batch_size=64, eval_batch_size=512, epochs=40, pretrain_epochs=60,
                      eval_every=20, log_every=50, checkpoint_every=200)
  c.train.patience = 100
  if args.smoke:
    c.w2s.num_seeds = min(args.seeds, 2)
    c.w2s.losses = ("xent", "logconf")
    c.train.num_epochs = 3
    c.train.eval_every = 5
    c.pretrain.train.num_epochs = 3
  return c
