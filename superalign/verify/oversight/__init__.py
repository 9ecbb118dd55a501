"""Certificates for the models oversight relies on (``kind = "verify_oversight"``): debate's
sparse-pixel judge (``judge``) and a backdoored organism beside its clean twin (``backdoor``)."""
