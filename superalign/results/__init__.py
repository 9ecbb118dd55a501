"""What a run writes and reports, at the bottom of the house (it imports no other room): files
written so that nothing is lost, results.json and cached artefacts (``files``), the training
metric rows (``metrics``: metrics.jsonl and TensorBoard, which the engine's loop writes),
estimates in the one schema with their statistics and their one printed form (``estimates``),
and figures saved as files (``figures``)."""
