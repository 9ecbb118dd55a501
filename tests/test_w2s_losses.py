"""Weak-to-strong losses: parity with the reference formulas, hand-computed cases, and JAX hygiene.

The reference is openai/weak-to-strong's ``weak_to_strong/loss.py`` (binary ``xent``,
``logconf_loss_fn``, ``product_loss_fn``), re-implemented below in NumPy float64 from its formulas.
Checks are grouped into few jitted programs (hyperparameters passed as traced values) so the file
compiles a few dozen small programs rather than hundreds.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from superalign.w2s import losses

ALL = sorted(losses.LOSSES)


@functools.lru_cache(maxsize=None)
def _jitted(name):
  fn = losses.LOSSES[name]
  return jax.jit(lambda logits, weak, step_frac, hparams: fn(logits, weak, step_frac, **hparams))


def loss(name, logits, weak, step_frac, **overrides):
  """``losses.get(name, **overrides)(...)``, jitted once per (loss, shape): hparams are traced."""
  losses.get(name, **overrides)  # validates the names
  hparams = {k: jnp.float32(v) for k, v in {**losses.DEFAULT_HPARAMS[name], **overrides}.items()}
  return float(_jitted(name)(jnp.asarray(logits, jnp.float32), jnp.asarray(weak, jnp.float32),
                             jnp.float32(step_frac), hparams))


_hard_labels = jax.jit(losses.prior_matched_hard_labels,
                       static_argnames=("rounds", "binary_closed_form"))


def hard_labels(logits, prior, **kwargs):
  return np.asarray(_hard_labels(jnp.asarray(logits, jnp.float32), jnp.asarray(prior, jnp.float32),
                                 **kwargs))


# --------------------------------------------------------------------------------------------
# NumPy re-implementation of openai/weak-to-strong's loss.py (binary), in float64.


def _np_log_softmax(logits):
  logits = np.asarray(logits, np.float64)
  z = logits - logits.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_xent(logits, target):
  return float(np.mean(-np.sum(np.asarray(target, np.float64) * _np_log_softmax(logits), -1)))


def ref_xent(logits, weak):
  return _np_xent(logits, weak)


def ref_hardened(logits, weak):
  """``logconf_loss_fn``'s hardening: threshold p_0 at quantile(p_0, mean_weak[1])."""
  preds = np.exp(_np_log_softmax(logits))
  mean_weak = np.mean(np.asarray(weak, np.float64), 0)
  threshold = np.quantile(preds[:, 0], mean_weak[1])  # linear interpolation, as torch.quantile
  return np.stack([preds[:, 0] >= threshold, preds[:, 0] < threshold], 1).astype(np.float64)


def ref_logconf(logits, weak, coef):
  weak = np.asarray(weak, np.float64)
  target = weak * (1 - coef) + ref_hardened(logits, weak) * coef
  return _np_xent(logits, target)


def ref_product(logits, weak, alpha=1.0, beta=1.0):
  preds = np.exp(_np_log_softmax(logits))
  target = preds**beta * np.asarray(weak, np.float64)**alpha
  target /= target.sum(-1, keepdims=True)
  return _np_xent(logits, target)


def _binary_batch(seed, n, scale=2.0, hard_frac=0.2):
  rng = np.random.default_rng(seed)
  logits = (rng.normal(size=(n, 2)) * scale).astype(np.float32)
  w1 = rng.uniform(size=n)
  hard = rng.uniform(size=n) < hard_frac  # some weak labels fully confident (exact 0 / 1)
  w1 = np.where(hard, np.round(w1), w1)
  weak = np.stack([1 - w1, w1], 1).astype(np.float32)
  return logits, weak


def _multiclass_batch(seed, n, k, scale=2.0):
  rng = np.random.default_rng(seed)
  logits = (rng.normal(size=(n, k)) * scale).astype(np.float32)
  weak = rng.dirichlet(np.full(k, 0.5), size=n).astype(np.float32)
  return logits, weak


# --------------------------------------------------------------------------------------------
# (1) Parity with the reference's numbers (past warm-up, and in warm-up with the linear ramp),
# (2) the binary case of the multi-class hardening, and (4) the warm-up ramp, in one program per
# batch size, vmapped over seeds and over rows of (step_frac, aux_coef, warmup_frac, alpha, beta).

SIZES = (1, 2, 7, 33, 101)  # odd and even, down to a single example
SEEDS = 4
# step_frac, aux_coef, warmup_frac, alpha, beta -> logconf's coefficient c.
ROWS = np.array([
    (0.1, 0.5, 0.1, 1.0, 1.0),   # exactly warmup_frac: past warm-up, c = aux_coef
    (0.37, 0.5, 0.1, 1.0, 1.0),
    (1.0, 0.5, 0.1, 1.0, 1.0),
    (0.9, 0.8, 0.3, 2.0, 0.5),   # other hyperparameters
    (0.0, 0.5, 0.1, 1.0, 1.0),   # start of warm-up: c = 0, logconf = xent
    (0.05, 0.5, 0.1, 1.0, 1.0),  # half-way through warm-up: c = aux_coef / 2
    (0.2, 0.8, 0.4, 1.0, 1.0),   # half-way, other hyperparameters: c = 0.4
], np.float32)
COEFS = [0.5, 0.5, 0.5, 0.8, 0.0, 0.25, 0.4]


def _stacked_binary(n):
  batches = [_binary_batch(100 * n + seed, n) for seed in range(SEEDS)]
  return np.stack([b[0] for b in batches]), np.stack([b[1] for b in batches])


@jax.jit
def _binary_suite(logits, weak, rows):
  def per_seed(logits, weak):
    def per_row(row):
      step_frac, aux_coef, warmup_frac, alpha, beta = row
      return jnp.stack([
          losses.xent(logits, weak, step_frac),
          losses.logconf(logits, weak, step_frac, aux_coef=aux_coef, warmup_frac=warmup_frac),
          losses.product(logits, weak, step_frac, alpha=alpha, beta=beta),
          losses.entropy(logits, weak, step_frac, aux_coef=aux_coef, warmup_frac=warmup_frac),
      ])
    prior = jnp.mean(weak, axis=0)
    return (jax.vmap(per_row)(rows),
            losses.prior_matched_hard_labels(logits, prior, binary_closed_form=True),
            losses.prior_matched_hard_labels(logits, prior, binary_closed_form=False))
  return jax.vmap(per_seed)(logits, weak)


@functools.lru_cache(maxsize=None)
def binary_suite(n):
  logits, weak = _stacked_binary(n)
  values, closed, iterative = jax.tree.map(np.asarray, _binary_suite(logits, weak, ROWS))
  return logits, weak, values, closed, iterative


@pytest.mark.parametrize("n", SIZES)
def test_reference_parity(n):
  logits, weak, values, _, _ = binary_suite(n)
  for seed in range(SEEDS):
    for r, (row, coef) in enumerate(zip(ROWS, COEFS)):
      msg = f"n={n} seed={seed} row={row.tolist()}"
      xent, logconf, product, _ = values[seed, r]
      np.testing.assert_allclose(xent, ref_xent(logits[seed], weak[seed]), rtol=0, atol=1e-5,
                                 err_msg="xent " + msg)
      np.testing.assert_allclose(logconf, ref_logconf(logits[seed], weak[seed], coef), rtol=0,
                                 atol=1e-5, err_msg="logconf " + msg)
      np.testing.assert_allclose(product, ref_product(logits[seed], weak[seed], alpha=row[3],
                                                      beta=row[4]),
                                 rtol=0, atol=1e-5, err_msg="product " + msg)


@pytest.mark.parametrize("n", SIZES)
def test_multiclass_hardening_reduces_to_binary_reference(n):
  """Both the closed form and the general (iterative) solver give the reference's hardening."""
  logits, weak, _, closed, iterative = binary_suite(n)
  for seed in range(SEEDS):
    ref = ref_hardened(logits[seed], weak[seed])
    np.testing.assert_array_equal(closed[seed], ref, err_msg=f"closed form n={n} seed={seed}")
    np.testing.assert_array_equal(iterative[seed], ref, err_msg=f"iterative n={n} seed={seed}")


def test_warmup_ramp():
  _, _, values, _, _ = binary_suite(33)
  xent, logconf, _, entropy = np.moveaxis(values, -1, 0)  # [seed, row] each
  # Start of warm-up (row 4): c = 0, so logconf and entropy are xent.
  np.testing.assert_allclose(logconf[:, 4], xent[:, 4], rtol=1e-6)
  np.testing.assert_allclose(entropy[:, 4], xent[:, 4], rtol=1e-6)
  # Half-way (row 5, c = 0.25) differs from both ends: the ramp is really used.
  assert np.all(np.abs(logconf[:, 5] - xent[:, 5]) > 1e-4)
  assert np.all(np.abs(logconf[:, 5] - logconf[:, 2]) > 1e-4)
  # The ramp itself: linear, reaching aux_coef at warmup_frac, constant after; no warm-up at 0.
  fracs = jnp.array([0.0, 0.025, 0.05, 0.0999, 0.1, 0.5, 1.0])
  np.testing.assert_allclose(losses.warmup_coef(fracs, 0.5, 0.1),
                             [0.0, 0.125, 0.25, 0.4995, 0.5, 0.5, 0.5], rtol=1e-5)
  np.testing.assert_allclose(losses.warmup_coef(0.0, 0.5, 0.0), 0.5)


# --------------------------------------------------------------------------------------------
# (2, continued) More classes: the hardened class frequencies match the weak labels' balance.


@jax.jit
def _multiclass_hardening(batches):
  """Hardened labels, and those for the classes in reverse order (mapped back)."""
  harden = jax.vmap(losses.prior_matched_hard_labels)
  return [(harden(logits, prior), harden(logits[..., ::-1], prior[..., ::-1])[..., ::-1])
          for logits, prior in batches]


def test_multiclass_hardening_matches_weak_class_balance():
  n, ks = 97, (3, 5, 10)
  batches = []
  for k in ks:
    pairs = [_multiclass_batch(seed, n, k) for seed in range(SEEDS)]
    batches.append((np.stack([p[0] for p in pairs]), np.stack([p[1].mean(0) for p in pairs])))
  for k, (logits, prior), (hard, hard_reversed) in zip(ks, batches, _multiclass_hardening(batches)):
    hard, hard_reversed = np.asarray(hard), np.asarray(hard_reversed)
    for seed in range(SEEDS):
      # Numbering the classes differently moves only a few boundary examples (about one per two
      # classes: each class count is matched to within an example either way).
      assert (hard[seed] != hard_reversed[seed]).any(1).sum() <= k // 2 + 1, (k, seed)
      np.testing.assert_array_equal(hard[seed].sum(1), np.ones(n))  # one-hot rows
      counts = hard[seed].sum(0)
      target = n * prior[seed]
      argmax_counts = np.eye(k)[logits[seed].argmax(1)].sum(0)
      # Within a few examples of n * prior (counts are integers), far closer than the argmax.
      assert np.abs(counts - target).max() <= 3, (k, seed, counts, target)
      assert np.abs(counts - target).sum() < np.abs(argmax_counts - target).sum()


def test_logconf_hardening_balances_classes_against_the_argmax():
  # The student prefers class 0 everywhere, but the weak labels put 2/3 of the mass on class 1,
  # so the hardened targets flip the two least class-0-confident examples.
  logits = np.log(np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]], np.float32))
  weak = np.tile(np.array([[1 / 3, 2 / 3]], np.float32), (3, 1))
  hard = hard_labels(logits, weak.mean(0))
  np.testing.assert_array_equal(hard, [[1, 0], [0, 1], [0, 1]])
  np.testing.assert_array_equal(hard, ref_hardened(logits, weak))


def test_multiclass_hardening_hand_case():
  # Every example prefers class 0; a uniform weak prior gives each class one example, chosen to
  # maximize sum log p: ex 2 keeps class 0, ex 0 takes class 1, ex 1 takes class 2.
  probs = np.array([[0.4, 0.35, 0.25], [0.4, 0.25, 0.35], [0.8, 0.1, 0.1]], np.float32)
  weak = np.eye(3, dtype=np.float32)
  hard = hard_labels(np.log(probs), weak.mean(0))
  expected_hard = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], np.float64)
  np.testing.assert_array_equal(hard, expected_hard)
  target = 0.5 * weak + 0.5 * expected_hard
  np.testing.assert_allclose(loss("logconf", np.log(probs), weak, 1.0),
                             np.mean(-np.sum(target * np.log(probs), 1)), rtol=1e-6)


def test_hardening_with_a_zero_prior_class():
  # Binary, all weak mass on class 1: the reference's threshold is max(p_0), so the single most
  # class-0-confident example stays class 0; both paths agree with it.
  logits, _ = _binary_batch(3, 9)
  weak = np.tile(np.array([[0.0, 1.0]], np.float32), (9, 1))
  ref = ref_hardened(logits, weak)
  assert ref[:, 0].sum() == 1
  np.testing.assert_array_equal(hard_labels(logits, weak.mean(0)), ref)
  np.testing.assert_array_equal(hard_labels(logits, weak.mean(0), binary_closed_form=False), ref)
  # Multi-class: a class with zero weak share keeps at most that one example.
  logits, _ = _multiclass_batch(0, 40, 4)
  prior = np.array([0.5, 0.0, 0.25, 0.25], np.float32)
  hard = hard_labels(logits, prior)
  assert hard[:, 1].sum() <= 1
  np.testing.assert_array_equal(hard.sum(1), np.ones(40))


# --------------------------------------------------------------------------------------------
# (3) Hand-computed small cases. p = [0.75, 0.25] comes from logits [ln 3, 0].

LN3 = math.log(3.0)
L75, L25, L50 = math.log(0.75), math.log(0.25), math.log(0.5)


def test_xent_hand():
  logits = [[LN3, 0.0], [0.0, 0.0]]
  weak = [[0.5, 0.5], [1.0, 0.0]]
  expected = (-(0.5 * L75 + 0.5 * L25) + -L50) / 2
  np.testing.assert_allclose(loss("xent", logits, weak, 0.0), expected, rtol=1e-6)


def test_logconf_hand():
  # p_0 = [0.75, 0.25]; mean weak = [0.6, 0.4]; threshold = quantile([.25, .75], 0.4) = 0.45,
  # so hardened = [[1, 0], [0, 1]]; c = 0.5: targets [0.9, 0.1] and [0.2, 0.8].
  logits = [[LN3, 0.0], [0.0, LN3]]
  weak = [[0.8, 0.2], [0.4, 0.6]]
  expected = (-(0.9 * L75 + 0.1 * L25) + -(0.2 * L25 + 0.8 * L75)) / 2
  np.testing.assert_allclose(loss("logconf", logits, weak, 1.0), expected, rtol=1e-6)


def test_product_hand():
  # Ex 0: p * w = [0.375, 0.125] -> target [0.75, 0.25]. Ex 1: p uniform -> target = weak.
  logits = [[LN3, 0.0], [0.0, 0.0]]
  weak = [[0.5, 0.5], [0.8, 0.2]]
  expected = (-(0.75 * L75 + 0.25 * L25) + -L50) / 2
  np.testing.assert_allclose(loss("product", logits, weak, 1.0), expected, rtol=1e-6)
  # alpha = 2: target ∝ [0.75 * 0.25, 0.25 * 0.25] = [0.75, 0.25] for ex 0; [0.64, 0.04] for ex 1.
  t1 = np.array([0.64, 0.04]) / 0.68
  expected2 = (-(0.75 * L75 + 0.25 * L25) + -(t1.sum() * L50)) / 2
  np.testing.assert_allclose(loss("product", logits, weak, 1.0, alpha=2.0), expected2, rtol=1e-6)


def test_kl_hand():
  logits = [[0.0, 0.0], [LN3, 0.0]]
  weak = [[0.8, 0.2], [1.0, 0.0]]
  expected = (0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5) + -L75) / 2
  np.testing.assert_allclose(loss("kl", logits, weak, 0.0), expected, rtol=1e-6)


def test_entropy_hand():
  # c = 0.5 past warm-up: target = 0.5 * [1, 0] + 0.5 * [0.75, 0.25] = [0.875, 0.125].
  logits = [[LN3, 0.0]]
  weak = [[1.0, 0.0]]
  np.testing.assert_allclose(loss("entropy", logits, weak, 1.0), -(0.875 * L75 + 0.125 * L25),
                             rtol=1e-6)


def test_window_hand():
  # radius 0.15 -> threshold 0.65. Confidences 0.75 (dropped), 0.6 and 0.5 (kept).
  logits = [[LN3, 0.0], [math.log(1.5), 0.0], [0.0, 0.0]]
  weak = [[0.0, 1.0], [0.3, 0.7], [0.9, 0.1]]
  expected = (-(0.3 * math.log(0.6) + 0.7 * math.log(0.4)) + -L50) / 2
  np.testing.assert_allclose(loss("window", logits, weak, 0.0), expected, rtol=1e-6)


def test_bootstrap_hand():
  logits = [[LN3, 0.0]]
  weak = [[0.0, 1.0]]
  # soft, b = 0.95: target = 0.95 * [0, 1] + 0.05 * [0.75, 0.25] = [0.0375, 0.9625].
  np.testing.assert_allclose(loss("bootstrap_soft", logits, weak, 0.0),
                             -(0.0375 * L75 + 0.9625 * L25), rtol=1e-6)
  # hard, b = 0.8: target = 0.8 * [0, 1] + 0.2 * [1, 0] = [0.2, 0.8].
  np.testing.assert_allclose(loss("bootstrap_hard", logits, weak, 0.0), -(0.2 * L75 + 0.8 * L25),
                             rtol=1e-6)


def test_adaptconf_hand():
  # Ex 0: p = [0.75, 0.25], weak argmax = 1: a = (1/.75) / (1/.75 + 1/.25) = 0.25.
  # Ex 1: p = [0.2, 0.8], weak argmax = 1 = own argmax: a = 0.5.
  logits = [[LN3, 0.0], [0.0, math.log(4.0)]]
  weak = [[0.4, 0.6], [0.3, 0.7]]
  kd0, ce0 = -(0.4 * L75 + 0.6 * L25), -L75
  kd1, ce1 = -(0.3 * math.log(0.2) + 0.7 * math.log(0.8)), -math.log(0.8)
  expected = (0.75 * kd0 + 0.25 * ce0 + 0.5 * kd1 + 0.5 * ce1) / 2
  np.testing.assert_allclose(loss("adaptconf", logits, weak, 0.0), expected, rtol=1e-6)
  # Temperature 2: a = e^{CE_self/2} / (e^{CE_self/2} + e^{CE_weak/2}) for ex 0.
  a0 = math.exp(-L75 / 2) / (math.exp(-L75 / 2) + math.exp(-L25 / 2))
  expected_t = ((1 - a0) * kd0 + a0 * ce0 + 0.5 * kd1 + 0.5 * ce1) / 2
  np.testing.assert_allclose(loss("adaptconf", logits, weak, 0.0, temperature=2.0), expected_t,
                             rtol=1e-6)


# --------------------------------------------------------------------------------------------
# (5) kl: the gradient of xent, zero at the weak labels.


@jax.jit
def _kl_and_xent(logits, weak):
  return (jax.value_and_grad(losses.kl)(logits, weak, 0.0),
          jax.value_and_grad(losses.xent)(logits, weak, 0.0),
          losses.kl(jnp.log(weak), weak, 0.0))


def test_kl_gradient_equals_xent_and_zero_at_weak():
  for k in (2, 4):
    logits, weak = _multiclass_batch(3, 17, k)
    (kl, g_kl), (xent, g_xent), kl_at_weak = _kl_and_xent(logits, weak)
    np.testing.assert_allclose(g_kl, g_xent, atol=1e-7)
    weak_entropy = float(np.mean(-np.sum(weak * np.log(np.maximum(weak, 1e-30)), 1)))
    np.testing.assert_allclose(float(xent) - float(kl), weak_entropy, rtol=1e-5)
    assert float(kl) > 0
    assert float(kl_at_weak) == pytest.approx(0.0, abs=1e-6)
  hard_weak = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)  # 0 log 0 = 0, not NaN
  assert loss("kl", np.zeros((2, 2)), hard_weak, 0.0) == pytest.approx(-L50)


# --------------------------------------------------------------------------------------------
# (6) window: ignores confident examples; 0 (not NaN) when none is selected.


def test_window_ignores_confident_examples():
  logits = jnp.array([[5.0, -5.0], [0.1, 0.0], [-0.2, 0.0], [0.0, 6.0]])
  weak_a = np.array([[0.1, 0.9], [0.3, 0.7], [0.6, 0.4], [0.9, 0.1]], np.float32)
  weak_b = weak_a.copy()
  weak_b[[0, 3]] = weak_b[[0, 3]][:, ::-1]  # change only the confident examples' weak labels
  window = loss("window", logits, weak_a, 0.0)
  np.testing.assert_allclose(window, loss("window", logits, weak_b, 0.0))
  np.testing.assert_allclose(window, ref_xent(logits[1:3], weak_a[1:3]), rtol=1e-6)
  grad = jax.jit(jax.grad(losses.window))(logits, weak_a, 0.0)
  np.testing.assert_array_equal(grad[jnp.array([0, 3])], 0.0)
  assert np.all(np.abs(grad[1:3]) > 0)
  # radius 0.5 keeps everything: plain xent.
  np.testing.assert_allclose(loss("window", logits, weak_a, 0.0, radius=0.5),
                             loss("xent", logits, weak_a, 0.0), rtol=1e-6)


def test_window_none_selected_is_zero_without_nan():
  logits = jnp.array([[50.0, -50.0], [-9.0, 9.0]])
  weak = np.array([[0.2, 0.8], [0.7, 0.3]], np.float32)
  value, grad = jax.jit(jax.value_and_grad(losses.window))(logits, weak, 0.0)
  assert float(value) == 0.0
  np.testing.assert_array_equal(grad, 0.0)
  assert float(jax.jit(losses.window)(logits, weak, 0.0)) == 0.0


def test_window_threshold():
  assert float(losses.window_threshold(2, 0.15)) == pytest.approx(0.65)
  assert float(losses.window_threshold(2, 0.2)) == pytest.approx(0.7)
  # k classes: the same share (30%) of the range [1/k, 1] of the top probability.
  assert float(losses.window_threshold(4, 0.15)) == pytest.approx(0.25 + 0.3 * 0.75)
  assert float(losses.window_threshold(10, 0.5)) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# (7) jit, vmap, finite gradients at extreme logits: one program per loss.

FRACS = np.array([0.0, 0.05, 1.0], np.float32)


def _extreme_batch(rng, k, n=8):
  """Logits of ±50 (one row all +50) with hard and soft weak labels, often disagreeing."""
  logits = rng.choice([-50.0, 50.0], size=(n, k)).astype(np.float32)
  logits[0] = 50.0
  weak = np.eye(k, dtype=np.float32)[rng.integers(0, k, n)]
  weak[:3] = rng.dirichlet(np.ones(k), size=3)
  return logits, weak


@functools.lru_cache(maxsize=None)
def _hygiene_program(name):
  fn = losses.get(name)

  @jax.jit
  def program(extreme, seeds):
    out = []
    for (logits, weak), (seed_logits, seed_weak) in zip(extreme, seeds):
      # value and gradient at each step fraction (vmapped over step_frac)
      values, grads = jax.vmap(jax.value_and_grad(fn), in_axes=(None, None, 0))(logits, weak, FRACS)
      # vmapped over a leading (seed) axis vs one call per seed
      batched = jax.vmap(fn)(seed_logits, seed_weak, FRACS)
      looped = jnp.stack([fn(seed_logits[i], seed_weak[i], FRACS[i]) for i in range(len(FRACS))])
      out.append((values, grads, batched, looped))
    return out
  return program


@pytest.mark.parametrize("name", ALL)
def test_jit_vmap_and_extreme_gradients(name):
  rng = np.random.default_rng(0)
  extreme, seeds = [], []
  for k in (2, 5):
    extreme.append(_extreme_batch(rng, k))
    seed_logits = (rng.normal(size=(len(FRACS), 8, k)) * 3).astype(np.float32)
    seed_logits[-1] = extreme[-1][0]
    seeds.append((seed_logits, rng.dirichlet(np.ones(k), size=(len(FRACS), 8)).astype(np.float32)))
  for k, (values, grads, batched, looped) in zip((2, 5), _hygiene_program(name)(extreme, seeds)):
    assert np.all(np.isfinite(values)), (name, k, values)
    assert np.all(np.isfinite(grads)), (name, k)
    assert np.all(np.abs(grads).max(axis=(1, 2)) > 0), (name, k)  # the loss does train
    assert batched.shape == (len(FRACS),) and batched.dtype == jnp.float32
    np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-6)


def test_half_precision_inputs_are_computed_in_float32():
  logits, weak = _binary_batch(4, 10)
  logits16 = jnp.asarray(logits, jnp.bfloat16)
  value = jax.jit(losses.logconf)(logits16, weak, 1.0)
  assert value.dtype == jnp.float32
  np.testing.assert_allclose(value, ref_logconf(np.asarray(logits16, np.float32), weak, 0.5),
                             atol=1e-5)


# --------------------------------------------------------------------------------------------
# (8) The registry and get().


def test_registry_is_consistent():
  assert set(losses.LOSSES) == set(losses.DEFAULT_HPARAMS) == {
      "xent", "logconf", "product", "kl", "entropy", "window", "bootstrap_soft", "bootstrap_hard",
      "adaptconf"}
  assert losses.DEFAULT_HPARAMS["logconf"] == {"aux_coef": 0.5, "warmup_frac": 0.1}
  assert losses.DEFAULT_HPARAMS["entropy"] == {"aux_coef": 0.5, "warmup_frac": 0.1}
  assert losses.DEFAULT_HPARAMS["product"] == {"alpha": 1.0, "beta": 1.0}
  assert losses.DEFAULT_HPARAMS["bootstrap_soft"] == {"beta": 0.95}
  assert losses.DEFAULT_HPARAMS["bootstrap_hard"] == {"beta": 0.8}


def test_get_binds_overrides():
  logits, weak = _binary_batch(9, 12)
  xent = loss("xent", logits, weak, 1.0)
  bound = jax.jit(losses.get("logconf", aux_coef=0.3))
  np.testing.assert_allclose(bound(logits, weak, 1.0), ref_logconf(logits, weak, 0.3), atol=1e-5)
  np.testing.assert_allclose(loss("logconf", logits, weak, 1.0, aux_coef=0.0), xent, rtol=1e-6)
  np.testing.assert_allclose(loss("bootstrap_soft", logits, weak, 1.0, beta=1.0), xent, rtol=1e-6)
  # entropy with c is bootstrap_soft with b = 1 - c.
  np.testing.assert_allclose(loss("entropy", logits, weak, 1.0),
                             loss("bootstrap_soft", logits, weak, 1.0, beta=0.5), rtol=1e-6)


def test_get_errors_name_the_bad_key_and_the_valid_ones():
  with pytest.raises(ValueError, match=r"unknown w2s loss 'logconff'.*logconf.*xent"):
    losses.get("logconff")
  with pytest.raises(ValueError, match=r"'aux_coeff'.*'logconf'.*aux_coef, warmup_frac"):
    losses.get("logconf", aux_coeff=0.5)
  with pytest.raises(ValueError, match=r"'radius'.*'xent'.*none"):
    losses.get("xent", radius=0.1)
