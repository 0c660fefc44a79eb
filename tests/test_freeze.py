"""pyparallel.freeze / is_frozen / FrozenMap."""

import array
import collections
import collections.abc
import copy
import datetime
import decimal
import fractions
import json
import math
import pickle
import sys
import re
import signal
import types

import pytest

import pyparallel
from pyparallel import FreezeError, FrozenMap, freeze, is_frozen

import support
import tasks

TIMEOUT = 60
MUTATION_MSG = re.compile(r"frozen|immutable|read-only|readonly", re.I)


class User:
    def __init__(self, name):
        self.name = name


class MyInt(int):
    pass


class MyStr(str):
    pass


class MyList(list):
    pass


class MyDict(dict):
    pass


class MyTuple(tuple):
    pass


class MyFloat(float):
    pass


class MyBytes(bytes):
    pass


class MyFrozenSet(frozenset):
    pass


Point = collections.namedtuple("Point", "x y")


# --------------------------------------------------------------------------
# supported types

SCALARS = [
    None,
    True,
    False,
    0,
    1,
    -5,
    255,
    257,
    2**62,
    2**64 + 1,
    -(2**200),
    0.0,
    -0.0,
    1.5,
    float("inf"),
    float("-inf"),
    1e308,
    complex(1, -2),
    0j,
    "",
    "a",
    "ascii text",
    "héllo wörld",
    "日本語のテキスト",
    "emoji 😀 text",
    "x" * 100_000,
    b"",
    b"\x00\xff bytes",
    b"y" * 100_000,
]


@pytest.mark.parametrize("value", SCALARS, ids=lambda v: type(v).__name__ + ":" + repr(v)[:20])
def test_scalar_roundtrip(value):
    f = freeze(value)
    assert type(f) is type(value)
    assert f == value
    if isinstance(value, float) and value == 0:
        assert math.copysign(1, f) == math.copysign(1, value)
    assert is_frozen(f)
    assert freeze(f) is f
    if isinstance(value, (str, bytes, int, float, complex)):
        assert hash(f) == hash(value)


def test_nan():
    f = freeze(float("nan"))
    assert type(f) is float and math.isnan(f)
    assert is_frozen(f)


def test_singletons_keep_identity():
    assert freeze(None) is None
    assert freeze(True) is True
    assert freeze(False) is False


def test_tuple_and_nested_tuple():
    value = (1, "two", (3.0, (b"four", None)), ())
    f = freeze(value)
    assert type(f) is tuple
    assert f == value
    assert type(f[2]) is tuple and type(f[2][1]) is tuple
    assert is_frozen(f)
    assert freeze(()) == ()


def test_list_becomes_tuple():
    f = freeze([1, [2, [3, []]], "x"])
    assert type(f) is tuple
    assert f == (1, (2, (3, ())), "x")
    assert type(f[1]) is tuple and type(f[1][1][1]) is tuple


def test_set_and_frozenset_become_frozenset():
    for value in ({1, 2, "a"}, frozenset({1, 2, "a"}), set(), frozenset()):
        f = freeze(value)
        assert type(f) is frozenset
        assert f == frozenset(value)
        assert is_frozen(f)
        assert hash(f) == hash(frozenset(value))


def test_bytearray_and_memoryview_become_bytes():
    f = freeze(bytearray(b"abc\x00"))
    assert type(f) is bytes and f == b"abc\x00"
    m = freeze(memoryview(b"hello"))
    assert type(m) is bytes and m == b"hello"
    big = bytearray(range(256)) * 4096
    fb = freeze(big)
    assert type(fb) is bytes and fb == bytes(big)
    assert is_frozen(fb)


def test_dict_becomes_frozenmap():
    d = {"a": 1, "b": [1, 2], "c": {"d": {"e"}}}
    f = freeze(d)
    assert type(f) is FrozenMap
    assert isinstance(f, tasks.MAP_BASE)         # dict; frozendict on 3.15
    assert isinstance(f, dict) == (sys.version_info < (3, 15))
    assert f == {"a": 1, "b": (1, 2), "c": {"d": frozenset({"e"})}}
    assert type(f["c"]) is FrozenMap
    assert type(f["b"]) is tuple
    assert type(f["c"]["d"]) is frozenset
    assert is_frozen(f) and is_frozen(f["c"]) and is_frozen(f["b"])


def test_dict_with_non_str_keys():
    d = {1: "int", 1.5: "float", (1, "t"): "tuple", frozenset({2}): "fs", None: "none",
         b"k": "bytes"}
    f = freeze(d)
    assert f == d
    assert f[1] == "int"
    assert f[True] == "int"  # True == 1
    assert f[(1, "t")] == "tuple"
    assert f[frozenset({2})] == "fs"
    assert f[None] == "none"
    assert f[b"k"] == "bytes"


def test_every_type_nested():
    value = {
        "none": None, "bool": True, "int": 12345678901234567890, "float": 2.5,
        "complex": 3 + 4j, "str": "ünïcödé", "bytes": b"\x01\x02",
        "tuple": (1, (2,)), "list": [1, [2, 3]], "dict": {"x": {"y": "z"}},
        "set": {1, 2}, "frozenset": frozenset({"a"}), "bytearray": bytearray(b"ba"),
        "memoryview": memoryview(b"mv"),
    }
    f = freeze(value)
    expected = dict(value)
    expected.update(list=(1, (2, 3)), set=frozenset({1, 2}), bytearray=b"ba",
                    memoryview=b"mv")
    assert f == expected
    assert list(f) == list(value)  # insertion order is kept
    assert is_frozen(f)
    for k in f:
        assert is_frozen(f[k]), k


def test_freeze_is_a_deep_copy():
    inner = [1, 2]
    d = {"a": inner, "s": {1}}
    f = freeze(d)
    inner.append(3)
    d["s"].add(2)
    d["new"] = 1
    assert f == {"a": (1, 2), "s": frozenset({1})}
    assert "new" not in f


def test_shared_substructure_is_not_a_cycle():
    shared = [1, 2, 3]
    d = {"a": shared, "b": shared, "c": [shared, shared]}
    f = freeze(d)
    assert f == {"a": (1, 2, 3), "b": (1, 2, 3), "c": ((1, 2, 3), (1, 2, 3))}


def test_refreeze_returns_same_object():
    f = freeze({"a": [1, {"b": 2}], "s": "str"})
    assert freeze(f) is f
    assert freeze(f["a"]) is f["a"]
    assert freeze(f["s"]) is f["s"]
    t = freeze((1, 2, "x"))
    assert freeze(t) is t


def test_frozen_parts_reused_inside_new_container():
    f = freeze({"big": list(range(1000))})
    g = freeze({"old": f, "other": [f["big"]]})
    assert g["old"] is f
    assert g["other"][0] is f["big"]


def test_is_frozen_on_plain_objects():
    assert not is_frozen({"a": 1})
    assert not is_frozen([1])
    assert not is_frozen({1})
    assert not is_frozen(bytearray(b"x"))
    assert not is_frozen(object())
    assert not is_frozen(User("u"))
    assert not is_frozen("not frozen %d" % id(object()))
    assert not is_frozen(tuple([object()]))


def test_large_dict_200k():
    d = {"key%d" % i: i for i in range(200_000)}
    f = freeze(d)
    assert len(f) == 200_000
    assert f == d
    assert f["key199999"] == 199_999
    keys = tuple("key%d" % i for i in range(0, 200_000, 7))
    expected = sum(range(0, 200_000, 7))
    # read by a worker, by pointer
    assert pyparallel.submit(tasks.lookup_sum, f, freeze(keys)).result(timeout=TIMEOUT) == expected
    assert pyparallel.submit(tasks.sum_values, f).result(timeout=TIMEOUT) == sum(range(200_000))


# --------------------------------------------------------------------------
# rejected types

REJECTED = [
    (object(), "object"),
    (User("x"), "User"),
    (collections.OrderedDict(a=1), "OrderedDict"),
    (collections.defaultdict(list), "defaultdict"),
    (collections.Counter("ab"), "Counter"),
    (collections.deque([1]), "deque"),
    (Point(1, 2), "Point"),
    (MyInt(1), "MyInt"),
    (MyStr("s"), "MyStr"),
    (MyList([1]), "MyList"),
    (MyDict(a=1), "MyDict"),
    (MyTuple((1,)), "MyTuple"),
    (MyFloat(1.0), "MyFloat"),
    (MyBytes(b"b"), "MyBytes"),
    (MyFrozenSet({1}), "MyFrozenSet"),
    (len, "builtin_function_or_method"),
    (tasks.add, "function"),
    (lambda: 0, "function"),
    (json, "module"),
    (int, "type"),
    (User, "type"),
    (range(3), "range"),
    (slice(1, 2), "slice"),
    (iter([1]), "list_iterator"),
    ((i for i in ()), "generator"),
    (decimal.Decimal("1.5"), "Decimal"),
    (fractions.Fraction(1, 3), "Fraction"),
    (datetime.date(2024, 1, 1), "date"),
    (array.array("i", [1]), "array"),
    (types.SimpleNamespace(a=1), "SimpleNamespace"),
    (ValueError("e"), "ValueError"),
]


@pytest.mark.parametrize("value,type_name", REJECTED, ids=[n for _, n in REJECTED])
def test_rejects_unsupported_type(value, type_name):
    with pytest.raises(FreezeError) as ei:
        freeze(value)
    msg = str(ei.value)
    assert type_name in msg
    assert "data" in msg, msg


@pytest.mark.parametrize("value,type_name", REJECTED[:16], ids=[n for _, n in REJECTED[:16]])
def test_rejects_unsupported_type_nested(value, type_name):
    with pytest.raises(FreezeError) as ei:
        freeze({"outer": [0, {"inner": value}]})
    msg = str(ei.value)
    assert "data['outer'][1]['inner']" in msg, msg
    assert type_name in msg


def test_error_message_example_from_spec():
    data = {"users": ["a", "b", "c", User("bob")]}
    with pytest.raises(FreezeError) as ei:
        freeze(data)
    # the type may be given with its module: "... of test_freeze.User"
    assert re.search(r"data\['users'\]\[3\]: cannot freeze an instance of ([\w.]+\.)?User\b",
                     str(ei.value)), str(ei.value)


def test_error_paths():
    cases = [
        ([1, [2, User("u")]], "data[1][1]"),
        ((0, {"a": collections.OrderedDict()}), "data[1]['a']"),
        ({1: {"k": (1, 2, object())}}, "data[1]['k'][2]"),
    ]
    for value, path in cases:
        with pytest.raises(FreezeError) as ei:
            freeze(value)
        assert path + ":" in str(ei.value), (path, str(ei.value))


def test_freeze_error_is_type_error():
    with pytest.raises(TypeError):
        freeze(User("u"))


def test_rejects_bad_element_in_set():
    with pytest.raises(FreezeError) as ei:
        freeze({"s": {1, MyInt(5)}})
    assert "MyInt" in str(ei.value)
    assert "data['s']" in str(ei.value)


def test_rejects_bad_dict_key():
    with pytest.raises(FreezeError) as ei:
        freeze({MyStr("k"): 1})
    assert "MyStr" in str(ei.value)
    with pytest.raises(FreezeError):
        freeze({(1, User("u")): 1})


def test_rejected_freeze_leaves_input_untouched():
    d = {"a": [1, 2], "b": User("u")}
    with pytest.raises(FreezeError):
        freeze(d)
    d["a"].append(3)
    d["c"] = 1
    assert d["a"] == [1, 2, 3]
    assert not is_frozen(d)


def test_list_cycle():
    lst = [1, 2]
    lst.append(lst)
    with pytest.raises(FreezeError) as ei:
        freeze(lst)
    assert "cycle" in str(ei.value).lower()


def test_dict_cycle():
    d = {"a": 1}
    d["self"] = d
    with pytest.raises(FreezeError) as ei:
        freeze(d)
    assert "cycle" in str(ei.value).lower()


def test_indirect_cycle():
    a = {"name": "a"}
    b = ["b", a]
    a["b"] = (1, b)
    with pytest.raises(FreezeError):
        freeze({"root": a})


def test_deep_nesting_does_not_crash(tmp_path):
    """A 200,000-deep list must give an exception (or a result), never a
    C stack overflow."""
    r = support.run_code(tmp_path, """
        import pyparallel
        x = []
        for _ in range(200_000):
            x = [x]
        try:
            f = pyparallel.freeze(x)
        except (pyparallel.FreezeError, RecursionError, ValueError) as e:
            print("raised", type(e).__name__)
        else:
            print("frozen", type(f).__name__)
        print("done")
        """, timeout=60)
    r.assert_clean_exit(0)
    assert "done" in r.stdout


# --------------------------------------------------------------------------
# FrozenMap behaviour

SAMPLE = {"b": 2, "a": 1, "c": [3, 4], "ü": "ñ", "n": None}
SAMPLE_FROZEN_EQ = {"b": 2, "a": 1, "c": (3, 4), "ü": "ñ", "n": None}


@pytest.fixture
def fm():
    return freeze(SAMPLE)


def test_frozenmap_mapping_protocol(fm):
    assert isinstance(fm, collections.abc.Mapping)
    assert isinstance(fm, tasks.MAP_BASE)
    assert len(fm) == 5
    assert list(fm) == ["b", "a", "c", "ü", "n"]
    assert list(fm.keys()) == list(SAMPLE_FROZEN_EQ.keys())
    assert list(fm.values()) == list(SAMPLE_FROZEN_EQ.values())
    assert list(fm.items()) == list(SAMPLE_FROZEN_EQ.items())
    assert fm.keys() == SAMPLE_FROZEN_EQ.keys()
    assert fm.items() == SAMPLE_FROZEN_EQ.items()
    assert fm["a"] == 1
    assert fm.get("a") == 1
    assert fm.get("missing") is None
    assert fm.get("missing", 42) == 42
    assert "a" in fm and "zz" not in fm
    assert "a" in fm.keys()
    with pytest.raises(KeyError):
        fm["missing"]
    assert dict(fm) == SAMPLE_FROZEN_EQ
    assert {**fm} == SAMPLE_FROZEN_EQ
    assert sorted(fm.items(), key=str) == sorted(SAMPLE_FROZEN_EQ.items(), key=str)
    assert list(reversed(fm)) == list(reversed(list(SAMPLE_FROZEN_EQ)))
    assert collections.ChainMap(fm)["b"] == 2


def test_frozenmap_equality(fm):
    assert fm == SAMPLE_FROZEN_EQ
    assert SAMPLE_FROZEN_EQ == fm
    assert not (fm != SAMPLE_FROZEN_EQ)
    assert fm != {"a": 1}
    assert fm != SAMPLE  # list [3, 4] became the tuple (3, 4)
    assert freeze({}) == {}
    assert fm == freeze(SAMPLE)


def test_frozenmap_json(fm):
    assert json.loads(json.dumps(fm)) == {"b": 2, "a": 1, "c": [3, 4], "ü": "ñ", "n": None}
    assert json.dumps(fm, sort_keys=True) == json.dumps(SAMPLE, sort_keys=True)
    nested = freeze({"x": [{"y": {"z": [1, 2]}}]})
    assert json.dumps(nested) == '{"x": [{"y": {"z": [1, 2]}}]}'


def test_frozenmap_repr(fm):
    r = repr(fm)
    assert "'a': 1" in r and "'c': (3, 4)" in r
    assert str(fm) == r


def test_frozenmap_copy_is_plain_mutable_dict(fm):
    c = fm.copy()
    assert type(c) is dict
    assert c == SAMPLE_FROZEN_EQ
    c["new"] = 1
    del c["a"]
    assert "new" not in fm and "a" in fm
    assert not is_frozen(c)


def test_frozenmap_kwargs_unpacking(fm):
    f = freeze({"x": 1, "y": 2})
    assert tasks.echo(**f) == ((), {"x": 1, "y": 2})


@pytest.mark.parametrize("kind", tasks.MUTATIONS)
def test_frozenmap_mutation_raises_in_main(fm, kind):
    before = dict(fm)
    exc_type, msg = tasks.try_mutation(fm, kind)
    assert exc_type == "TypeError", (kind, exc_type, msg)
    assert MUTATION_MSG.search(msg), msg
    assert dict(fm) == before


def test_frozenmap_mutation_direct_syntax(fm):
    with pytest.raises(TypeError):
        fm["x"] = 1
    with pytest.raises(TypeError):
        del fm["a"]
    with pytest.raises(TypeError):
        fm |= {"x": 1}
    assert fm == SAMPLE_FROZEN_EQ


def test_frozenmap_mutation_raises_in_worker(fm):
    results, unchanged = pyparallel.submit(tasks.try_all_mutations, fm).result(timeout=TIMEOUT)
    assert unchanged
    for kind, (exc_type, msg) in results.items():
        assert exc_type == "TypeError", (kind, exc_type, msg)
        assert MUTATION_MSG.search(msg), msg
    assert fm == SAMPLE_FROZEN_EQ


def test_frozenmap_read_in_worker(fm):
    info = pyparallel.submit(tasks.describe_frozen, fm).result(timeout=TIMEOUT)
    assert info == {
        "type_is_base": True,
        "len": 5,
        "keys": list(SAMPLE_FROZEN_EQ),
        "values": list(SAMPLE_FROZEN_EQ.values()),
        "items": list(SAMPLE_FROZEN_EQ.items()),
        "iter": list(SAMPLE_FROZEN_EQ),
        "json": json.dumps(SAMPLE, sort_keys=True),
        "get_missing": "dflt",
        "eq_dict": True,
        "copy_type": "dict",
        "contains_first": True,
    }


def test_frozenmap_pickle_and_deepcopy(fm):
    # A frozen map inside an object that goes through pickle must survive.
    back = pickle.loads(pickle.dumps(fm))
    assert back == SAMPLE_FROZEN_EQ
    assert copy.deepcopy(fm) == SAMPLE_FROZEN_EQ
    assert copy.copy(fm) == SAMPLE_FROZEN_EQ


def test_frozen_values_are_immutable_containers():
    f = freeze({"t": [1, 2], "s": {1}})
    with pytest.raises((TypeError, AttributeError)):
        f["t"].append(3)
    with pytest.raises((TypeError, AttributeError)):
        f["s"].add(3)


# --------------------------------------------------------------------------
# freeze in a worker

def test_freeze_in_worker_gives_a_private_immutable_copy():
    # Only the main interpreter's frozen data is shared; freeze() in a worker
    # (e.g. a module that freezes at import time) gives an immutable copy
    # private to that worker, which comes back to main as a plain copy.
    assert pyparallel.submit(tasks.freeze_in_worker, [1, [2, {"a": {3}}]]).result(timeout=TIMEOUT) \
        == (1, (2, {"a": frozenset({3})}))
    with pytest.raises(FreezeError):
        pyparallel.submit(tasks.freeze_in_worker, [tasks.Box(1)]).result(timeout=TIMEOUT)
    assert pyparallel.submit(tasks.add, 1, 1).result(timeout=TIMEOUT) == 2


def test_frozen_maps_refreeze_in_a_worker():
    # freeze(), pickle round trips and deepcopy of data holding a FrozenMap
    # raised "cannot freeze an instance of pyparallel.FrozenMap" in a worker,
    # for maps shared from main and for maps the worker froze itself.
    shared = freeze({"d": {"e": [1, "ü"]}, "n": 1})
    res = pyparallel.submit(tasks.refreeze_frozen_maps, shared).result(timeout=TIMEOUT)
    assert res == {
        "shared_unchanged": True, "local_unchanged": True,
        "nested_shared": {"x": {"d": {"e": (1, "ü")}, "n": 1}},
        "nested_local": {"x": {"k": (1, 2)}},
        "pickled": shared, "deepcopied": shared,
        "types": ["FrozenMap", "FrozenMap", "FrozenMap", "FrozenMap"],
    }


def test_is_frozen_in_worker():
    f = freeze({"a": 1})
    assert pyparallel.submit(tasks.is_frozen_in_worker, f).result(timeout=TIMEOUT) is True
    assert pyparallel.submit(tasks.is_frozen_in_worker, {"a": 1}).result(timeout=TIMEOUT) is False


# --------------------------------------------------------------------------
# ways around the FrozenMap methods: dict's own slots called directly.  Each
# runs in a subprocess: if the implementation lets the write through into
# frozen memory it may corrupt the heap, which must not take pytest down.

BYPASSES = {
    "dict.__setitem__": "dict.__setitem__(f, 'zz', 1)",
    "dict.__delitem__": "dict.__delitem__(f, 'a')",
    "dict.update": "dict.update(f, {'zz': 1})",
    "dict.clear": "dict.clear(f)",
    "dict.pop": "dict.pop(f, 'a')",
    "dict.popitem": "dict.popitem(f)",
    "dict.setdefault": "dict.setdefault(f, 'zz', 1)",
    "dict.__ior__": "dict.__ior__(f, {'zz': 1})",
    "dict.__init__": "dict.__init__(f, zz=1)",
}


BYPASS_SCRIPT = """
import pyparallel
f = pyparallel.freeze({'a': 1, 'b': (2, 3)})
print('frozen', flush=True)
try:
    %s
except TypeError as e:
    print('TypeError', e)
print('after', sorted(dict(f).items()))
"""


@pytest.mark.xfail(sys.version_info < (3, 15),
                   reason="known limit (README): unbound dict methods bypass FrozenMap's "
                          "guards outside safety-proof mode (on 3.15 a FrozenMap is a "
                          "frozendict, which dict's methods refuse)", strict=True)
@pytest.mark.parametrize("expr", list(BYPASSES.values()), ids=list(BYPASSES))
def test_frozenmap_cannot_be_mutated_through_dict_slots(tmp_path, expr):
    r = support.run_code(tmp_path, BYPASS_SCRIPT % expr, timeout=60)
    r.assert_clean_exit(0)
    assert "after [('a', 1), ('b', (2, 3))]" in r.stdout, r.describe()


def test_frozenmap_init_cannot_refill(fm):
    try:
        fm.__init__({"zz": 1}, b=2)   # a no-op, like frozenset().__init__(...)
    except TypeError:
        pass
    assert fm == SAMPLE_FROZEN_EQ


@pytest.mark.parametrize("expr", list(BYPASSES.values()), ids=list(BYPASSES))
def test_dict_slot_bypass_faults_in_safety_mode(tmp_path, expr):
    """In safety-proof mode a write through dict's own slots never goes
    through silently: it raises TypeError, or it faults."""
    r = support.run_code(tmp_path, BYPASS_SCRIPT % expr, timeout=60, safety=True)
    assert "frozen" in r.stdout, r.describe()
    if r.returncode == 0:
        assert "after [('a', 1), ('b', (2, 3))]" in r.stdout, r.describe()
    elif support.under_asan():
        assert "SEGV" in r.stderr, r.describe()
    else:
        assert r.returncode == -signal.SIGSEGV, r.describe()


# --------------------------------------------------------------------------
# what a frozen dict is on each version (README: FrozenMap)

def test_frozenmap_behaves_the_same_on_every_version():
    f = freeze({"a": [1, {"b": 2}]})
    assert f == {"a": (1, {"b": 2})} and {"a": (1, {"b": 2})} == f
    assert json.dumps(f) == '{"a": [1, {"b": 2}]}'
    assert isinstance(f, collections.abc.Mapping)
    assert not isinstance(f, collections.abc.MutableMapping) or sys.version_info < (3, 15)
    with pytest.raises(TypeError, match="FrozenMap is frozen: item assignment"):
        f["x"] = 1
    with pytest.raises(TypeError, match=r"FrozenMap is frozen: update\(\)"):
        f.update(x=1)
    assert type(f.copy()) is dict and f.copy() == f


@pytest.mark.skipif(sys.version_info < (3, 15), reason="frozendict is new in 3.15")
def test_frozendict_is_frozen_deeply_and_frozenmaps_are_frozendicts():
    fd = frozendict({"k": [1, 2], "s": {3}})          # noqa: F821 (3.15 builtin)
    f = freeze(fd)
    assert type(f) is FrozenMap and isinstance(f, frozendict)   # noqa: F821
    assert f == {"k": (1, 2), "s": frozenset({3})}
    assert is_frozen(f) and is_frozen(f["k"])
    assert hash(f) == hash(frozendict(f))              # noqa: F821
    assert pyparallel.submit(tasks.identity, f).result(timeout=TIMEOUT) is f
