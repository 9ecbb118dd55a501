"""The functional engine: mesh and shardings, TrainState, jitted steps, fit loop, checkpoints."""
