"""Mesh axis names and the default sharding rules, as plain data (no JAX: configs read them)."""

MESH_AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")

# logical parameter axis -> mesh axes it may be split over (first that fits wins).
LOGICAL_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("embed", ("fsdp",)),
    ("mlp", ("model",)),
    ("heads", ("model",)),
    ("vocab", ("model",)),
    ("conv_out", ("model",)),
)
LOGICAL_AXES = tuple(name for name, _ in LOGICAL_RULES)   # the names the models use
