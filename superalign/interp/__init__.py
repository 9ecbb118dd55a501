"""Interpretability: activation sites, patching, probes, CCS, sparse autoencoders, model organisms."""
