"""Certified training on Fashion-MNIST from local IDX files (Debian's ``dataset-fashion-mnist``
by default): an MLP (784-256-256-10) trained naturally, with IBP and with CROWN-IBP at
eps = 0.1, then clean, PGD and verified error at three radii on the first 2,000 test images
(every bound exact CROWN: all unstable neurons refined).

  superalign --config=experiments/verify/fashion_mnist.py --workdir=/tmp/verify28
  superalign --config=experiments/verify/fashion_mnist.py:model=cnn_ibp_small   # Gowal's small CNN
  superalign --config=experiments/verify/fashion_mnist.py:smoke,dir=/path/to/idx

With ``model=cnn_ibp_small`` CROWN-IBP training costs about 7x IBP on this CPU, and CROWN runs on
the first 100 test images with at most 64 unstable neurons refined per layer.
"""

from superalign import config as config_lib
from superalign.verify import config as verify_config


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False, dir="/usr/share/datasets/fashion-mnist",
                              model="mlp_base")
  c = verify_config.base()
  c.data.name = f"idx:{args.dir}"
  c.data.splits = {"train": 0.95, "val": 0.05, "test": 1.0}   # test = the official 10k
  c.model.name = args.model
  c.verify.update(eps=(0.02, 0.05, 0.1), train_eps=0.1, warmup_steps=1000, ramp_steps=6000,
                  test_examples=2000, crown_examples=0, max_unstable=0)
  c.train.update(batch_size=128, eval_batch_size=500, num_epochs=0, num_steps=12000,
                 eval_every=3000, checkpoint_every=3000, log_every=1000)
  if args.model.startswith("cnn"):
    c.verify.update(crown_examples=100, max_unstable=64)
    c.train.num_steps = 1600
    c.verify.update(warmup_steps=200, ramp_steps=800)
  if args.smoke:
    verify_config.smoke(c)
  return c
