"""The main of every py_test in tests/BUILD: runs pytest on the test files given as arguments.

Bazel runs a py_test's main as a script. This hands over to pytest so that fixtures, marks and
tests/conftest.py behave as under a plain ``pytest`` run; setup.cfg (with its ``[tool:pytest]``
section, which leaves out ``slow`` tests) comes in as data. It also honours Bazel's test
environment: ``XML_OUTPUT_FILE`` gets a JUnit report and ``--test_filter`` becomes ``-k``.
"""

from __future__ import annotations

import os
import sys

import pytest


def main(argv: list[str]) -> int:
  args = ["-p", "no:cacheprovider", *argv]  # runfiles are read-only
  if os.environ.get("XML_OUTPUT_FILE"):
    args.append(f"--junitxml={os.environ['XML_OUTPUT_FILE']}")
  if os.environ.get("TESTBRIDGE_TEST_ONLY"):
    args += ["-k", os.environ["TESTBRIDGE_TEST_ONLY"]]
  return int(pytest.main(args))


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
