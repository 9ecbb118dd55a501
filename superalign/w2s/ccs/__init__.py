"""CCS as a weak-to-strong supervisor: its claims task (``claims.py``), the CCS supervisor on the
strong model's activations (``supervisor.py``), the results and table (``report.py``) and its
runner (``run.py``, ``kind = "w2s_ccs"``)."""
