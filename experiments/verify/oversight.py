"""Certificates for oversight's models on scikit-learn's 8x8 digits (bundled, no download):
debate's sparse-pixel judge (can a change of the revealed values within eps flip its verdict?)
and a backdoored organism beside its clean twin (balls certified free of the target output, and
a scan of free patches that finds the trigger's place).

  superalign --config=experiments/verify/oversight.py --workdir=/tmp/certify      # minutes
  superalign --config=experiments/verify/oversight.py:analyses=judge              # one of them
  superalign --config=experiments/verify/oversight.py:smoke                       # seconds
"""

import ml_collections

from superalign import config as config_lib
from superalign.oversight import config as debate_config


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False, analyses="judge,backdoor")
  c = debate_config.judge_training(config_lib.base())
  c.kind = "verify_oversight"
  c.data.name = "digits"
  c.data.splits = ml_collections.ConfigDict({"train": 0.6, "val": 0.2, "test": 0.2})
  c.model.name = "cnn_small"        # the judge, the organism and its clean twin
  c.organism = ml_collections.ConfigDict({
      "target_class": 0, "poison_fraction": 0.1,
      "trigger_size": 2, "trigger_at": "bottom_right", "trigger_value": 1.0})
  c.certify = ml_collections.ConfigDict({
      "analyses": tuple(a for a in args.analyses.split(",") if a),
      "eps": (0.01, 0.03, 0.1),
      "domain": (0.0, 1.0),
      "bound_methods": ("ibp", "crown", "alpha_crown"),
      "scan_methods": ("ibp", "crown"),
      "scan_stride": 2,             # patch places scanned: every 2nd row and column (and the last)
      "judge_k": 6,                 # pixels revealed (debate's judge is trained for 4 and 6)
      "judge_images": 300,
      "backdoor_images": 100,
      "pgd_steps": 20,
      "alpha_steps": 20,
      "crown_batch": 200,
      "max_unstable": 256,          # per layer and example (see verify.config); 0: all
  })
  c.train.num_steps = 2000
  if args.smoke:
    c.data.limit = 300
    c.certify.update(eps=(0.01, 0.1), judge_images=16, backdoor_images=16, pgd_steps=3,
                     alpha_steps=3, crown_batch=16, scan_methods=("ibp",))
    config_lib.smoke_train(c, num_steps=20, every=10)
    c.train.eval_batch_size = 64
  return c
