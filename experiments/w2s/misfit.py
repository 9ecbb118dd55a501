"""Gain vs misfit (Charikar, Pabbaraju, Shiragur 2024), their synthetic regression at small scale.

x ~ N(0, 500^2 I_8); target h* = a random 5-layer ReLU MLP of width 16 with linear heads; an
8-layer strong and a 2-layer weak MLP pretrained on 10 tasks through the frozen true heads; then
100 new tasks: weak head by least squares on 2000 ground-truth points, student head by least
squares on the weak labels of the same points; gain and misfit on fresh test points.

  superalign --config=experiments/w2s/misfit.py --workdir=/tmp/misfit         # ~1-2 min on CPU
  superalign --config=experiments/w2s/misfit.py:smoke                        # seconds
  superalign --config=experiments/w2s/misfit.py --config.misfit.ridge=0.01   # ridge heads
"""

import ml_collections

from superalign import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False, tasks=100, points=2000)
  c = config_lib.base()
  c.kind = "w2s_misfit"
  del c["data"], c["model"]       # the runner draws its own Gaussian inputs and builds its MLPs

  c.misfit = ml_collections.ConfigDict()
  m = c.misfit
  m.input_dim = 8
  m.input_scale = 500.0           # x ~ N(0, input_scale^2 I); networks read x / input_scale
  m.rep_dim = 16                  # width of h* and output width of every representation
  m.target_depth = 5
  m.target_bias_std = 0.1         # h*'s random biases (kernels He-normal)
  m.strong_depth = 8
  # Hidden width of the strong MLP. Measured: at width 16 the 8-layer net fits the 10
  # pretraining tasks (relative MSE 0.06) but its features collapse onto what those heads read,
  # so on new tasks it is worse than the weak model (strong ceiling 0.72 vs weak 0.15) and
  # gain ~= -misfit; at width 64 it is a strong model (ceiling 0.036).
  m.strong_width = 64
  m.weak_depth = 2
  m.weak_width = 16
  m.num_pretrain_tasks = 10
  m.num_pretrain_points = 20000
  m.num_val_points = 2048         # held-out points scoring pretraining (relative MSE)
  m.num_tasks = args.tasks        # new heads for the weak-to-strong stage
  m.num_points = args.points      # ground-truth points for the weak head = weak-labelled points
  m.num_test_points = 20000       # fresh points on which gain and misfit are measured
  m.ridge = 0.0                   # 0: exact least squares heads
  m.tol_sigmas = 3.0              # sampling tolerance on gain >= misfit, in standard errors

  c.optim.name = "adam"
  c.optim.learning_rate = 3e-3
  c.optim.schedule = "cosine"
  c.optim.clip_norm = 0.0
  # Pretraining the representations (batch 256); features are extracted 1024 at a time.
  c.train.update(batch_size=256, eval_batch_size=1024, num_epochs=0, num_steps=4000,
                 eval_every=1000, log_every=500, checkpoint_every=2000)
  if args.smoke:
    m.num_pretrain_points = 4096
    m.num_val_points = 512
    m.num_tasks = min(args.tasks, 20)
    m.num_points = min(args.points, 500)
    m.num_test_points = 4096
    config_lib.smoke_train(c, num_steps=200, every=100)
  return c
