"""Sandwiching (Bowman et al. 2022) with models: a non-expert (the sparse-pixel judge) assisted
by a strong, possibly lying, assistant through advice, consultancy or debate, against the
expert's ground truth (``run.py``, ``kind = "sandwich"``)."""
