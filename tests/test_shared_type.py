"""The FrozenMap type is one static type shared by every interpreter (its
instances are shared by pointer).  Its mutable state -- __dict__, subclass
list, weak references to it -- must be per interpreter, or workers doing
ordinary type checks corrupt it (ABC checks weakly reference the class)."""

import sys

import pytest

import pyparallel

import support
import tasks


STRESS = """
    import sys, pyparallel, tasks
    m = pyparallel.freeze({"a": 1, "b": {"c": [1, 2, (3, "x")]}, "d": "ü"})
    expected = tasks.type_checks_once(m)
    n = pyparallel.cpu_count()
    futs = [pyparallel.submit(tasks.type_checks, m, %(seconds)s) for _ in range(2 * max(n, 2))]
    rounds = 0
    for f in futs:
        r, answers = f.result(timeout=120)
        assert answers == expected, (answers, expected)
        rounds += r
    assert tasks.type_checks_once(m) == expected
    print("rounds", rounds, "ok")
"""


@pytest.mark.parametrize("safety", [False, True], ids=["normal", "safety"])
def test_type_checks_on_a_shared_frozenmap_from_every_worker(tmp_path, safety):
    # Crashed with "free(): invalid pointer" within a second before the
    # type's weakref list was made per interpreter.
    r = support.run_code(tmp_path, STRESS % {"seconds": 6.0}, timeout=180, safety=safety)
    r.assert_clean_exit(0)
    assert " ok" in r.stdout, r.describe()


def test_weakrefs_of_a_worker_do_not_go_into_mains_list(tmp_path):
    # A worker's ABC caches' weakrefs to FrozenMap went into main's list
    # (and could dangle there once the worker had ended).
    r = support.run_code(tmp_path, """
        import gc, weakref, pyparallel, tasks
        import collections.abc as cabc
        m = pyparallel.freeze({"k": {"x": 1}})
        before = weakref.getweakrefcount(pyparallel.FrozenMap)
        ex = pyparallel.Executor(1)
        assert ex.submit(tasks.type_checks, m, 0.5).result(timeout=60)[0] > 0
        # The worker's ABC caches hold weakrefs to FrozenMap: in its list.
        assert ex.submit(tasks.frozenmap_weakref_count).result(timeout=60) > 0
        assert weakref.getweakrefcount(pyparallel.FrozenMap) == before
        ex.shutdown(wait=True)
        gc.collect()
        refs = weakref.getweakrefs(pyparallel.FrozenMap)
        assert len(refs) == before, (before, refs)
        assert all(r() is pyparallel.FrozenMap for r in refs), refs
        assert isinstance(m, cabc.Mapping) and issubclass(type(m), cabc.Mapping)
        print("ok")
        """, timeout=120)
    r.assert_clean_exit(0)
    assert "ok" in r.stdout


def test_each_interpreter_has_its_own_frozenmap_dict_and_weakrefs():
    m = pyparallel.freeze({"k": 1})
    main_ids = tasks.frozenmap_type_state()
    got = [pyparallel.submit(tasks.frozenmap_type_state).result(timeout=60)
           for _ in range(4)]
    for worker_ids in got:
        # descriptors of the worker's own: not main's objects
        assert worker_ids["copy"] != main_ids["copy"]
        assert worker_ids["new"] != main_ids["new"]
        assert worker_ids["weakref_alive"] is True
    assert pyparallel.submit(tasks.identity, m).result(timeout=60) is m


def test_frozenmap_cannot_be_subclassed_anywhere():
    with pytest.raises(TypeError, match="not an acceptable base type"):
        type("Sub", (pyparallel.FrozenMap,), {})
    r = pyparallel.submit(tasks.try_subclass_frozenmap).result(timeout=60)
    assert "not an acceptable base type" in r
