"""Formal verification: sound output bounds over input boxes (IBP, CROWN, CROWN-IBP,
alpha-CROWN), certified training as core losses, PGD, and certificates for oversight's models."""
