"""Iterated amplification (Christiano, Shlegeris and Amodei 2018): five algorithmic tasks with their
overseer H, the episodes' encoding for the transformer, and amplification trained beside its
supervised baseline (``kind = "amplification"``)."""
