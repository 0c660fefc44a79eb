"""A module whose import fails inside workers only."""

import pyparallel

if pyparallel.is_parallel_context():
    raise RuntimeError("refusing to import in a worker")


def task():
    return "main only"
