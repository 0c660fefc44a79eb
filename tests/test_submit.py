"""pyparallel.submit / pyparallel.map: callables, arguments, results,
exceptions, worker identity and calls back into the main interpreter."""

import collections
import concurrent.futures
import datetime
import decimal
import fractions
import functools
import math
import re
import socket
import threading
import time
import types

import pytest

import pyparallel
from pyparallel import RemoteTraceback, TransferError, WorkerError, freeze

import support
import tasks

T = 60
TOP_LEVEL_MSG = re.compile(r"top[- ]level", re.I)


def run1(fn, /, *args, **kwargs):
    return pyparallel.submit(fn, *args, **kwargs).result(timeout=T)


# --------------------------------------------------------------------------
# basics


def test_submit_returns_a_future():
    fut = pyparallel.submit(tasks.add, 40, 2)
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(timeout=T) == 42
    assert fut.done() and not fut.cancelled()
    assert fut.exception() is None


def test_positional_and_keyword_arguments():
    assert run1(tasks.echo, 1, "two", three=3, four=[4]) == ((1, "two"), {"three": 3, "four": [4]})
    assert run1(tasks.mul3, 2, c=5, b=3) == 30
    assert run1(tasks.noop) is None


def test_fn_is_positional_only():
    # a keyword argument called fn goes to the task, not to submit()
    assert run1(tasks.identity_kw, fn=1, args=2, kwargs=3) == {"fn": 1, "args": 2, "kwargs": 3}


def test_submit_bad_calls():
    with pytest.raises(TypeError):
        pyparallel.submit()
    with pytest.raises(TypeError):
        pyparallel.submit(42)
    with pytest.raises(TypeError):
        pyparallel.submit("tasks.add", 1, 2)


def test_many_submits_in_flight():
    futs = [pyparallel.submit(tasks.square, i) for i in range(500)]
    assert [f.result(timeout=T) for f in futs] == [i * i for i in range(500)]


# --------------------------------------------------------------------------
# kinds of callables


def test_builtin_and_stdlib_callables():
    assert run1(len, (1, 2, 3)) == 3
    assert run1(math.sqrt, 16) == 4.0
    assert run1(sorted, [3, 1, 2]) == [1, 2, 3]


def test_decorated_function_with_wraps():
    assert run1(tasks.decorated, 4) == ("wrapped", 40)


def test_static_and_class_methods():
    assert run1(tasks.Klass.static, 5) == ("static", 5)
    assert run1(tasks.Klass.clsmethod, 6) == ("Klass", 6)


def test_unbound_method_with_picklable_instance():
    assert run1(tasks.Klass.method, tasks.Klass(10), 5) == 15


def test_bound_method_via_pickle():
    assert run1(tasks.Klass(100).method, 1) == 101


def test_partial_via_pickle():
    assert run1(functools.partial(tasks.add, 1), 2) == 3
    assert run1(functools.partial(tasks.mul3, 2, c=4), 3) == 24


def test_callable_instance_via_pickle():
    assert run1(tasks.Adder(10), 5) == 15


def test_lambda_rejected_at_submit():
    with pytest.raises(TransferError) as ei:
        pyparallel.submit(lambda x: x, 1)
    assert TOP_LEVEL_MSG.search(str(ei.value)), str(ei.value)


def test_nested_function_rejected_at_submit():
    def nested(x):
        return x

    with pytest.raises(TransferError) as ei:
        pyparallel.submit(nested, 1)
    assert TOP_LEVEL_MSG.search(str(ei.value)), str(ei.value)


def test_closure_rejected_at_submit():
    k = 5

    def closure(x):
        return x + k

    with pytest.raises(TransferError) as ei:
        pyparallel.submit(closure, 1)
    assert TOP_LEVEL_MSG.search(str(ei.value)), str(ei.value)


def test_nested_decorator_without_wraps_rejected():
    def deco(fn):
        def wrapper(*a):
            return fn(*a)
        return wrapper

    with pytest.raises(TransferError):
        pyparallel.submit(deco(tasks.add), 1, 2)


def test_transfer_error_is_type_error():
    with pytest.raises(TypeError):
        pyparallel.submit(lambda: 0)


def test_map_with_lambda_rejected():
    with pytest.raises(TransferError):
        list(pyparallel.map(lambda x: x, [1, 2]))


def test_function_from_missing_module():
    f = types.FunctionType(tasks.noop.__code__, {}, "ghost")
    f.__module__ = "no_such_module_for_pyparallel"
    f.__qualname__ = "ghost"
    try:
        fut = pyparallel.submit(f)
    except (TransferError, ImportError):
        return
    with pytest.raises((ImportError, TransferError, AttributeError)):
        fut.result(timeout=T)
    assert run1(tasks.add, 1, 2) == 3


# --------------------------------------------------------------------------
# arguments and results

ROUNDTRIP = [
    None, True, False, 0, -1, 2**100, -(2**300), 1.5, float("inf"), -0.0, 1 + 2j,
    "", "ascii", "ünïcödé 日本 😀", "x" * 100_000,
    b"", b"\x00\xff" * 1000, bytearray(b"mutable bytes"),
    (), (1, "a", (2.5, None)), [], [1, [2, [3, [4]]]],
    {}, {"a": 1, "b": [1, {"c": {1, 2}}]}, {1: "x", (1, 2): "y", None: "z", 2.5: "w"},
    set(), {1, "a", (1, 2)}, frozenset(), frozenset({1, 2}),
    [{"k": [set(), frozenset({"q"}), bytearray(b"z")]}],
    list(range(10_000)), {str(i): i for i in range(5_000)},
]


@pytest.mark.parametrize("value", ROUNDTRIP, ids=lambda v: type(v).__name__ + ":" + repr(v)[:15])
def test_builtin_values_roundtrip(value):
    back = run1(tasks.identity, value)
    assert back == value
    assert tasks.deep_types(back) == tasks.deep_types(value)


def test_builtin_value_types_seen_by_worker():
    value = {"l": [1], "t": (1,), "s": {1}, "fs": frozenset(), "ba": bytearray(b"x"), "d": {}}
    assert run1(tasks.deep_types, value) == tasks.deep_types(value)


def test_results_of_every_builtin_type():
    back = run1(tasks.make_values)
    expected = tasks.make_values()
    assert back == expected
    assert tasks.deep_types(back) == tasks.deep_types(expected)


def test_nan_roundtrip():
    assert math.isnan(run1(tasks.identity, float("nan")))


def test_arguments_are_copies():
    d = {"list": [1], "x": 1}
    back = run1(tasks.mutate_copy, d)
    assert d == {"list": [1], "x": 1}
    assert back == {"list": [1, "w"], "x": 1, "worker": True}
    assert run1(tasks.identity, d) is not d


def test_large_result():
    r = run1(tasks.big_bytes, 20_000_000)
    assert len(r) == 20_000_000 and r[:2] == b"\xab\xab" and r[-1] == 0xAB


def test_frozen_argument_passes_by_pointer():
    f = freeze({"users": [{"name": "ann"}, {"name": "bob"}], "blob": b"z" * 1_000_000})
    assert run1(tasks.identity, f) is f
    assert run1(tasks.identity, f["users"]) is f["users"]
    assert run1(tasks.identity, f["blob"]) is f["blob"]
    assert run1(tasks.identity_kw, data=f)["data"] is f


def test_frozen_subobject_returned_by_pointer():
    f = freeze({"users": [{"name": "ann"}]})
    assert run1(tasks.getitem, f, "users") is f["users"]


def test_frozen_scalars_by_pointer():
    s = freeze("frozen ünïcode string " * 10)
    t = freeze(tuple(range(100)))
    fs = freeze({"a", "b"})
    for obj in (s, t, fs):
        assert run1(tasks.identity, obj) is obj


def test_frozen_data_is_usable_in_worker():
    f = freeze({"a": [1, 2, 3], "b": {"c": "déjà vu"}})
    assert run1(tasks.checksum, f) == tasks.checksum(f)


PICKLED = [
    tasks.Box(1),
    tasks.Box({"nested": [tasks.Box(2)]}),
    collections.OrderedDict([("b", 1), ("a", 2)]),
    collections.Counter("abracadabra"),
    collections.defaultdict(list, {"a": [1]}),
    collections.deque([1, 2, 3]),
    decimal.Decimal("3.14159"),
    fractions.Fraction(22, 7),
    datetime.datetime(2024, 5, 17, 12, 30, 1),
    datetime.timedelta(days=3),
    range(2, 20, 3),
    [tasks.Box(3), {"inside": tasks.Box(4)}],
]


@pytest.mark.parametrize("value", PICKLED, ids=lambda v: type(v).__name__)
def test_pickle_fallback_roundtrip(value):
    back = run1(tasks.identity, value)
    assert back == value
    assert type(back) is type(value)


def test_pickle_fallback_object_built_in_worker():
    assert run1(tasks.make_box, [1, 2]) == tasks.Box([1, 2])
    assert run1(tasks.unbox, tasks.Box("v")) == "v"


def test_frozen_map_inside_pickled_object():
    f = freeze({"a": 1, "b": [2]})
    back = run1(tasks.identity, tasks.Box(f))
    assert back.value == {"a": 1, "b": (2,)}


@pytest.mark.parametrize("make", [
    threading.Lock,
    threading.Event,
    lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),
    lambda: (lambda: 0),
    lambda: (i for i in range(3)),
], ids=["lock", "event", "socket", "lambda", "generator"])
def test_unpicklable_argument_raises_transfer_error_at_submit(make):
    obj = make()
    try:
        with pytest.raises(TransferError):
            pyparallel.submit(tasks.identity, obj)
        with pytest.raises(TransferError):
            pyparallel.submit(tasks.identity, [1, {"deep": obj}])
    finally:
        if isinstance(obj, socket.socket):
            obj.close()


def test_transfer_error_names_the_argument():
    lock = threading.Lock()
    with pytest.raises(TransferError) as ei:
        pyparallel.submit(tasks.identity_kw, ok=1, my_lock_argument=lock)
    assert "my_lock_argument" in str(ei.value)
    with pytest.raises(TransferError) as ei:
        pyparallel.submit(tasks.echo, 1, 2, lock)
    assert "lock" in str(ei.value).lower()


def test_unsendable_result_raises_transfer_error():
    for fn in (tasks.return_lock, tasks.return_generator, tasks.return_nested_lock):
        fut = pyparallel.submit(fn)
        with pytest.raises(TransferError):
            fut.result(timeout=T)
    assert run1(tasks.add, 2, 2) == 4


# --------------------------------------------------------------------------
# exceptions


def test_exception_type_and_args():
    fut = pyparallel.submit(tasks.raise_value_error, "boom", 42)
    with pytest.raises(ValueError) as ei:
        fut.result(timeout=T)
    assert ei.value.args == ("boom", 42)
    assert isinstance(fut.exception(), ValueError)


def test_exception_has_remote_traceback():
    fut = pyparallel.submit(tasks.raise_value_error, "boom")
    with pytest.raises(ValueError) as ei:
        fut.result(timeout=T)
    cause = ei.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    text = str(cause)
    assert "raise_value_error" in text
    assert "tasks.py" in text
    assert "boom" in text


def test_deep_remote_traceback_lists_every_frame():
    with pytest.raises(RuntimeError) as ei:
        run1(tasks.raise_deep, 3)
    text = str(ei.value.__cause__)
    assert "raise_deep" in text and "_deep_helper" in text
    assert text.count("_deep_helper") >= 4


@pytest.mark.parametrize("fn,args,exc_type", [
    (tasks.raise_key_error, ("missing",), KeyError),
    (tasks.raise_zero_division, (), ZeroDivisionError),
    (tasks.raise_custom, ("custom message",), tasks.CustomError),
    (tasks.raise_chained, (), ValueError),
    (tasks.add, (1, "x"), TypeError),
    (tasks.mul3, (1,), TypeError),  # wrong arity is an error in the worker
])
def test_exception_types(fn, args, exc_type):
    fut = pyparallel.submit(fn, *args)
    with pytest.raises(exc_type) as ei:
        fut.result(timeout=T)
    assert type(ei.value) is exc_type
    assert isinstance(ei.value.__cause__, RemoteTraceback)


def test_custom_exception_args():
    with pytest.raises(tasks.CustomError) as ei:
        run1(tasks.raise_custom, "the message")
    assert ei.value.args == ("the message",)


def test_unpicklable_exception_becomes_worker_error():
    fut = pyparallel.submit(tasks.raise_unpicklable, "cannot ship me")
    with pytest.raises(WorkerError) as ei:
        fut.result(timeout=T)
    msg = str(ei.value)
    assert "UnpicklableError" in msg
    assert "cannot ship me" in msg
    assert run1(tasks.add, 1, 2) == 3


def test_system_exit_in_worker_does_not_kill_it(tmp_path, n_workers):
    fut = pyparallel.submit(tasks.call_sys_exit, 3)
    with pytest.raises(BaseException) as ei:
        fut.result(timeout=T)
    assert not isinstance(ei.value, TimeoutError)
    # every worker is still alive
    futs = [pyparallel.submit(tasks.rendezvous, str(tmp_path), n_workers)
            for _ in range(n_workers)]
    assert sorted(f.result(timeout=T) for f in futs) == list(range(n_workers))


def test_failures_do_not_poison_the_pool():
    futs = [pyparallel.submit(tasks.raise_value_error if i % 3 == 0 else tasks.inc, i)
            for i in range(60)]
    for i, f in enumerate(futs):
        if i % 3 == 0:
            with pytest.raises(ValueError):
                f.result(timeout=T)
        else:
            assert f.result(timeout=T) == i + 1


# --------------------------------------------------------------------------
# map


def test_map_in_order():
    assert list(pyparallel.map(tasks.inc, range(1000))) == list(range(1, 1001))


def test_map_several_iterables_stops_at_shortest():
    assert list(pyparallel.map(tasks.add, [1, 2, 3, 4], (10, 20, 30))) == [11, 22, 33]
    assert list(pyparallel.map(tasks.mul3, [1, 2], [3, 4], [5, 6])) == [15, 48]


def test_map_accepts_generators_and_empty():
    assert list(pyparallel.map(tasks.square, (i for i in range(5)))) == [0, 1, 4, 9, 16]
    assert list(pyparallel.map(tasks.square, [])) == []


@pytest.mark.parametrize("chunksize", [1, 7, 100, 5000])
def test_map_chunksize(chunksize):
    assert list(pyparallel.map(tasks.square, range(300), chunksize=chunksize)) == \
        [i * i for i in range(300)]


@pytest.mark.parametrize("chunksize", [0, -1])
def test_map_bad_chunksize(chunksize):
    with pytest.raises(ValueError):
        list(pyparallel.map(tasks.square, range(3), chunksize=chunksize))


def test_map_not_iterable():
    with pytest.raises(TypeError):
        list(pyparallel.map(tasks.square, 5))


def test_map_returns_an_iterator():
    it = pyparallel.map(tasks.square, range(3))
    assert iter(it) is it
    assert next(it) == 0
    assert list(it) == [1, 4]


def test_map_raises_at_the_failing_item():
    it = pyparallel.map(tasks.getitem, [{"a": 1}, {}, {"a": 3}], ["a", "a", "a"])
    assert next(it) == 1
    with pytest.raises(KeyError):
        next(it)


def test_map_frozen_arguments():
    f = freeze({"k%d" % i: i for i in range(100)})
    assert list(pyparallel.map(tasks.getitem, [f] * 100, ["k%d" % i for i in range(100)])) == \
        list(range(100))
    assert all(r is f for r in pyparallel.map(tasks.identity, [f] * 20))


def test_map_timeout():
    it = pyparallel.map(tasks.sleep_return, [1.5], timeout=0.1)
    with pytest.raises(TimeoutError):
        list(it)


def test_map_with_frozen_and_timeout_ok():
    assert list(pyparallel.map(tasks.inc, range(10), timeout=T)) == list(range(1, 11))


# --------------------------------------------------------------------------
# where am I?


def test_main_context():
    assert pyparallel.is_parallel_context() is False
    assert pyparallel.worker_id() is None


def test_worker_context_and_ids(n_workers):
    results = [f.result(timeout=T) for f in [pyparallel.submit(tasks.where) for _ in range(50)]]
    for parallel, wid in results:
        assert parallel is True
        assert isinstance(wid, int) and 0 <= wid < n_workers


def test_all_workers_run_at_once(tmp_path, n_workers):
    """n tasks that each wait for all n to be running: needs n workers in
    parallel, and their ids are exactly range(n)."""
    futs = [pyparallel.submit(tasks.rendezvous, str(tmp_path), n_workers)
            for _ in range(n_workers)]
    ids = sorted(f.result(timeout=T) for f in futs)
    assert ids == list(range(n_workers))


def test_worker_sees_main_sys_path():
    info = run1(tasks.env_info)
    assert support.TESTS_DIR in info["path"]
    assert info["parallel"] is True


# --------------------------------------------------------------------------
# call_from_main_thread*


@pytest.fixture
def sink():
    tasks.SINK.clear()
    yield tasks.SINK
    tasks.SINK.clear()


def test_call_from_main_thread_in_main_just_calls(sink):
    assert pyparallel.call_from_main_thread_and_wait(tasks.add, 1, 2) == 3
    assert pyparallel.call_from_main_thread_and_wait(tasks.echo, 1, k=2) == ((1,), {"k": 2})
    pyparallel.call_from_main_thread(tasks.append_to_sink, "direct")
    assert sink == ["direct"]
    with pytest.raises(tasks.CustomError):
        pyparallel.call_from_main_thread_and_wait(tasks.main_raises, "x")


def test_call_from_main_thread_and_wait_from_worker(sink):
    assert run1(tasks.append_via_main_and_wait, "a") == 1
    assert run1(tasks.append_via_main_and_wait, "b") == 2
    assert sink == ["a", "b"]


def test_call_from_main_thread_and_wait_runs_in_main():
    # It runs in the main interpreter (on pyparallel's completion thread,
    # which holds the main GIL, not necessarily on the main thread itself).
    parallel, wid, _is_main_thread = run1(tasks.ask_main_where)
    assert parallel is False
    assert wid is None


def test_call_from_main_thread_and_wait_kwargs():
    assert run1(tasks.ask_main_with_kwargs) == ((1, 2), {"key": "v"})


def test_call_from_main_thread_and_wait_reraises_in_worker():
    assert run1(tasks.ask_main_to_raise, "from main") == ("CustomError", "from main")


def test_call_from_main_thread_fire_and_forget(sink):
    futs = [pyparallel.submit(tasks.fire_to_main, i) for i in range(20)]
    assert [f.result(timeout=T) for f in futs] == ["sent"] * 20
    deadline = time.monotonic() + T
    while len(sink) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(sink) == list(range(20))


def test_call_from_main_thread_many_workers_and_wait(sink):
    futs = [pyparallel.submit(tasks.append_via_main_and_wait, i) for i in range(100)]
    for f in futs:
        f.result(timeout=T)
    assert sorted(sink) == list(range(100))


def test_call_from_main_thread_while_main_blocks_in_map(sink):
    # the main thread is blocked iterating map() when the workers call in
    results = list(pyparallel.map(tasks.append_via_main_and_wait, range(30), timeout=T))
    assert sorted(results) == list(range(1, 31))
    assert sorted(sink) == list(range(30))


def test_deep_argument_does_not_crash(tmp_path):
    r = support.run_code(tmp_path, """
        import pyparallel, tasks
        x = []
        for _ in range(200_000):
            x = [x]
        try:
            fut = pyparallel.submit(tasks.identity, x)
            r = fut.result(timeout=60)
        except (pyparallel.TransferError, RecursionError, ValueError) as e:
            print("raised", type(e).__name__)
        else:
            print("returned")
        print("after", pyparallel.submit(tasks.add, 1, 2).result(timeout=60))
        """, timeout=90)
    r.assert_clean_exit(0)
    assert "after 3" in r.stdout
