"""Certified training on scikit-learn's 8x8 digits (bundled, no download): an MLP (64-128-128-10)
trained naturally, with IBP and with CROWN-IBP at eps = 0.1, then clean, PGD and verified error
(IBP, CROWN-IBP, CROWN, alpha-CROWN, all exact: every unstable neuron refined) on the whole test
split at three radii. ``model=cnn_small`` trains the max-pooling CNN instead (slower, looser).

  superalign --config=experiments/verify/digits.py --workdir=/tmp/verify_digits   # minutes
  superalign --config=experiments/verify/digits.py:smoke                          # seconds
"""

from superalign import config as config_lib
from superalign.verify import config as verify_config


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False, model="mlp_medium")
  c = verify_config.base()
  c.data.name = "digits"
  c.model.name = args.model
  c.verify.update(eps=(0.02, 0.05, 0.1), train_eps=0.1, warmup_steps=500, ramp_steps=3000,
                  crown_examples=0, max_unstable=0)
  c.train.update(batch_size=64, num_epochs=0, num_steps=6000, eval_every=1000,
                 checkpoint_every=1000, log_every=500)
  if args.smoke:
    verify_config.smoke(c)
  return c
