"""Stress: many tiny tasks, GC in main while workers read frozen data,
concurrent submitters."""

import gc
import os
import sys
import threading

import pyparallel
from pyparallel import Executor, freeze

import support
import tasks

T = 120
N = 100_000


def test_100k_tiny_tasks_map():
    assert list(pyparallel.map(tasks.inc, range(N))) == list(range(1, N + 1))


def test_100k_tiny_tasks_map_chunksize():
    assert list(pyparallel.map(tasks.inc, range(N), chunksize=1000)) == list(range(1, N + 1))


def test_100k_tiny_tasks_executor_map_chunksize():
    with Executor(max_workers=2) as ex:
        out = list(ex.map(tasks.add, range(N), range(N), chunksize=500))
    assert out == [2 * i for i in range(N)]


def test_20k_submits():
    futs = [pyparallel.submit(tasks.square, i) for i in range(20_000)]
    assert [f.result(timeout=T) for f in futs] == [i * i for i in range(20_000)]


def test_main_gc_while_workers_hammer_frozen_data(n_workers):
    words = ["w%d-ü" % i for i in range(5000)]
    data = freeze({w: (i, w.upper(), "τ" * (i % 7)) for i, w in enumerate(words)})
    keys = freeze(tuple(words))
    expected = tasks.hammer(data, keys, 3)
    futs = [pyparallel.submit(tasks.hammer, data, keys, 3) for _ in range(4 * n_workers)]
    rounds = 0
    junk = []
    while not all(f.done() for f in futs) or rounds < 10:
        for i in range(3000):
            node = {"i": i, "ref": data, "self": None, "lst": [keys, i]}
            node["self"] = node
            junk.append(node)
        junk.clear()
        gc.collect()
        rounds += 1
    assert [f.result(timeout=T) for f in futs] == [expected] * (4 * n_workers)
    assert data == {w: (i, w.upper(), "τ" * (i % 7)) for i, w in enumerate(words)}


def test_gc_stress_in_safety_mode():
    r = support.run([sys.executable, os.path.join(support.TESTS_DIR, "safety_scenarios.py"),
                     "gc"], safety=True, timeout=120)
    r.assert_clean_exit(0)
    assert "SCENARIO gc OK" in r.stdout


def test_frozen_containers_are_untracked():
    f = freeze({"a": [1, [2]], "b": ({"c": 1},)})
    for obj in (f, f["a"], f["a"][1], f["b"], f["b"][0]):
        assert not gc.is_tracked(obj), obj


def test_concurrent_submit_from_main_threads():
    n_threads, per_thread = 6, 1500
    results = {}
    errors = []

    def submitter(t):
        try:
            futs = [pyparallel.submit(tasks.add, t * 100_000, i) for i in range(per_thread)]
            results[t] = [f.result(timeout=T) for f in futs]
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=submitter, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(T)
    assert not errors, errors
    for t in range(n_threads):
        assert results[t] == [t * 100_000 + i for i in range(per_thread)]


def test_concurrent_map_from_main_threads():
    out = {}

    def run(t):
        out[t] = list(pyparallel.map(tasks.square, range(t, t + 2000), chunksize=50))

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(T)
    for t in range(4):
        assert out[t] == [i * i for i in range(t, t + 2000)]


def test_concurrent_freeze_and_submit_from_threads():
    errors = []

    def worker(t):
        try:
            for i in range(50):
                f = freeze({"t": t, "i": i, "l": list(range(i))})
                assert pyparallel.submit(tasks.identity, f).result(timeout=T) is f
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(T)
    assert not errors, errors


def test_many_executors_created_and_destroyed():
    for i in range(8):
        with Executor(max_workers=2) as ex:
            assert ex.submit(tasks.inc, i).result(timeout=T) == i + 1
