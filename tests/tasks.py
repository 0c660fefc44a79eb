"""Top-level functions (and a few classes) that the tests submit to workers.

Workers import this module by name, so it must import cleanly inside a
sub-interpreter on every supported Python: it must NOT import pytest (on
3.12.1, importing _hashlib -- which pytest pulls in -- in a sub-interpreter
makes the process abort at exit), hashlib, ctypes, asyncio, ssl, ...
"""

import functools
import importlib
import json
import math
import os
import sys
import threading
import time

import pyparallel

# What a FrozenMap is built on: a dict, or on 3.15 a frozendict (PEP 814).
MAP_BASE = frozendict if sys.version_info >= (3, 15) else dict  # noqa: F821

# --------------------------------------------------------------------------
# trivial tasks


def identity(x):
    return x


def identity_kw(**kwargs):
    return kwargs


def add(a, b):
    return a + b


def inc(x):
    return x + 1


def square(x):
    return x * x


def mul3(a, b, c):
    return a * b * c


def echo(*args, **kwargs):
    return (args, kwargs)


def type_name(x):
    return type(x).__name__


def getitem(obj, key):
    return obj[key]


def sleep_return(seconds, value=None):
    time.sleep(seconds)
    return value


def noop():
    return None


def big_bytes(n):
    return b"\xab" * n


def where():
    """(is_parallel_context, worker_id) as seen by the code that runs this."""
    return (pyparallel.is_parallel_context(), pyparallel.worker_id())


def env_info():
    return {
        "path": list(sys.path),
        "parallel": pyparallel.is_parallel_context(),
        "pid": os.getpid(),
        "main_module_name": getattr(sys.modules.get("__main__"), "__name__", None),
    }


# --------------------------------------------------------------------------
# decorated / class-based callables


def plain_decorator(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return ("wrapped", fn(*args, **kwargs))

    return wrapper


@plain_decorator
def decorated(x):
    return x * 10


class Klass:
    def __init__(self, base):
        self.base = base

    def method(self, x):
        return self.base + x

    @staticmethod
    def static(x):
        return ("static", x)

    @classmethod
    def clsmethod(cls, x):
        return (cls.__name__, x)


class Adder:
    """A picklable callable instance."""

    def __init__(self, n):
        self.n = n

    def __call__(self, x):
        return self.n + x


class Box:
    """A picklable user object (goes through the pickle fallback)."""

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return type(other) is Box and other.value == self.value

    def __repr__(self):
        return "Box(%r)" % (self.value,)


def make_box(value):
    return Box(value)


def unbox(box):
    return box.value


# --------------------------------------------------------------------------
# results that cannot be sent back


def return_lock():
    return threading.Lock()


def return_generator():
    return (i for i in range(3))


def return_nested_lock():
    return [1, 2, {"lock": threading.Lock()}]


# --------------------------------------------------------------------------
# exceptions


class CustomError(Exception):
    pass


class UnpicklableError(Exception):
    """An exception that cannot be pickled (it holds a lock)."""

    def __init__(self, msg):
        super().__init__(msg)
        self.lock = threading.Lock()


def raise_value_error(*args):
    raise ValueError(*args)


def raise_key_error(key):
    return {}[key]


def raise_zero_division():
    return 1 / 0


def raise_custom(msg):
    raise CustomError(msg)


def raise_unpicklable(msg):
    raise UnpicklableError(msg)


def _deep_helper(n):
    if n == 0:
        raise RuntimeError("deep failure")
    return _deep_helper(n - 1)


def raise_deep(n):
    return _deep_helper(n)


def call_sys_exit(code):
    sys.exit(code)


def raise_chained():
    try:
        raise KeyError("inner")
    except KeyError as e:
        raise ValueError("outer") from e


# --------------------------------------------------------------------------
# freeze / frozen data inside a worker


def freeze_in_worker(obj):
    return pyparallel.freeze(obj)


def is_frozen_in_worker(obj):
    return pyparallel.is_frozen(obj)


MUTATIONS = (
    "setitem",
    "delitem",
    "update",
    "pop",
    "popitem",
    "setdefault",
    "clear",
    "ior",
)


def try_mutation(fm, kind):
    """Try one mutation of frozen map `fm`; return (exc type name, message)."""
    key = next(iter(fm)) if len(fm) else "k"
    try:
        if kind == "setitem":
            fm["__new__"] = 1
        elif kind == "delitem":
            del fm[key]
        elif kind == "update":
            fm.update({"__new__": 1})
        elif kind == "pop":
            fm.pop(key)
        elif kind == "popitem":
            fm.popitem()
        elif kind == "setdefault":
            fm.setdefault("__new__", 1)
        elif kind == "clear":
            fm.clear()
        elif kind == "ior":
            fm |= {"__new__": 1}
        else:
            raise AssertionError(kind)
    except Exception as e:  # noqa: BLE001 - reported to the test
        return (type(e).__name__, str(e))
    return (None, None)


def try_all_mutations(fm):
    before = dict(fm)
    results = {kind: try_mutation(fm, kind) for kind in MUTATIONS}
    return results, dict(fm) == before


def describe_frozen(fm):
    """Read a frozen map in every common way; return a plain summary."""
    return {
        "type_is_base": isinstance(fm, MAP_BASE),
        "len": len(fm),
        "keys": list(fm.keys()),
        "values": list(fm.values()),
        "items": list(fm.items()),
        "iter": list(fm),
        "json": json.dumps(fm, sort_keys=True, default=repr),
        "get_missing": fm.get("__missing__", "dflt"),
        "eq_dict": fm == dict(fm),
        "copy_type": type(fm.copy()).__name__,
        "contains_first": (next(iter(fm)) in fm) if len(fm) else None,
    }


def lookup_sum(fm, keys):
    total = 0
    for k in keys:
        total += fm[k]
    return total


def sum_values(fm):
    return sum(fm.values())


def checksum(data):
    """Walk a frozen structure read-only, the way user code does, and return
    a deterministic checksum (no hash(): str hashes are randomized per
    process but not per interpreter, still keep it simple)."""
    total = 0
    stack = [data]
    while stack:
        obj = stack.pop()
        t = type(obj)
        if t is dict or isinstance(obj, (dict, pyparallel.FrozenMap)):
            for k, v in obj.items():
                stack.append(k)
                stack.append(v)
                total += 1
        elif t is tuple or t is frozenset:
            stack.extend(obj)
            total += len(obj)
        elif t is str:
            total += len(obj) + len(obj.encode("utf-8")) + obj.count("a")
        elif t is bytes:
            total += len(obj) + (obj[0] if obj else 0)
        elif t is bool:
            total += 3 if obj else 5
        elif t is int:
            total += obj % 1000003
        elif t is float:
            total += 0 if math.isnan(obj) else int(obj * 10) % 1000003
        elif t is complex:
            total += int(obj.real) + int(obj.imag)
        elif obj is None:
            total += 7
        else:
            raise TypeError("unexpected type in frozen data: %r" % (t,))
    return total


def hammer(data, keys, rounds):
    """Read a frozen dict hard: lookups, hashing, iteration, str work."""
    acc = 0
    for _ in range(rounds):
        for k in keys:
            v = data[k]
            acc += len(k) + hash(k) % 7
            if type(v) is tuple:
                acc += len(v)
                for x in v:
                    if type(x) is str:
                        acc += len(x.upper()) + len(x.encode("utf-8"))
                    elif type(x) is int:
                        acc += x % 11
            elif type(v) is str:
                acc += len(v.split()) + len(v.encode("utf-8"))
            elif type(v) is int:
                acc += v % 13
        acc += len(data)
    return acc


# --------------------------------------------------------------------------
# imports inside a worker


def import_module(name):
    mod = importlib.import_module(name)
    return mod.__name__


def import_and_check(name):
    """Import a stdlib module in the worker and use it a little."""
    mod = importlib.import_module(name)
    probe = STDLIB_PROBES_ALL.get(name)
    return (mod.__name__, probe(mod) if probe else None)


STDLIB_PROBES = {
    "json": lambda m: m.loads(m.dumps({"a": [1, 2]})),
    "re": lambda m: m.findall(r"\d+", "a1b22c333"),
    "math": lambda m: m.isqrt(1000),
    "collections": lambda m: sorted(m.Counter("abca").items()),
    "itertools": lambda m: list(m.accumulate([1, 2, 3])),
    "functools": lambda m: m.reduce(lambda a, b: a * b, [1, 2, 3, 4]),
    "struct": lambda m: m.unpack("<I", m.pack("<I", 1234))[0],
    "base64": lambda m: m.b64encode(b"hi").decode(),
    "zlib": lambda m: len(m.decompress(m.compress(b"x" * 100))),
    "binascii": lambda m: m.hexlify(b"\x01\x02").decode(),
    "random": lambda m: m.Random(1).randrange(10**6) == __import__("random").Random(1).randrange(10**6),
    "statistics": lambda m: m.mean([1, 2, 3, 4]),
    "fractions": lambda m: str(m.Fraction(1, 3) + m.Fraction(1, 6)),
    "decimal": lambda m: str(m.Decimal("1.1") + m.Decimal("2.2")),
    "datetime": lambda m: m.date(2024, 2, 29).isoformat(),
    "string": lambda m: m.ascii_lowercase[:3],
    "textwrap": lambda m: m.wrap("aaa bbb ccc", 4),
    "heapq": lambda m: m.nsmallest(2, [5, 1, 4, 2]),
    "bisect": lambda m: m.bisect([1, 3, 5], 4),
    "array": lambda m: list(m.array("i", [1, 2, 3])),
    "csv": lambda m: list(m.reader(["a,b", "c,d"])),
    "io": lambda m: m.StringIO("xy").read(),
    "operator": lambda m: m.itemgetter(1)("abc"),
    "copy": lambda m: m.deepcopy({"a": [1]}),
    "pickle": lambda m: m.loads(m.dumps([1, "x"])),
    "enum": lambda m: m.Enum("Color", "RED GREEN").GREEN.value,
    "dataclasses": lambda m: m.is_dataclass(object),
    "typing": lambda m: m.get_origin(m.List[int]) is list,
    "pathlib": lambda m: m.PurePosixPath("/a/b.txt").suffix,
    "unicodedata": lambda m: m.name("é"),
    "difflib": lambda m: round(m.SequenceMatcher(None, "abcd", "abed").ratio(), 3),
    "fnmatch": lambda m: m.fnmatch("x.py", "*.py"),
    "urllib.parse": lambda m: m.urlparse("http://h/p?q=1").query,
    "html": lambda m: m.escape("<a>"),
    "email": lambda m: m.__name__,
    "time": lambda m: m.monotonic() > 0,
    "os": lambda m: m.path.join("a", "b"),
    "threading": lambda m: m.current_thread() is not None,
    "queue": lambda m: m.SimpleQueue().empty(),
    "logging": lambda m: m.getLogger("x").name,
    "tempfile": lambda m: bool(m.gettempdir()),
    "weakref": lambda m: m.WeakValueDictionary() is not None,
    "contextlib": lambda m: m.suppress is not None,
    "cmath": lambda m: m.sqrt(-1) == 1j,
    "uuid": lambda m: len(str(m.UUID(int=1))),
    "socket": lambda m: m.AF_INET > 0,
    "select": lambda m: hasattr(m, "select"),
    "gzip": lambda m: len(m.decompress(m.compress(b"abc"))),
    "bz2": lambda m: len(m.decompress(m.compress(b"abc"))),
    "lzma": lambda m: len(m.decompress(m.compress(b"abc"))),
    "shutil": lambda m: callable(m.copyfile),
    "argparse": lambda m: m.ArgumentParser().parse_args(["--x", "1"] if False else []) is not None,
    "ast": lambda m: type(m.parse("x = 1")).__name__,
    "inspect": lambda m: m.isfunction(import_module),
    "traceback": lambda m: m.format_exception_only(ValueError("v"))[-1].strip(),
    "sqlite3": lambda m: m.connect(":memory:").execute("select 1+1").fetchone()[0],
    "zipfile": lambda m: callable(m.ZipFile),
}

# Modules whose import in an interpreter that later ends has crashed some
# CPython builds at process exit (3.12.1): test_imports checks them in a
# subprocess each.
EXIT_SENSITIVE_PROBES = {
    "hashlib": lambda m: m.sha256(b"abc").hexdigest()[:8],
    "hmac": lambda m: m.new(b"k", b"msg", "sha256").hexdigest()[:8],
    "secrets": lambda m: len(m.token_hex(4)),
    "http.client": lambda m: m.responses[404],
    "asyncio": lambda m: m.run(_async_answer()),
    "mmap": lambda m: m.PAGESIZE > 0,
    "xml.etree.ElementTree": lambda m: m.Element("a").tag,
    "ssl": lambda m: m.PROTOCOL_TLS_CLIENT > 0,
    "ctypes": lambda m: m.sizeof(m.c_int),
    "xml.parsers.expat": lambda m: callable(m.ParserCreate),
    "zoneinfo": lambda m: callable(m.ZoneInfo),
    "readline": lambda m: callable(m.get_line_buffer),
    "curses": lambda m: callable(m.wrapper),
}
STDLIB_PROBES_ALL = dict(STDLIB_PROBES, **EXIT_SENSITIVE_PROBES)


async def _async_answer():
    return 42


# --------------------------------------------------------------------------
# calling back into the main interpreter

SINK = []


def append_to_sink(value):
    SINK.append(value)
    return len(SINK)


def main_where():
    return (pyparallel.is_parallel_context(), pyparallel.worker_id(),
            threading.current_thread() is threading.main_thread())


def main_raises(msg):
    raise CustomError(msg)


def fire_to_main(value):
    pyparallel.call_from_main_thread(append_to_sink, value)
    return "sent"


def append_via_main_and_wait(value):
    return pyparallel.call_from_main_thread_and_wait(append_to_sink, value)


def ask_main_where():
    return pyparallel.call_from_main_thread_and_wait(main_where)


def ask_main_with_kwargs():
    return pyparallel.call_from_main_thread_and_wait(echo, 1, 2, key="v")


def ask_main_to_raise(msg):
    try:
        pyparallel.call_from_main_thread_and_wait(main_raises, msg)
    except Exception as e:  # noqa: BLE001
        return (type(e).__name__, str(e))
    return (None, None)


# --------------------------------------------------------------------------
# coordination through the file system (works across interpreters)


def _wait_for(path, timeout):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def block_until(started_path, release_path, timeout=30.0):
    """Signal that the task started, then wait until released."""
    with open(started_path, "w") as f:
        f.write("started")
    return "released" if _wait_for(release_path, timeout) else "timeout"


def rendezvous(directory, n, timeout=20.0):
    """Return this worker's id once n tasks are running at the same time.

    Each task drops a file into `directory` and waits for n files; this only
    succeeds if n tasks run concurrently, i.e. on n distinct workers."""
    wid = pyparallel.worker_id()
    token = "%s-%d-%d" % (wid, threading.get_ident(), time.monotonic_ns())
    with open(os.path.join(directory, token), "w") as f:
        f.write(str(wid))
    deadline = time.monotonic() + timeout
    while len(os.listdir(directory)) < n:
        if time.monotonic() > deadline:
            return ("timeout", wid)
        time.sleep(0.005)
    return wid


def touch(path, text=""):
    with open(path, "a") as f:
        f.write(text)
    return path


# --------------------------------------------------------------------------
# values built inside the worker (results of every builtin type)


def make_values():
    return {
        "none": None, "true": True, "false": False, "small": 7, "neg": -3,
        "big": 2**100, "bigneg": -(3**90), "float": 0.1, "inf": float("inf"),
        "complex": 1 - 2j, "str": "ascii", "unicode": "ünï 日本 😀",
        "bytes": b"\x00\x01\xff", "bytearray": bytearray(b"ba"),
        "tuple": (1, ("a", 2.5)), "list": [1, [2, [3]], []],
        "dict": {"k": {"n": [1, {"deep": True}]}, 1: "int key", (1, 2): "tuple key"},
        "set": {1, "a", (2, 3)}, "frozenset": frozenset({4, 5}),
        "empty": ([], {}, (), set(), "", b""),
    }


def mutate_copy(d):
    d["worker"] = True
    d["list"].append("w")
    return d


def deep_types(v):
    """Nested type names of a value, to compare the shape of results."""
    t = type(v).__name__
    if isinstance(v, (list, tuple)):
        return (t, [deep_types(x) for x in v])
    if isinstance(v, (dict, pyparallel.FrozenMap)):
        return (t, sorted((repr(k), deep_types(x)) for k, x in v.items()))
    if isinstance(v, (set, frozenset)):
        return (t, sorted(repr(deep_types(x)) for x in v))
    return t


# --------------------------------------------------------------------------
# read paths of CPython that write lazily-filled caches into the object they
# read (hash caches, the UTF-8 cache, interning).  With pyparallel's freeze
# these must all be filled in advance; in safety mode a miss crashes.


def hash_all(objs):
    return [hash(o) for o in objs]


class _Obj:
    pass


def use_strings(strs):
    """Use frozen strs the way C code uses names and C strings."""
    import socket

    out = []
    obj = _Obj()
    for s in strs:
        if s.isidentifier():
            setattr(obj, s, 1)                           # interns the name
            out.append(getattr(obj, s))
            out.append(len(type(s, (), {}).__name__))    # type name -> UTF-8
            out.append(tasks_echo_kwargs(**{s: 2})[s])   # keyword name
        out.append(sys.intern(s) == s)
        out.append(len(s.encode("utf-8")))
        out.append(len(json.dumps(s, ensure_ascii=False)))
        try:                                              # "s" converter -> UTF-8 cache
            socket.inet_aton(s)
            out.append("ip")
        except (OSError, ValueError):
            out.append("bad-ip")
        out.append("<%s|%r>" % (s, s))
        out.append("{0}/{0!r}".format(s))
        out.append(s.upper().lower() == s.lower())
        out.append(s[::-1][::-1] == s)
        d = {s: 1}
        out.append(d[s])
    return out


def tasks_echo_kwargs(**kwargs):
    return kwargs


def use_strings_compile(strs):
    """compile() of frozen non-ASCII source text (PyUnicode_AsUTF8AndSize)."""
    out = []
    for s in strs:
        code = compile(s, "<frozen>", "eval")
        out.append(eval(code))
    return out


_CALLS = [0]


def bump():
    """Counts calls in this interpreter (module state is per interpreter and
    persists across tasks on the same worker)."""
    _CALLS[0] += 1
    return _CALLS[0]


def sink_len():
    return len(SINK)


def module_loaded(name):
    return name in sys.modules


def log_in_worker(msg):
    import logging
    logging.getLogger("pyparallel.tests").warning("%s from worker %s", msg,
                                                   pyparallel.worker_id())
    return True


# --------------------------------------------------------------------------
# type checks on shared frozen objects (the FrozenMap type is shared by every
# interpreter: nothing here may write to it)

import abc as _abc
import collections.abc as _cabc
import copy as _copy
import pickle as _pickle
import typing as _typing


class UserABC(_abc.ABC):
    """A user ABC that FrozenMap gets registered with, in each interpreter."""


class UnrelatedABC(_abc.ABC):
    """A user ABC nothing is registered with (negative caches)."""


@_typing.runtime_checkable
class HasKeys(_typing.Protocol):
    def keys(self): ...


@functools.singledispatch
def _dispatch(obj):
    return "object"


@_dispatch.register
def _(obj: dict):
    return "dict"


UserABC.register(pyparallel.FrozenMap)


def type_checks_once(m):
    """One round of the checks a library does on a mapping it is handed."""
    t = type(m)
    return [
        isinstance(m, _cabc.Mapping), isinstance(m, _cabc.MutableMapping),
        isinstance(m, dict), isinstance(m, _cabc.Hashable),
        isinstance(m, _cabc.Sequence), isinstance(m, _cabc.Iterable),
        issubclass(t, _cabc.Mapping), issubclass(t, _cabc.Container),
        issubclass(t, _cabc.Set), issubclass(t, dict),
        isinstance(m, UserABC), issubclass(t, UnrelatedABC),
        isinstance(m, HasKeys), isinstance(m, (list, _cabc.Sized)),
        _dispatch(m), t.__name__, t.__module__, t.__qualname__,
        sorted(m) == sorted(m.keys()), len(list(m.items())) == len(m),
        _copy.copy(m) == m, _copy.deepcopy(m) == m,
        _pickle.loads(_pickle.dumps(m)) == m,
        json.dumps(m, sort_keys=True, default=repr) == json.dumps(dict(m), sort_keys=True, default=repr),
        type(_copy.copy(m)).__name__,
    ]


def type_checks(m, seconds):
    """type_checks_once() over and over for `seconds`; returns (rounds, the
    last round's answers)."""
    deadline = time.monotonic() + seconds
    rounds = 0
    res = None
    while rounds == 0 or time.monotonic() < deadline:
        res = type_checks_once(m)
        for v in m.values():
            if isinstance(v, pyparallel.FrozenMap):
                type_checks_once(v)
        rounds += 1
    return rounds, res


def frozenmap_type_state():
    """Identities of this interpreter's FrozenMap descriptors, and whether a
    weak reference to the type works here."""
    import weakref
    fm = pyparallel.FrozenMap
    ref = weakref.ref(fm)
    return {"copy": id(fm.__dict__["copy"]), "new": id(fm.__dict__["__new__"]),
            "weakref_alive": ref() is fm}


def try_subclass_frozenmap():
    try:
        type("Sub", (pyparallel.FrozenMap,), {})
    except TypeError as e:
        return str(e)
    return "subclassed"


def refreeze_frozen_maps(shared):
    """In a worker: freezing data that holds FrozenMaps, from main and our
    own, and the pickle/deepcopy round trips that rebuild them."""
    import copy
    import pickle
    local = pyparallel.freeze({"k": [1, 2]})
    nested_shared = pyparallel.freeze({"x": shared})
    nested_local = pyparallel.freeze({"x": local})
    pickled = pickle.loads(pickle.dumps(shared))
    deepcopied = copy.deepcopy(shared)
    return {
        "shared_unchanged": pyparallel.freeze(shared) is shared,
        "local_unchanged": pyparallel.freeze(local) is local,
        "nested_shared": nested_shared, "nested_local": nested_local,
        "pickled": pickled, "deepcopied": deepcopied,
        "types": [type(v).__name__ for v in (nested_shared, nested_local["x"],
                                             pickled["d"], deepcopied["d"])],
    }


def frozenmap_weakref_count():
    import weakref
    return weakref.getweakrefcount(pyparallel.FrozenMap)


# --------------------------------------------------------------------------
# the hidden writes into frozen data, from a worker


def eval_exec_with_frozen_globals(fm):
    """eval/exec with a FrozenMap as globals, passed or implied, must be
    refused; as locals it is readable.  Returns what each did."""
    import types
    out = {}
    for name, call in [
            ("eval", lambda: eval("a + 1", fm)),
            ("eval_kw", lambda: eval("a + 1", globals=fm)),
            ("exec", lambda: exec("b = a", fm)),
            ("exec_code", lambda: exec(compile("b = 1", "<x>", "exec"), fm)),
            ("implied", lambda: types.FunctionType(
                compile("eval('1')", "<x>", "eval"), fm)()),
            ("locals_read", lambda: eval("a + 1", {}, fm)),
            ("locals_write", lambda: exec("b = 1", {}, fm))]:
        try:
            out[name] = ("ok", call())
        except Exception as e:
            out[name] = (type(e).__name__, str(e))
    out["unchanged"] = "__builtins__" not in fm and "b" not in fm
    return out


def use_names(names):
    """Uses strs the ways CPython interns names implicitly."""
    obj = _Obj()
    out = []
    for s in names:
        setattr(obj, s, 1)
        out.append(getattr(obj, s))
        out.append(tasks_echo_kwargs(**{s: 2})[s])
        out.append(sys.intern(s) is s)
        out.append(hasattr(obj, s))
    return out


def use_utf8(names):
    """Makes C code read the UTF-8 form of each str (the lazily filled
    cache of a non-ASCII str)."""
    import socket
    out = []
    for s in names:
        out.append(type(s, (), {}).__name__ == s)
        try:
            socket.inet_aton(s)
        except (OSError, ValueError):
            out.append("bad-ip")
        out.append(len(s.encode()))
    return out


def interned_is_frozen():
    s = sys.intern("".join(["worker_", "interned_", "name"]))
    return pyparallel.is_frozen(s)


# --------------------------------------------------------------------------
# main-thread calls that wait on workers (tests/test_main_calls.py)

FUTURES = {}              # main interpreter: futures the test registered


def main_wait_for(name):
    """Main side: waits for a registered future's result."""
    return FUTURES[name].result(timeout=60)


def ask_main_to_wait_for(name):
    """Worker side: has main wait for the future `name`."""
    return pyparallel.call_from_main_thread_and_wait(main_wait_for, name)


def main_quick(x):
    return x * 2


def ask_main_quick_after(started_path, x):
    """Waits for `started_path` to exist, then asks main for a quick call."""
    _wait_for(started_path, 30)
    return pyparallel.call_from_main_thread_and_wait(main_quick, x)


def main_sleep(seconds):
    time.sleep(seconds)
    return seconds


def ask_main_to_raise_many(n, msg):
    """n waited main-thread calls that raise; returns how many came back
    as the right exception."""
    ok = 0
    for i in range(n):
        try:
            pyparallel.call_from_main_thread_and_wait(main_raises, msg)
        except CustomError as e:
            ok += str(e) == msg
    return ok


def ask_main_to_sleep(seconds):
    return pyparallel.call_from_main_thread_and_wait(main_sleep, seconds)


def fire_sys_exit(code, wait=False):
    if wait:
        return pyparallel.call_from_main_thread_and_wait(sys.exit, code)
    pyparallel.call_from_main_thread(sys.exit, code)
    return "fired"


def _raise_keyboard_interrupt():
    raise KeyboardInterrupt("from a worker's main-thread call")


def fire_keyboard_interrupt():
    pyparallel.call_from_main_thread(_raise_keyboard_interrupt)
    return "fired"


def _main_raise_value_error(msg):
    raise ValueError(msg)


def fire_to_main_raising(msg):
    pyparallel.call_from_main_thread(_main_raise_value_error, msg)
    return "fired"


# --------------------------------------------------------------------------
# Executor(initializer=, initargs=)

_INIT = {"calls": 0, "args": None}


def init_worker(*args):
    _INIT["calls"] += 1
    _INIT["args"] = args


def init_state():
    return (_INIT["calls"], _INIT["args"], pyparallel.worker_id())


def init_stored_arg():
    return _INIT["args"][0]


def append_line(path, text):
    with open(path, "a") as f:
        f.write(text + "\n")
    print("task output", text, flush=True)
    return text


def _rebuilt(x):
    return tuple(_rebuilt(i) for i in x) if type(x) is tuple else x


def tuple_key_lookups(fm, keys):
    """Looks each tuple key up by itself and by an equal tuple built here
    (hashing frozen tuples, whose 3.14+ hash cache freeze() must have
    filled with the real hash)."""
    fresh = [_rebuilt(k) for k in keys]
    return ([fm[k] for k in keys] + [fm[k] for k in fresh] +
            [hash(k) == hash(f) for k, f in zip(keys, fresh)])
