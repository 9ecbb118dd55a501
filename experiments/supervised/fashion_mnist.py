"""Supervised Fashion-MNIST (60k train / 10k test) from a local IDX directory.

Get the data with ``apt-get install dataset-fashion-mnist`` (Debian), which installs it under
/usr/share/datasets/fashion-mnist (the default here), or point ``dir=`` at MNIST-format files:

  superalign --config=experiments/supervised/fashion_mnist.py:dir=/path/to/idx
  superalign --config=experiments/supervised/fashion_mnist.py:model=cnn
"""

from superalign import config as config_lib

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False, model="mlp", dir=DEFAULT_DIR)
  c = config_lib.base()
  c.kind = "supervised"
  c.model.name = {"mlp": "mlp_base", "cnn": "cnn_base"}.get(args.model, args.model)
  c.data.name = f"idx:{args.dir}"
  c.data.splits = {"train": 0.9, "val": 0.1, "test": 1.0}  # test = the 10k official test set
  c.train.update(batch_size=128, eval_batch_size=1024, num_epochs=8, eval_every=500,
                 checkpoint_every=500, log_every=100)
  if args.smoke:
    c.data.limit = 1000
    config_lib.smoke_train(c, num_steps=20, every=10)
  return c
