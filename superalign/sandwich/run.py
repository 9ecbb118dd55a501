"""The sandwiching experiment: ``kind = "sandwich"`` (Bowman et al. 2022, with models).

Non-expert: the sparse-pixel judge of the debate module (``k`` pixels). Assistant: a strong
classifier on whole images. Expert: the ground truth. Conditions: non-expert alone, assistant
alone, the non-expert assisted through each protocol, expert; then the same protocols while the
assistant lies on each item with probability ``p`` (the sweep), lies on one class, or lies where
its lie is most persuasive to this non-expert, or was trained to lie on one class. The parties
are ``sandwich.panel``, the protocols ``sandwich.protocols``, the rows ``sandwich.outcomes``.
Games are cached under ``games/``; models resume from their checkpoints.
"""

from __future__ import annotations

from superalign import models
from superalign.config import schema
from superalign.core import mesh as mesh_lib
from superalign.results.estimates import classification_metrics
from superalign.core.spec import TrainSpec
from superalign.oversight import players
from superalign.oversight import protocols as games
from superalign.parties import organisms
from superalign.parties.classifier import Model
from superalign.parties.judge import check_reveals, load_pixel_task
from superalign.sandwich import assistants, config as sandwich_config, outcomes, panel, report
from superalign.sandwich.protocols import PROTOCOLS, Context

SPLITS = sandwich_config.SPLITS
RULES = {**sandwich_config.RULES, "sandwich.protocols": schema.choices_of(*PROTOCOLS.names),
         "sandwich.player": schema.one_of(*players.PLAYERS.names)}


def validate(config) -> None:
  """The assistant and advice models are names of the model registry (or checkpoints)."""
  for key in ("assistant_model", "advice_model"):   # the model registry's names and checkpoints
    models.validate_name(config.sandwich[key], f"sandwich.{key}")


def run(config, workdir: str) -> dict:
  """Trains the non-expert and the assistant, builds every protocol of
  ``sandwich.protocols``, and scores them with the honest assistant and each misaligned one
  (the lying sweep, the targeted and persuasive liars, the trained liar); returns the conditions,
  the honest and misaligned rows and the trained liar's lie rates."""
  s = config.sandwich
  spec, model = TrainSpec.from_config(config), Model.from_blocks(config.model, config.data)
  source, splits, evidence = load_pixel_task(config.data, model.name,
                                             "sandwiching (the non-expert sees pixels)")
  inputs, classes = source.spec, source.spec.num_classes
  check_reveals(evidence, inputs, (int(s.k),), "sandwich.k")
  models.check(s.assistant_model, inputs)
  if s.trained_liar:   # before any training: the class the liar is taught to lie about
    organisms.check_target(s.target_class, classes, "sandwich.target_class")
  test = panel.first(splits["test"], s.num_images)
  assistant, assistant_spec = model.named(s.assistant_model), panel.stage(spec, s.assistant_steps)
  parties = panel.train_panel(spec, model, assistant_spec, assistant, evidence, splits, test,
                              inputs, s.k, workdir)

  context = Context(
      panel=parties, x=test.x, val=splits["val"], k=s.k, num_classes=classes,
      arena=games.Arena(evidence, parties.judge.state, mesh_lib.make_mesh(spec.mesh), s.chunk),
      player_name=s.player, player=players.make(
          s.player, num_simulations=s.num_simulations, max_considered=s.max_considered,
          chunk=s.greedy_chunk),
      advice_spec=panel.stage(spec, s.advice_steps), advice_model=model.named(s.advice_model),
      seed=spec.seed, workdir=workdir)
  scores = {name: PROTOCOLS[name](context) for name in s.protocols}
  policies = assistants.misaligned(s.sweep, s.target_class, s.persuasive_fraction, classes)
  liar = None
  if s.trained_liar:
    policy, liar = panel.trained_liar(assistant_spec, assistant, splits, test, inputs,
                                      int(s.target_class), workdir)
    policies[f"trained_liar_class{liar['lie_class']}"] = policy
  return {
      "data": config.data.name, "num_images": len(test), "k": int(s.k), "player": s.player,
      **outcomes.table(scores, parties.test, assistants.Assistant("honest"), policies, spec.seed),
      "trained_liar": liar,
      "judge_val": classification_metrics(parties.val.nonexpert, parties.val.y),
      "published": report.PUBLISHED,
  }


plot, summary = report.plot, report.table
