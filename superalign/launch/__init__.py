"""What a run needs around the engine: the runner table and the one launch sequence
(``runners``), the checks before any work (``validation``), the workdir's claim, lock and results
(``workdir``), process set-up (``runtime``), and flags with their one-line errors (``flags``)."""
