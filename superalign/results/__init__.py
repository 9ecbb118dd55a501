"""What a run reports and keeps, below every protocol: estimates in the one schema with their
statistics and their one printed form (``estimates``), figures saved as files (``figures``), and
results and artefacts written to the workdir (``artefacts``). No JAX in the estimates."""
