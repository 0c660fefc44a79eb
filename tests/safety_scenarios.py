"""Sharing scenarios, run in a subprocess in pyparallel's safety-proof mode
(PYPARALLEL_SAFETY=1: frozen memory is write-protected, so any hidden write
into shared data crashes the process instead of racing silently).

    PYPARALLEL_SAFETY=1 python tests/safety_scenarios.py SCENARIO [...]

Each scenario prints "SCENARIO <name> OK" when it passes.  test_safety.py
runs them; a crash shows up there as a non-zero return code.
"""

import gc
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pyparallel  # noqa: E402

import tasks  # noqa: E402

T = 120


def build_dataset(n=20_000):
    words = ["alpha", "beta", "gämma", "δέλτα", "日本語", "emoji😀", "x" * 50]
    return {
        "meta": {"name": "dataset", "version": 3, "tags": {"a", "b", "ç"}, "ratio": 0.75,
                 "big": 2**120, "neg": -(2**70), "c": 1 + 2j, "none": None, "flag": True},
        "rows": [
            {"id": i, "word": words[i % len(words)] + str(i), "score": i * 0.5,
             "blob": bytes([i % 256]) * (i % 17), "pair": (i, str(i))}
            for i in range(n)
        ],
        "index": {words[i % len(words)] + str(i): i for i in range(n)},
        "blob": bytes(range(256)) * 4096,   # 1 MiB
        "frozen_words": frozenset(words),
        "names": ["plain_name", "ünïcode_name", "名前", "with space", "127.0.0.1"],
        "sources": ["'ü' + 'ß'", "len('日本語') * 2", "sum((1, 2, 3))"],
    }


def wait_all(futs):
    return [f.result(timeout=T) for f in futs]


# --------------------------------------------------------------------------


def scenario_read(data, n):
    """Workers read every part of the frozen data in the usual ways."""
    expected = tasks.checksum(data)
    assert wait_all([pyparallel.submit(tasks.checksum, data) for _ in range(2 * n)]) == \
        [expected] * (2 * n)
    expected_desc = tasks.describe_frozen(data["meta"])
    assert wait_all([pyparallel.submit(tasks.describe_frozen, data["meta"])
                     for _ in range(n)]) == [expected_desc] * n
    keys = tuple(data["index"])
    assert pyparallel.submit(tasks.lookup_sum, data["index"], keys).result(timeout=T) == \
        tasks.lookup_sum(data["index"], keys)
    assert pyparallel.submit(json.dumps, data["index"]).result(timeout=T) == \
        json.dumps(data["index"])
    assert pyparallel.submit(tasks.type_name, data["index"]).result(timeout=T) == \
        type(data["index"]).__name__


def scenario_identity(data, n):
    """Frozen objects go to workers and come back by pointer, many times."""
    parts = [data, data["rows"], data["rows"][5], data["index"], data["blob"],
             data["frozen_words"], data["meta"]["big"], data["rows"][7]["word"]]
    for _ in range(50):
        futs = [pyparallel.submit(tasks.identity, p) for p in parts]
        for p, f in zip(parts, futs):
            assert f.result(timeout=T) is p
    assert all(r is data for r in pyparallel.map(tasks.identity, [data] * 2000, chunksize=50))


def scenario_hash(data, n):
    """Hashing frozen str/bytes/tuple/frozenset in workers (hash caches)."""
    objs = [data["rows"][i]["word"] for i in range(0, 2000, 3)]
    objs += [data["rows"][i]["blob"] for i in range(0, 2000, 7)]
    objs += [data["rows"][i]["pair"] for i in range(0, 2000, 11)]
    objs += [data["frozen_words"], data["meta"]["tags"], data["blob"], data["meta"]["big"],
             data["meta"]["c"], data["meta"]["ratio"]]
    objs = pyparallel.freeze(objs)
    expected = tasks.hash_all(objs)
    assert wait_all([pyparallel.submit(tasks.hash_all, objs) for _ in range(n)]) == [expected] * n


def scenario_strings(data, n):
    """Frozen strs used as attribute/type/keyword names, interned, passed to
    C functions that want UTF-8 (the lazily-filled UTF-8 cache)."""
    names = data["names"]
    expected = tasks.use_strings(names)
    assert wait_all([pyparallel.submit(tasks.use_strings, names) for _ in range(n)]) == \
        [expected] * n
    words = tuple(data["rows"][i]["word"] for i in range(0, 300, 7))
    expected = tasks.use_strings(words)
    assert pyparallel.submit(tasks.use_strings, words).result(timeout=T) == expected
    srcs = data["sources"]
    assert pyparallel.submit(tasks.use_strings_compile, srcs).result(timeout=T) == \
        ["üß", 6, 6]


def scenario_mutation(data, n):
    """Attempts to mutate frozen data in a worker raise TypeError."""
    for fm in (data, data["meta"], data["rows"][0]):
        results, unchanged = pyparallel.submit(tasks.try_all_mutations, fm).result(timeout=T)
        assert unchanged, results
        for kind, (exc_type, msg) in results.items():
            assert exc_type == "TypeError", (kind, exc_type, msg)
    # and in main
    for kind in tasks.MUTATIONS:
        assert tasks.try_mutation(data["meta"], kind)[0] == "TypeError", kind


def scenario_gc(data, n):
    """The main interpreter allocates and collects garbage in a loop while
    every worker hammers the frozen data."""
    keys = tuple(data["index"])[:3000]
    keys = pyparallel.freeze(keys)
    expected = tasks.hammer(data["index"], keys, 2)
    futs = [pyparallel.submit(tasks.hammer, data["index"], keys, 2) for _ in range(4 * n)]
    futs += [pyparallel.submit(tasks.checksum, data) for _ in range(n)]
    rounds = 0
    junk = []
    while not all(f.done() for f in futs) or rounds < 20:
        # cyclic garbage, containers pointing at frozen data, then collect
        for i in range(2000):
            a = {"i": i, "frozen": data["rows"][i % 100], "l": []}
            a["l"].append(a)
            junk.append([a, data["meta"], (data["index"],)])
        del junk[:]
        gc.collect()
        rounds += 1
        assert rounds < 100_000
    results = wait_all(futs)
    assert results[:4 * n] == [expected] * (4 * n)
    assert results[4 * n:] == [tasks.checksum(data)] * n
    print("gc rounds:", rounds)


def scenario_main_reads_too(data, n):
    """Main reads the same frozen data while workers read it."""
    futs = [pyparallel.submit(tasks.checksum, data) for _ in range(2 * n)]
    expected = tasks.checksum(data)
    while not all(f.done() for f in futs):
        assert tasks.checksum(data["rows"][:50]) >= 0
        json.dumps(data["meta"], default=repr)
    assert wait_all(futs) == [expected] * (2 * n)


def scenario_late_freeze(data, n):
    """Data frozen after the workers started is shared as well (if the mode
    allows freezing then; if not, freeze must raise, not corrupt)."""
    try:
        late = pyparallel.freeze({"late": ["ünï", b"b", 2**80, (1.5,)] * 100})
    except (RuntimeError, pyparallel.FreezeError) as e:
        print("late freeze refused:", e)
        return
    assert pyparallel.submit(tasks.identity, late).result(timeout=T) is late
    assert pyparallel.submit(tasks.checksum, late).result(timeout=T) == tasks.checksum(late)


def scenario_eval_globals(data, n):
    """eval/exec in workers with frozen maps as globals are refused (they
    used to write __builtins__ into the map: a fault here)."""
    for fm in (data["meta"], data["rows"][3]):
        for out in wait_all([pyparallel.submit(tasks.eval_exec_with_frozen_globals, fm)
                             for _ in range(n)]):
            assert out["eval"][0] == out["exec"][0] == out["implied"][0] == "TypeError", out
            assert out["unchanged"] is True


def scenario_long_names(data, n):
    """Frozen strs longer than the interning limit used as attribute and
    keyword names (implicit interning used to write their state)."""
    names = pyparallel.freeze(["".join(["long_name_%d_" % i, "y" * 70]) for i in range(20)])
    expected = [1, 2, True, True] * len(names)
    assert wait_all([pyparallel.submit(tasks.use_names, names) for _ in range(n)]) == \
        [expected] * n


def scenario_preimmortal(data, n):
    """Non-ASCII strs that CPython made immortal before freeze() (code object
    names, interned strs): their UTF-8 caches used to be filled by workers."""
    def f():
        ḟrozen_ñame_one = ḟrozen_ñame_two = 1
        return ḟrozen_ñame_one + ḟrozen_ñame_two
    names = list(f.__code__.co_varnames)
    names.append(sys.intern("".join(["ïnterned_", "ñame"])))
    frozen = pyparallel.freeze(names)
    expected = tasks.use_utf8(frozen)
    assert wait_all([pyparallel.submit(tasks.use_utf8, frozen) for _ in range(n)]) == \
        [expected] * n


def scenario_tuple_keys(data, n):
    """A FrozenMap keyed by tuples: looked up in main and in workers (3.14+
    tuples cache their hash; an arena tuple must not read as hash 0)."""
    fm = pyparallel.freeze({(i, "k", (i, 2.5)): i for i in range(500)})
    keys = pyparallel.freeze(list(fm))
    expected = tasks.tuple_key_lookups(fm, keys)
    assert expected == list(range(500)) * 2 + [True] * 500
    assert wait_all([pyparallel.submit(tasks.tuple_key_lookups, fm, keys)
                     for _ in range(n)]) == [expected] * n


SCENARIOS = {
    "read": scenario_read,
    "identity": scenario_identity,
    "hash": scenario_hash,
    "strings": scenario_strings,
    "mutation": scenario_mutation,
    "gc": scenario_gc,
    "main_reads_too": scenario_main_reads_too,
    "late_freeze": scenario_late_freeze,
    "eval_globals": scenario_eval_globals,
    "long_names": scenario_long_names,
    "preimmortal": scenario_preimmortal,
    "tuple_keys": scenario_tuple_keys,
}


def write_into_frozen(use_configure):
    """Deliberately write into frozen memory: in safety mode this must kill
    the process with SIGSEGV."""
    import ctypes

    if use_configure:
        pyparallel.configure(safety=True)
    fb = pyparallel.freeze(b"frozen bytes payload")
    fm = pyparallel.freeze({"k": fb})
    # make sure the data was published to the workers
    assert pyparallel.submit(tasks.identity, fm).result(timeout=T) is fm
    offset = sys.getsizeof(b"") - 1          # first data byte of a bytes object
    print("writing", flush=True)
    ctypes.c_char.from_address(id(fb) + offset).value = b"X"
    print("write went through: %r" % fb[:3], flush=True)


def main(argv):
    if not argv:
        print(__doc__)
        return 2
    if argv[0] in ("write", "write-configure"):
        write_into_frozen(argv[0] == "write-configure")
        return 0
    if os.environ.get("PYPARALLEL_SAFETY") != "1":
        print("PYPARALLEL_SAFETY=1 is not set", file=sys.stderr)
        return 2
    names = list(SCENARIOS) if argv == ["all"] else argv
    data = pyparallel.freeze(build_dataset())
    n = max(2, len(os.sched_getaffinity(0)))
    for name in names:
        t0 = time.monotonic()
        SCENARIOS[name](data, n)
        print("SCENARIO %s OK (%.2fs)" % (name, time.monotonic() - t0), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
