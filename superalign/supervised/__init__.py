"""Supervised classification: the base protocol that the others build on."""
