"""Weak-to-strong on the full Fashion-MNIST (60k train / 10k test) from a local IDX directory.

Get the data with ``apt-get install dataset-fashion-mnist`` (Debian), which puts it in
/usr/share/datasets/fashion-mnist (the default), or pass ``dir=`` with MNIST-format files:

  superalign --config=experiments/w2s/fashion_mnist.py
  superalign --config=experiments/w2s/fashion_mnist.py:dir=/path/to/idx,seeds=5

Pretraining defaults to the labels of the disjoint 24k ``pretrain`` split: measured, the coarse
garment groups (``pretrain=coarse``) teach too little for a linear probe (strong ceiling 74%, PGR
about 0 for every loss), while label pretraining gives ceilings of 82-87% and PGR 0.5-0.66.
"""

from superalign import config as config_lib
from superalign.w2s import config as w2s_config

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
# Class -> garment group for the coarse pretraining task: tops {T-shirt, pullover, coat, shirt},
# trousers, dresses, footwear {sandal, sneaker, ankle boot}, bags.
COARSE = (0, 1, 0, 2, 0, 3, 0, 3, 4, 3)


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False, dir=DEFAULT_DIR, pretrain="labels", seeds=3,
                              mode="probe")
  c = w2s_config.base()
  c.data.name = f"idx:{args.dir}"
  # test = the 10k official test set; the 60k pool is cut into the other splits.
  c.data.splits = {"pretrain": 0.4, "train_a": 0.2, "train_b": 0.3, "val": 0.1, "test": 1.0}
  c.w2s.ladder = ("mlp_tiny", "mlp_small", "mlp_base")
  c.w2s.num_seeds = args.seeds
  c.w2s.mode = args.mode
  c.w2s.l2 = 0.1
  c.w2s.early_stop = False
  c.pretrain.task = args.pretrain
  c.pretrain.coarse_map = COARSE

  c.optim.learning_rate = 3e-3
  c.optim.weight_decay = 0.0
  w2s_config.schedule(c, batch_size=128, eval_batch_size=2048, epochs=4, pretrain_epochs=5,
                      eval_every=0, log_every=100, checkpoint_every=500)
  if args.smoke:
    c.data.limit = 1500
    c.w2s.num_seeds = 2
    c.w2s.ladder = ("mlp_tiny", "mlp_small")
    c.w2s.losses = ("xent", "logconf")
    w2s_config.schedule(c, batch_size=128, eval_batch_size=512, epochs=2, pretrain_epochs=2,
                        eval_every=0, log_every=100, checkpoint_every=500)
  return c
