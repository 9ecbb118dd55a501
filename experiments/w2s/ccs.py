"""CCS as a supervisor for weak-to-strong (bundled digits, no download): labels from
Contrast-Consistent Search on the strong model's activations, without any label, against the
weak supervisor's labels, scored by the PGR of a strong student trained on each.

Every model first learns to verify claims "the digit is one of S" on the disjoint pretrain split
from the coarse shape groups alone (``superalign/w2s/ccs/run.py`` says why); the target task
is binary (``target=ge5`` or ``target=parity``).

  superalign --config=experiments/w2s/ccs.py                  # this config (minutes)
  superalign --config=experiments/w2s/ccs.py:target=parity    # the other binary task
  superalign --config=experiments/w2s/ccs.py:smoke            # seconds
"""

import ml_collections

from superalign import config as config_lib

# The w2s digits proxy groups (experiments/w2s/digits.py): {0}, {1, 7}, {2, 3}, {4, 9}, {5}, {6, 8}.
COARSE = (0, 1, 2, 2, 3, 4, 5, 1, 5, 3)


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False, target="ge5", seeds=5, orient="zero_shot")
  c = config_lib.base()
  c.kind = "w2s_ccs"
  c.data.name = "digits"
  c.data.splits = ml_collections.ConfigDict(   # the weak-to-strong runner's splits
      {"pretrain": 0.33, "train_a": 0.17, "train_b": 0.28, "val": 0.06, "test": 0.16})

  c.ccs_w2s = ml_collections.ConfigDict({
      "target": args.target,        # "ge5": digit >= 5; "parity": digit is odd
      "weak": "mlp_tiny",           # the ends of the w2s digits ladder
      "strong": "mlp_base",
      "site": "layers.1.post",      # the strong model's activations CCS reads (last hidden)
      "num_seeds": args.seeds,
      "claims_per_image": 4,        # pretraining claims per pretrain image
      "restarts": 10,               # CCS restarts (Burns et al.), the lowest loss kept
      "orient": args.orient,        # CCS's sign: "zero_shot" (label-free), "labels", "none"
      "orient_labels": 16,          # val labels used when orient = "labels"
      "l2": 0.1,                    # L2 on the heads, as the w2s digits students
  })
  c.pretrain = ml_collections.ConfigDict({"coarse_map": COARSE})
  c.pretrain.train = config_lib.base().train
  # CCS's probe: AdamW with the paper's weight decay, constant rate, 500 full-batch-ish steps
  # (superalign.interp.ccs.CCS_SPEC, kept as data so reading a config imports no JAX).
  c.ccs = ml_collections.ConfigDict({"optim": config_lib.base().optim,
                                     "train": config_lib.base().train})
  c.ccs.optim.update(learning_rate=1e-2, weight_decay=1e-2, schedule="constant", clip_norm=0.0)
  c.ccs.train.update(batch_size=256, eval_batch_size=1024, num_steps=500, num_epochs=0,
                     eval_every=0, log_every=100, checkpoint_every=0)

  c.optim.learning_rate = 3e-3
  c.optim.weight_decay = 0.0
  for block, epochs in ((c.train, 40), (c.pretrain.train, 40)):
    block.update(batch_size=64, eval_batch_size=512, num_epochs=epochs, eval_every=0,
                 log_every=100, checkpoint_every=0)
  if args.smoke:
    c.ccs_w2s.num_seeds = min(args.seeds, 2)
    c.ccs_w2s.claims_per_image = 2
    c.ccs_w2s.restarts = 4
    c.train.num_epochs = 10
    c.pretrain.train.num_epochs = 10
    c.ccs.train.num_steps = 200
  return c
