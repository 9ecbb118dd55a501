"""SAELens interop (``interp.saelens``): folders both ways for each architecture, an SAE spliced
into a tiny GPT-2 against SAELens' ``HookedSAETransformer`` and its evals, the one-line refusals,
and the line a rerun into a finished SAE workdir says."""

from __future__ import annotations

import json
import logging
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conftest
from superalign.core.errors import ConfigError
from superalign.interp import hooks, sae, saelens, sae_latent

torch = pytest.importorskip("torch")
sae_lens = pytest.importorskip("sae_lens")

D_IN, D_SAE, K = 16, 40, 5
SITE = "blocks.1.resid_post"


def _saelens_sae(arch: str, seed: int = 0, training: bool = False, **fields):
  """A SAELens SAE of ``arch`` with random weights and free decoder norms (unit rows for an
  inference TopK SAE, which SAELens selects on unscaled pre-activations)."""
  from sae_lens.saes import gated_sae, jumprelu_sae, standard_sae, topk_sae
  classes = {"standard": (standard_sae.StandardSAE, standard_sae.StandardSAEConfig),
             "topk": (topk_sae.TopKSAE, topk_sae.TopKSAEConfig),
             "jumprelu": (jumprelu_sae.JumpReLUSAE, jumprelu_sae.JumpReLUSAEConfig),
             "gated": (gated_sae.GatedSAE, gated_sae.GatedSAEConfig)}
  if training:
    classes["topk"] = (topk_sae.TopKTrainingSAE, topk_sae.TopKTrainingSAEConfig)
  cls, cfg_cls = classes[arch]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    model = cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, **({"k": K} if arch == "topk" else {}), **fields))
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for _, p in model.named_parameters():
      p.copy_(0.3 * torch.randn(p.shape, generator=g))
    model.W_dec.mul_(torch.empty(D_SAE, 1).uniform_(0.2, 3.0, generator=g))
    if arch == "topk" and not model.cfg.rescale_acts_by_decoder_norm:
      model.W_dec.div_(model.W_dec.norm(dim=-1, keepdim=True))
    if arch == "jumprelu":
      model.threshold.copy_(torch.empty(D_SAE).uniform_(0.01, 0.3, generator=g))
  return model.eval()


def _x(seed=1, rows=64, d=D_IN):
  return torch.randn(rows, d, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5


def _assert_same_sae(ours, theirs, x):
  """``ours`` (jax) and ``theirs`` (torch) encode and reconstruct ``x`` alike."""
  with torch.no_grad():
    z, recon = theirs.encode(x).numpy(), theirs(x).numpy()
  xj = jnp.asarray(x.numpy())
  np.testing.assert_allclose(np.asarray(ours.encode(xj)), z, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(ours(xj)), recon, rtol=1e-5, atol=1e-5)
  assert (z > 0).sum() > 0 and (z == 0).sum() > 0   # the comparison sees both kinds of latent


@pytest.mark.parametrize("arch,apply_b_dec", [("standard", True), ("topk", True),
                                              ("jumprelu", False), ("gated", False)])
def test_saelens_saves_we_load(arch, apply_b_dec, tmp_path):
  """SAELens' ``save_model`` -> ``load_saelens``: the same function; the decoder norms (free here)
  are folded into the encoder as SAELens' own ``fold_W_dec_norm`` folds them."""
  theirs = _saelens_sae(arch, apply_b_dec_to_input=apply_b_dec)
  x = _x()
  with torch.no_grad():
    recon = theirs(x).numpy()
  theirs.save_model(str(tmp_path))
  ours, cfg = saelens.load_saelens(str(tmp_path))
  assert cfg["architecture"] == arch and ours.architecture == arch
  np.testing.assert_allclose(np.linalg.norm(np.asarray(ours.W_dec[...]), axis=1), 1, rtol=1e-5)
  if arch != "topk":   # SAELens refuses to fold a TopK SAE's norms (ours are unit already)
    theirs.fold_W_dec_norm()
  _assert_same_sae(ours, theirs, x)
  np.testing.assert_allclose(np.asarray(ours(jnp.asarray(x.numpy()))), recon, rtol=1e-5,
                             atol=1e-5)


def test_training_format_topk_folds_exactly(tmp_path):
  """A TopK training SAE's file (``rescale_acts_by_decoder_norm: true``, decoder rows of any
  norm) loads with its norms folded: the same latents and reconstruction, unit rows."""
  theirs = _saelens_sae("topk", training=True)
  norms = theirs.W_dec.detach().norm(dim=-1).numpy()
  assert norms.std() > 0.3   # far from unit rows
  theirs.save_model(str(tmp_path))
  cfg = json.loads((tmp_path / saelens.CFG).read_text())
  assert cfg["rescale_acts_by_decoder_norm"] is True
  ours, _ = saelens.load_saelens(str(tmp_path))
  assert isinstance(ours, sae.TopKSAE) and ours.k == K
  np.testing.assert_allclose(np.linalg.norm(np.asarray(ours.W_dec[...]), axis=1), 1, rtol=1e-5)
  _assert_same_sae(ours, theirs, _x())
  assert (np.asarray(ours.encode(jnp.asarray(_x().numpy()))) > 0).sum(-1).max() == K


def test_older_files_read_as_saelens_reads_them(tmp_path):
  """A pre-6 flat cfg names TopK by its activation function; an older JumpReLU checkpoint holds
  ``log_threshold`` in place of ``threshold``."""
  from safetensors.numpy import load_file, save_file
  theirs = _saelens_sae("topk")
  theirs.save_model(str(tmp_path / "topk"))
  (tmp_path / "topk" / saelens.CFG).write_text(json.dumps(
      {"d_in": D_IN, "d_sae": D_SAE, "activation_fn_str": "topk",
       "activation_fn_kwargs": {"k": K}, "hook_point": "blocks.0.hook_resid_pre"}))
  ours, cfg = saelens.load_saelens(str(tmp_path / "topk"))
  assert isinstance(ours, sae.TopKSAE) and ours.k == K
  assert saelens.site_of(cfg) == "blocks.0.resid_pre"
  _assert_same_sae(ours, theirs, _x())
  theirs = _saelens_sae("jumprelu")
  theirs.save_model(str(tmp_path / "jumprelu"))
  path = str(tmp_path / "jumprelu" / saelens.WEIGHTS)
  tensors = load_file(path)
  tensors["log_threshold"] = np.log(tensors.pop("threshold"))
  save_file(tensors, path)
  ours, _ = saelens.load_saelens(str(tmp_path / "jumprelu"))
  theirs.fold_W_dec_norm()
  _assert_same_sae(ours, theirs, _x())


def _ours(kind, seed=0):
  """One of our SAEs with random weights (unit decoder rows, as training keeps them)."""
  model = sae.Architecture(kind=kind, width=D_SAE, k=K).make(D_IN, seed)
  rng = np.random.default_rng(seed)
  for var in (model.W_enc, model.b_enc, model.b_dec):
    var[...] = jnp.asarray(0.3 * rng.standard_normal(var[...].shape), jnp.float32)
  sae.normalize_decoder(model)
  if kind == "jumprelu":
    model.log_threshold[...] = jnp.log(jnp.asarray(rng.uniform(0.01, 0.2, D_SAE), jnp.float32))
  return model


@pytest.mark.parametrize("kind", ["relu", "topk", "jumprelu", "gated"])
def test_we_export_saelens_loads(kind, tmp_path):
  """``export_saelens`` -> SAELens' ``SAE.load_from_disk``: the same function, and the site as
  TransformerLens' hook name (with its layer)."""
  from sae_lens import SAE
  if kind == "gated":   # gated SAEs come from SAELens: theirs -> ours -> export -> theirs
    _saelens_sae("gated", seed=3).save_model(str(tmp_path / "theirs"))
    ours = saelens.load_saelens(str(tmp_path / "theirs"))[0]
  else:
    ours = _ours(kind)
  saelens.export_saelens(ours, str(tmp_path / "export"), hook_name=SITE, model_name="tiny")
  cfg = json.loads((tmp_path / "export" / saelens.CFG).read_text())
  assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
  assert cfg["metadata"]["hook_layer"] == 1
  assert saelens.site_of(cfg) == SITE == saelens.site_of({"hook_point": "blocks.1.hook_resid_post"})
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    theirs = SAE.load_from_disk(str(tmp_path / "export"))
  assert theirs.cfg.architecture() == ours.architecture
  _assert_same_sae(ours, theirs, _x(seed=4))


# ---------------------------------------------------------------------------------------------
# Splicing into a tiny GPT-2


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
  """``(model_fn, hf, tokens)``: a random tiny GPT-2 (width 32, 2 layers, 4 heads) as our
  Transformer's LM forward, the transformers model, and 4 rows of 12 token ids."""
  path = tmp_path_factory.mktemp("gpt2")
  hf = conftest.save_tiny_gpt2(path)
  m = conftest.hf_model(str(path))
  model_fn = lambda x: m.lm_logits(m.hidden_states(x))
  # Text the model predicts (each next token its top choice after a random first one), so that
  # its clean loss is low and zeroing a site raises it, as on real text.
  # Causal: a position's logits read no later token, so one jitted shape serves every step.
  tokens = np.zeros((4, 12), np.int32)
  tokens[:, 0] = np.random.default_rng(0).integers(0, 300, 4)
  forward = jax.jit(model_fn)
  for pos in range(11):
    tokens[:, pos + 1] = np.asarray(forward(jnp.asarray(tokens))[:, pos]).argmax(-1)
  return model_fn, hf, tokens


@pytest.fixture(scope="module")
def peer(gpt2):
  """SAELens' ``HookedSAETransformer`` with the tiny GPT-2's weights."""
  from sae_lens import HookedSAETransformer
  return conftest.transformer_lens_model(gpt2[1], cls=HookedSAETransformer)


def _signed_topk(d: int, k: int) -> sae.TopKSAE:
  """A TopK SAE over ``[x, -x]`` (``W_enc = [I, -I]``, unit decoder rows ``[I; -I]``): it keeps
  each row's ``k`` largest coordinates by magnitude, a reconstruction good but not perfect."""
  model = sae.Architecture(kind="topk", width=2 * d, k=k).make(d)
  eye = np.eye(d, dtype=np.float32)
  model.W_enc[...] = jnp.asarray(np.concatenate([eye, -eye], 1))
  model.W_dec[...] = jnp.asarray(np.concatenate([eye, -eye], 0))
  model.b_enc[...] = jnp.zeros(2 * d)
  model.b_dec[...] = jnp.zeros(d)
  return model


@pytest.fixture(scope="module")
def spliced(gpt2, peer, tmp_path_factory):
  """Our SAE on ``blocks.1.resid_post``, its export loaded by SAELens, and our metrics."""
  from sae_lens import SAE
  model_fn, _, tokens = gpt2
  ours = _signed_topk(32, 12)
  folder = str(tmp_path_factory.mktemp("spliced") / "sae")
  saelens.export_saelens(ours, folder, hook_name=SITE)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    theirs = SAE.load_from_disk(folder)
  # two jitted batches of 2 rows, combined
  metrics = saelens.spliced_metrics(model_fn, ours, "blocks.1.hook_resid_post", tokens,
                                    batch_size=2)
  return ours, theirs, metrics


@pytest.fixture(scope="module")
def runs(gpt2, spliced):
  """Our model on the tokens, jitted once: the clean logits, the site's activation, and the
  logits with the SAE spliced in and with the site zeroed."""
  model_fn, _, tokens = gpt2
  model = spliced[0]

  def forward(t):
    clean, captured = hooks.run(model_fn, t, capture=SITE)
    return {"without_sae": clean, "x": captured[SITE],
            "with_sae": hooks.run(model_fn, t, interventions={SITE: saelens.splice(model)})[0],
            "with_ablation": hooks.run(model_fn, t, interventions={SITE: hooks.zero()})[0]}
  return {k: np.asarray(v, np.float64) for k, v in jax.jit(forward)(jnp.asarray(tokens)).items()}


def test_add_sae_spliced_logits_equal_ours(gpt2, peer, spliced, runs):
  """SAELens' ``HookedSAETransformer.add_sae`` attaches our export where its metadata says, and
  its spliced logits are ours."""
  _, _, tokens = gpt2
  peer.add_sae(spliced[1])
  try:
    with torch.no_grad():
      got = peer(torch.as_tensor(tokens, dtype=torch.long)).numpy()
  finally:
    peer.reset_saes()
  np.testing.assert_allclose(got, runs["with_sae"], atol=1e-4, rtol=1e-4)
  assert np.abs(runs["with_sae"] - runs["without_sae"]).max() > 1e-2   # the splice changed them


class _Tokens:
  """The one method of SAELens' ActivationsStore its evals call."""

  def __init__(self, tokens):
    self.tokens = tokens

  def get_batch_tokens(self, n):
    return self.tokens[:n]


def test_spliced_metrics_equal_saelens_evals(gpt2, peer, spliced):
  """``spliced_metrics`` against SAELens' ``evals`` on the same model, SAE and tokens."""
  from sae_lens import evals
  from sae_lens.training.activation_scaler import ActivationScaler
  _, _, tokens = gpt2
  _, theirs, ours = spliced
  t = torch.as_tensor(tokens, dtype=torch.long)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    recons = evals.get_recons_loss(theirs, peer, ActivationScaler(), t, compute_kl=True,
                                   compute_ce_loss=True)
    sparsity, _ = evals.get_sparsity_and_variance_metrics(
        theirs, peer, _Tokens(t), ActivationScaler(), n_batches=1, compute_l2_norms=False,
        compute_sparsity_metrics=True, compute_variance_metrics=True,
        compute_featurewise_density_statistics=False, eval_batch_size_prompts=len(tokens),
        model_kwargs={})
  for key in ("ce_loss_with_sae", "ce_loss_without_sae", "ce_loss_with_ablation",
              "kl_div_with_sae", "kl_div_with_ablation"):
    assert ours[key] == pytest.approx(float(recons[key].mean()), rel=1e-4, abs=1e-5), key
  assert ours["l0"] == pytest.approx(sparsity["l0"], rel=1e-6)
  assert ours["explained_variance"] == pytest.approx(sparsity["explained_variance"], abs=1e-5)


def test_spliced_metrics_sane_and_equal_a_direct_computation(gpt2, spliced, runs):
  """The metrics computed here in NumPy from the (jitted once, unbatched) logits and activations:
  the batches combine exactly."""
  _, _, tokens = gpt2
  model, _, got = spliced
  logp = {k: runs[k] - np.log(np.exp(runs[k]).sum(-1, keepdims=True))
          for k in ("without_sae", "with_sae", "with_ablation")}
  ce = {k: -np.take_along_axis(v[:, :-1], tokens[:, 1:, None], -1).mean() for k, v in logp.items()}
  p = np.exp(logp["without_sae"])
  kl = {k: (p * (logp["without_sae"] - logp[k])).sum(-1).mean()
        for k in ("with_sae", "with_ablation")}
  x = runs["x"].reshape(-1, 32)
  z = np.asarray(model.encode(jnp.asarray(x, jnp.float32)))
  x_hat = np.asarray(model(jnp.asarray(x, jnp.float32)), np.float64)
  want = {"ce_loss_without_sae": ce["without_sae"], "ce_loss_with_sae": ce["with_sae"],
          "ce_loss_with_ablation": ce["with_ablation"],
          "ce_loss_score": (ce["with_ablation"] - ce["with_sae"])
                           / (ce["with_ablation"] - ce["without_sae"]),
          "kl_div_with_sae": kl["with_sae"], "kl_div_with_ablation": kl["with_ablation"],
          "kl_div_score": 1 - kl["with_sae"] / kl["with_ablation"],
          "l0": (z != 0).sum(-1).mean(),
          "explained_variance": 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()}
  assert set(got) == set(want)
  for key, value in want.items():
    assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
  # sane: 12 of 32 coordinates kept, a partial reconstruction, the loss between clean and zeroed
  assert got["l0"] == 12
  assert 0.3 < got["explained_variance"] < 1
  assert got["ce_loss_without_sae"] < got["ce_loss_with_sae"] < got["ce_loss_with_ablation"]
  assert 0 < got["ce_loss_score"] < 1 and 0 < got["kl_div_score"] < 1


def test_splice_reads_every_head_of_a_hook_z_activation():
  """A ``hook_z`` SAE (``d_in`` = heads x head_dim) reconstructs a ``[batch, pos, head,
  head_dim]`` activation with its heads flattened, as SAELens splices it."""
  model = _ours("relu")
  z = jnp.asarray(_x(rows=6).numpy().reshape(2, 3, 4, 4))
  np.testing.assert_allclose(np.asarray(saelens.splice(model)(z)),
                             np.asarray(model(z.reshape(2, 3, 16))).reshape(2, 3, 4, 4),
                             rtol=1e-6, atol=1e-6)
  with pytest.raises(hooks.HookError) as e:
    saelens.splice(model)(z[..., :3])
  conftest.one_line(e, "d_in=16", "(2, 3, 4, 3)")


# ---------------------------------------------------------------------------------------------
# One-line refusals


def test_a_d_in_that_does_not_fit_the_site_is_one_line(gpt2):
  model_fn, _, tokens = gpt2
  with pytest.raises(hooks.HookError) as e:
    saelens.spliced_metrics(model_fn, _ours("relu"), SITE, tokens)
  conftest.one_line(e, "d_in=16", repr(SITE), "width 32")
  with pytest.raises(hooks.HookError) as e:
    saelens.spliced_metrics(model_fn, _ours("relu"), "blocks.7.resid_post", tokens)
  conftest.one_line(e, "'blocks.7.resid_post'", "blocks.<0..1>.resid_post")


def _save(folder, cfg_change=None):
  """A SAELens standard SAE saved into ``folder``, its cfg edited by ``cfg_change``."""
  _saelens_sae("standard").save_model(str(folder))
  if cfg_change:
    cfg = json.loads((folder / saelens.CFG).read_text())
    cfg_change(cfg)
    (folder / saelens.CFG).write_text(json.dumps(cfg))
  return str(folder)


@pytest.mark.parametrize("change,parts", [
    (lambda c: c.update(architecture="matching_pursuit"),
     ["architecture 'matching_pursuit'", "readable: standard, topk, jumprelu, gated"]),
    (lambda c: c.update(normalize_activations="layer_norm"),
     ["normalize_activations='layer_norm'", "per-row"]),
    (lambda c: c.update(normalize_activations="covariance_whitening"),
     ["normalize_activations='covariance_whitening'", "whitening"]),
    (lambda c: c.update(normalize_activations="expected_average_only_in"),
     ["normalize_activations='expected_average_only_in'", "norm_scaling_factor="]),
    (lambda c: c.update(reshape_activations="hook_q"), ["reshape_activations='hook_q'"]),
], ids=["architecture", "layer_norm", "whitening", "scale without factor", "reshape"])
def test_what_cannot_be_read_exactly_is_one_line(change, parts, tmp_path):
  folder = _save(tmp_path, change)
  with pytest.raises(ConfigError) as e:
    saelens.load_saelens(folder)
  conftest.one_line(e, saelens.CFG, *parts)


def test_expected_average_scaling_folds_with_its_factor(tmp_path):
  """``expected_average_only_in`` with ``norm_scaling_factor``: SAELens' own fold
  (``fold_activation_norm_scaling_factor``) computes the same reconstruction of raw inputs."""
  theirs = _saelens_sae("jumprelu", apply_b_dec_to_input=False,
                        normalize_activations="expected_average_only_in")
  theirs.save_model(str(tmp_path))
  with pytest.raises(ConfigError) as e:
    saelens.load_saelens(str(tmp_path), norm_scaling_factor=-1.0)
  conftest.one_line(e, "norm_scaling_factor=-1.0")
  ours, _ = saelens.load_saelens(str(tmp_path), norm_scaling_factor=2.5)
  theirs.fold_activation_norm_scaling_factor(2.5)
  x = _x(seed=5) / 2.5
  with torch.no_grad():
    want = theirs(x).numpy()
  np.testing.assert_allclose(np.asarray(ours(jnp.asarray(x.numpy()))), want, rtol=1e-5, atol=1e-5)
  with pytest.raises(ConfigError) as e:   # a factor for an SAE that reads raw activations
    saelens.load_saelens(_save(tmp_path / "plain"), norm_scaling_factor=2.5)
  conftest.one_line(e, "norm_scaling_factor=2.5", "normalize_activations='none'")


# ---------------------------------------------------------------------------------------------
# A rerun into a finished workdir


def test_a_rerun_into_a_finished_sae_says_so(tmp_path, caplog):
  spec = sae.SAE_SPEC.with_train(batch_size=32, eval_batch_size=64, num_steps=3, log_every=1,
                                 checkpoint_every=0)
  arch = sae.Architecture(kind="relu", width=8, l1_coefficient=0.1)
  acts = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
  first = sae.train_sae(spec, arch, acts, workdir=str(tmp_path))
  assert sae_latent.resumed(first) == {"resumed_from_step": None, "resumed_finished": False}
  with caplog.at_level(logging.INFO, logger="superalign"):
    again = sae.train_sae(spec, arch, acts, workdir=str(tmp_path))
  assert again.fit.resumed_from == 3
  assert "sae: resumed a finished run at step 3 of 3; nothing to train" in caplog.text
  assert sae_latent.resumed(again) == {
      "resumed_from_step": 3, "resumed_finished": True,
      "training": "resumed a finished SAE at step 3 of 3; nothing to train"}
