"""A module that imports a single-phase-init extension at top level: it
imports fine in the main interpreter but not in a sub-interpreter worker."""

import _testsinglephase  # noqa: F401  (the point of this module)


def task():
    return "should not run in a worker"
