"""AI control (Greenblatt et al. 2023): an untrusted model U, a trusted weaker model T and an
auditor H; monitors, their combinations, protocols and the safety game under an audit budget
(``run.py``, ``kind = "control"``)."""
