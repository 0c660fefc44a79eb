"""How workers find code: modules by name, the main script like
multiprocessing's spawn, modules that refuse sub-interpreters, stdlib."""

import importlib.util
import re
import sys

import pytest

import pyparallel
from pyparallel import Executor, WorkerImportError

import support
import tasks

T = 60
SUBINTERP_MSG = re.compile(r"sub-?interpreter", re.I)


# --------------------------------------------------------------------------
# the main script


MAIN_SCRIPT = """
import os, sys
import pyparallel

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "import.log"), "a") as f:
    f.write("import parallel=%s name=%s\\n" % (pyparallel.is_parallel_context(), __name__))

FACTOR = 7


def work(x):
    return x * FACTOR


class Thing:
    def __init__(self, v):
        self.v = v


def unwrap(thing):
    return ("unwrapped", thing.v)


def make_thing(v):
    return Thing(v)


def boom():
    raise ValueError("boom in main-script function")


if __name__ == "__main__":
    with open(os.path.join(HERE, "main.marker"), "a") as f:
        f.write("main ran\\n")
    print("MAIN-RAN")
    print("map", list(pyparallel.map(work, range(5))))
    print("submit", pyparallel.submit(work, 3).result(timeout=60))
    print("pickled-arg", pyparallel.submit(unwrap, Thing(5)).result(timeout=60))
    t = pyparallel.submit(make_thing, 9).result(timeout=60)
    print("pickled-result", type(t).__name__, t.v, type(t) is Thing)
    try:
        pyparallel.submit(boom).result(timeout=60)
    except ValueError as e:
        print("error", e, "boom" in str(e.__cause__))
"""


def _check_main_script_run(r, tmp_path):
    r.assert_clean_exit(0)
    out = r.stdout
    assert out.count("MAIN-RAN") == 1, r.describe()
    assert "map [0, 7, 14, 21, 28]" in out
    assert "submit 21" in out
    assert "pickled-arg ('unwrapped', 5)" in out
    assert "pickled-result Thing 9 True" in out
    assert "error boom in main-script function True" in out
    # the guarded block ran once, in the main process only
    assert (tmp_path / "main.marker").read_text() == "main ran\n"
    log = (tmp_path / "import.log").read_text().splitlines()
    assert log[0] == "import parallel=False name=__main__"
    for line in log[1:]:
        assert line.startswith("import parallel=True"), log
        assert not line.endswith("name=__main__"), log


def test_functions_of_the_main_script(tmp_path):
    path = support.write_script(tmp_path, MAIN_SCRIPT, preamble=False)
    r = support.run([sys.executable, path], timeout=60, cwd=str(tmp_path))
    _check_main_script_run(r, tmp_path)


def test_functions_of_a_main_module_run_with_dash_m(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "runner.py").write_text(MAIN_SCRIPT.replace(
        "HERE = os.path.dirname(os.path.abspath(__file__))",
        "HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))"))
    r = support.run([sys.executable, "-m", "mypkg.runner"], timeout=60, cwd=str(tmp_path))
    _check_main_script_run(r, tmp_path)


def test_functions_of_a_test_module_under_pytest(tmp_path):
    """A test file that submits a function defined in itself, run by pytest
    (the worker imports the test module by name)."""
    (tmp_path / "test_user_code.py").write_text(
        "import pyparallel\n"
        "def double(x):\n"
        "    return 2 * x\n"
        "def test_double():\n"
        "    assert pyparallel.submit(double, 21).result(timeout=60) == 42\n"
        "    assert list(pyparallel.map(double, range(3))) == [0, 2, 4]\n")
    r = support.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                     "test_user_code.py"], timeout=90, cwd=str(tmp_path))
    r.assert_clean_exit(0)
    assert "1 passed" in r.stdout


def test_main_script_guarded_by_is_parallel_context(tmp_path):
    """A script with no __main__ guard that submits at top level must not
    fork-bomb: workers importing it must not submit again, recursively."""
    path = support.write_script(tmp_path, """
        import os, pyparallel
        HERE = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(HERE, "count.log"), "a") as f:
            f.write("x\\n")
        def work(x):
            return x + 1
        if not pyparallel.is_parallel_context():
            print("result", pyparallel.submit(work, 1).result(timeout=60))
        """, preamble=False)
    r = support.run([sys.executable, path], timeout=60, cwd=str(tmp_path))
    r.assert_clean_exit(0)
    assert "result 2" in r.stdout


def test_main_script_that_fails_to_import_in_workers(tmp_path):
    """Top-level code of the main script that raises in workers: tasks from
    the script fail with that error (no hang), other tasks still work."""
    path = support.write_script(tmp_path, """
        import json, pyparallel
        if pyparallel.is_parallel_context():
            raise RuntimeError("no workers please")
        def work(x):
            return x + 1
        if __name__ == "__main__":
            for _ in range(2):
                try:
                    pyparallel.submit(work, 1).result(timeout=60)
                except Exception as e:
                    print("error:", type(e).__name__, e, e.__cause__)
            print("json", pyparallel.submit(json.dumps, [1]).result(timeout=60))
        """, preamble=False)
    r = support.run([sys.executable, path], timeout=60, cwd=str(tmp_path))
    r.assert_clean_exit(0)
    assert r.stdout.count("no workers please") >= 2, r.describe()
    assert "json [1]" in r.stdout


# --------------------------------------------------------------------------
# module state


def test_workers_have_their_own_module_state():
    tasks.SINK.clear()
    assert pyparallel.submit(tasks.append_to_sink, "in worker").result(timeout=T) >= 1
    assert tasks.SINK == []


def test_module_state_persists_on_a_worker():
    with Executor(max_workers=1) as ex:
        first = ex.submit(tasks.bump).result(timeout=T)
        assert [ex.submit(tasks.bump).result(timeout=T) for _ in range(3)] == \
            [first + 1, first + 2, first + 3]


def test_pyparallel_imports_in_every_worker():
    assert pyparallel.submit(tasks.module_loaded, "pyparallel").result(timeout=T) is True


# --------------------------------------------------------------------------
# modules that refuse sub-interpreters


REFUSED = [m for m in ("_testsinglephase", "readline")
           if importlib.util.find_spec(m) is not None]


@pytest.mark.parametrize("name", REFUSED)
def test_module_refusing_subinterpreters(name):
    fut = pyparallel.submit(tasks.import_module, name)
    with pytest.raises(WorkerImportError) as ei:
        fut.result(timeout=T)
    msg = str(ei.value)
    assert isinstance(ei.value, ImportError)
    assert name in msg
    assert SUBINTERP_MSG.search(msg), msg
    assert len(msg) > len("module %s does not support loading in subinterpreters" % name), \
        "the message should say what to do: " + msg
    # the worker survives
    assert pyparallel.submit(tasks.add, 1, 2).result(timeout=T) == 3


def test_callable_module_imports_a_refused_module():
    pytest.importorskip("_testsinglephase")
    import uses_singlephase

    assert uses_singlephase.task() == "should not run in a worker"
    fut = pyparallel.submit(uses_singlephase.task)
    with pytest.raises(WorkerImportError) as ei:
        fut.result(timeout=T)
    assert "_testsinglephase" in str(ei.value)
    assert SUBINTERP_MSG.search(str(ei.value))
    assert pyparallel.submit(tasks.add, 1, 2).result(timeout=T) == 3


def test_callable_module_fails_to_import_in_worker():
    import fails_in_worker

    assert fails_in_worker.task() == "main only"
    for _ in range(2):  # a failed import is not cached as a half module
        fut = pyparallel.submit(fails_in_worker.task)
        with pytest.raises(Exception) as ei:
            fut.result(timeout=T)
        text = str(ei.value) + str(ei.value.__cause__)
        assert "refusing to import in a worker" in text, text
    assert pyparallel.submit(tasks.add, 1, 2).result(timeout=T) == 3


def test_missing_module_in_worker():
    fut = pyparallel.submit(tasks.import_module, "no_such_module_pyparallel_test")
    with pytest.raises(ImportError):
        fut.result(timeout=T)


# --------------------------------------------------------------------------
# the standard library in workers


@pytest.mark.parametrize("name", sorted(tasks.STDLIB_PROBES))
def test_stdlib_module_in_worker(name):
    expected = tasks.import_and_check(name)
    assert pyparallel.submit(tasks.import_and_check, name).result(timeout=T) == expected


# What README.md's table promises for the modules tested in a subprocess:
# True = imports and works in a worker, False = WorkerImportError.
PY312 = sys.version_info[:2] == (3, 12)
EXIT_SENSITIVE_EXPECTED = {
    "hashlib": True,
    "hmac": True,
    "secrets": True,
    "http.client": True,
    "asyncio": True,
    "mmap": True,
    "xml.etree.ElementTree": True,
    "ssl": not PY312,
    "ctypes": not PY312,
    "xml.parsers.expat": not PY312,
    "zoneinfo": True,  # 3.12: pure-Python fallback (pyparallel blocks _zoneinfo)
    "readline": False,
    "curses": False,
}

IMPORT_IN_WORKER_SCRIPT = """
    import sys, pyparallel, tasks
    name = sys.argv[1]
    expected = tasks.import_and_check(name)      # in main first
    try:
        got = pyparallel.submit(tasks.import_and_check, name).result(timeout=60)
    except pyparallel.WorkerImportError as e:
        print("REFUSED", e)
    else:
        print("WORKS", got == expected, got)
    print("after", pyparallel.submit(tasks.add, 1, 2).result(timeout=60))
"""


@pytest.mark.parametrize("name", sorted(EXIT_SENSITIVE_EXPECTED))
def test_stdlib_module_in_worker_then_exit(tmp_path, name):
    if importlib.util.find_spec(name.split(".")[0]) is None:
        pytest.skip("%s is not built in this Python" % name)
    r = support.run_code(tmp_path, IMPORT_IN_WORKER_SCRIPT, args=(name,), timeout=90)
    r.assert_clean_exit(0)
    assert "after 3" in r.stdout, r.describe()
    if EXIT_SENSITIVE_EXPECTED[name]:
        assert "WORKS True" in r.stdout, r.describe()
    else:
        # WorkerImportError, with a message that says why and what to do
        assert "REFUSED" in r.stdout, r.describe()
        assert re.search(r"sub-?interpreter|CPython 3\.1\d", r.stdout, re.I), r.describe()


def test_stdlib_table_in_one_go():
    names = ["json", "re", "math", "collections", "itertools", "functools", "struct"]
    results = list(pyparallel.map(tasks.import_and_check, names))
    assert results == [tasks.import_and_check(n) for n in names]


def test_worker_that_fails_to_start_reports_worker_init_error(tmp_path):
    """A worker whose start-up fails (here: main's sys.path, which workers
    copy, shadows pyparallel with a package that raises) fails each task with
    WorkerInitError carrying the start-up traceback; the process still exits
    cleanly."""
    broken = tmp_path / "shadow" / "pyparallel"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('broken install: BOOM')\n")
    r = support.run_code(tmp_path, """
        import sys, pyparallel, tasks
        sys.path.insert(0, %r)
        fut = pyparallel.submit(tasks.add, 1, 2)
        try:
            fut.result(timeout=60)
        except pyparallel.WorkerInitError as e:
            print("INIT-ERROR", "BOOM" in str(e), "failed to start" in str(e))
        else:
            print("NO ERROR")
        """ % str(tmp_path / "shadow"), timeout=60)
    r.assert_clean_exit(0)
    assert "INIT-ERROR True True" in r.stdout, r.describe()
