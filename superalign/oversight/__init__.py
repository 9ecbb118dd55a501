"""Scalable oversight by debate (Irving et al. 2018) on sparse-pixel images: the game, its
players (random, greedy, MCTS), the protocols (judge alone, consultancy, debate) and their
evaluation (``run.py``, ``kind = "debate"``)."""
