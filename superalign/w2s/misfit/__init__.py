"""Gain versus misfit (Charikar et al. 2024): its theory (``theory.py``) and its runner
(``run.py``, ``kind = "w2s_misfit"``)."""
