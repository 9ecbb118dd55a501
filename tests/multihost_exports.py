"""``python tests/multihost_exports.py COORDINATOR PROCESS_ID CHECKPOINT OUT``: one of two
processes that export together: a GPT-2 checkpoint whose parameters are sharded over both hosts
(``hf_gpt2.save``), a sparse autoencoder held whole and sharded (``saelens.export_saelens``) and an
activation store (``activations.write_store``), all into OUT. Every process then reads each one
back and checks it bitwise, and a save that fails on process 0 raises on both;
``test_multihost`` checks that process 1 wrote nothing there."""

import os
import sys

import numpy as np

from superalign.launch import runtime


def main() -> None:
  coordinator, process_id, checkpoint, out = sys.argv[1:5]
  runtime.initialize_distributed(coordinator, 2, int(process_id))
  import jax
  from flax import nnx
  from jax.sharding import NamedSharding, PartitionSpec as P

  from superalign.core import mesh as mesh_lib
  from superalign.interp import activations, sae, saelens
  from superalign.models import hf_gpt2

  mesh = mesh_lib.make_mesh({"fsdp": 2})
  host = hf_gpt2.load(checkpoint)
  # Every tensor with an even first axis is split between the two hosts: no process holds it.
  shardings = jax.tree.map(
      lambda x: NamedSharding(mesh, P("fsdp") if x.shape[0] % 2 == 0 else P()), host)
  placed = hf_gpt2.place(host, shardings)
  assert not placed["embed"]["embedding"].is_fully_addressable
  hf_gpt2.save(os.path.join(out, "gpt2"), placed, hf_gpt2.read_config(checkpoint))
  want, got = hf_gpt2.read_tensors(checkpoint), hf_gpt2.read_tensors(os.path.join(out, "gpt2"))
  assert want.keys() == got.keys() and all(want[k].tobytes() == got[k].tobytes() for k in want)

  with nnx.use_eager_sharding(False):   # one whole copy per process, alike: nothing to gather
    model = sae.ReluSAE(8, 16, l1_coefficient=1e-3, rngs=nnx.Rngs(0))
  saelens.export_saelens(model, os.path.join(out, "sae"), hook_name="blocks.0.resid_post")
  from safetensors.numpy import load_file
  written = load_file(os.path.join(out, "sae", saelens.WEIGHTS))
  want = saelens.weights(model)    # whole: each process's copy, not the two concatenated
  assert written.keys() == want.keys()
  assert all(written[k].tobytes() == want[k].tobytes() for k in want)
  assert saelens.load_saelens(os.path.join(out, "sae"))[1]["d_sae"] == 16

  # The same SAE with every parameter split between the hosts (as a run on an fsdp mesh holds
  # it): the export gathers it, and writes what the whole copy wrote.
  split = lambda x: jax.make_array_from_callback(
      x.shape, NamedSharding(mesh, P("fsdp") if x.shape[0] % 2 == 0 else P()),
      lambda index, x=np.asarray(x): x[index])
  nnx.update(model, jax.tree.map(split, nnx.state(model, nnx.Param)))
  assert not model.W_enc[...].is_fully_addressable
  saelens.export_saelens(model, os.path.join(out, "sae_sharded"), hook_name="blocks.0.resid_post")
  again = load_file(os.path.join(out, "sae_sharded", saelens.WEIGHTS))
  assert all(again[k].tobytes() == want[k].tobytes() for k in want)

  rows = np.arange(40, dtype=np.float32).reshape(20, 2)
  store = activations.write_store(os.path.join(out, "acts"), rows, "resid", shard_rows=6)
  assert store.array().tobytes() == rows.tobytes() and len(store.shards) == 4
  # A write that fails on process 0 (a directory under a file) raises on both, hangs neither.
  try:
    hf_gpt2.save(os.path.join(out, "acts", "index.json", "gpt2"), placed,
                 hf_gpt2.read_config(checkpoint))
  except Exception as e:
    raised = type(e).__name__
  else:
    raised = None
  assert raised == ("RuntimeError" if jax.process_index() else "NotADirectoryError"), raised

  # Each process's own file beside OUT: proof, in process 1's audit log, that the hook records.
  with open(os.path.join(os.path.dirname(out), f"done-{jax.process_index()}"), "w") as f:
    f.write("ok\n")
  print(f"exports OK in process {jax.process_index()}")


if __name__ == "__main__":
  main()
