"""Debate: the game's rules, precommit bookkeeping, tree search against hand-made judges, the
batched backward pass against mctx's own, the judge's training, and the smoke run end to end."""

import json

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

from superalign.launch import runners
from superalign.core import mesh as mesh_lib
from superalign.results.estimates import proportion_ci, schema_violations
from superalign.oversight import game as game_lib
from superalign.oversight import players as players_lib
from superalign.oversight import protocols, search
from superalign.parties.evidence import PixelEvidence, random_reveal

EVIDENCE = PixelEvidence()


def _game(x, claims, movers):
  x = jnp.asarray(x)
  return game_lib.Game(x, EVIDENCE.legal(x), jnp.asarray(claims, jnp.int32), tuple(movers))


def test_reveal_keeps_revealed_and_never_counts_a_pixel_twice():
  x = np.zeros((2, 2, 3, 1), np.float32)
  x[:, 0, :, 0] = 1.0                       # pixels 0, 1, 2 are legal (nonzero); 3, 4, 5 are zero
  game = _game(x, [[0, 1], [0, 1]], (0, 1, 0, 1))
  state = game_lib.State.initial(game)
  state = game_lib.reveal(game, state, jnp.array([1, 4]))   # game 1: a zero pixel is illegal
  assert state.revealed[0].tolist() == [False, True, False, False, False, False]
  assert not state.revealed[1].any()
  state = game_lib.reveal(game, state, jnp.array([1, 2]))   # game 0: pixel 1 again
  assert state.revealed.sum(-1).tolist() == [1, 1]
  state = game_lib.reveal(game, state, jnp.array([0, 0]))
  assert state.revealed[0].tolist() == [True, True, False, False, False, False]
  assert state.turn.tolist() == [3, 3]
  assert game_lib.legal_moves(game, state)[0].tolist() == [False, False, True, False, False, False]


def test_observation_planes_and_random_reveal():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(64, 8, 8, 1)).astype(np.float32) * (rng.uniform(size=(64, 8, 8, 1)) > 0.6)
  legal = EVIDENCE.legal(jnp.asarray(x))
  revealed = random_reveal(jax.random.key(0), legal, 6)
  assert bool((revealed <= legal).all())
  np.testing.assert_array_equal(revealed.sum(-1), np.minimum(legal.sum(-1), 6))
  obs = np.asarray(EVIDENCE.observe(jnp.asarray(x), revealed))
  assert obs.shape == (64, 8, 8, 2)
  mask = np.asarray(revealed).reshape(64, 8, 8)
  np.testing.assert_array_equal(obs[..., 0], mask)
  np.testing.assert_array_equal(obs[..., 1], np.where(mask, x[..., 0], 0))


def test_payoff_precommitted_and_uncommitted():
  probs = jnp.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.2, 0.3, 0.5]])
  v0 = game_lib.payoff(probs, jnp.array([[0, 1], [0, 1], [0, game_lib.UNCOMMITTED]]))
  np.testing.assert_allclose(v0, [0.2 / 0.8, -0.1 / 0.5, -0.3 / 0.7], rtol=1e-6)
  # Uncommitted: player 0 wins exactly when the judge ranks its claim first.
  assert float(game_lib.payoff(probs[:1], jnp.array([[0, -1]]))[0]) > 0


def test_move_orders():
  assert game_lib.movers("debate", 4) == (0, 1, 0, 1)
  assert game_lib.movers("debate", 3, first=1) == (1, 0, 1)
  assert game_lib.movers("consultancy", 3, first=1) == (1, 1, 1)
  with pytest.raises(ValueError, match="unknown protocol"):
    game_lib.movers("chess", 2)


# A hand-made judge over 4x4 images with every pixel legal, two answers, truth = 1.
# Its score for the truth: pixel A = +2, pixel C = +1, but A together with B = -4 (B rebuts A).
# Greedy honest opens with A and the liar rebuts it; looking one reply ahead, the honest player
# opens with C and wins.
A, B, C = 0, 1, 2


def _trap_judge(params, obs):
  del params
  m = obs[..., 0].reshape(obs.shape[0], -1)
  score = 2.0 * m[:, A] + 1.0 * m[:, C] - 4.0 * m[:, A] * m[:, B]
  return jax.nn.softmax(jnp.stack([-score / 2, score / 2], -1))


def _arena(judge=_trap_judge, chunk=8):
  mesh = mesh_lib.make_mesh({"data": 1}, jax.devices()[:1])
  return protocols.Arena(EVIDENCE, (), mesh, chunk, judge_apply=judge)


def _trap_games(n):
  x = np.ones((n, 4, 4, 1), np.float32)
  return x, np.tile([[1, 0]], (n, 1)).astype(np.int32)


def test_search_finds_the_winning_move_that_greedy_misses():
  x, claims = _trap_games(8)
  arena = _arena()
  mcts, greedy = players_lib.MCTS(num_simulations=64, max_considered=16), players_lib.Greedy()
  v_greedy = arena.play(x, claims, (0, 1), (greedy, greedy), seed=0)
  v_mcts = arena.play(x, claims, (0, 1), (mcts, greedy), seed=0)
  assert (v_greedy < 0).all()               # A, rebutted by B
  assert (v_mcts > 0).all()                 # C, which nothing rebuts
  np.testing.assert_allclose(v_mcts, np.tanh(0.5), rtol=1e-5)
  # As the liar, search finds the rebuttal too; a random liar mostly does not.
  v = arena.play(x, claims, (0, 1), (greedy, mcts), seed=1)
  assert (v < 0).all()


def test_consultancy_advisor_plays_every_move_and_a_lone_liar_wins():
  x, _ = _trap_games(4)
  y = np.ones(4, np.int32)
  out = protocols.consultancy(_arena(), x, y, 2, players_lib.Greedy(), seed=0)
  assert out["honest"].all()                # A then C: score 3
  assert not out["lying"].any()             # the liar alone reveals B and any zero-score pixel


def test_precommit_tries_every_lie_and_needs_all_of_them_beaten():
  num_classes = 4
  # The judge always favours answer 2: the honest player beats the lies 1 and 3 (zero probability)
  # but not the lie 2, so with precommit it wins no image whose truth is not 2.
  def judge(params, obs):
    del params
    p = jnp.array([0.3, 0.0, 0.5, 0.0]) + 0.05 * obs[..., 0].reshape(obs.shape[0], -1)[:, :1]
    return p / p.sum(-1, keepdims=True)

  x = np.ones((3, 4, 4, 1), np.float32)
  y = np.array([0, 2, 0], np.int32)
  arena = _arena(judge)
  rand = players_lib.Random()
  out = protocols.debate(arena, x, y, 2, rand, rand, num_classes=num_classes, precommit=True,
                         first="honest", seed=0)
  assert out["v0"].shape == (3, num_classes - 1)
  for i in range(3):
    assert sorted(out["lies"][i]) == sorted(set(range(num_classes)) - {y[i]})
  assert out["wins"].tolist() == [False, True, False]
  np.testing.assert_array_equal(out["v0"][0] > 0, out["lies"][0] != 2)
  nopc = protocols.debate(arena, x, y, 2, rand, rand, num_classes=num_classes, precommit=False,
                          first="liar", seed=0)
  assert nopc["wins"].tolist() == [False, True, False]
  assert arena.throughput.games == 3 * 3 + 3


def test_linear_backward_matches_mctx():
  """The batched backward pass gives mctx's tree exactly, on a random game tree."""
  rng = np.random.default_rng(0)
  num_games, num_actions = 5, 7
  table = jnp.asarray(rng.normal(size=(64, num_actions)), jnp.float32)

  def recurrent_fn(params, key, action, embedding):
    del params, key
    nxt = (embedding * 7 + action + 1) % 64
    out = mctx.RecurrentFnOutput(reward=table[nxt, 0] * 0.1, discount=-jnp.ones_like(table[nxt, 0]),
                                 prior_logits=table[nxt], value=jnp.tanh(table[nxt, 1]))
    return out, nxt

  root = mctx.RootFnOutput(prior_logits=table[:num_games], value=jnp.zeros(num_games),
                           embedding=jnp.arange(num_games))

  def run():
    return mctx.gumbel_muzero_policy((), jax.random.key(3), root, recurrent_fn,
                                     num_simulations=40, max_depth=6).search_tree

  reference = jax.jit(run)()
  with search.linear_backward():
    ours = jax.jit(run)()
  for name in ("node_values", "node_visits", "children_values", "children_visits", "parents"):
    np.testing.assert_allclose(getattr(ours, name), getattr(reference, name), rtol=1e-6,
                               err_msg=name)


def test_proportion_ci_is_wilson():
  ci = proportion_ci(np.array([1] * 8 + [0] * 2))
  assert ci["mean"] == pytest.approx(0.8)
  assert ci["lo"] == pytest.approx(0.4902, abs=1e-3) and ci["hi"] == pytest.approx(0.9433, abs=1e-3)
  assert proportion_ci(np.ones(5))["hi"] == 1.0


@pytest.mark.e2e
def test_judge_learns_from_sparse_pixels(tmp_path):
  from experiments.debate import digits
  from superalign import data as data_lib
  from superalign.parties import judge as judge_lib

  from superalign.core.spec import TrainSpec
  from superalign.parties.classifier import Model

  config = digits.get_config("smoke")
  config.mesh.num_devices = 1
  spec = TrainSpec.from_config(config).with_train(num_steps=300)
  source = data_lib.load(config.data)
  splits = data_lib.make_splits(source, dict(config.data.splits))
  model = Model.from_blocks(config.model, config.data)
  judge = judge_lib.train_judge(spec, model, EVIDENCE, splits["train"],
                                splits["val"], source.spec, 6, str(tmp_path))
  val = judge_lib.sparse_view(EVIDENCE, splits["val"], 6, seed=1)
  accuracy = float((judge.predict(val.x).argmax(-1) == val.y).mean())
  assert accuracy > 0.3                     # chance is 0.1
  assert val.x.shape[-1] == 2 and (val.x[..., 0].reshape(len(val), -1).sum(-1) <= 6).all()


@pytest.mark.e2e
@pytest.mark.xdist_group("smoke-debate")   # beside its shared smoke run
def test_smoke_end_to_end(smoke, tmp_path):
  import shutil
  from conftest import smoke_config
  from superalign.launch import runners
  results, shared = smoke("debate")   # the session's shared smoke run (conftest)
  assert schema_violations(results) == []
  assert results["plots"] and all((shared / p).is_file() for p in results["plots"])
  r = results["by_k"]["4"]
  assert set(r["protocols"]) == {"judge_alone", "consultancy", "debate_precommit",
                                 "debate_no_precommit"}
  for row in r["protocols"].values():
    ci = row["judge_accuracy"]
    assert 0 <= ci["lo"] <= ci["mean"] <= ci["hi"] <= 1 and ci["n"] == 16
  assert set(r["player_matrix"]) == {"greedy", "random"}
  assert (shared / "plots" / "judge_accuracy_by_protocol.png").exists()
  assert "paper" in results["summary"]
  # A rerun in (a copy of) the workdir reuses the judge checkpoint and the finished games.
  shutil.copytree(shared, tmp_path / "again")
  again = runners.execute(smoke_config("debate"), str(tmp_path / "again"))
  assert again["by_k"]["4"]["protocols"] == json.loads(json.dumps(r["protocols"]))


@pytest.mark.parametrize("key, value, message", [
    ("debate.honest", "alphazero", "debate.honest='alphazero': valid: random, greedy, mcts"),
    ("debate.matrix_players", ("greedy", "oracle"),
     "debate.matrix_players=('greedy', 'oracle'): any values, each valid: random, greedy, mcts"),
    ("debate.first", "judge", "debate.first='judge': valid: honest, liar"),
    ("debate.ks", (), "debate.ks=(): one or more values, each must be positive"),
    ("debate.ks", (4, 0), "debate.ks=(4, 0): one or more values, each must be positive"),
    ("debate.variants", ("precommit", "open"),
     "debate.variants=('precommit', 'open'): valid: one or more of precommit, no_precommit"),
    ("debate.num_simulations", 0, "debate.num_simulations=0: must be positive"),
    ("debate.num_images", -1, "debate.num_images=-1: must be zero or positive"),
])
def test_bad_debate_config_is_one_clear_error(key, value, message):
  from experiments.debate import digits
  from superalign.launch import runners
  from superalign.core.errors import ConfigError

  config = digits.get_config("smoke")
  section, name = key.split(".")
  config[section][name] = value
  with pytest.raises(ConfigError) as e:
    runners.validate(config, num_devices=1)
  assert message in str(e.value) and "\n" not in str(e.value)


def test_debate_needs_image_data(tmp_path):
  from experiments.debate import digits
  from superalign.core.errors import ConfigError

  config = digits.get_config("smoke")
  config.data.name = "breast_cancer"
  with pytest.raises(ConfigError, match="debate needs image data"):
    runners.execute(config, str(tmp_path))


@pytest.mark.slow  # ~1-2 min: 784 moves a node, a cnn_base judge compiled for 28x28
@pytest.mark.e2e
def test_28x28_smoke_on_local_idx(tmp_path):
  from conftest import write_idx
  from experiments.debate import mnist
  from superalign.launch import runners

  data = write_idx(str(tmp_path / "idx"), n_train=300, n_test=40)
  config = mnist.get_config(f"smoke,dir={data}")
  config.mesh.num_devices = 1
  runners.validate(config)
  results = runners.execute(config, str(tmp_path / "run"))
  r = results["by_k"]["4"]
  assert r["protocols"]["judge_alone"]["judge_accuracy"]["n"] == 8
  assert results["throughput"]["4"]["games"] > 0
  assert results["throughput"]["4"]["judge_evaluations"] > results["throughput"]["4"]["games"]
