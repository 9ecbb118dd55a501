"""Sparse autoencoders (SAEs) and transcoders on activations, trained by the core engine.

Every kind shares one shape: encoder ``W_enc [d_in, m]`` and ``b_enc [m]``, decoder
``W_dec [m, d_out]`` with unit-norm rows, and ``b_dec [d_out]``. An SAE reconstructs its input
(``d_out = d_in``) and subtracts ``b_dec`` from it before encoding (SAELens'
``apply_b_dec_to_input``): ``z = act((x - b_dec) @ W_enc + b_enc)``, ``x_hat = z @ W_dec + b_dec``.
A transcoder (Dunefsky et al. 2024; ``builder(d_in, d_out)``) predicts another site, an MLP's
output from its input (``blocks.i.resid_mid`` -> ``blocks.i.mlp_out``): the same modules and
losses with the target in place of the input, and no input centring (the two live in different
spaces).

* ``relu`` (SAELens "standard"): ReLU, loss = sum-of-squares error + ``l1_coefficient`` * L1 of
  the latents. Anthropic's update weights each latent's L1 by its decoder row norm; with unit
  rows that weight is 1, so it is the plain L1.
* ``topk`` (Gao et al. 2024): ReLU of the ``k`` largest pre-activations; loss = normalized MSE +
  ``aux_coefficient`` (1/32) * AuxK, the normalized MSE of the main reconstruction's error
  rebuilt from the ``k_aux`` largest pre-activations of dead latents (``min(k_aux, m // 2)``).
* ``batchtopk`` (Bussmann et al. 2024): in training, the ``k * rows`` largest ReLU latents of the
  whole batch (``k`` per row on average); the loss is TopK's. At inference a JumpReLU at one
  threshold, the moving average (rate ``topk_threshold_lr``) of the smallest latent each batch
  kept, as SAELens does; ``to_jumprelu`` gives that JumpReLU SAE.
* ``matryoshka`` (Bussmann et al. 2025, Nabeshima 2024): BatchTopK whose nested prefixes of
  latents (the first ``matryoshka_widths[i]``, then all) each reconstruct the target on their
  own; the loss sums their normalized MSEs (plus AuxK), so early latents carry general features.
* ``jumprelu`` (Rajamanoharan et al. 2024): ``z * H(z - theta)`` with a learned per-latent
  threshold ``theta = exp(log_threshold)``; loss = sum-of-squares error + ``l0_coefficient`` * L0.
  The step function has no useful gradient, so both the JumpReLU and the L0 get the paper's
  straight-through estimator: a rectangle-kernel pseudo-derivative of width ``bandwidth`` for
  the threshold (none flows through H into ``z``).

An SAE's hyperparameters are an ``Architecture`` (a config's ``sae`` block, ``from_block``; its
ranges are ``RULES``); its training defaults are ``SAE_SPEC``; ``train_sae`` trains it, or a
sweep of it (``sweep={"k": [16, 32, 64]}``): one SAE per value, stacked on a leading axis and
advanced by one vmapped step over one activation stream. The swept values (``SWEEPABLE``) live in
each SAE as ``Coefficient`` variables (non-trainable, checkpointed, one per stacked run), so
training, evaluation and ``module(trained, run)`` all read a run's own value.

Top-k on XLA:CPU: a ``jax.lax.top_k`` whose values feed the rest of a jitted step compiles as a
full sort (7x slower in a train step at [2048, 2048]); behind ``jax.lax.optimization_barrier``
(``top_k_values``) it stays the fast top-k, with the same values and gradients. A wide TopK SAE
(``width >= SPARSE_DECODE * k``) decodes in training from each row's ``k`` kept latents, their
decoder rows gathered (``B k d`` work for the decode and its gradient, not ``B m d``), and
AuxK's second top-k runs only once some latent is dead (``lax.cond``).

Unit decoder rows (Gao et al.; SAELens' ``normalize_sae_decoder``): the forward pass reads
``W_dec`` as stored, through ``tangent_rows``, whose gradient drops each row's radial part (the
part a renormalization would undo, so the optimizer's moments never see it), and the trainer's
``post_update`` hook ``normalize_decoder`` sets every row back to unit norm after each update.
Exports write ``W_dec`` as it is stored.

Dead latents: every SAE carries ``steps_since_fired`` ``[m]``, a non-trainable ``nnx.BatchStat``
that the loss updates from each batch (0 for a latent that fired on some row, else one more) and
the trainer carries through the step and its checkpoints, so a resumed run counts on where it
stopped. A latent is dead once it has not fired for ``dead_steps`` steps in a row (SAELens'
``dead_feature_window``, 1000 by default; Gao et al. count 10M tokens); AuxK reconstructs from
those. Training rows log ``dead_fraction`` by that count and ``batch_dead_fraction`` (latents
that fired on no row of the batch).

Metrics use SAELens' names: ``l0`` (mean active latents per row), ``explained_variance``
(``1 - sum (y - y_hat)^2 / sum (y - mean y)^2``, ``y`` the target), ``dead_fraction`` (latents
that never fire over the evaluation set), ``mse`` (mean over elements); ``ce_loss_score`` is the
spliced-in score's formula. ``interp.saelens`` writes and reads SAELens' directory layout
(``cfg.json`` + ``sae_weights.safetensors``) and splices an SAE into a language model.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from superalign.config import schema
from superalign.core.errors import ConfigError
from superalign.config.registry import Registry
from superalign.core.spec import Optim, Train, TrainSpec
from superalign.core.trainer import Trained, Trainer
from superalign.interp.activations import ActivationStore

log = logging.getLogger("superalign")
_EPS = 1e-12
MODULES: Registry[type["SparseAutoencoder"]] = Registry("SAE kind")   # kind -> module class
# The hyperparameters a sweep may vary across stacked SAEs (each kind reads those it has).
SWEEPABLE = ("k", "l1_coefficient", "l0_coefficient", "aux_coefficient")
# TopK decodes from its k kept latents alone (a gather) once the width is this many times k:
# measured on 2 CPU cores, 1.4x faster steps at width 4096, k 32 (ratio 128), slower at 32.
SPARSE_DECODE = 64

# Training defaults: Adam with no weight decay (it would shrink the latents' encoder and fight
# the unit decoder rows), a constant rate, fixed steps and large batches.
SAE_SPEC = TrainSpec(
    optim=Optim(name="adam", learning_rate=1e-3, weight_decay=0.0, schedule="constant",
                clip_norm=1.0),
    train=Train(batch_size=1024, eval_batch_size=4096, num_steps=2000, num_epochs=0,
                eval_every=0, log_every=100, checkpoint_every=500))


@dataclasses.dataclass(frozen=True)
class Architecture:
  """An SAE: its kind, width and its kind's coefficients (a config's ``sae`` block)."""
  kind: str = "topk"
  width: int = 0                   # latents m; required
  k: int = 32                      # topk, batchtopk, matryoshka: active latents per row
  k_aux: int = 256                 # topk family: dead latents AuxK reconstructs from (<= m // 2)
  aux_coefficient: float = 1 / 32  # topk family: AuxK weight
  topk_threshold_lr: float = 0.01  # batchtopk, matryoshka: moving-average rate of the threshold
  matryoshka_widths: tuple[int, ...] = ()  # matryoshka: nested prefix widths (< width, rising)
  l1_coefficient: float = 1.0      # relu: L1 weight (scale to the activations' norm)
  l0_coefficient: float = 1e-3     # jumprelu: L0 weight
  bandwidth: float = 1e-3          # jumprelu: rectangle-kernel width of the STE
  init_threshold: float = 1e-3     # jumprelu: initial threshold
  dead_steps: int = 1000           # steps without firing that make a latent dead (AuxK)
  hook_name: str = ""              # the activation site it reads (exported as SAELens metadata)

  def __post_init__(self):
    if isinstance(self.matryoshka_widths, Iterable) and not isinstance(self.matryoshka_widths,
                                                                       str):
      object.__setattr__(self, "matryoshka_widths", tuple(self.matryoshka_widths))  # hashable
    check(dataclasses.asdict(self))

  @classmethod
  def from_block(cls, block: Mapping) -> "Architecture":
    """From an ``sae`` block; a key that is not a field is a one-line ConfigError."""
    items = block.to_dict() if hasattr(block, "to_dict") else dict(block)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in items:
      if key not in names:
        raise ConfigError(f"sae.{key}: unknown; valid: {', '.join(names)}")
    return cls(**items)

  def builder(self, d_in: int, d_out: int | None = None
              ) -> Callable[[nnx.Rngs], "SparseAutoencoder"]:
    """``rngs -> module`` for the trainer: an SAE of ``d_in`` inputs, or with ``d_out`` a
    transcoder to ``d_out`` outputs (even when ``d_out == d_in``: no input centring)."""
    hp = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
          if f.name not in ("kind", "width", "hook_name")}
    return lambda rngs: MODULES[self.kind](int(d_in), self.width, d_out=d_out, rngs=rngs, **hp)

  def make(self, d_in: int, seed: int = 0, d_out: int | None = None) -> "SparseAutoencoder":
    """The SAE built here and now, outside the trainer (whose ``state.create`` places each
    variable on the mesh by its logical axes): unsharded, on the default device."""
    with nnx.use_eager_sharding(False):
      return self.builder(d_in, d_out)(nnx.Rngs(seed))


TOPK_KINDS = ("topk", "batchtopk", "matryoshka")   # kinds with k latents per row


def check(block: Mapping, prefix: str = "sae.") -> None:
  """One-line ConfigError naming the first bad key of an ``sae`` block: ``RULES``, then the
  top-k size against the width and the matryoshka widths."""
  schema.check(block, RULES, prefix)
  kind, width = block["kind"], block["width"]
  if kind in TOPK_KINDS and block["k"] > width:
    raise ConfigError(f"{prefix}k={block['k']}: must be in [1, {prefix}width={width}]")
  widths = list(block["matryoshka_widths"])
  if kind == "matryoshka" and (not widths or widths[-1] >= width
                               or any(a >= b for a, b in zip(widths, widths[1:]))):
    raise ConfigError(f"{prefix}matryoshka_widths={widths}: must be one or more rising widths "
                      f"below {prefix}width={width} (the full width is the last level)")
  if kind != "matryoshka" and widths:
    raise ConfigError(f"{prefix}matryoshka_widths={widths}: only for kind matryoshka "
                      f"(kind is {kind})")


# ---------------------------------------------------------------------------------------------
# The modules


def _unit_rows(key, shape, dtype):
  w = jax.random.normal(key, shape, jnp.float32)
  return (w / jnp.linalg.norm(w, axis=-1, keepdims=True)).astype(dtype)


def _param(init: Callable, key, shape, axes) -> nnx.Param:
  return nnx.Param(nnx.with_partitioning(init, axes)(key, shape, jnp.float32))


class Coefficient(nnx.BatchStat):
  """A hyperparameter held in the model: non-trainable (in ``core.state.STATS``), checkpointed,
  one value per stacked run, so a sweep's SAEs each train and evaluate with their own."""


def _coefficient(value, dtype=jnp.float32) -> Coefficient:
  return Coefficient(jnp.asarray(value, dtype))


@jax.custom_vjp
def tangent_rows(w: jax.Array) -> jax.Array:
  """``w`` (unit rows), whose gradient keeps only each row's part tangent to the unit sphere:
  ``g - (g . w) w``. The post-update renormalization would undo the radial part anyway; removed
  here, it never enters the optimizer's moments (Gao et al.'s gradient projection)."""
  return w


def _tangent_fwd(w):
  return w, w


def _tangent_bwd(w, g):
  return (g - jnp.sum(g * w, -1, keepdims=True) * w,)


tangent_rows.defvjp(_tangent_fwd, _tangent_bwd)


def normalize_decoder(model: "SparseAutoencoder") -> None:
  """The trainer's ``post_update`` hook: every row of ``W_dec`` back to unit norm."""
  w = model.W_dec[...]
  model.W_dec[...] = w / jnp.maximum(jnp.linalg.norm(w, axis=-1, keepdims=True), _EPS)


def explained_variance_jnp(x: jax.Array, x_hat: jax.Array) -> jax.Array:
  """The share of the variance of rows ``x`` ``[batch, d]`` that the reconstruction ``x_hat``
  explains: ``1 - |x - x_hat|^2 / |x - mean(x)|^2``, summed over rows and features (a scalar)."""
  total = jnp.sum((x - x.mean(0)) ** 2)
  return 1.0 - jnp.sum((x - x_hat) ** 2) / jnp.maximum(total, _EPS)


def _normalized_mse(target: jax.Array, recon: jax.Array) -> jax.Array:
  """MSE over the MSE of predicting the batch mean (Gao et al.'s normalized MSE)."""
  return jnp.sum((target - recon) ** 2) / jnp.maximum(jnp.sum((target - target.mean(0)) ** 2),
                                                      _EPS)


def top_k_values(x: jax.Array, k: int, *, barrier: bool = True) -> jax.Array:
  """The ``k`` largest values of ``x``'s last axis, descending (``jax.lax.top_k``), behind an
  ``optimization_barrier``: without it XLA:CPU fuses the top-k into its consumers as a full sort
  (here 1.09 s against 0.18 s for a [2048, 2048] train step); values and gradients are the
  same either way (``barrier=False`` is there to show it)."""
  values = jax.lax.top_k(x, k)[0]
  return jax.lax.optimization_barrier(values) if barrier else values


def top_k(x: jax.Array, k: int, *, barrier: bool = True) -> tuple[jax.Array, jax.Array]:
  """``(values, indices)`` of the ``k`` largest along ``x``'s last axis, behind the barrier as
  ``top_k_values``; the values carry gradients to their entries of ``x``."""
  out = jax.lax.top_k(x, k)
  return jax.lax.optimization_barrier(out) if barrier else out


def _kth(values: jax.Array, active: jax.Array | None) -> jax.Array:
  """The ``active``-th largest of descending ``values`` (the last if ``None``), held as a
  threshold: no gradient flows through it."""
  kth = values[..., -1] if active is None else jnp.take(values, active - 1, axis=-1)
  return jax.lax.stop_gradient(kth)


def topk_relu(pre: jax.Array, k: int, active: jax.Array | None = None,
              allowed: jax.Array | None = None) -> jax.Array:
  """ReLU of the ``k`` largest entries of each row of ``pre`` (of those ``allowed``), zero
  elsewhere; ``active`` (at most ``k``, traced: a swept k) keeps its own number instead."""
  if allowed is not None:
    pre = jnp.where(allowed, pre, -jnp.inf)
  kth = _kth(top_k_values(pre, k), active)[..., None]
  keep = pre >= kth if allowed is None else allowed & (pre >= kth)
  return jnp.where(keep, jax.nn.relu(pre), 0.0)


def batch_topk_relu(pre: jax.Array, k: int, active: jax.Array | None = None) -> jax.Array:
  """BatchTopK: the ``k * rows`` largest ReLU latents of the whole batch ``pre [rows, m]``
  (``active * rows`` for a swept k), zero elsewhere; a row may keep more or fewer than ``k``."""
  acts = jax.nn.relu(pre)
  rows = int(np.prod(pre.shape[:-1]))
  kth = _kth(top_k_values(acts.reshape(-1), k * rows), None if active is None
             else active * rows)
  return jnp.where((acts >= kth) & (acts > 0), acts, 0.0)


class SparseAutoencoder(nnx.Module):
  """The shared shape. Latents ``m`` carry the logical axis ``mlp`` and inputs and outputs
  ``embed`` (sharded by the mesh rules like any model's). An SAE's encoder starts as its
  decoder's transpose (Gao et al.), a transcoder's as unit columns of its own; the biases start
  at zero (``train_sae`` starts ``b_dec`` at the target's mean)."""
  kind = ""
  architecture = ""   # SAELens' name; "" for kinds SAELens saves as another (to_jumprelu)

  def __init__(self, d_in: int, width: int, *, d_out: int | None = None, dead_steps: int = 1000,
               rngs: nnx.Rngs):
    key = rngs.params()
    self.d_in, self.width, self.dead_steps = int(d_in), int(width), int(dead_steps)
    self.d_out = int(d_in if d_out is None else d_out)
    self.apply_b_dec_to_input = d_out is None   # SAELens' name; False for a transcoder
    self.W_dec = _param(_unit_rows, key, (width, self.d_out), ("mlp", "embed"))
    enc_key = key if self.apply_b_dec_to_input else jax.random.fold_in(key, 1)
    self.W_enc = _param(lambda k, s, dt: _unit_rows(k, s[::-1], dt).T, enc_key, (d_in, width),
                        ("embed", "mlp"))
    self.b_enc = _param(nnx.initializers.zeros_init(), key, (width,), ("mlp",))
    self.b_dec = _param(nnx.initializers.zeros_init(), key, (self.d_out,), ("embed",))
    self.steps_since_fired = nnx.BatchStat(jnp.zeros((width,), jnp.int32),
                                           out_sharding=("mlp",))

  def decoder(self) -> jax.Array:
    """``W_dec`` (unit rows) as the forward pass reads it."""
    return tangent_rows(self.W_dec[...])

  def pre_activations(self, x: jax.Array) -> jax.Array:
    """``[..., m]`` the encoder's pre-activations of inputs ``x`` ``[..., d_in]``:
    ``(x - b_dec) @ W_enc + b_enc`` (no ``- b_dec`` for a transcoder), in float32."""
    # (x - b_dec) @ W_enc as x @ W_enc - b_dec @ W_enc: b_dec's gradient is then one
    # vector-matrix product, not one per row.
    w_enc, bias = self.W_enc[...], self.b_enc[...]
    if self.apply_b_dec_to_input:
      bias = bias - self.b_dec[...] @ w_enc
    return x.astype(jnp.float32) @ w_enc + bias

  def activate(self, pre: jax.Array) -> jax.Array:
    """The latents ``[..., m]`` from the pre-activations ``pre`` ``[..., m]``: each architecture's
    nonlinearity at inference."""
    raise NotImplementedError

  def train_activate(self, pre: jax.Array) -> jax.Array:
    """The latents in training (BatchTopK's differ from its inference JumpReLU)."""
    return self.activate(pre)

  def train_codes(self, pre: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(z, y_hat)``: the training latents and the reconstruction from them."""
    z = self.train_activate(pre)
    return z, self.decode(z)

  def encode(self, x: jax.Array) -> jax.Array:
    """Latent activations ``[..., m]`` (non-negative; zero where a latent is off)."""
    return self.activate(self.pre_activations(x))

  def decode(self, z: jax.Array) -> jax.Array:
    """``[..., d_out]`` the reconstruction from latents ``z`` ``[..., m]``:
    ``z @ W_dec + b_dec``."""
    return z @ self.decoder() + self.b_dec[...]

  def __call__(self, x: jax.Array) -> jax.Array:
    """The reconstruction of ``x`` (a transcoder's prediction of its target)."""
    return self.decode(self.encode(x))

  def sparsity_loss(self, y, pre, z, y_hat, dead) -> tuple[jax.Array, dict]:
    """``(loss, metrics)``: each architecture's objective on target rows ``y`` ``[batch, d_out]``,
    from the pre-activations ``pre`` and latents ``z`` (``[batch, m]``), the reconstruction
    ``y_hat`` ``[batch, d_out]`` and the ``dead`` latents ``[m]`` bool."""
    raise NotImplementedError

  def observe(self, z: jax.Array) -> jax.Array:
    """Updates the statistics from a training batch's latents ``z``: the steps since each
    latent fired (this batch included). Returns the ``dead`` latents ``[m]`` and whether each
    fired."""
    fired = (z > 0).any(0)
    silent = jnp.where(fired, 0, self.steps_since_fired[...] + 1)
    self.steps_since_fired[...] = silent
    return silent >= self.dead_steps, fired

  def loss(self, x: jax.Array, target: jax.Array | None = None
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The training objective on rows ``x [B, d_in]`` (reconstructing ``target [B, d_out]``, by
    default ``x``) and its metrics; updates the statistics (``observe``)."""
    x = x.astype(jnp.float32)
    y = x if target is None else target.astype(jnp.float32)
    pre = self.pre_activations(x)
    z, y_hat = self.train_codes(pre)
    dead, fired = self.observe(z)
    loss, metrics = self.sparsity_loss(y, pre, z, y_hat, dead)
    return loss, {"mse": jnp.mean((y - y_hat) ** 2), "l0": (z > 0).sum(-1).mean(),
                  "explained_variance": explained_variance_jnp(y, y_hat),
                  "batch_dead_fraction": 1.0 - fired.mean(), "dead_fraction": dead.mean(),
                  **metrics}


@MODULES.register("relu")
class ReluSAE(SparseAutoencoder):
  """The standard SAE (Bricken et al. 2023): ``relu`` latents and an L1 sparsity penalty."""
  kind, architecture = "relu", "standard"

  def __init__(self, d_in: int, width: int, *, l1_coefficient: float, rngs: nnx.Rngs,
               d_out: int | None = None, dead_steps: int = 1000, **_):
    super().__init__(d_in, width, d_out=d_out, dead_steps=dead_steps, rngs=rngs)
    self.l1_coefficient = _coefficient(l1_coefficient)

  def activate(self, pre):
    """``relu(pre)``."""
    return jax.nn.relu(pre)

  def sparsity_loss(self, y, pre, z, y_hat, dead):
    """The squared error per row plus ``l1_coefficient`` times the latents' L1 norm, each
    averaged over the batch."""
    mse_loss = jnp.sum((y - y_hat) ** 2, -1).mean()
    l1 = jnp.sum(z, -1).mean()  # z >= 0; the decoder-norm weight is 1 (unit rows)
    return mse_loss + self.l1_coefficient[...] * l1, {"mse_loss": mse_loss, "l1": l1}


@MODULES.register("topk")
class TopKSAE(SparseAutoencoder):
  """The TopK SAE (Gao et al. 2024): the ``k`` largest pre-activations of each row stay, the rest
  are zero; an auxiliary loss of the ``k_aux`` dead latents on the residual error revives them.
  ``k`` is the static top-k size, ``k_active`` (a ``Coefficient``, at most ``k``) the number
  kept: the same unless a sweep stacks several."""
  kind, architecture = "topk", "topk"

  def __init__(self, d_in: int, width: int, *, k: int, k_aux: int = 256,
               aux_coefficient: float = 1 / 32, rngs: nnx.Rngs, d_out: int | None = None,
               dead_steps: int = 1000, **_):
    super().__init__(d_in, width, d_out=d_out, dead_steps=dead_steps, rngs=rngs)
    self.k = int(k)
    self.k_active = _coefficient(k, jnp.int32)
    self.k_aux = min(int(k_aux), int(width) // 2)
    self.aux_on = bool(self.k_aux and aux_coefficient)   # static: AuxK is traced at all
    self.aux_coefficient = _coefficient(aux_coefficient)

  def activate(self, pre):
    """ReLU of the ``k_active`` largest pre-activations of each row, zero elsewhere."""
    return topk_relu(pre, self.k, self.k_active[...])

  def train_codes(self, pre):
    """The latents and the reconstruction; for a wide SAE (``width >= SPARSE_DECODE * k``)
    from the ``k`` kept per row alone, their decoder rows gathered: ``B k d`` work and the
    same for the decoder's gradient, against the dense product's ``B m d`` (on 2 CPU cores the
    gather costs more below that ratio)."""
    if self.width < SPARSE_DECODE * self.k:
      return super().train_codes(pre)
    values, idx = top_k(pre, self.k)
    active = self.k_active[...]
    kth = jax.lax.stop_gradient(jnp.take(values, active - 1, axis=-1))[..., None]
    z = jnp.where(pre >= kth, jax.nn.relu(pre), 0.0)
    acts = jnp.where(jnp.arange(self.k) < active, jax.nn.relu(values), 0.0)
    y_hat = jnp.einsum("...k,...kd->...d", acts, self.decoder()[idx]) + self.b_dec[...]
    return z, y_hat

  def sparsity_loss(self, y, pre, z, y_hat, dead):
    """The normalized MSE, plus ``aux_coefficient`` times the auxiliary loss when some latents
    are ``dead``: the normalized MSE of the ``k_aux`` largest dead latents' reconstruction of the
    residual error (Gao et al. 2024)."""
    nmse = _normalized_mse(y, y_hat)
    if not self.aux_on:
      return nmse, {"nmse": nmse}
    error = jax.lax.stop_gradient(y - y_hat)

    def aux_loss(pre, error, w_dec):
      return _normalized_mse(error, topk_relu(pre, self.k_aux, allowed=dead) @ w_dec)

    # Skipped while no latent is dead, as SAELens skips it (under vmap both branches run).
    aux = jax.lax.cond(dead.any(), aux_loss, lambda *_: jnp.zeros((), jnp.float32), pre, error,
                       self.decoder())
    return nmse + self.aux_coefficient[...] * aux, {"nmse": nmse, "aux_loss": aux}


def _rectangle(u):
  return (jnp.abs(u) < 0.5).astype(u.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def jumprelu(z: jax.Array, threshold: jax.Array, bandwidth: float) -> jax.Array:
  """``z * H(z - threshold)``; d/dthreshold is the pseudo-derivative
  ``-(threshold / bandwidth) * K((z - threshold) / bandwidth)``, K the rectangle kernel."""
  return jnp.where(z > threshold, z, 0.0)


def _jumprelu_fwd(z, threshold, bandwidth):
  return jumprelu(z, threshold, bandwidth), (z, threshold)


def _jumprelu_bwd(bandwidth, res, g):
  z, threshold = res
  d_threshold = -(threshold / bandwidth) * _rectangle((z - threshold) / bandwidth)
  return g * (z > threshold), g * d_threshold


jumprelu.defvjp(_jumprelu_fwd, _jumprelu_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def heaviside(z: jax.Array, threshold: jax.Array, bandwidth: float) -> jax.Array:
  """``H(z - threshold)``; d/dthreshold is ``-(1 / bandwidth) * K((z - threshold) / bandwidth)``
  and nothing flows into ``z``."""
  return (z > threshold).astype(z.dtype)


def _heaviside_fwd(z, threshold, bandwidth):
  return heaviside(z, threshold, bandwidth), (z, threshold)


def _heaviside_bwd(bandwidth, res, g):
  z, threshold = res
  return jnp.zeros_like(z), -g / bandwidth * _rectangle((z - threshold) / bandwidth)


heaviside.defvjp(_heaviside_fwd, _heaviside_bwd)


@MODULES.register("jumprelu")
class JumpReluSAE(SparseAutoencoder):
  """The JumpReLU SAE (Rajamanoharan et al. 2024): a latent passes where its pre-activation
  exceeds its learned threshold; an L0 penalty trained through straight-through estimators with
  kernel ``bandwidth``."""
  kind, architecture = "jumprelu", "jumprelu"

  def __init__(self, d_in: int, width: int, *, l0_coefficient: float, bandwidth: float = 1e-3,
               init_threshold: float = 1e-3, rngs: nnx.Rngs, d_out: int | None = None,
               dead_steps: int = 1000, **_):
    super().__init__(d_in, width, d_out=d_out, dead_steps=dead_steps, rngs=rngs)
    init = lambda k, s, dt: jnp.full(s, np.log(init_threshold), dt)
    self.log_threshold = _param(init, None, (width,), ("mlp",))
    self.l0_coefficient, self.bandwidth = _coefficient(l0_coefficient), float(bandwidth)

  def threshold(self) -> jax.Array:
    """``[m]`` each latent's threshold, ``exp(log_threshold)``."""
    return jnp.exp(self.log_threshold[...])

  def _thresholds(self, pre):  # broadcast explicitly: the custom VJPs return per-entry gradients
    return jnp.broadcast_to(self.threshold(), pre.shape)

  def activate(self, pre):
    """``pre`` where it exceeds its latent's threshold, zero elsewhere (``jumprelu``)."""
    return jumprelu(pre, self._thresholds(pre), self.bandwidth)

  def sparsity_loss(self, y, pre, z, y_hat, dead):
    """The squared error per row plus ``l0_coefficient`` times the L0 norm (``heaviside``: its
    threshold gradient through the straight-through estimator), each averaged over the batch."""
    mse_loss = jnp.sum((y - y_hat) ** 2, -1).mean()
    l0 = heaviside(pre, self._thresholds(pre), self.bandwidth).sum(-1).mean()
    return mse_loss + self.l0_coefficient[...] * l0, {"mse_loss": mse_loss, "l0_loss": l0}


@MODULES.register("batchtopk")
class BatchTopKSAE(TopKSAE):
  """The BatchTopK SAE (Bussmann et al. 2024): in training the ``k * rows`` largest latents of
  the batch; at inference a JumpReLU at ``topk_threshold``, a moving average (rate
  ``topk_threshold_lr``) of the smallest latent each training batch kept (SAELens'
  ``topk_threshold``). SAELens saves it as a JumpReLU SAE: ``to_jumprelu``."""
  kind, architecture = "batchtopk", ""

  def __init__(self, d_in: int, width: int, *, k: int, topk_threshold_lr: float = 0.01,
               rngs: nnx.Rngs, **kwargs):
    super().__init__(d_in, width, k=k, rngs=rngs, **kwargs)
    self.topk_threshold_lr = float(topk_threshold_lr)
    self.topk_threshold = nnx.BatchStat(jnp.zeros((), jnp.float32))

  def activate(self, pre):
    """Inference: ``pre`` where it exceeds ``topk_threshold`` (and 0), zero elsewhere."""
    return jnp.where(pre > jnp.maximum(self.topk_threshold[...], 0.0), pre, 0.0)

  def train_activate(self, pre):
    """Training: the batch's ``k_active * rows`` largest ReLU latents."""
    return batch_topk_relu(pre, self.k, self.k_active[...])

  # Rows keep different numbers of latents: the dense decode, never TopK's gathered one.
  train_codes = SparseAutoencoder.train_codes

  def observe(self, z):
    """Also moves ``topk_threshold`` toward the smallest latent this batch kept (if any fired)."""
    kept = jax.lax.stop_gradient(jnp.min(jnp.where(z > 0, z, jnp.inf)))
    t, lr = self.topk_threshold[...], self.topk_threshold_lr
    self.topk_threshold[...] = jnp.where(jnp.isfinite(kept), (1 - lr) * t + lr * kept, t)
    return super().observe(z)


@MODULES.register("matryoshka")
class MatryoshkaSAE(BatchTopKSAE):
  """The Matryoshka BatchTopK SAE (Bussmann et al. 2025; SAELens' ``matryoshka_batchtopk``):
  BatchTopK latents, and the first ``matryoshka_widths[i]`` latents, alone, reconstruct the
  target too; the loss adds each prefix's normalized MSE to the full one's."""
  kind = "matryoshka"

  def __init__(self, d_in: int, width: int, *, matryoshka_widths: Sequence[int] = (),
               rngs: nnx.Rngs, **kwargs):
    super().__init__(d_in, width, rngs=rngs, **kwargs)
    self.matryoshka_widths = tuple(int(w) for w in matryoshka_widths)

  def sparsity_loss(self, y, pre, z, y_hat, dead):
    """TopK's loss on the whole reconstruction, plus the normalized MSE of each prefix's
    (``nmse_<width>``), built up prefix by prefix (one decode's work in all)."""
    loss, metrics = super().sparsity_loss(y, pre, z, y_hat, dead)
    w_dec, recon, start = self.decoder(), self.b_dec[...], 0
    for end in self.matryoshka_widths:
      recon = recon + z[:, start:end] @ w_dec[start:end]
      metrics[f"nmse_{end}"] = _normalized_mse(y, recon)
      loss, start = loss + metrics[f"nmse_{end}"], end
    return loss, metrics


def to_jumprelu(model: BatchTopKSAE) -> "JumpReluSAE":
  """A BatchTopK (or Matryoshka) SAE as the JumpReLU SAE it is at inference, every latent at its
  ``topk_threshold`` (SAELens saves BatchTopK SAEs so): the same ``encode``, exportable."""
  if not isinstance(model, BatchTopKSAE):
    raise ConfigError(f"to_jumprelu: a {model.kind} SAE; only batchtopk and matryoshka convert")
  jump = Architecture(kind="jumprelu", width=model.width).make(
      model.d_in, d_out=None if model.apply_b_dec_to_input else model.d_out)
  for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
    getattr(jump, name)[...] = getattr(model, name)[...]
  # JumpReLU keeps pre > theta; a threshold of 0 (never trained) is ReLU, theta -> _EPS.
  threshold = jnp.maximum(model.topk_threshold[...], _EPS)
  jump.log_threshold[...] = jnp.full((model.width,), jnp.log(threshold))
  return jump


KINDS = MODULES.names
# kind -> SAELens' name, for the kinds SAELens saves as themselves (BatchTopK is saved as JumpReLU).
ARCHITECTURES = {kind: MODULES[kind].architecture for kind in KINDS
                 if MODULES[kind].architecture}
RULES = {   # the ranges of an ``sae`` block's keys (``check``; the launcher's ``RULES``)
    "kind": schema.one_of(*KINDS),
    "width": schema.COUNT,
    "k": schema.COUNT,
    "k_aux": schema.COUNT_OR_ZERO,      # 0 turns AuxK off
    "aux_coefficient": schema.NON_NEGATIVE,
    "topk_threshold_lr": schema.interval(0, 1, lo_open=True),
    "matryoshka_widths": schema.each(schema.COUNT, non_empty=False),
    "l1_coefficient": schema.NON_NEGATIVE,
    "l0_coefficient": schema.NON_NEGATIVE,
    "bandwidth": schema.POSITIVE,
    "init_threshold": schema.POSITIVE,
    "dead_steps": schema.COUNT,
}


def loss_fn(model: SparseAutoencoder, batch, rng, step):
  """The core's ``LossFn``: ``model.loss`` on ``batch["x"]`` (against ``batch["target"]``, a
  transcoder's, when the batch has one)."""
  del rng, step
  return model.loss(batch["x"], batch.get("target"))


def encode_fn(state, batch):
  """For ``Trained.apply``: the latent activations."""
  return state.model().encode(batch["x"])


def reconstruct_fn(state, batch):
  """For ``Trained.apply``: the reconstructions (a transcoder's predictions)."""
  return state.model()(batch["x"])


# ---------------------------------------------------------------------------------------------
# Metrics


def explained_variance(x: np.ndarray, x_hat: np.ndarray) -> float:
  """``1 - sum (x - x_hat)^2 / sum (x - mean x)^2`` over all rows (SAELens): 1 for a perfect
  reconstruction, 0 for predicting the mean."""
  x, x_hat = np.asarray(x, np.float64), np.asarray(x_hat, np.float64)
  total = np.sum((x - x.mean(0)) ** 2)
  if total <= 0:
    raise ValueError("explained_variance: the inputs have no variance")
  return float(1.0 - np.sum((x - x_hat) ** 2) / total)


def ce_loss_score(ce_clean, ce_sae, ce_zero):
  """SAELens' CE loss score ``(ce_zero - ce_sae) / (ce_zero - ce_clean)``: 1 when splicing in
  the SAE costs nothing, 0 when it is as bad as zero-ablating the site. Scalars or arrays."""
  ce_clean, ce_sae, ce_zero = (np.asarray(v, np.float64) for v in (ce_clean, ce_sae, ce_zero))
  gap = ce_zero - ce_clean
  if not np.all(np.isfinite(gap)) or np.any(gap <= 0):
    raise ValueError(f"ce_loss_score: ce_zero - ce_clean = {gap} must be positive (zero-ablating "
                     "the site has to raise the loss for the score to mean anything)")
  score = (ce_zero - ce_sae) / gap
  return float(score) if score.ndim == 0 else score


def _row_stats_fn(state, batch):
  """Per row: the squared residual (against ``batch["target"]`` if given) and the active-latent
  count."""
  model = state.model()
  x = batch["x"].astype(jnp.float32)
  y = batch["target"].astype(jnp.float32) if "target" in batch else x
  z = model.encode(x)
  return jnp.stack([jnp.sum((y - model.decode(z)) ** 2, -1),
                    (z > 0).sum(-1).astype(jnp.float32)], -1)


def _fired_fn(state, batch):
  """Per row, the latents that fired, eight to a byte (a 32nd of their floats' memory)."""
  return jnp.packbits(state.model().encode(batch["x"]) > 0, axis=-1)


def _rows(a: np.ndarray) -> np.ndarray:
  a = np.asarray(a, np.float32)
  return a.reshape(-1, np.shape(a)[-1])


def evaluate(trained: Trained, x: np.ndarray, target: np.ndarray | None = None
             ) -> dict[str, Any]:
  """``l0``, ``explained_variance``, ``dead_fraction`` and ``mse`` over the rows of ``x``
  (reconstructing ``target``'s rows for a transcoder) per run for stacked runs, through the one
  batched apply."""
  x = _rows(x)
  y = x if target is None else _rows(target)
  if len(y) != len(x):
    raise ConfigError(f"evaluate: {len(x)} input rows but {len(y)} target rows")
  n, d = y.shape
  width = trained.state.model().width
  rows = {} if target is None else {"target": y}
  stats = trained.apply(x, _row_stats_fn, **rows).astype(np.float64)
  resid, l0 = stats[..., 0].sum(-1), stats[..., 1].sum(-1)
  fired = np.unpackbits(np.bitwise_or.reduce(trained.apply(x, _fired_fn), axis=-2), axis=-1,
                        count=width)
  total = np.sum((y.astype(np.float64) - y.mean(0, dtype=np.float64)) ** 2)
  out = {"l0": l0 / n, "explained_variance": 1.0 - resid / max(total, _EPS),
         "dead_fraction": 1.0 - fired.sum(-1) / width, "mse": resid / (n * d)}
  return {k: (float(v) if np.ndim(v) == 0 else np.asarray(v)) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# Training


Rows = np.ndarray | tuple[np.ndarray, np.ndarray]   # inputs, or (inputs, targets): a transcoder's
Stream = (ActivationStore | tuple[ActivationStore, ActivationStore] | Callable[[int], Rows]
          | Iterable[Rows])


def _stream_rows(stream: Stream, batch_size: int, seed: int):
  """``(rows_at, first)``: ``step -> rows`` and the rows of step 0, from a store (shuffled, a
  function of ``(seed, step)``) or a pair of stores of the same rows (inputs, targets: read at
  the same indices), a function of the step, or an iterator (taken in order: a resumed run
  continues with its next item, so only the first two resume bitwise)."""
  if isinstance(stream, ActivationStore):
    rows_at = lambda step: stream.batch(step, batch_size, seed)
  elif (isinstance(stream, tuple) and len(stream) == 2
        and all(isinstance(s, ActivationStore) for s in stream)):
    if len(stream[0]) != len(stream[1]):
      raise ConfigError(f"train_sae: the input store has {len(stream[0])} rows, the target "
                        f"store {len(stream[1])}; a transcoder reads the same rows of both")
    rows_at = lambda step: tuple(s.batch(step, batch_size, seed) for s in stream)
  elif callable(stream):
    rows_at = stream
  else:
    items = iter(stream)
    first = next(items, None)
    if first is None:
      raise ConfigError("train_sae: the activation stream is empty")
    return (lambda step: first if step == 0 else next(items)), first
  return rows_at, rows_at(0)


def _as_batch(rows: Rows) -> dict[str, np.ndarray]:
  """``{"x"}`` or, for an ``(inputs, targets)`` pair, ``{"x", "target"}``: rows of the last axis."""
  if isinstance(rows, tuple):
    x, y = (_rows(r) for r in rows)
    if len(x) != len(y):
      raise ConfigError(f"train_sae: a batch of {len(x)} input rows but {len(y)} target rows")
    return {"x": x, "target": y}
  return {"x": _rows(rows)}


def sweep_runs(arch: Architecture, sweep: Mapping[str, Sequence]
               ) -> tuple[Architecture, dict[str, np.ndarray]]:
  """``(base, values)``: the architecture every stacked SAE is built from (each swept value at
  its largest: the static top-k size, AuxK on if any run has it) and each swept name's value per
  run. Every value is checked as an ``sae`` block would be (``sweep.<name>[i]`` in the error)."""
  lengths = {len(v) for v in sweep.values()}
  if not sweep or len(lengths) != 1 or 0 in lengths:
    raise ConfigError(f"train_sae: sweep={dict(sweep)}: give one or more names, each with a "
                      "list of values of one common length (one SAE per position)")
  used = _swept_by(arch.kind)
  for name, values in sweep.items():
    if name not in used:
      raise ConfigError(f"sweep.{name}: not swept for kind {arch.kind}; valid: "
                        f"{', '.join(used)}")
    for i, value in enumerate(values):
      try:
        check({**dataclasses.asdict(arch), name: value})
      except ConfigError as e:
        raise ConfigError(f"sweep.{name}[{i}]={value!r}: {e}") from None
  base = dataclasses.replace(arch, **{name: max(values) for name, values in sweep.items()})
  dtype = lambda name: np.int32 if name == "k" else np.float32
  return base, {("k_active" if name == "k" else name): np.asarray(values, dtype(name))
                for name, values in sweep.items()}


def _swept_by(kind: str) -> tuple[str, ...]:
  """The ``SWEEPABLE`` names a kind reads."""
  return {"relu": ("l1_coefficient",), "jumprelu": ("l0_coefficient",)}.get(
      kind, ("k", "aux_coefficient"))


def train_sae(spec: TrainSpec, arch: Architecture, acts: np.ndarray | None = None, *,
              targets: np.ndarray | None = None, stream: Stream | None = None, workdir: str,
              tag: str = "sae", val: Rows | None = None,
              sweep: Mapping[str, Sequence] | None = None, **trainer_fields) -> Trained:
  """Trains the SAE ``arch`` through ``core.trainer.Trainer`` as ``spec`` says (``SAE_SPEC``
  with a run's seed and mesh, ``spec.with_train(...)``) on ``acts [rows, d_in]`` (in memory:
  ``fit(examples)``) or a ``stream`` (``fit(batch_fn=...)``, ``train.num_steps`` steps). With
  ``targets [rows, d_out]`` (or a stream of ``(inputs, targets)`` pairs, or a pair of stores) it
  is a transcoder: it reconstructs the targets from the inputs.

  ``sweep`` (``{"k": [16, 32, 64]}``, names of ``SWEEPABLE`` the kind reads, lists of one length)
  trains one SAE per position, stacked through one vmapped step, all from the same initial
  weights and on the same batches (``seeds`` varies the initial weights too); ``trained`` is
  then stacked like ``seeds=[...]`` and ``module(trained, run)`` is one of them.

  ``b_dec`` starts at the mean of the targets (their first 65,536 rows, or the first batch when
  streaming); ``normalize_decoder`` runs after every update. ``trainer_fields`` are further
  ``Trainer`` fields (``seeds=[0, 1, 2]``: stacked restarts through one vmapped step, reading one
  stream; ``on_batch``). ``val`` rows (or ``(inputs, targets)``) are evaluated (``evaluate``)
  every ``train.eval_every`` steps and at the end. Checkpoints (parameters, optimizer and the
  statistics) go under ``workdir/checkpoints/<tag>``; an interrupted run resumes from there.
  """
  if (acts is None) == (stream is None):
    raise ConfigError("train_sae: give exactly one of acts (an array) and stream")
  if targets is not None and acts is None:
    raise ConfigError("train_sae: targets go with acts; a stream yields (inputs, targets) pairs")
  seeds = trainer_fields.pop("seeds", None)
  warm = {}
  if sweep:
    arch, warm = sweep_runs(arch, sweep)
    runs = len(next(iter(warm.values())))
    if seeds is None:
      seeds = [int(spec.seed)] * runs
    elif isinstance(seeds, int) or len(seeds) != runs:
      raise ConfigError(f"train_sae: seeds={seeds}: give one per swept value ({runs})")
  seed = spec.seed if seeds is None else seeds
  if acts is not None:
    first = _as_batch(acts if targets is None else (acts, targets))
    examples = first
  else:
    rows_at, first = _stream_rows(stream, int(spec.train.batch_size),
                                  int(seed if isinstance(seed, int) else seed[0]))
    first = _as_batch(first)
  d_in, y = first["x"].shape[-1], first.get("target", first["x"])
  d_out = y.shape[-1] if "target" in first else None
  warm["b_dec"] = y[:65536].mean(0)
  post_update = (normalize_decoder, *trainer_fields.pop("post_update", ()))
  what = "transcoder" if d_out is not None else "SAE"
  job = Trainer(arch.builder(d_in, d_out), spec, workdir, tag, seeds=seeds, loss_fn=loss_fn,
                warm=warm, cache_key=("sae", d_in, d_out, arch), post_update=post_update,
                name=f"{arch.kind} {what} ({d_in} -> {arch.width}"
                     f"{f' -> {d_out}' if d_out is not None else ''})", **trainer_fields)
  check = None
  if val is not None:
    val_x, val_y = val if isinstance(val, tuple) else (val, None)
    check = lambda trained: evaluate(trained, val_x, val_y)
  if acts is not None:
    return job.fit(examples, evaluate=check)
  return job.fit(batch_fn=lambda step, _: _as_batch(rows_at(step)), evaluate=check)


def module(trained: Trained, run: int | None = None) -> SparseAutoencoder:
  """The trained SAE as an NNX module, whole on the default device (run ``run`` of stacked
  runs, its static top-k size set to its own ``k``)."""
  state = trained.state
  variables = (state.params, state.stats)
  if trained.stacked:
    if run is None:
      raise ConfigError("stacked runs: pick one with run=<index>")
    variables = jax.tree.map(lambda a: a[run], variables)
  elif run is not None:
    raise ConfigError(f"run={run}: the model is a single run")
  model = nnx.merge(state.graphdef, *jax.tree.map(jnp.asarray, jax.device_get(variables)))
  if isinstance(model, TopKSAE):
    model.k = int(model.k_active[...])   # one SAE of a k sweep is a plain top-k SAE
  return model
