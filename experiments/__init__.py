"""Experiment configs, one file per experiment, grouped by kind (shipped with the package so the
launcher's embedded default works after a plain install)."""
