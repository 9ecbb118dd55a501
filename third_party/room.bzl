"""room(): a package directory's one py_library, over every .py file in it and its subfolders.

A subfolder with a BUILD file of its own is a room of its own (glob() stops there). The
protocols are not rooms: //superalign:protocols globs them all (see superalign/BUILD).
"""

load("@rules_python//python:defs.bzl", "py_library")
load("@pypi//:requirements.bzl", "requirement")

# The engine rooms, which every protocol builds on (results, at the bottom, writes what a run
# reports).
ENGINE = ["//superalign/results", "//superalign/core", "//superalign/models", "//superalign/data"]

def pypi(*names):
    """requirement() of each name: pypi("jax", "numpy")."""
    return [requirement(name) for name in names]

def room(deps = []):
    py_library(
        name = native.package_name().rpartition("/")[2],
        srcs = native.glob(["**/*.py"]),
        deps = deps,
        visibility = ["//visibility:public"],
    )
