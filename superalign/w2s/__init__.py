"""Weak-to-strong generalization (Burns et al. 2023): weak supervisors label data for stronger
students; the fraction of the weak-to-ceiling gap a student recovers is its PGR."""
