"""Shared fixtures for the pyparallel suite.

tests/ has no __init__.py: pytest's default "prepend" import mode puts this
directory on sys.path, so test modules import the helper modules `tasks` and
`support` by name, and workers (which get the main interpreter's sys.path)
import `tasks` the same way.
"""

import faulthandler
import os
import sys

import pytest

import pyparallel

# A test that hangs kills the whole run (after dumping every thread's stack)
# instead of hanging CI forever.
PER_TEST_WATCHDOG_S = 150


@pytest.fixture(autouse=True)
def _watchdog():
    faulthandler.dump_traceback_later(PER_TEST_WATCHDOG_S, exit=True, file=sys.__stderr__)
    yield
    faulthandler.cancel_dump_traceback_later()


def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@pytest.fixture
def n_workers():
    """Worker count of the default pool when nothing was configured."""
    return cpu_count()


@pytest.fixture
def reset_default_pool():
    """For tests that shut down or reconfigure the default pool: leave it
    usable again with the default settings afterwards."""
    yield
    pyparallel.shutdown(wait=True)
    pyparallel.configure()


@pytest.fixture
def stopped_default_pool(reset_default_pool):
    """The default pool, shut down (so configure() may be called)."""
    pyparallel.shutdown(wait=True)
    pyparallel.configure()
    yield


RESULT_TIMEOUT = 60
