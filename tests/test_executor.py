"""pyparallel.Executor as a concurrent.futures.Executor, and the default
pool's configure()/shutdown()."""

import asyncio
import concurrent.futures
import os
import threading

import pytest

import pyparallel
from pyparallel import Executor

import tasks

T = 60


def wait_for_file(path, timeout=T):
    import time
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, "task never started: %s" % path
        time.sleep(0.005)


class Blocker:
    """Occupy a worker with a task until release() is called."""

    def __init__(self, submit, tmp_path, name="b"):
        self.started = str(tmp_path / (name + ".started"))
        self.released = str(tmp_path / (name + ".release"))
        self.future = submit(tasks.block_until, self.started, self.released)

    def wait_started(self):
        wait_for_file(self.started)

    def release(self):
        with open(self.released, "w") as f:
            f.write("go")


# --------------------------------------------------------------------------
# the Executor API


def test_is_a_concurrent_futures_executor():
    assert issubclass(Executor, concurrent.futures.Executor)
    with Executor(max_workers=2) as ex:
        assert isinstance(ex, concurrent.futures.Executor)


def test_submit_and_map():
    with Executor(max_workers=2) as ex:
        fut = ex.submit(tasks.add, 1, 2)
        assert isinstance(fut, concurrent.futures.Future)
        assert fut.result(timeout=T) == 3
        assert ex.submit(tasks.identity_kw, a=1, fn=2).result(timeout=T) == {"a": 1, "fn": 2}
        assert list(ex.map(tasks.square, range(50))) == [i * i for i in range(50)]
        assert list(ex.map(tasks.add, range(5), range(10, 15))) == [10, 12, 14, 16, 18]
        assert list(ex.map(tasks.square, range(200), chunksize=16)) == [i * i for i in range(200)]
        assert list(ex.map(tasks.square, range(10), timeout=T)) == [i * i for i in range(10)]


def test_worker_ids_within_max_workers(tmp_path):
    with Executor(max_workers=2) as ex:
        ids = sorted(f.result(timeout=T) for f in
                     [ex.submit(tasks.rendezvous, str(tmp_path), 2) for _ in range(2)])
        assert ids == [0, 1]
        for parallel, wid in [ex.submit(tasks.where).result(timeout=T) for _ in range(20)]:
            assert parallel is True and wid in (0, 1)


def test_single_worker_executor():
    with Executor(max_workers=1) as ex:
        assert {ex.submit(tasks.where).result(timeout=T)[1] for _ in range(10)} == {0}


def test_more_workers_than_cpus(tmp_path):
    n = 3
    with Executor(max_workers=n) as ex:
        ids = sorted(f.result(timeout=T) for f in
                     [ex.submit(tasks.rendezvous, str(tmp_path), n) for _ in range(n)])
    assert ids == list(range(n))


def test_executor_default_max_workers():
    with Executor() as ex:
        assert ex.submit(tasks.inc, 1).result(timeout=T) == 2


def test_context_manager_waits_for_pending_work():
    with Executor(max_workers=2) as ex:
        futs = [ex.submit(tasks.sleep_return, 0.01, i) for i in range(20)]
    assert all(f.done() for f in futs)
    assert [f.result() for f in futs] == list(range(20))


def test_exception_in_executor_task():
    with Executor(max_workers=1) as ex:
        with pytest.raises(ValueError) as ei:
            ex.submit(tasks.raise_value_error, "x").result(timeout=T)
        assert isinstance(ei.value.__cause__, pyparallel.RemoteTraceback)
        with pytest.raises(KeyError):
            list(ex.map(tasks.getitem, [{1: 1}, {}], [1, 1]))


def test_lambda_rejected_by_executor():
    with Executor(max_workers=1) as ex:
        with pytest.raises(pyparallel.TransferError):
            ex.submit(lambda: 1)


def test_frozen_by_pointer_through_executor():
    f = pyparallel.freeze({"a": [1, 2]})
    with Executor(max_workers=2) as ex:
        assert ex.submit(tasks.identity, f).result(timeout=T) is f


def test_several_executors_and_default_pool_at_once():
    with Executor(max_workers=1) as a, Executor(max_workers=2) as b:
        fa = [a.submit(tasks.inc, i) for i in range(20)]
        fb = [b.submit(tasks.square, i) for i in range(20)]
        fd = [pyparallel.submit(tasks.add, i, i) for i in range(20)]
        assert [f.result(timeout=T) for f in fa] == [i + 1 for i in range(20)]
        assert [f.result(timeout=T) for f in fb] == [i * i for i in range(20)]
        assert [f.result(timeout=T) for f in fd] == [2 * i for i in range(20)]


# --------------------------------------------------------------------------
# max_workers validation


@pytest.mark.parametrize("bad", [0, -1, -100])
def test_max_workers_bad_value(bad):
    with pytest.raises(ValueError):
        Executor(max_workers=bad)


@pytest.mark.parametrize("bad", ["2", 2.5, [2], object()])
def test_max_workers_bad_type(bad):
    with pytest.raises(TypeError):
        Executor(max_workers=bad)


# --------------------------------------------------------------------------
# shutdown


def test_submit_after_shutdown_raises():
    ex = Executor(max_workers=1)
    assert ex.submit(tasks.inc, 1).result(timeout=T) == 2
    ex.shutdown()
    with pytest.raises(RuntimeError):
        ex.submit(tasks.inc, 1)
    with pytest.raises(RuntimeError):
        list(ex.map(tasks.inc, [1]))
    ex.shutdown()  # a second shutdown is harmless
    ex.shutdown(wait=False)


def test_shutdown_before_any_work():
    ex = Executor(max_workers=2)
    ex.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        ex.submit(tasks.inc, 1)


def test_shutdown_wait_true_runs_queued_work(tmp_path):
    ex = Executor(max_workers=1)
    b = Blocker(ex.submit, tmp_path)
    queued = [ex.submit(tasks.inc, i) for i in range(10)]
    b.wait_started()
    t = threading.Timer(0.2, b.release)
    t.start()
    ex.shutdown(wait=True)
    t.join()
    assert b.future.result(timeout=0) == "released"
    assert all(f.done() for f in queued)
    assert [f.result(timeout=0) for f in queued] == list(range(1, 11))


def test_shutdown_wait_false_still_completes_work(tmp_path):
    ex = Executor(max_workers=1)
    futs = [ex.submit(tasks.sleep_return, 0.01, i) for i in range(10)]
    ex.shutdown(wait=False)
    assert [f.result(timeout=T) for f in futs] == list(range(10))


def test_shutdown_cancel_futures(tmp_path):
    ex = Executor(max_workers=1)
    b = Blocker(ex.submit, tmp_path)
    queued = [ex.submit(tasks.inc, i) for i in range(10)]
    b.wait_started()
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    for f in queued:
        with pytest.raises(concurrent.futures.CancelledError):
            f.result(timeout=0)
    b.release()
    assert b.future.result(timeout=T) == "released"
    assert not b.future.cancelled()
    ex.shutdown(wait=True)


def test_shutdown_cancel_futures_and_wait(tmp_path):
    ex = Executor(max_workers=1)
    b = Blocker(ex.submit, tmp_path)
    queued = [ex.submit(tasks.inc, i) for i in range(10)]
    b.wait_started()
    t = threading.Timer(0.2, b.release)
    t.start()
    ex.shutdown(wait=True, cancel_futures=True)
    t.join()
    assert b.future.result(timeout=0) == "released"
    assert all(f.cancelled() for f in queued)


def test_cancel_not_started_future(tmp_path):
    with Executor(max_workers=1) as ex:
        b = Blocker(ex.submit, tmp_path)
        b.wait_started()
        pending = ex.submit(tasks.inc, 1)
        assert b.future.running() or not b.future.done()
        assert b.future.cancel() is False  # already running
        assert pending.cancel() is True
        assert pending.cancelled()
        b.release()
        assert b.future.result(timeout=T) == "released"
        assert ex.submit(tasks.inc, 2).result(timeout=T) == 3
        with pytest.raises(concurrent.futures.CancelledError):
            pending.result(timeout=0)


# --------------------------------------------------------------------------
# interplay with concurrent.futures and asyncio


def test_as_completed_and_wait():
    with Executor(max_workers=2) as ex:
        futs = [ex.submit(tasks.square, i) for i in range(30)]
        got = sorted(f.result() for f in concurrent.futures.as_completed(futs, timeout=T))
        assert got == sorted(i * i for i in range(30))
        futs = [ex.submit(tasks.inc, i) for i in range(10)]
        done, not_done = concurrent.futures.wait(futs, timeout=T,
                                                 return_when=concurrent.futures.ALL_COMPLETED)
        assert len(done) == 10 and not not_done
        futs = [ex.submit(tasks.inc, 1), ex.submit(tasks.raise_value_error, "x")]
        done, _ = concurrent.futures.wait(futs, timeout=T,
                                          return_when=concurrent.futures.FIRST_EXCEPTION)
        assert futs[1] in done


def test_as_completed_default_pool():
    futs = [pyparallel.submit(tasks.inc, i) for i in range(20)]
    assert sorted(f.result() for f in concurrent.futures.as_completed(futs, timeout=T)) == \
        list(range(1, 21))


def test_add_done_callback():
    calls = []
    done = threading.Event()

    def cb(fut):
        calls.append(fut.result())
        if len(calls) == 5:
            done.set()

    with Executor(max_workers=2) as ex:
        futs = [ex.submit(tasks.inc, i) for i in range(5)]
        for f in futs:
            f.add_done_callback(cb)
        assert done.wait(T)
        # callback added after completion runs at once
        late = []
        futs[0].result(timeout=T)
        futs[0].add_done_callback(lambda f: late.append(f.result()))
        assert late == [1]
    assert sorted(calls) == [1, 2, 3, 4, 5]


def test_done_callback_sees_exception():
    seen = []
    ev = threading.Event()
    fut = pyparallel.submit(tasks.raise_value_error, "cb")
    fut.add_done_callback(lambda f: (seen.append(type(f.exception())), ev.set()))
    assert ev.wait(T)
    assert seen == [ValueError]


def test_asyncio_run_in_executor():
    async def main():
        loop = asyncio.get_running_loop()
        with Executor(max_workers=2) as ex:
            one = await loop.run_in_executor(ex, tasks.add, 1, 2)
            many = await asyncio.gather(*[loop.run_in_executor(ex, tasks.square, i)
                                          for i in range(20)])
            try:
                await loop.run_in_executor(ex, tasks.raise_value_error, "async")
            except ValueError as e:
                err = e.args
            else:
                err = None
            return one, many, err

    one, many, err = asyncio.run(main())
    assert one == 3
    assert many == [i * i for i in range(20)]
    assert err == ("async",)


def test_asyncio_wrap_future_default_pool():
    async def main():
        return await asyncio.wrap_future(pyparallel.submit(tasks.inc, 41))

    assert asyncio.run(main()) == 42


# --------------------------------------------------------------------------
# the default pool: configure() and shutdown()


def test_configure_while_running_raises(reset_default_pool):
    pyparallel.submit(tasks.noop).result(timeout=T)
    with pytest.raises(RuntimeError):
        pyparallel.configure(workers=1)


def test_shutdown_then_submit_raises_then_configure_restarts(reset_default_pool):
    assert pyparallel.submit(tasks.inc, 1).result(timeout=T) == 2
    pyparallel.shutdown()
    with pytest.raises(RuntimeError) as ei:
        pyparallel.submit(tasks.inc, 1)
    assert "configure" in str(ei.value)
    with pytest.raises(RuntimeError):
        list(pyparallel.map(tasks.inc, [1]))
    pyparallel.shutdown()  # twice is fine
    pyparallel.configure()
    assert pyparallel.submit(tasks.inc, 2).result(timeout=T) == 3


def test_configure_workers(stopped_default_pool, tmp_path):
    pyparallel.configure(workers=1)
    assert {pyparallel.submit(tasks.where).result(timeout=T)[1] for _ in range(10)} == {0}
    pyparallel.shutdown()
    pyparallel.configure(workers=3)
    futs = [pyparallel.submit(tasks.rendezvous, str(tmp_path), 3) for _ in range(3)]
    assert sorted(f.result(timeout=T) for f in futs) == [0, 1, 2]


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-1, ValueError), ("2", TypeError),
                                     (1.5, TypeError)])
def test_configure_bad_workers(stopped_default_pool, bad, exc):
    with pytest.raises(exc):
        pyparallel.configure(workers=bad)
    # the pool still works with the defaults afterwards
    assert pyparallel.submit(tasks.inc, 1).result(timeout=T) == 2


def test_default_pool_shutdown_cancel_futures(reset_default_pool, tmp_path, n_workers):
    blockers = [Blocker(pyparallel.submit, tmp_path, name="b%d" % i) for i in range(n_workers)]
    queued = [pyparallel.submit(tasks.inc, i) for i in range(20)]
    for b in blockers:
        b.wait_started()
    pyparallel.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    for b in blockers:
        b.release()
    assert [b.future.result(timeout=T) for b in blockers] == ["released"] * n_workers


def test_default_pool_shutdown_wait_runs_queued(reset_default_pool):
    futs = [pyparallel.submit(tasks.sleep_return, 0.005, i) for i in range(40)]
    pyparallel.shutdown(wait=True)
    assert all(f.done() for f in futs)
    assert [f.result() for f in futs] == list(range(40))


# ---- initializer= and initargs= (concurrent.futures parity) ------------------

def test_initializer_runs_once_in_each_worker_before_its_first_task():
    frozen = pyparallel.freeze({"config": [1, 2, 3]})
    with pyparallel.Executor(2, initializer=tasks.init_worker,
                             initargs=(frozen, "x")) as ex:
        states = [f.result(timeout=60)
                  for f in [ex.submit(tasks.init_state) for _ in range(40)]]
        assert {s[0] for s in states} == {1}          # once per worker
        assert all(s[1][0] is frozen and s[1][1] == "x" for s in states)
        # frozen initargs travel by pointer, as task arguments do
        assert ex.submit(tasks.init_stored_arg).result(timeout=60) is frozen


def test_a_failing_initializer_breaks_the_pool():
    ex = pyparallel.Executor(2, initializer=tasks.raise_value_error,
                             initargs=("bad init",))
    futs = [ex.submit(tasks.inc, i) for i in range(10)]
    for f in futs:
        with pytest.raises(pyparallel.BrokenPool) as info:
            f.result(timeout=60)
        assert isinstance(info.value, concurrent.futures.BrokenExecutor)
        assert "ValueError: bad init" in str(info.value.__cause__)
    with pytest.raises(pyparallel.BrokenPool):
        ex.submit(tasks.inc, 1)
    ex.shutdown()


def test_initializer_must_be_a_callable_workers_can_find():
    with pytest.raises(TypeError, match="initializer must be a callable"):
        pyparallel.Executor(1, initializer=42)
    with pytest.raises(pyparallel.TransferError, match="lambda"):
        pyparallel.Executor(1, initializer=lambda: None)
