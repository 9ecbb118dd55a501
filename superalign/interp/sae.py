"""Sparse autoencoders (SAEs) on activations, trained by the core engine.

Three kinds share one shape: encoder ``W_enc [d, m]`` and ``b_enc [m]``, decoder ``W_dec [m, d]``
with unit-norm rows, and ``b_dec [d]``, a pre-encoder bias subtracted from the input and added
back after decoding: ``z = act((x - b_dec) @ W_enc + b_enc)``, ``x_hat = z @ W_dec + b_dec``.

* ``relu`` (SAELens "standard"): ReLU, loss = sum-of-squares error + ``l1_coefficient`` * L1 of
  the latents. Anthropic's update weights each latent's L1 by its decoder row norm; with unit
  rows that weight is 1, so it is the plain L1.
* ``topk`` (Gao et al. 2024): ReLU of the ``k`` largest pre-activations; loss = normalized MSE +
  ``aux_coefficient`` (1/32) * AuxK, the normalized MSE of the main reconstruction's error
  rebuilt from the ``k_aux`` largest pre-activations of dead latents (``min(k_aux, m // 2)``).
* ``jumprelu`` (Rajamanoharan et al. 2024): ``z * H(z - theta)`` with a learned per-latent
  threshold ``theta = exp(log_threshold)``; loss = sum-of-squares error + ``l0_coefficient`` * L0.
  The step function has no useful gradient, so both the JumpReLU and the L0 get the paper's
  straight-through estimator: a rectangle-kernel pseudo-derivative of width ``bandwidth`` for
  the threshold (none flows through H into ``z``).

An SAE's hyperparameters are an ``Architecture`` (a config's ``sae`` block, ``from_block``; its
ranges are ``RULES``); its training defaults are ``SAE_SPEC``; ``train_sae`` trains it.

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
(``1 - sum (x - x_hat)^2 / sum (x - mean x)^2``), ``dead_fraction`` (latents that never fire over
the evaluation set), ``mse`` (mean over elements); ``ce_loss_score`` is the spliced-in score's
formula. ``interp.saelens`` writes and reads SAELens' directory layout (``cfg.json`` +
``sae_weights.safetensors``) and splices an SAE into a language model.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Callable, Iterable, Mapping

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
  k: int = 32                      # topk: active latents per row
  k_aux: int = 256                 # topk: dead latents in the AuxK reconstruction (<= m // 2)
  aux_coefficient: float = 1 / 32  # topk: AuxK weight
  l1_coefficient: float = 1.0      # relu: L1 weight (scale to the activations' norm)
  l0_coefficient: float = 1e-3     # jumprelu: L0 weight
  bandwidth: float = 1e-3          # jumprelu: rectangle-kernel width of the STE
  init_threshold: float = 1e-3     # jumprelu: initial threshold
  dead_steps: int = 1000           # steps without firing that make a latent dead (AuxK)
  hook_name: str = ""              # the activation site it reads (exported as SAELens metadata)

  def __post_init__(self):
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

  def builder(self, d_in: int) -> Callable[[nnx.Rngs], "SparseAutoencoder"]:
    """``rngs -> module`` for the trainer."""
    hp = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
          if f.name not in ("kind", "width", "hook_name")}
    return lambda rngs: MODULES[self.kind](int(d_in), self.width, rngs=rngs, **hp)

  def make(self, d_in: int, seed: int = 0) -> "SparseAutoencoder":
    """The SAE built here and now, outside the trainer (whose ``state.create`` places each
    variable on the mesh by its logical axes): unsharded, on the default device."""
    with nnx.use_eager_sharding(False):
      return self.builder(d_in)(nnx.Rngs(seed))


def check(block: Mapping, prefix: str = "sae.") -> None:
  """One-line ConfigError naming the first bad key of an ``sae`` block: ``RULES``, then the
  top-k size against the width."""
  schema.check(block, RULES, prefix)
  if block["kind"] == "topk" and block["k"] > block["width"]:
    raise ConfigError(f"{prefix}k={block['k']}: must be in [1, {prefix}width={block['width']}]")


# ---------------------------------------------------------------------------------------------
# The modules


def _unit_rows(key, shape, dtype):
  w = jax.random.normal(key, shape, jnp.float32)
  return (w / jnp.linalg.norm(w, axis=-1, keepdims=True)).astype(dtype)


def _param(init: Callable, key, shape, axes) -> nnx.Param:
  return nnx.Param(nnx.with_partitioning(init, axes)(key, shape, jnp.float32))


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


class SparseAutoencoder(nnx.Module):
  """The shared shape. Latents ``m`` carry the logical axis ``mlp`` and inputs ``d`` ``embed``
  (sharded by the mesh rules like any model's). The encoder starts as the decoder's transpose
  (Gao et al.), the biases at zero (``train_sae`` starts ``b_dec`` at the data mean)."""
  kind = ""
  architecture = ""   # SAELens' name

  def __init__(self, d_in: int, width: int, *, dead_steps: int = 1000, rngs: nnx.Rngs):
    key = rngs.params()
    self.d_in, self.width, self.dead_steps = int(d_in), int(width), int(dead_steps)
    self.W_dec = _param(_unit_rows, key, (width, d_in), ("mlp", "embed"))
    self.W_enc = _param(lambda k, s, dt: _unit_rows(k, s[::-1], dt).T, key, (d_in, width),
                        ("embed", "mlp"))
    self.b_enc = _param(nnx.initializers.zeros_init(), key, (width,), ("mlp",))
    self.b_dec = _param(nnx.initializers.zeros_init(), key, (d_in,), ("embed",))
    self.steps_since_fired = nnx.BatchStat(jnp.zeros((width,), jnp.int32),
                                           out_sharding=("mlp",))

  def decoder(self) -> jax.Array:
    """``W_dec`` (unit rows) as the forward pass reads it."""
    return tangent_rows(self.W_dec[...])

  def pre_activations(self, x: jax.Array) -> jax.Array:
    """``[..., m]`` the encoder's pre-activations of inputs ``x`` ``[..., d]``:
    ``(x - b_dec) @ W_enc + b_enc``, in float32."""
    return (x.astype(jnp.float32) - self.b_dec[...]) @ self.W_enc[...] + self.b_enc[...]

  def activate(self, pre: jax.Array) -> jax.Array:
    """The latents ``[..., m]`` from the pre-activations ``pre`` ``[..., m]``: each architecture's
    nonlinearity."""
    raise NotImplementedError

  def encode(self, x: jax.Array) -> jax.Array:
    """Latent activations ``[..., m]`` (non-negative; zero where a latent is off)."""
    return self.activate(self.pre_activations(x))

  def decode(self, z: jax.Array) -> jax.Array:
    """``[..., d]`` the reconstruction from latents ``z`` ``[..., m]``: ``z @ W_dec + b_dec``."""
    return z @ self.decoder() + self.b_dec[...]

  def __call__(self, x: jax.Array) -> jax.Array:
    """The reconstruction of ``x``."""
    return self.decode(self.encode(x))

  def sparsity_loss(self, x, pre, z, x_hat, dead) -> tuple[jax.Array, dict]:
    """``(loss, metrics)``: each architecture's objective on rows ``x`` ``[batch, d]``, from the
    pre-activations ``pre`` and latents ``z`` (``[batch, m]``), the reconstruction ``x_hat``
    ``[batch, d]`` and the ``dead`` latents ``[m]`` bool."""
    raise NotImplementedError

  def loss(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The training objective on rows ``x [B, d]`` and its metrics; counts the steps since each
    latent fired (this batch included), which decides the dead ones."""
    x = x.astype(jnp.float32)
    pre = self.pre_activations(x)
    z = self.activate(pre)
    x_hat = self.decode(z)
    fired = (z > 0).any(0)
    silent = jnp.where(fired, 0, self.steps_since_fired[...] + 1)
    self.steps_since_fired[...] = silent
    dead = silent >= self.dead_steps
    loss, metrics = self.sparsity_loss(x, pre, z, x_hat, dead)
    return loss, {"mse": jnp.mean((x - x_hat) ** 2), "l0": (z > 0).sum(-1).mean(),
                  "explained_variance": explained_variance_jnp(x, x_hat),
                  "batch_dead_fraction": 1.0 - fired.mean(), "dead_fraction": dead.mean(),
                  **metrics}


@MODULES.register("relu")
class ReluSAE(SparseAutoencoder):
  """The standard SAE (Bricken et al. 2023): ``relu`` latents and an L1 sparsity penalty."""
  kind, architecture = "relu", "standard"

  def __init__(self, d_in: int, width: int, *, l1_coefficient: float, rngs: nnx.Rngs,
               dead_steps: int = 1000, **_):
    super().__init__(d_in, width, dead_steps=dead_steps, rngs=rngs)
    self.l1_coefficient = float(l1_coefficient)

  def activate(self, pre):
    """``relu(pre)``."""
    return jax.nn.relu(pre)

  def sparsity_loss(self, x, pre, z, x_hat, dead):
    """The squared error per row plus ``l1_coefficient`` times the latents' L1 norm, each
    averaged over the batch."""
    mse_loss = jnp.sum((x - x_hat) ** 2, -1).mean()
    l1 = jnp.sum(z, -1).mean()  # z >= 0; the decoder-norm weight is 1 (unit rows)
    return mse_loss + self.l1_coefficient * l1, {"mse_loss": mse_loss, "l1": l1}


@MODULES.register("topk")
class TopKSAE(SparseAutoencoder):
  """The TopK SAE (Gao et al. 2024): the ``k`` largest pre-activations of each row stay, the rest
  are zero; an auxiliary loss of the ``k_aux`` dead latents on the residual error revives them."""
  kind, architecture = "topk", "topk"

  def __init__(self, d_in: int, width: int, *, k: int, k_aux: int = 256,
               aux_coefficient: float = 1 / 32, rngs: nnx.Rngs, dead_steps: int = 1000, **_):
    super().__init__(d_in, width, dead_steps=dead_steps, rngs=rngs)
    self.k = int(k)
    self.k_aux = min(int(k_aux), int(width) // 2)
    self.aux_coefficient = float(aux_coefficient)

  @staticmethod
  def _top(pre, k, allowed=None):
    """ReLU of the ``k`` largest entries of each row (of those ``allowed``), zero elsewhere."""
    if allowed is not None:
      pre = jnp.where(allowed, pre, -jnp.inf)
    kth = jax.lax.top_k(pre, k)[0][..., -1:]
    keep = pre >= kth if allowed is None else allowed & (pre >= kth)
    return jnp.where(keep, jax.nn.relu(pre), 0.0)

  def activate(self, pre):
    """ReLU of the ``k`` largest pre-activations of each row, zero elsewhere."""
    return self._top(pre, self.k)

  def sparsity_loss(self, x, pre, z, x_hat, dead):
    """The normalized MSE, plus ``aux_coefficient`` times the auxiliary loss when some latents
    are ``dead``: the normalized MSE of the ``k_aux`` largest dead latents' reconstruction of the
    residual error (Gao et al. 2024)."""
    nmse = _normalized_mse(x, x_hat)
    if not self.k_aux or not self.aux_coefficient:
      return nmse, {"nmse": nmse}
    z_aux = self._top(pre, self.k_aux, dead)
    error = jax.lax.stop_gradient(x - x_hat)
    aux = jnp.where(dead.any(), _normalized_mse(error, z_aux @ self.decoder()), 0.0)
    return nmse + self.aux_coefficient * aux, {"nmse": nmse, "aux_loss": aux}

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
               init_threshold: float = 1e-3, rngs: nnx.Rngs, dead_steps: int = 1000, **_):
    super().__init__(d_in, width, dead_steps=dead_steps, rngs=rngs)
    init = lambda k, s, dt: jnp.full(s, np.log(init_threshold), dt)
    self.log_threshold = _param(init, None, (width,), ("mlp",))
    self.l0_coefficient, self.bandwidth = float(l0_coefficient), float(bandwidth)

  def threshold(self) -> jax.Array:
    """``[m]`` each latent's threshold, ``exp(log_threshold)``."""
    return jnp.exp(self.log_threshold[...])

  def _thresholds(self, pre):  # broadcast explicitly: the custom VJPs return per-entry gradients
    return jnp.broadcast_to(self.threshold(), pre.shape)

  def activate(self, pre):
    """``pre`` where it exceeds its latent's threshold, zero elsewhere (``jumprelu``)."""
    return jumprelu(pre, self._thresholds(pre), self.bandwidth)

  def sparsity_loss(self, x, pre, z, x_hat, dead):
    """The squared error per row plus ``l0_coefficient`` times the L0 norm (``heaviside``: its
    threshold gradient through the straight-through estimator), each averaged over the batch."""
    mse_loss = jnp.sum((x - x_hat) ** 2, -1).mean()
    l0 = heaviside(pre, self._thresholds(pre), self.bandwidth).sum(-1).mean()
    return mse_loss + self.l0_coefficient * l0, {"mse_loss": mse_loss, "l0_loss": l0}


KINDS = MODULES.names
ARCHITECTURES = {kind: MODULES[kind].architecture for kind in KINDS}   # kind -> SAELens' name
RULES = {   # the ranges of an ``sae`` block's keys (``check``; the launcher's ``RULES``)
    "kind": schema.one_of(*KINDS),
    "width": schema.COUNT,
    "k": schema.COUNT,
    "k_aux": schema.COUNT_OR_ZERO,      # 0 turns AuxK off
    "aux_coefficient": schema.NON_NEGATIVE,
    "l1_coefficient": schema.NON_NEGATIVE,
    "l0_coefficient": schema.NON_NEGATIVE,
    "bandwidth": schema.POSITIVE,
    "init_threshold": schema.POSITIVE,
    "dead_steps": schema.COUNT,
}


def loss_fn(model: SparseAutoencoder, batch, rng, step):
  """The core's ``LossFn``: ``model.loss`` on ``batch["x"]``."""
  del rng, step
  return model.loss(batch["x"])


def encode_fn(state, batch):
  """For ``Trained.apply``: the latent activations."""
  return state.model().encode(batch["x"])


def reconstruct_fn(state, batch):
  """For ``Trained.apply``: the reconstructions."""
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
  """Per row: the squared residual and the active-latent count."""
  model = state.model()
  x = batch["x"].astype(jnp.float32)
  z = model.encode(x)
  return jnp.stack([jnp.sum((x - model.decode(z)) ** 2, -1),
                    (z > 0).sum(-1).astype(jnp.float32)], -1)


def _fired_fn(state, batch):
  """Per row, the latents that fired, eight to a byte (a 32nd of their floats' memory)."""
  return jnp.packbits(state.model().encode(batch["x"]) > 0, axis=-1)


def evaluate(trained: Trained, x: np.ndarray) -> dict[str, Any]:
  """``l0``, ``explained_variance``, ``dead_fraction`` and ``mse`` over the rows of ``x``
  (per run for stacked runs), through the one batched apply."""
  x = np.asarray(x, np.float32).reshape(-1, np.shape(x)[-1])
  n, d = x.shape
  width = trained.state.model().width
  stats = trained.apply(x, _row_stats_fn).astype(np.float64)
  resid, l0 = stats[..., 0].sum(-1), stats[..., 1].sum(-1)
  fired = np.unpackbits(np.bitwise_or.reduce(trained.apply(x, _fired_fn), axis=-2), axis=-1,
                        count=width)
  total = np.sum((x.astype(np.float64) - x.mean(0, dtype=np.float64)) ** 2)
  out = {"l0": l0 / n, "explained_variance": 1.0 - resid / max(total, _EPS),
         "dead_fraction": 1.0 - fired.sum(-1) / width, "mse": resid / (n * d)}
  return {k: (float(v) if np.ndim(v) == 0 else np.asarray(v)) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# Training


Stream = ActivationStore | Callable[[int], np.ndarray] | Iterable[np.ndarray]


def _stream_rows(stream: Stream, batch_size: int, seed: int):
  """``(rows_at, first)``: ``step -> rows`` and the rows of step 0, from a store (shuffled, a
  function of ``(seed, step)``), a function of the step, or an iterator (taken in order: a
  resumed run continues with its next item, so only the first two resume bitwise)."""
  if isinstance(stream, ActivationStore):
    rows_at = lambda step: stream.batch(step, batch_size, seed)
  elif callable(stream):
    rows_at = stream
  else:
    items = iter(stream)
    first = next(items, None)
    if first is None:
      raise ConfigError("train_sae: the activation stream is empty")
    return (lambda step: first if step == 0 else next(items)), first
  return rows_at, rows_at(0)


def train_sae(spec: TrainSpec, arch: Architecture, acts: np.ndarray | None = None, *,
              stream: Stream | None = None, workdir: str, tag: str = "sae",
              val: np.ndarray | None = None, **trainer_fields) -> Trained:
  """Trains the SAE ``arch`` through ``core.trainer.Trainer`` as ``spec`` says (``SAE_SPEC``
  with a run's seed and mesh, ``spec.with_train(...)``) on ``acts [rows, d]`` (in memory:
  ``fit(examples)``) or a ``stream`` (``fit(batch_fn=...)``, ``train.num_steps`` steps).

  ``b_dec`` starts at the mean of the activations (their first 65,536 rows, or the first batch
  when streaming); ``normalize_decoder`` runs after every update. ``trainer_fields`` are further
  ``Trainer`` fields (``seeds=[0, 1, 2]``: stacked restarts through one vmapped step, in-memory
  ``acts`` only; ``on_batch``). ``val`` rows are evaluated (``evaluate``) every
  ``train.eval_every`` steps and at the end. Checkpoints (parameters, optimizer and the dead
  counters) go under ``workdir/checkpoints/<tag>``; an interrupted run resumes from there.
  """
  if (acts is None) == (stream is None):
    raise ConfigError("train_sae: give exactly one of acts (an array) and stream")
  seed = trainer_fields.get("seeds", spec.seed)
  if acts is not None:
    acts = np.asarray(acts, np.float32)
    acts = acts.reshape(-1, acts.shape[-1])
    first = acts[:65536]
  else:
    if not isinstance(seed, int):
      raise ConfigError(f"train_sae: seeds={seed}: a stream trains one run; give one integer")
    rows_at, first = _stream_rows(stream, int(spec.train.batch_size), int(seed))
    first = np.asarray(first, np.float32).reshape(-1, np.shape(first)[-1])
  d_in = first.shape[-1]
  post_update = (normalize_decoder, *trainer_fields.pop("post_update", ()))
  job = Trainer(arch.builder(d_in), spec, workdir, tag, loss_fn=loss_fn,
                warm={"b_dec": first.mean(0)}, cache_key=("sae", d_in, arch),
                post_update=post_update, name=f"{arch.kind} SAE ({d_in} -> {arch.width})",
                **trainer_fields)
  check = (lambda trained: evaluate(trained, val)) if val is not None else None
  if acts is not None:
    return job.fit({"x": acts}, evaluate=check)
  rows = lambda step: np.asarray(rows_at(step), np.float32).reshape(-1, d_in)
  return job.fit(batch_fn=lambda step, _: {"x": rows(step)}, evaluate=check)


def module(trained: Trained, run: int | None = None) -> SparseAutoencoder:
  """The trained SAE as an NNX module, whole on the default device (run ``run`` of stacked
  runs)."""
  state = trained.state
  variables = (state.params, state.stats)
  if trained.stacked:
    if run is None:
      raise ConfigError("stacked runs: pick one with run=<index>")
    variables = jax.tree.map(lambda a: a[run], variables)
  elif run is not None:
    raise ConfigError(f"run={run}: the model is a single run")
  return nnx.merge(state.graphdef, *jax.tree.map(jnp.asarray, jax.device_get(variables)))
