"""Certificates for debate's sparse-pixel judge (``parties.judge``).

On test images with ``judge_k`` pixels revealed (stream ``certify/reveal``), the fraction whose
verdict no change of the revealed values within ``eps`` can flip (the mask is fixed, unrevealed
pixels stay hidden), beside the flip rate PGD finds in the same box: certified <= 1 - attacked,
always.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from superalign.results.estimates import proportion_ci
from superalign.core.rng import stream_seed
from superalign.parties import judge as judge_lib
from superalign.parties.evidence import random_reveal
from superalign.verify import certify
from superalign.verify.oversight.task import ANALYSES, Settings, Task


@ANALYSES.register("judge")
def judge_certificates(task: Task, settings: Settings, workdir: str) -> dict:
  """The ``judge`` analysis: trains debate's judge on ``judge_k`` revealed pixels, then, on the
  first ``judge_images`` test images (a random reveal each), returns its accuracy and, per
  radius, the share of verdicts each bound method certifies against any change of the revealed
  values within ``eps``, beside the share PGD flips."""
  s, k, evidence = settings, settings.judge_k, task.evidence
  trained = judge_lib.train_judge(task.spec, task.model, evidence, task.splits["train"],
                                  task.splits["val"], task.inputs, k, workdir)
  test = task.splits["test"]
  n = min(len(test), s.judge_images)
  x = jnp.asarray(test.x[:n])
  revealed = random_reveal(jax.random.key(stream_seed(task.spec.seed, "certify/reveal")),
                           evidence.legal(x), k)
  obs = np.asarray(evidence.observe(x, revealed))          # [n, H, W, 1 + C]: mask, values
  verdict = trained.predict(obs).argmax(-1)
  spec = certify.margin_spec(verdict, task.inputs.num_classes)
  free = np.zeros_like(obs)
  free[..., 1:] = obs[..., :1]                             # the revealed values move, nothing else
  out = {"k": k, "images": n, "judge_accuracy": proportion_ci(verdict == test.y[:n]),
         "by_eps": {}}
  for eps in s.eps:
    lo = np.where(free > 0, np.clip(obs - eps, *s.domain), obs)
    hi = np.where(free > 0, np.clip(obs + eps, *s.domain), obs)
    row = {"attacked": proportion_ci(certify.pgd_fooled(trained, obs, verdict, lo, hi,
                                                        steps=s.pgd_steps))}
    for method in s.bound_methods:
      row[method] = proportion_ci(certify.certified(trained, method, lo, hi, spec,
                                                    **s.options.kwargs(method)))
    out["by_eps"][f"{eps:g}"] = row
  return out
