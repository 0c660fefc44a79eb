"""Fast smoke test: import, freeze, one task, one map.  CI also runs this
file on its own."""

import collections.abc
import concurrent.futures

import pyparallel

import tasks


def test_import_and_public_names():
    for name in ("freeze", "is_frozen", "submit", "map", "Executor", "configure",
                 "shutdown", "is_parallel_context", "worker_id",
                 "call_from_main_thread", "call_from_main_thread_and_wait",
                 "FrozenMap", "FreezeError", "TransferError", "WorkerError",
                 "WorkerImportError", "RemoteTraceback"):
        assert hasattr(pyparallel, name), name
    assert issubclass(pyparallel.FreezeError, TypeError)
    assert issubclass(pyparallel.TransferError, TypeError)
    assert issubclass(pyparallel.WorkerImportError, ImportError)
    assert issubclass(pyparallel.Executor, concurrent.futures.Executor)


def test_freeze_a_dict():
    d = {"name": "pyparallel", "cores": [1, 2], "tags": {"a", "b"}}
    f = pyparallel.freeze(d)
    assert isinstance(f, pyparallel.FrozenMap)
    assert isinstance(f, collections.abc.Mapping)
    assert f == {"name": "pyparallel", "cores": (1, 2), "tags": frozenset("ab")}
    assert f["cores"] == (1, 2)
    assert f["tags"] == frozenset({"a", "b"})
    assert pyparallel.is_frozen(f)
    assert not pyparallel.is_frozen(d)


def test_submit_one_task():
    fut = pyparallel.submit(tasks.add, 2, 3)
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(timeout=60) == 5


def test_worker_sees_parallel_context():
    parallel, wid = pyparallel.submit(tasks.where).result(timeout=60)
    assert parallel is True
    assert isinstance(wid, int)
    assert pyparallel.is_parallel_context() is False
    assert pyparallel.worker_id() is None


def test_map():
    assert list(pyparallel.map(tasks.square, range(20))) == [i * i for i in range(20)]


def test_frozen_argument_by_pointer():
    f = pyparallel.freeze({"k": "v" * 10})
    assert pyparallel.submit(tasks.identity, f).result(timeout=60) is f
