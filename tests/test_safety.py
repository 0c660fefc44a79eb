"""Sharing tests in safety-proof mode.  Each scenario of safety_scenarios.py
runs in its own subprocess with PYPARALLEL_SAFETY=1, so a hidden write into
frozen memory (which crashes in that mode) fails one test instead of
killing pytest."""

import os
import signal
import sys

import pytest

import support

SCRIPT = os.path.join(support.TESTS_DIR, "safety_scenarios.py")

sys.path.insert(0, support.TESTS_DIR)
import safety_scenarios  # noqa: E402  (only for the list of names)


@pytest.mark.parametrize("scenario", list(safety_scenarios.SCENARIOS))
def test_sharing_scenario_in_safety_mode(scenario):
    r = support.run([sys.executable, SCRIPT, scenario], safety=True, timeout=120)
    r.assert_clean_exit(0)
    assert "SCENARIO %s OK" % scenario in r.stdout, r.describe()


def _assert_killed_by_segv(r):
    assert "writing" in r.stdout, r.describe()
    assert "write went through" not in r.stdout, r.describe()
    if support.under_asan():
        # ASan turns SIGSEGV into a report and an abort
        assert r.returncode != 0 and "SEGV" in r.stderr, r.describe()
    else:
        assert r.returncode == -signal.SIGSEGV, r.describe()


def test_write_into_frozen_memory_crashes_in_safety_mode():
    r = support.run([sys.executable, SCRIPT, "write"], safety=True, timeout=60)
    _assert_killed_by_segv(r)


def test_configure_safety_true_protects_memory():
    r = support.run([sys.executable, SCRIPT, "write-configure"], safety=False, timeout=60)
    _assert_killed_by_segv(r)


def test_configure_safety_after_start_raises(tmp_path):
    r = support.run_code(tmp_path, """
        import pyparallel, tasks
        assert pyparallel.submit(tasks.inc, 1).result(timeout=60) == 2
        try:
            pyparallel.configure(safety=True)
        except RuntimeError as e:
            print("RuntimeError", e)
        # still usable afterwards, without safety
        print("result", pyparallel.submit(tasks.inc, 2).result(timeout=60))
        """, timeout=60)
    r.assert_clean_exit(0)
    assert "RuntimeError" in r.stdout
    assert "result 3" in r.stdout


def test_safety_mode_basic_api_works():
    """The ordinary API behaves the same in safety mode."""
    r = support.run([sys.executable, "-c", """
import sys; sys.path.insert(0, %r)
import pyparallel, tasks
f = pyparallel.freeze({"k": ["v", 1, 2.5, b"b"]})
assert pyparallel.submit(tasks.identity, f).result(timeout=60) is f
assert list(pyparallel.map(tasks.inc, range(100))) == list(range(1, 101))
try:
    pyparallel.submit(tasks.raise_value_error, "x").result(timeout=60)
except ValueError as e:
    assert e.args == ("x",)
try:
    f["k"] = 1
except TypeError:
    pass
else:
    raise AssertionError("mutation allowed")
print("basic ok")
""" % support.TESTS_DIR], safety=True, timeout=60)
    r.assert_clean_exit(0)
    assert "basic ok" in r.stdout
