"""SAEs as the field shares them: SAELens' directory layout (``cfg.json`` +
``sae_weights.safetensors``) written from and read into ``interp.sae`` modules.

``export_saelens`` writes an SAE so that SAELens' ``SAE.load_from_disk`` reads it;
``load_saelens`` reads SAELens' own folders (``SAE.save_model``) and ours into a module.
"""

from __future__ import annotations

import json
import logging
import os

import jax.numpy as jnp
import numpy as np

from superalign.core import mesh as mesh_lib
from superalign.core.errors import ConfigError
from superalign.core.trainer import Trained
from superalign.interp.sae import (_EPS, ARCHITECTURES, Architecture, JumpReluSAE,
                                   SparseAutoencoder, TopKSAE, module)
from superalign.results.files import DamagedFileError, atomic_folder, read_guarded

log = logging.getLogger("superalign")
CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"


def weights(model: SparseAutoencoder) -> dict[str, np.ndarray]:
  """SAELens' tensors as stored: ``W_enc``, ``b_enc``, ``W_dec``, ``b_dec`` (+ ``threshold``)."""
  out = {"W_enc": model.W_enc[...], "b_enc": model.b_enc[...], "W_dec": model.W_dec[...],
         "b_dec": model.b_dec[...]}
  if isinstance(model, JumpReluSAE):
    out["threshold"] = model.threshold()
  out = mesh_lib.to_host(out)   # gathered when sharded over hosts: every process calls this
  return {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in out.items()}


def export_saelens(model: SparseAutoencoder | Trained, directory: str, *, hook_name: str = "",
                   model_name: str = "", hook_layer: int | None = None, overwrite: bool = False,
                   **metadata) -> str:
  """Writes ``cfg.json`` and ``sae_weights.safetensors`` in SAELens' v6 layout into
  ``directory``, a folder of its own (absent or empty); ``metadata`` adds SAELens metadata
  fields (``context_size``, ``dataset_path``, ...). A folder that already holds an export is
  refused unless ``overwrite``, which replaces it whole. Both files are written into a temporary
  folder that then takes ``directory``'s place: a reader sees the old export or the new one,
  never a mix or half a file. Across processes every process calls it, process 0 writes, and
  all return once it is written."""
  from safetensors.numpy import save_file
  if isinstance(model, Trained):
    model = module(model)
  _check_export_folder(directory, overwrite)
  tensors = weights(model)
  cfg = {"architecture": model.architecture, "d_in": model.d_in, "d_sae": model.width,
         "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
         "normalize_activations": "none", "reshape_activations": "none",
         "metadata": {"model_name": model_name or None, "hook_name": hook_name or None,
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


def _read_cfg(path: str) -> dict:
  """``cfg.json``, with the sizes a load needs checked."""
  with open(path) as f:
    cfg = json.load(f)
  if not isinstance(cfg, dict):
    raise DamagedFileError(f"{path}: holds a {type(cfg).__name__}, not an SAE config; {FIX_SAE}")
  sizes = {"d_in": cfg["d_in"], "d_sae": cfg["d_sae"]}
  if cfg.get("architecture") == "topk":
    sizes["k"] = _topk_k(cfg)
  for key, value in sizes.items():
    top = cfg["d_sae"] if key == "k" else None   # top-k picks at most every latent
    if type(value) is not int or value < 1 or (top is not None and value > top):
      raise DamagedFileError(f"{path}: {key}={value!r} is not a size"
                             + (" in [1, d_sae]" if top else "") + f"; {FIX_SAE}")
  return cfg


def _read_weights(path: str, names: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
  """The tensors ``names`` (name -> shape) of a safetensors file as stored, each checked for its
  shape, a floating dtype and finite values."""
  from safetensors.numpy import load_file
  open(path, "rb").close()   # a missing file as Python's OSError (safetensors' own is garbled)
  tensors = load_file(path)
  for name, shape in names.items():
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
  return {name: tensors[name] for name in names}


def _floating(dtype) -> bool:
  return dtype == jnp.bfloat16 or np.issubdtype(dtype, np.floating)


def _unit_tolerance(dtype) -> float:
  """How far from 1 a unit row's norm may be once stored in ``dtype``: each entry rounds by at
  most half its spacing, so the norm by at most ``eps / 2``; float32 files get 1e-4."""
  return max(1e-4, float(jnp.finfo(dtype).eps))


def load_saelens(directory: str) -> tuple[SparseAutoencoder, dict]:
  """``(module, cfg)`` from a SAELens directory (ours, or SAELens' own v6 or older flat cfg);
  every file read through ``read_guarded``, so a damaged one is one line naming it.

  Decoder rows whose norms are not 1 (within the stored dtype's rounding: a bfloat16 file's unit
  rows are off by up to 2^-8) are folded into the encoder (``fold_W_dec_norm``), exact for ReLU
  and JumpReLU; a TopK SAE needs unit rows (its selection is not scale-invariant). An all-zero
  decoder row (a latent that adds nothing to the reconstruction) folds to a latent that never
  fires, with a unit row, where SAELens' own fold would divide by zero.
  ``apply_b_dec_to_input: false`` is folded into ``b_enc``. No load gives a NaN weight.
  """
  cfg_path, weights_path = os.path.join(directory, CFG), os.path.join(directory, WEIGHTS)
  cfg = read_guarded(cfg_path, _read_cfg, FIX_SAE)
  kinds = {v: k for k, v in ARCHITECTURES.items()}
  arch = cfg.get("architecture", "standard")
  if arch not in kinds:
    raise ConfigError(f"{cfg_path}: architecture {arch!r}; readable: {', '.join(kinds)}")
  if cfg.get("normalize_activations", "none") not in ("none", False):
    raise ConfigError(f"{cfg_path}: normalize_activations={cfg['normalize_activations']!r}; "
                      "only 'none' is read (fold the scaling into the weights first)")
  kind, d_in, m = kinds[arch], cfg["d_in"], cfg["d_sae"]
  shapes = {"W_enc": (d_in, m), "b_enc": (m,), "W_dec": (m, d_in), "b_dec": (d_in,),
            **({"threshold": (m,)} if kind == "jumprelu" else {})}
  stored = read_guarded(weights_path, lambda p: _read_weights(p, shapes), FIX_SAE)
  t = {k: np.asarray(v, np.float64) for k, v in stored.items()}
  norms = np.linalg.norm(t["W_dec"], axis=1)
  tolerance = _unit_tolerance(stored["W_dec"].dtype)
  off = np.abs(norms - 1.0) > tolerance
  if off.any():
    row = int(np.argmax(np.abs(norms - 1.0)))
    if kind == "topk":
      raise ConfigError(
          f"{weights_path}: W_dec row {row} has norm {norms[row]:.6g} ({off.sum()} of {m} rows "
          f"are off 1 by more than {tolerance:g}, {stored['W_dec'].dtype} rounding); a topk SAE "
          "needs unit decoder rows (its top-k selection is not scale-invariant)")
    t = _fold_decoder_norms(t, norms)
  if not cfg.get("apply_b_dec_to_input", True):
    t["b_enc"] = t["b_enc"] + t["b_dec"] @ t["W_enc"]
  t = {k: v.astype(np.float32) for k, v in t.items()}
  overflow = [k for k, v in t.items() if not np.isfinite(v).all()]
  if overflow:
    raise ConfigError(f"{weights_path}: folding the decoder norms into {overflow[0]} leaves "
                      "float32's range; rescale the SAE's rows before loading it")
  sae = Architecture(kind=kind, width=m, k=_topk_k(cfg) if kind == "topk" else 1).make(d_in)
  for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
    getattr(sae, name)[...] = jnp.asarray(t[name])
  if kind == "jumprelu":
    sae.log_threshold[...] = jnp.log(jnp.maximum(jnp.asarray(t["threshold"]), _EPS))
  return sae, cfg


def _fold_decoder_norms(t: dict[str, np.ndarray], norms: np.ndarray) -> dict[str, np.ndarray]:
  """Unit decoder rows, their norms moved into the encoder: the same reconstruction, latents
  scaled by the norms. A zero row's latent scales to 0 (it never fires) and gets a unit row."""
  zero = norms == 0
  if zero.any():
    log.info("SAE load: %d latents have all-zero decoder rows; loaded as latents that never "
             "fire", zero.sum())
  t = dict(t)
  t["W_dec"] = np.where(zero[:, None], np.eye(1, t["W_dec"].shape[1]),
                        t["W_dec"] / np.where(zero, 1.0, norms)[:, None])
  t["W_enc"], t["b_enc"] = t["W_enc"] * norms, t["b_enc"] * norms
  if "threshold" in t:
    t["threshold"] = t["threshold"] * norms
  return t
