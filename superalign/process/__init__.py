"""Process supervision: step-by-step policies, outcome and process reward models, best-of-N."""
