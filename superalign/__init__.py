"""superalign: a JAX framework for superalignment research."""

__version__ = "0.1.0"
