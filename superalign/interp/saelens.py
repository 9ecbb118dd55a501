"""SAEs as the field shares them: SAELens' folders in and out, and an SAE spliced into a model.

* ``export_saelens`` writes an SAE (``interp.sae``) in SAELens 6's layout (``cfg.json`` +
  ``sae_weights.safetensors``) with its site as a TransformerLens hook name
  (``blocks.2.hook_resid_post``), so that SAELens' ``SAE.load_from_disk`` reads it and
  ``HookedSAETransformer.add_sae`` attaches it where it belongs.
* ``load_saelens`` reads SAELens' own folders (``SAE.save_model`` of its standard, TopK,
  JumpReLU and gated SAEs, inference or training format, released SAEs once downloaded) into a
  module that computes the same function, folding what SAELens keeps as flags into the weights
  where that is exact and refusing, in one line naming the field, where it is not.
* ``spliced_metrics`` splices an SAE into a language model at its site (the site's activation
  replaced by the SAE's reconstruction, through ``interp.hooks``) and reports SAELens' evals:
  ``ce_loss_score`` from the clean, spliced and zero-ablated next-token losses, the KL
  divergences, ``l0`` and ``explained_variance``.

SAELens' names throughout; its hook names map to our sites by ``models.sites``
(``site_name``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from superalign.core import mesh as mesh_lib
from superalign.core.errors import ConfigError
from superalign.core.trainer import Trained
from superalign.interp import hooks
from superalign.interp.sae import (_EPS, Architecture, JumpReluSAE, SparseAutoencoder, TopKSAE,
                                   to_jumprelu,
                                   ce_loss_score, module)
from superalign.models import sites
from superalign.results.files import DamagedFileError, atomic_folder, read_guarded

log = logging.getLogger("superalign")
CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"


class GatedSAE(SparseAutoencoder):
  """The gated SAE (Rajamanoharan et al. 2024), for inference (read from SAELens; not trained
  here). A gate decides which latents fire, a magnitude path sharing ``W_enc`` (each latent's
  column scaled by ``exp(r_mag)``) how much: with ``u = x - b_dec``,
  ``z = [u @ W_enc + b_gate > 0] * relu(u @ (W_enc * exp(r_mag)) + b_mag)``. ``b_enc`` holds
  SAELens' ``b_gate`` (it is the gate's encoder bias)."""
  kind, architecture = "gated", "gated"

  def __init__(self, d_in: int, width: int, *, rngs: nnx.Rngs, **_):
    super().__init__(d_in, width, rngs=rngs)
    zeros = nnx.with_partitioning(nnx.initializers.zeros_init(), ("mlp",))
    self.b_mag = nnx.Param(zeros(None, (width,), jnp.float32))
    self.r_mag = nnx.Param(zeros(None, (width,), jnp.float32))

  def encode(self, x: jax.Array) -> jax.Array:
    """The gate's latents that fire, at the magnitude path's values."""
    u = x.astype(jnp.float32) - self.b_dec[...]
    gate = u @ self.W_enc[...] + self.b_enc[...] > 0
    magnitude = u @ (self.W_enc[...] * jnp.exp(self.r_mag[...])) + self.b_mag[...]
    return jnp.where(gate, jax.nn.relu(magnitude), 0.0)

  def activate(self, pre):
    raise NotImplementedError("a gated SAE encodes from its input (encode), for inference only")


def weights(model: SparseAutoencoder) -> dict[str, np.ndarray]:
  """SAELens' tensors as stored: ``W_enc``, ``b_enc``, ``W_dec``, ``b_dec`` (+ ``threshold``;
  a gated SAE's ``b_gate``, ``b_mag`` and ``r_mag`` in place of ``b_enc``)."""
  out = {"W_enc": model.W_enc[...], "b_enc": model.b_enc[...], "W_dec": model.W_dec[...],
         "b_dec": model.b_dec[...]}
  if isinstance(model, JumpReluSAE):
    out["threshold"] = model.threshold()
  if isinstance(model, GatedSAE):
    out.update(b_gate=out.pop("b_enc"), b_mag=model.b_mag[...], r_mag=model.r_mag[...])
  out = mesh_lib.to_host(out)   # gathered when sharded over hosts: every process calls this
  return {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in out.items()}


def site_name(hook_name: str) -> str:
  """Our site for ``hook_name``, a TransformerLens hook name (``blocks.2.hook_resid_post``, as
  SAELens' cfg says) or already our site name (``blocks.2.resid_post``): the latter as is."""
  return sites.from_transformer_lens(hook_name) or hook_name


def site_of(fields: dict) -> str | None:
  """Our site for the hook an SAE reads, from its SAELens cfg ``fields`` (v6
  ``metadata.hook_name``, or an older flat cfg's ``hook_name`` / ``hook_point``); None when it
  names none."""
  meta = fields.get("metadata") or {}
  hook = meta.get("hook_name") or fields.get("hook_name") or fields.get("hook_point")
  return site_name(hook) if hook else None


def export_saelens(model: SparseAutoencoder | Trained, directory: str, *, hook_name: str = "",
                   model_name: str = "", hook_layer: int | None = None, overwrite: bool = False,
                   **metadata) -> str:
  """Writes ``cfg.json`` and ``sae_weights.safetensors`` in SAELens' v6 layout into
  ``directory``, a folder of its own (absent or empty). ``hook_name`` is the site the SAE reads,
  in our spelling (``blocks.2.resid_post``) or TransformerLens' (``blocks.2.hook_resid_post``):
  the cfg says TransformerLens', which ``HookedSAETransformer.add_sae`` attaches to, and the
  block's index as ``hook_layer`` unless given. ``metadata`` adds SAELens metadata fields
  (``context_size``, ``dataset_path``, ...). A folder that already holds an export is refused
  unless ``overwrite``, which replaces it whole. Both files are written into a temporary folder
  that then takes ``directory``'s place: a reader sees the old export or the new one, never a
  mix or half a file. Across processes every process calls it, process 0 writes, and all return
  once it is written."""
  from safetensors.numpy import save_file
  if isinstance(model, Trained):
    model = module(model)
  if not getattr(model, "apply_b_dec_to_input", True):
    raise ConfigError(f"export_saelens({directory}): a transcoder ({model.d_in} -> "
                      f"{model.d_out}) has no SAELens v6 SAE layout; export an SAE")
  if not model.architecture:   # BatchTopK / Matryoshka: saved as SAELens saves them, a JumpReLU
    model = to_jumprelu(model)
  _check_export_folder(directory, overwrite)
  tensors = weights(model)
  tl_name = sites.to_transformer_lens(site_name(hook_name)) if hook_name else None
  block = re.match(r"blocks\.(\d+)\.", tl_name or "")
  if hook_layer is None and block:
    hook_layer = int(block[1])
  cfg = {"architecture": model.architecture, "d_in": model.d_in, "d_sae": model.width,
         "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
         "normalize_activations": "none", "reshape_activations": "none",
         "metadata": {"model_name": model_name or None, "hook_name": tl_name,
                      "hook_layer": hook_layer, "hook_head_index": None,
                      "sae_lens_version": "6.0.0", "sae_lens_training_version": None,
                      **metadata}}
  if isinstance(model, TopKSAE):
    cfg["k"] = model.k
    cfg["rescale_acts_by_decoder_norm"] = False
  def write(folder):
    save_file(tensors, os.path.join(folder, WEIGHTS))
    with open(os.path.join(folder, CFG), "w") as f:
      json.dump(cfg, f, indent=1)
  mesh_lib.write_once(f"export_saelens {directory}", lambda: atomic_folder(directory, write))
  return directory


EXPORT_FILES = (CFG, WEIGHTS, "sparsity.safetensors")   # what SAELens writes in an SAE's folder


def _check_export_folder(directory: str, overwrite: bool) -> None:
  """One-line ConfigError, on every process (process 0's look decides), for a folder that holds
  an export (unless ``overwrite``) or anything else."""
  held = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
  others = [name for name in held if name not in EXPORT_FILES]
  if mesh_lib.from_writer(bool(others)):
    raise ConfigError(f"{directory}: holds files other than an SAE export ({', '.join(others)}); "
                      "export into a folder of its own")
  if mesh_lib.from_writer(bool(held)) and not overwrite:
    raise ConfigError(f"{directory}: already holds an SAE export ({CFG}); choose another folder, "
                      "delete it, or pass overwrite=True to replace it")


FIX_SAE = "not a whole SAELens SAE folder: export it again (export_saelens) or fetch a fresh copy"


def _topk_k(fields: dict):
  """A TopK SAE's ``k`` from its ``cfg.json`` ``fields`` (v6 top level, or an older flat cfg's
  ``activation_fn_kwargs``)."""
  return fields.get("k", (fields.get("activation_fn_kwargs") or {}).get("k"))


def _architecture(fields: dict) -> str:
  """SAELens' architecture name in a ``cfg.json``'s ``fields``: a pre-6 flat cfg names TopK by its
  activation function (``activation_fn_str: "topk"``), as SAELens' ``handle_pre_6_0_config``
  reads it."""
  act = fields.get("activation_fn", fields.get("activation_fn_str"))
  if act == "topk" and _topk_k(fields) is not None:
    return "topk"
  return fields.get("architecture", "standard")


def _read_cfg(path: str) -> dict:
  """``cfg.json``, with the sizes a load needs checked."""
  with open(path) as f:
    cfg = json.load(f)
  if not isinstance(cfg, dict):
    raise DamagedFileError(f"{path}: holds a {type(cfg).__name__}, not an SAE config; {FIX_SAE}")
  sizes = {"d_in": cfg["d_in"], "d_sae": cfg["d_sae"]}
  if _architecture(cfg) == "topk":
    sizes["k"] = _topk_k(cfg)
  for key, value in sizes.items():
    top = cfg["d_sae"] if key == "k" else None   # top-k picks at most every latent
    if type(value) is not int or value < 1 or (top is not None and value > top):
      raise DamagedFileError(f"{path}: {key}={value!r} is not a size"
                             + (" in [1, d_sae]" if top else "") + f"; {FIX_SAE}")
  return cfg


def _read_weights(path: str, names: dict[str, tuple[int, ...]],
                  alternatives: dict[str, str] | None = None) -> dict[str, np.ndarray]:
  """The tensors ``names`` (name -> shape) of a safetensors file as stored, each checked for its
  shape, a floating dtype and finite values; ``alternatives`` maps a name to the one an older
  file holds in its place (``threshold`` -> ``log_threshold``), returned under that name."""
  from safetensors.numpy import load_file
  open(path, "rb").close()   # a missing file as Python's OSError (safetensors' own is garbled)
  tensors = load_file(path)
  out = {}
  for name, shape in names.items():
    if name not in tensors and (alternatives or {}).get(name) in tensors:
      name = alternatives[name]
    if name not in tensors:
      raise DamagedFileError(f"{path}: has no tensor {name!r} (holds {', '.join(tensors)}); "
                             f"{FIX_SAE}")
    t = tensors[name]
    wrong = (f"has shape {t.shape}, but {CFG} says {shape}" if t.shape != shape else
             f"is {t.dtype}, not floating point" if not _floating(t.dtype) else
             f"holds {np.size(t) - np.isfinite(t).sum()} NaN or infinite values"
             if not np.isfinite(t).all() else "")
    if wrong:
      raise DamagedFileError(f"{path}: {name} {wrong}; {FIX_SAE}")
    out[name] = t
  return out


def _floating(dtype) -> bool:
  return dtype == jnp.bfloat16 or np.issubdtype(dtype, np.floating)


def _unit_tolerance(dtype) -> float:
  """How far from 1 a unit row's norm may be once stored in ``dtype``: each entry rounds by at
  most half its spacing, so the norm by at most ``eps / 2``; float32 files get 1e-4."""
  return max(1e-4, float(jnp.finfo(dtype).eps))


# normalize_activations values and why each cannot be read (``expected_average_only_in`` can,
# given its factor).
_PER_ROW = ("a per-row normalization of the input that no fixed weights express; SAELens "
            "applies it at run time")
_REFUSED_NORMALIZATIONS = {
    "constant_norm_rescale": _PER_ROW, "layer_norm": _PER_ROW,
    "covariance_whitening": "a training checkpoint from before SAELens folded the whitening "
                            "into the weights; load the finished SAE",
}


def _check_fields(fields: dict, cfg_path: str, norm_scaling_factor: float | None) -> float:
  """The input scale to fold in (1.0 for none) from a ``cfg.json``'s ``fields``, after refusing,
  in one line naming the field, what this loader cannot read exactly."""
  norm = fields.get("normalize_activations", "none")
  norm = {False: "none", None: "none", True: "expected_average_only_in"}.get(norm, norm)
  readable = "'none', or 'expected_average_only_in' with norm_scaling_factor="
  if norm == "expected_average_only_in":
    if norm_scaling_factor is None:
      raise ConfigError(
          f"{cfg_path}: normalize_activations='expected_average_only_in': the SAE reads "
          "activations scaled by a factor its folder does not hold; pass norm_scaling_factor= "
          "(SAELens' pretrained_saes.yaml lists it per SAE) to fold it into the weights")
    if not (np.isfinite(norm_scaling_factor) and norm_scaling_factor > 0):
      raise ConfigError(f"norm_scaling_factor={norm_scaling_factor!r}: must be a positive number")
    return float(norm_scaling_factor)
  if norm != "none":
    why = _REFUSED_NORMALIZATIONS.get(norm, "unknown to SAELens 6.54")
    raise ConfigError(f"{cfg_path}: normalize_activations={norm!r} is {why}; readable: "
                      f"{readable}")
  if norm_scaling_factor is not None:
    raise ConfigError(f"norm_scaling_factor={norm_scaling_factor!r}: {cfg_path} says "
                      "normalize_activations='none', so there is no input scale to fold in")
  reshape = fields.get("reshape_activations", "none")
  if reshape not in ("none", "hook_z"):
    raise ConfigError(f"{cfg_path}: reshape_activations={reshape!r}; readable: 'none', 'hook_z'")
  return 1.0


_SHAPES = {   # SAELens' tensors of each architecture beside W_enc, W_dec and b_dec
    "standard": ("b_enc",), "topk": ("b_enc",), "jumprelu": ("b_enc", "threshold"),
    "gated": ("b_gate", "b_mag", "r_mag")}
_KINDS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated"}


def load_saelens(directory: str, *, norm_scaling_factor: float | None = None
                 ) -> tuple[SparseAutoencoder, dict]:
  """``(module, cfg)`` from a SAELens SAE folder: what SAELens 6's ``SAE.save_model`` writes
  (inference or training SAEs), an older flat cfg, or ours; every file read through
  ``read_guarded``, so a damaged one is one line naming it. Architectures: ``standard`` (our
  ``relu``), ``topk``, ``jumprelu`` and ``gated`` (``GatedSAE``, for inference only).

  Everything is folded into the weights exactly, so the module computes SAELens' function:

  * ``normalize_activations: expected_average_only_in`` with ``norm_scaling_factor`` (the input
    is scaled by it before the SAE and the output unscaled after: SAELens'
    ``fold_activation_norm_scaling_factor``). The per-row normalizations are refused.
  * ``apply_b_dec_to_input: false``: into the encoder biases.
  * Decoder rows whose norms are not 1 (beyond the stored dtype's rounding: a bfloat16 file's unit
    rows are off by up to 2^-8) move into the encoder (``fold_W_dec_norm``), exact for ReLU,
    JumpReLU and gated SAEs, and for a TopK SAE whose ``rescale_acts_by_decoder_norm`` selects on
    norm-scaled pre-activations (SAELens' training-format TopK files); another TopK SAE needs unit
    rows (its top-k selection is not scale-invariant). An all-zero decoder row (a latent that adds
    nothing) folds to a latent that never fires, with a unit row, where SAELens' own fold would
    divide by zero.

  ``reshape_activations: hook_z`` is read as is (``spliced_metrics`` flattens the heads). No load
  gives a NaN weight.
  """
  cfg_path, weights_path = os.path.join(directory, CFG), os.path.join(directory, WEIGHTS)
  cfg = read_guarded(cfg_path, _read_cfg, FIX_SAE)
  arch = _architecture(cfg)
  if arch not in _KINDS:
    raise ConfigError(f"{cfg_path}: architecture {arch!r}; readable: {', '.join(_KINDS)}")
  scale = _check_fields(cfg, cfg_path, norm_scaling_factor)
  kind, d_in, m = _KINDS[arch], cfg["d_in"], cfg["d_sae"]
  shapes = {"W_enc": (d_in, m), "W_dec": (m, d_in), "b_dec": (d_in,),
            **{name: (m,) for name in _SHAPES[arch]}}
  stored = read_guarded(
      weights_path, lambda p: _read_weights(p, shapes, {"threshold": "log_threshold"}), FIX_SAE)
  t = {k: np.asarray(v, np.float64) for k, v in stored.items()}
  if "log_threshold" in t:   # an older JumpReLU training checkpoint (SAELens converts it too)
    t["threshold"] = np.exp(t.pop("log_threshold"))
  rescaled = kind == "topk" and bool(cfg.get("rescale_acts_by_decoder_norm", False))
  t = _fold_input_scale(t, scale)
  if not cfg.get("apply_b_dec_to_input", True):
    t = _fold_b_dec_into_encoder(t)
  norms = np.linalg.norm(t["W_dec"], axis=1)
  tolerance = _unit_tolerance(stored["W_dec"].dtype)
  off = np.abs(norms - 1.0) > tolerance
  if off.any() or rescaled:   # rescaled: folding is exact, and SAELens selects on these norms
    row = int(np.argmax(np.abs(norms - 1.0)))
    if kind == "topk" and not rescaled:
      raise ConfigError(
          f"{weights_path}: W_dec row {row} has norm {norms[row]:.6g} ({off.sum()} of {m} rows "
          f"are off 1 by more than {tolerance:g}, {stored['W_dec'].dtype} rounding); a topk SAE "
          "needs unit decoder rows (its top-k selection is not scale-invariant) unless "
          "rescale_acts_by_decoder_norm is true")
    t = _fold_decoder_norms(t, norms)
  t = {k: v.astype(np.float32) for k, v in t.items()}
  overflow = [k for k, v in t.items() if not np.isfinite(v).all()]
  if overflow:
    raise ConfigError(f"{weights_path}: folding the decoder norms into {overflow[0]} leaves "
                      "float32's range; rescale the SAE's rows before loading it")
  return _module(kind, d_in, m, _topk_k(cfg), t), cfg


def _module(kind: str, d_in: int, m: int, k, t: dict[str, np.ndarray]) -> SparseAutoencoder:
  """The SAE of ``kind`` holding the (folded) SAELens tensors ``t``."""
  if kind == "gated":
    with nnx.use_eager_sharding(False):
      sae = GatedSAE(d_in, m, rngs=nnx.Rngs(0))
    t = {**t, "b_enc": t["b_gate"]}
  else:
    sae = Architecture(kind=kind, width=m, k=k if kind == "topk" else 1).make(d_in)
  gated = ("b_mag", "r_mag") if kind == "gated" else ()
  for name in ("W_enc", "b_enc", "W_dec", "b_dec", *gated):
    getattr(sae, name)[...] = jnp.asarray(t[name])
  if kind == "jumprelu":
    sae.log_threshold[...] = jnp.log(jnp.maximum(jnp.asarray(t["threshold"]), _EPS))
  return sae


def _encoder_biases(t: dict) -> list[str]:
  return [name for name in ("b_enc", "b_gate", "b_mag", "threshold") if name in t]


def _fold_input_scale(t: dict[str, np.ndarray], scale: float) -> dict[str, np.ndarray]:
  """The SAE of inputs scaled by ``scale`` (outputs unscaled by it) as an SAE of the raw inputs.
  SAELens folds it as ``W_enc * s``, ``W_dec / s``, ``b_dec / s``; followed by the decoder-norm
  fold (all rows scaled alike) that is ``b_dec / s`` and every encoder bias and threshold ``/ s``,
  with the latents ``/ s``: the top-k picks the same latents, and unit rows stay unit."""
  if scale == 1.0:
    return t
  return {k: v / scale if k == "b_dec" or k in _encoder_biases(t) else v for k, v in t.items()}


def _fold_b_dec_into_encoder(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """``apply_b_dec_to_input: false`` (the encoder reads ``x``, not ``x - b_dec``): the encoder
  biases take ``b_dec``'s share, so that ``(x - b_dec) @ W + b'`` equals ``x @ W + b``."""
  t = dict(t)
  shift = t["b_dec"] @ t["W_enc"]
  if "b_gate" in t:   # the gated magnitude path reads W_enc * exp(r_mag)
    t["b_gate"], t["b_mag"] = t["b_gate"] + shift, t["b_mag"] + shift * np.exp(t["r_mag"])
  else:
    t["b_enc"] = t["b_enc"] + shift
  return t


def _fold_decoder_norms(t: dict[str, np.ndarray], norms: np.ndarray) -> dict[str, np.ndarray]:
  """Unit decoder rows, their norms moved into the encoder: the same reconstruction, latents
  scaled by the norms. A zero row's latent scales to 0 (it never fires) and gets a unit row.
  The gated magnitude path's ``exp(r_mag)`` rides on ``W_enc``, so it stays."""
  zero = norms == 0
  if zero.any():
    log.info("SAE load: %d latents have all-zero decoder rows; loaded as latents that never "
             "fire", zero.sum())
  t = dict(t)
  t["W_dec"] = np.where(zero[:, None], np.eye(1, t["W_dec"].shape[1]),
                        t["W_dec"] / np.where(zero, 1.0, norms)[:, None])
  t["W_enc"] = t["W_enc"] * norms
  for name in _encoder_biases(t):
    t[name] = t[name] * norms
  return t


# ---------------------------------------------------------------------------------------------
# Splicing into a language model


def splice(sae: SparseAutoencoder) -> hooks.Intervention:
  """The intervention that replaces a site's activation by ``sae``'s reconstruction of it (its
  last axis, or for a ``hook_z`` SAE its last two, heads and their dimensions, flattened as
  SAELens does), in the activation's dtype."""
  def reconstruct(x: jax.Array) -> jax.Array:
    trailing = 1 if x.shape[-1] == sae.d_in else 2
    if int(np.prod(x.shape[x.ndim - trailing:])) != sae.d_in:
      raise hooks.HookError(f"SAE d_in={sae.d_in} does not fit an activation of shape "
                            f"{tuple(x.shape)}")
    return sae(x.reshape(*x.shape[:x.ndim - trailing], sae.d_in)).reshape(x.shape).astype(x.dtype)
  return reconstruct


def _check_fits(sae: SparseAutoencoder, site: str, shape: tuple, axes: tuple) -> None:
  """One-line HookError unless the SAE reads the site's last axis (or, a ``hook_z`` SAE, its
  heads flattened)."""
  heads = tuple(axes[-2:]) == ("head", "head_dim") and shape[-2] * shape[-1] == sae.d_in
  if shape[-1] != sae.d_in and not heads:
    raise hooks.HookError(f"SAE d_in={sae.d_in} does not fit site {site!r}: its last axis "
                          f"({axes[-1]}) has width {shape[-1]}")


def _next_token_ce(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """``[batch, pos - 1]`` the loss of predicting each next token (TransformerLens'
  ``loss_per_token``)."""
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), -1)
  return -jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]


def _batch_sums(model_fn: Callable, sae: SparseAutoencoder, site: str, tokens: jax.Array
                ) -> dict[str, jax.Array]:
  """One batch's sums for ``spliced_metrics``: the three runs' losses and the two KLs to the
  clean run, the active latents, and the activations' count, mean, centred sum of squares and
  residual sum of squares (combined over batches exactly, Chan et al.)."""
  clean, captured = hooks.run(model_fn, tokens, capture=site)
  spliced, _ = hooks.run(model_fn, tokens, interventions={site: splice(sae)})
  zeroed, _ = hooks.run(model_fn, tokens, interventions={site: hooks.zero()})
  x = captured[site].reshape(-1, sae.d_in).astype(jnp.float32)
  z = sae.encode(x)
  x_hat = sae.decode(z)
  logp_clean = jax.nn.log_softmax(clean.astype(jnp.float32), -1)

  def kl(logits):   # KL(clean || new) per position, as SAELens' evals._kl
    return jnp.sum(jnp.exp(logp_clean) * (logp_clean - jax.nn.log_softmax(
        logits.astype(jnp.float32), -1)), -1).sum()

  mean = x.mean(0)
  return {"ce_clean": _next_token_ce(clean, tokens).sum(),
          "ce_sae": _next_token_ce(spliced, tokens).sum(),
          "ce_zero": _next_token_ce(zeroed, tokens).sum(),
          "kl_sae": kl(spliced), "kl_zero": kl(zeroed),
          "l0": (z != 0).sum().astype(jnp.float32), "rows": jnp.asarray(x.shape[0]),
          "mean": mean,
          "m2": jnp.sum((x - mean) ** 2), "resid": jnp.sum((x - x_hat) ** 2)}


def spliced_metrics(model_fn: Callable[[jax.Array], jax.Array], sae: SparseAutoencoder,
                    site: str, tokens: np.ndarray, *, batch_size: int = 8) -> dict[str, float]:
  """SAELens' evals of ``sae`` spliced into the language model ``model_fn`` (token ids
  ``[batch, pos]`` -> next-token logits ``[batch, pos, vocab]``; any callable whose forward pass
  marks sites, e.g. ``lambda x: m.lm_logits(m.hidden_states(x))``) at ``site`` (ours or
  TransformerLens' spelling, ``site_name``) over every position of ``tokens``, in jitted batches
  of ``batch_size`` rows. As SAELens' ``evals.get_recons_loss`` and
  ``get_sparsity_and_variance_metrics`` define them:

  * ``ce_loss_without_sae``, ``ce_loss_with_sae``, ``ce_loss_with_ablation``: the mean
    next-token loss clean, with the site's activation replaced by the SAE's reconstruction
    (``splice``), and with it zeroed; ``ce_loss_score`` = (ablation - SAE) / (ablation - clean)
    (``sae.ce_loss_score``; NaN where zeroing the site does not raise the loss).
  * ``kl_div_with_sae``, ``kl_div_with_ablation``: the mean KL(clean || spliced) over positions;
    ``kl_div_score`` = 1 - with SAE / with ablation.
  * ``l0``: the mean active latents per position; ``explained_variance``: 1 - the residual's sum
    of squares over the activations' (around their mean over every position).

  An SAE whose ``d_in`` does not fit the site's last axis (or a ``hook_z`` SAE's heads) is a
  one-line HookError, as is a site the model lacks.
  """
  site = site_name(site)
  tokens = np.asarray(tokens)
  if tokens.ndim != 2 or tokens.shape[1] < 2 or not np.issubdtype(tokens.dtype, np.integer):
    raise ConfigError(f"tokens: {tokens.dtype} of shape {tokens.shape}; spliced_metrics needs "
                      "token ids [batch, pos] with pos >= 2")
  if int(batch_size) < 1:
    raise ConfigError(f"batch_size={batch_size}: must be at least 1")
  logits, probe = jax.eval_shape(lambda t: hooks.run(model_fn, t, capture=site),
                                 jnp.asarray(tokens[:1]))
  if len(logits.shape) != 3:
    raise ConfigError(f"model_fn returns shape {tuple(logits.shape)}; spliced_metrics needs "
                      "next-token logits [batch, pos, vocab]")
  _check_fits(sae, site, tuple(probe[site].shape), probe.axes[site])
  graphdef, state = nnx.split(sae)
  sums_fn = jax.jit(lambda state, t: _batch_sums(model_fn, nnx.merge(graphdef, state), site, t))
  parts = [jax.device_get(sums_fn(state, jnp.asarray(tokens[i:i + int(batch_size)])))
           for i in range(0, len(tokens), int(batch_size))]
  return _combine(parts, n_ce=tokens.size - len(tokens), n_kl=tokens.size)


def _combine(parts: list[dict], n_ce: int, n_kl: int) -> dict[str, float]:
  """The batches' sums as SAELens' means (float64), over ``n_ce`` predicted tokens, ``n_kl``
  positions and the activation rows each batch counts."""
  total = lambda key: float(sum(np.float64(p[key]) for p in parts))
  counts = [int(p["rows"]) for p in parts]
  n = sum(counts)
  mean = sum(c * np.asarray(p["mean"], np.float64) for c, p in zip(counts, parts)) / n
  m2 = sum(float(p["m2"]) + c * float(np.sum((np.asarray(p["mean"], np.float64) - mean) ** 2))
           for c, p in zip(counts, parts))
  clean, with_sae, zero = total("ce_clean") / n_ce, total("ce_sae") / n_ce, total("ce_zero") / n_ce
  kl_sae, kl_zero = total("kl_sae") / n_kl, total("kl_zero") / n_kl
  return {"ce_loss_score": ce_loss_score(clean, with_sae, zero) if zero > clean else float("nan"),
          "ce_loss_with_sae": with_sae, "ce_loss_without_sae": clean,
          "ce_loss_with_ablation": zero,
          "kl_div_score": (kl_zero - kl_sae) / kl_zero if kl_zero > 0 else float("nan"),
          "kl_div_with_sae": kl_sae, "kl_div_with_ablation": kl_zero,
          "l0": total("l0") / n, "explained_variance": 1.0 - total("resid") / max(m2, _EPS)}
