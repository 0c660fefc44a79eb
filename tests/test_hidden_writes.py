"""Paths by which CPython writes into an object while code only reads it
(docs/architecture.md lists them all).  Each must be closed for frozen
data: the cache filled at freeze time, or the path refused with a clear
error.  Safety-proof mode (safety_scenarios.py) checks the same paths with
frozen memory write-protected."""

import inspect
import sys

import pytest

import pyparallel
from pyparallel import _pyparallel as _pp

import tasks

T = 60
REFUSED = "cannot run code with a FrozenMap as its globals"


def runtime_str(*parts):
    """A str built at run time: not a constant, so not interned."""
    return "".join(parts)


# ---- eval / exec with a FrozenMap as globals -------------------------------

def test_eval_and_exec_refuse_a_frozenmap_as_globals_in_main():
    fm = pyparallel.freeze({"a": 1})
    for call in (lambda: eval("a + 1", fm), lambda: eval("a + 1", globals=fm),
                 lambda: exec("b = a", fm), lambda: exec("b = 1", fm, {})):
        with pytest.raises(TypeError, match=REFUSED):
            call()
    assert "__builtins__" not in fm and dict(fm) == {"a": 1}
    # as locals it reads, and refuses writes through the mapping protocol
    assert eval("a + 1", {}, fm) == 2
    with pytest.raises(TypeError, match="FrozenMap is frozen"):
        exec("b = 1", {}, fm)
    # a mutable copy is the way
    assert eval("a + 1", dict(fm)) == 2


def test_eval_and_exec_refuse_a_frozenmap_as_globals_in_a_worker():
    # Before: the worker's __builtins__ was inserted into main's FrozenMap
    # (a dangling pointer once the worker ends; a fault in safety mode).
    fm = pyparallel.freeze({"a": 1})
    out = pyparallel.submit(tasks.eval_exec_with_frozen_globals, fm).result(timeout=T)
    for name in ("eval", "eval_kw", "exec", "exec_code", "implied"):
        kind, msg = out[name]
        if name == "implied" and sys.version_info >= (3, 15):
            # a FrozenMap is no dict there: FunctionType() refuses it itself
            assert kind == "TypeError" and "FrozenMap" in msg, out[name]
            continue
        assert kind == "TypeError" and REFUSED in msg, (name, out[name])
    assert out["locals_read"] == ("ok", 2)
    assert out["locals_write"][0] == "TypeError"
    assert out["unchanged"] is True
    assert "__builtins__" not in fm and dict(fm) == {"a": 1}


def test_guarded_eval_and_exec_behave_as_the_builtins():
    assert eval("1 + 2") == 3 and eval("x * 2", {"x": 4}) == 8
    ns = {}
    exec("y = 5", ns)
    assert ns["y"] == 5
    assert str(inspect.signature(eval)) == "(source, /, globals=None, locals=None)"
    assert eval.__name__ == "eval" and eval.__module__ == "builtins"
    with pytest.raises(TypeError):
        eval()                        # the original's own argument errors
    with pytest.raises(SyntaxError):
        eval("1 +")


# ---- implicit interning of long strs ------------------------------------------

def test_long_frozen_strs_are_interned_at_freeze_time():
    # setattr/getattr/keywords intern a name; a frozen str longer than the
    # interning limit was interned by the first worker to use it so,
    # writing its interned state.
    long_name = runtime_str("a_long_attribute_name_", "x" * 60)
    assert _pp._lazy_state(long_name)["interned"] == 0
    fz = pyparallel.freeze((long_name, runtime_str("short_", "name")))
    before = [_pp._lazy_state(s) for s in fz]
    assert all(st["interned"] and st["frozen"] and st["hash"] for st in before), before
    assert pyparallel.submit(tasks.use_names, fz).result(timeout=T) == [1, 2, True, True] * 2
    assert [_pp._lazy_state(s) for s in fz] == before


# ---- objects that were immortal before freeze() ---------------------------------

def _preimmortal_non_ascii():
    """A non-ASCII str that CPython made immortal before freeze() sees it:
    a code object's name (3.13 interns those immortal) or sys.intern (3.12
    makes interned strs immortal)."""
    def f():
        ñame_ünïque_to_this_test = 1
        return ñame_ünïque_to_this_test
    s = f.__code__.co_varnames[0]
    if not _pp._lazy_state(s)["immortal"]:
        s = sys.intern(runtime_str("ñame_", "ünïque_interned"))
    return s


def test_caches_of_already_immortal_objects_are_filled():
    s = _preimmortal_non_ascii()
    st = _pp._lazy_state(s)
    if not st["immortal"]:
        pytest.skip("this CPython makes neither code names nor interned str immortal")
    assert st["utf8"] is False              # nothing has asked for its UTF-8 yet
    fz = pyparallel.freeze((s,))
    after = _pp._lazy_state(fz[0])
    assert after["utf8"] is True and after["frozen"] is True, after
    assert pyparallel.is_frozen(fz[0])
    assert pyparallel.submit(tasks.use_utf8, fz).result(timeout=T) == \
        [True, "bad-ip", len(s.encode())]
    assert _pp._lazy_state(fz[0]) == after


# ---- is_frozen means what it says ------------------------------------------------

def test_is_frozen_is_true_only_for_frozen_data_and_cpython_singletons():
    for v in (None, True, False, 5, -5, 256, "", "a", b"", b"x", (), Ellipsis):
        assert pyparallel.is_frozen(v), v
    interned = sys.intern(runtime_str("main_", "interned_", "name"))
    assert not pyparallel.is_frozen(interned)     # immortal on 3.12, not frozen
    assert not pyparallel.is_frozen(2**40) and not pyparallel.is_frozen(1.5)
    assert pyparallel.submit(tasks.interned_is_frozen).result(timeout=T) is False
    for v in ([1, 2], {"a": (1, "ü")}, interned, _preimmortal_non_ascii(),
              runtime_str("x" * 100), 2**100, 1.5, b"bytes", {1, 2}):
        assert pyparallel.is_frozen(pyparallel.freeze(v)), v


# ---- objects frozen in place while main's frames still reference them ----------

def _freeze_held_in_locals():
    a = runtime_str("held_", "in_a_local") * 10
    b = float(runtime_str("1.", "25"))
    t = (a, b)
    frozen = pyparallel.freeze(t)     # frozen in place: a, b and t are these
    again = [a, b, t, frozen]         # more references from this frame
    return frozen, again


def test_frozen_in_place_objects_stay_frozen_after_main_drops_its_references():
    # CPython 3.14 closes (and copies) stack and local references made while
    # an object was mortal without looking at its count: the count of an
    # object frozen in place moves afterwards.  It must stay frozen, and
    # high enough that no reader's Py_INCREF writes it.
    frozen, again = _freeze_held_in_locals()
    del again
    for o in (frozen, frozen[0], frozen[1]):
        assert pyparallel.is_frozen(o), o
        assert sys.getrefcount(o) >= 3 << 30
    assert pyparallel.submit(tasks.identity, frozen).result(timeout=T) is frozen


def test_tuple_keys_and_tuple_hashes():
    # 3.14+ caches a tuple's hash in the tuple: filled at freeze time.
    fm = pyparallel.freeze({(i, "k", (i, 2.5)): i for i in range(200)})
    keys = pyparallel.freeze(list(fm))
    expected = tasks.tuple_key_lookups(fm, keys)
    assert expected == list(range(200)) * 2 + [True] * 200
    assert pyparallel.submit(tasks.tuple_key_lookups, fm, keys).result(timeout=T) == expected
