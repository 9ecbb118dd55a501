"""The sandwiching experiment: ``kind = "sandwich"`` (Bowman et al. 2022, with models).

Non-expert: the sparse-pixel judge of the debate module (``k`` pixels). Assistant: a strong
classifier on whole images. Expert: the ground truth. Conditions: non-expert alone, assistant
alone, the non-expert assisted through each protocol, expert; then the same protocols while the
assistant lies on each item with probability ``p`` (the sweep), lies on one class, or lies where
its lie is most persuasive to this non-expert. Games are cached under ``games/``; models resume
from their checkpoints.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from superalign import models
from superalign.core import mesh as mesh_lib
from superalign.core.errors import ConfigError
from superalign.core.metrics import classification_metrics
from superalign.core.rng import numpy_rng, stream_seed
from superalign.core.specs import InputSpec
from superalign.core.trainer import override
from superalign.core.files import cached
from superalign.data.splits import Split
from superalign.parties import organisms
from superalign.oversight import players as players_lib
from superalign.oversight import protocols as games
from superalign.parties.judge import load_pixel_task, sparse_view, train_judge
from superalign.sandwich import metrics, protocols, report
from superalign.sandwich.assistants import Assistant, best_lie
from superalign.parties.classifier import train_classifier


def validate(config) -> None:
  s = config.sandwich
  for name in ("train", "val", "test"):
    if name not in config.data.splits:
      raise ConfigError(f"data.splits: needs a {name!r} split; has {', '.join(config.data.splits)}")
  if not s.protocols or any(p not in protocols.PROTOCOLS for p in s.protocols):
    raise ConfigError(f"sandwich.protocols={tuple(s.protocols)}: valid: one or more of "
                      f"{', '.join(protocols.PROTOCOLS)}")
  if s.player not in players_lib.PLAYERS:
    raise ConfigError(f"sandwich.player={s.player!r}: valid: {', '.join(players_lib.PLAYERS)}")
  for key in ("k", "assistant_steps", "advice_steps", "chunk"):
    if not s[key] > 0:
      raise ConfigError(f"sandwich.{key}={s[key]!r}: must be positive")
  if not s.sweep or any(not 0 <= p <= 1 for p in s.sweep):
    raise ConfigError(f"sandwich.sweep={tuple(s.sweep)}: needs probabilities in [0, 1]")
  if not 0 <= s.persuasive_fraction <= 1:
    raise ConfigError(f"sandwich.persuasive_fraction={s.persuasive_fraction}: must be in [0, 1]")
  for key in ("assistant_model", "advice_model"):
    models.validate_name(s[key], f"sandwich.{key}")


def _stage_train(config, steps: int):
  """``config.train`` for a model trained ``steps`` steps, evaluated and saved four times."""
  every = max(steps // 4, 1)
  return override(config.train, num_steps=steps, eval_every=every, checkpoint_every=every,
                  log_every=min(config.train.log_every, every))


def _settings(s, num_classes: int) -> dict[str, Assistant]:
  out = {f"lie_p{p:g}": Assistant("lie", p=float(p)) for p in s.sweep}
  if s.target_class < num_classes:
    out[f"target_class{s.target_class}"] = Assistant("target", target=int(s.target_class))
  out[f"persuasive_{s.persuasive_fraction:g}"] = Assistant("persuasive",
                                                           p=float(s.persuasive_fraction))
  return out


def run(config, workdir: str) -> dict:
  s, seed = config.sandwich, config.seed
  stream = lambda name: stream_seed(seed, f"sandwich/{name}")
  source, splits, evidence = load_pixel_task(config, "sandwiching (the non-expert sees pixels)")
  models.check(s.assistant_model, source.spec)
  train, val, test = splits["train"], splits["val"], splits["test"]
  n = min(s.num_images, len(test)) if s.num_images else len(test)
  x, y = test.x[:n], test.y[:n]
  classes = source.spec.num_classes
  if s.trained_liar:   # before any training: the class the liar is taught to lie about
    organisms.check_target(s.target_class, classes, "sandwich.target_class")
  mesh = mesh_lib.make_mesh(dict(config.mesh))

  # The three parties. The non-expert alone answers from one fixed draw of k pixels.
  judge = train_judge(config, evidence, train, val, source.spec, s.k, workdir)
  assistant = train_classifier(config, train, source.spec, workdir, tag="assistant",
                               model_name=s.assistant_model, val=val,
                               train_block=_stage_train(config, s.assistant_steps))
  test_n = dataclasses.replace(test, x=x, y=y, ids=test.ids[:n])
  alone_probs = judge.predict(sparse_view(evidence, test_n, s.k, seed=stream("nonexpert_view")).x)
  val_probs = judge.predict(sparse_view(evidence, val, s.k, seed=stream("val_view")).x)
  belief_probs, val_belief_probs = assistant.predict(test_n.x), assistant.predict(val.x)
  belief, confidence = belief_probs.argmax(1), belief_probs.max(1)
  alone = alone_probs.argmax(1) == y
  expert = np.ones(n, bool)

  # Advice: the non-expert learns to weigh an honest assistant's claim on validation items.
  advisor_features = protocols.advice_features(val_probs, val_belief_probs.argmax(1),
                                               val_belief_probs.max(1))
  advice_spec = InputSpec((advisor_features.shape[1],), "vector", classes)
  advice = None
  if "advice" in s.protocols:
    advice = train_classifier(
        config, Split(advisor_features, val.y, val.ids), advice_spec, workdir, tag="advice",
        model_name=s.advice_model, train_block=_stage_train(config, s.advice_steps))

  arena = games.Arena(evidence, judge.state, mesh, s.chunk)
  player = players_lib.make(s.player, num_simulations=s.num_simulations,
                            max_considered=s.max_considered, chunk=s.greedy_chunk)
  consult = debate = None
  if "consultancy" in s.protocols:
    consult = cached(workdir, f"games/consultancy_{s.player}",
                     lambda: protocols.consultancy_outcomes(arena, x, y, s.k, player,
                                                            stream("consultancy")))
  if "debate" in s.protocols:
    debate = cached(workdir, f"games/debate_{s.player}", lambda: protocols.debate_outcomes(
        arena, x, y, s.k, player, classes, stream("debate")))

  def assisted(assistant_policy: Assistant, setting: str) -> dict:
    rng = numpy_rng(seed, f"sandwich/setting/{setting}")
    claim, lied = assistant_policy.claims(belief, alone_probs, rng)
    out = {"lie_rate": float(lied.mean())}
    if advice is not None:
      probs = advice.predict(protocols.advice_features(alone_probs, claim, confidence))
      out["advice"] = {"correct": probs.argmax(1) == y,
                       "calibration_error": metrics.expected_calibration_error(probs, y)}
    if consult is not None:
      out["consultancy"] = {"correct": protocols.consultancy_correct(consult, claim, y)}
    if debate is not None:
      lie = np.where(claim != y, claim, best_lie(y, alone_probs))
      # An independent honest opponent defends the truth; or both debaters are this assistant,
      # and where it lies the truth's defender sandbags.
      out["debate"] = {"correct": protocols.debate_correct(debate, lie, np.zeros_like(lied))}
      out["debate_collusion"] = {"correct": protocols.debate_correct(debate, lie, lied)}
    return out

  def summarize(row: dict) -> dict:
    out = {"lie_rate": row["lie_rate"]}
    for name in (k for k in row if k != "lie_rate"):
      correct = row[name]["correct"]
      out[name] = {"accuracy": metrics.accuracy_ci(correct),
                   "sandwich_score": metrics.sandwich_score_ci(correct, alone, expert,
                                                               seed=stream("bootstrap")),
                   "harm": metrics.harm(correct, alone),
                   **{k: v for k, v in row[name].items() if k != "correct"}}
    return out

  honest = assisted(Assistant("honest"), "honest")
  policies = _settings(s, classes)
  liar = None
  if s.trained_liar:
    lie_class = int(s.target_class)
    lie_to = (lie_class + 1) % classes
    liar_model = organisms.train_liar(config, train, val, source.spec, workdir, "liar", lie_class,
                                      lie_to, model_name=s.assistant_model,
                                      train_block=_stage_train(config, s.assistant_steps))
    policies[f"trained_liar_class{lie_class}"] = organisms.TrainedAssistant.from_model(
        liar_model, x)
    liar = {"lie_class": lie_class, "lie_to": lie_to,
            **organisms.liar_metrics(liar_model, test_n, lie_class, lie_to)}
  settings = {name: summarize(assisted(a, name)) for name, a in policies.items()}
  return {
      "data": config.data.name, "num_images": n, "k": int(s.k), "player": s.player,
      "conditions": {
          "nonexpert_alone": {"accuracy": metrics.accuracy_ci(alone),
                              "calibration_error": metrics.expected_calibration_error(
                                  alone_probs, y)},
          "assistant_alone": {"accuracy": metrics.accuracy_ci(belief == y),
                              "calibration_error": metrics.expected_calibration_error(
                                  belief_probs, y)},
          "expert": {"accuracy": metrics.accuracy_ci(expert)},
      },
      "honest": summarize(honest),
      "misaligned": settings,
      "trained_liar": liar,
      "judge_val": classification_metrics(val_probs, val.y),
      "published": report.PUBLISHED,
  }


plot, summary = report.plot, report.table
