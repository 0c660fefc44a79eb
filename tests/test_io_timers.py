"""pyparallel.timer(), run() and stop()."""

import signal
import sys
import threading
import time

import pytest

import pyparallel

import io_protocols as P
import support
from io_support import connect, events, recv_exactly, serving, tag, wait_events, wait_for

assert tag  # a fixture, used by name


# --------------------------------------------------------------------------
# timers


def test_one_shot_timer(tag):
    t = pyparallel.timer(0.05, P.timer_fn, tag, "once", 1, 2, k="v")
    assert t.active is True
    ((label, seq, wid, parallel, args, kwargs),) = wait_events(tag, "timer")
    assert label == "once"
    assert parallel is True and isinstance(wid, int)
    assert tuple(args) == (1, 2) and dict(kwargs) == {"k": "v"}
    wait_for(lambda: not t.active, what="timer.active to become False")
    assert t.fired == 1 and t.errors == 0
    time.sleep(0.2)
    assert t.fired == 1 and len(wait_events(tag, "timer")) == 1


def test_timers_fire_in_deadline_order(tag):
    delays = [0.5, 0.1, 0.4, 0.2, 0.3]
    timers = [pyparallel.timer(d, P.timer_fn, tag, d, worker=0) for d in delays]
    fired = wait_events(tag, "timer", len(delays))
    by_seq = sorted(fired, key=lambda e: e[1])        # the worker's own sequence
    assert [e[0] for e in by_seq] == sorted(delays)
    assert all(e[2] == 0 for e in fired)              # worker=0
    wait_for(lambda: all(t.fired == 1 for t in timers), what="fired counts")


def test_periodic_timer_and_cancel(tag):
    t = pyparallel.timer(0.02, P.timer_fn, tag, "tick", period=0.05)
    try:
        wait_for(lambda: t.fired >= 4, what="4 beats")
        assert t.active is True                          # periodic: still active
    finally:
        t.cancel()
    assert t.active is False
    n = t.fired
    time.sleep(0.4)
    assert t.fired == n                                  # no call starts after cancel()
    wait_for(lambda: len(events(tag, "timer")) == n, what="every beat's event")
    time.sleep(0.1)
    assert len(events(tag, "timer")) == n
    t.cancel()                                           # idempotent
    assert t.errors == 0


def test_periodic_timer_that_falls_behind_skips_beats(tag):
    # The first call takes 1 s: 20 beats of 0.05 s are missed.  Skipping
    # them (not bursting) leaves the count well below elapsed / period.
    period, slow = 0.05, 1.0
    t0 = time.monotonic()
    t = pyparallel.timer(0.01, P.timer_slow_first, tag, slow, period=period, worker=0)
    try:
        wait_for(lambda: t.fired >= 8, what="8 beats")
    finally:
        t.cancel()
    elapsed = time.monotonic() - t0
    most = 1 + (elapsed - slow) / period + 3           # with skipping (upper bound)
    assert t.fired <= most, "fired %d times in %.2fs: missed beats were replayed" % (
        t.fired, elapsed)


def test_cancel_before_it_fires(tag):
    t = pyparallel.timer(1.0, P.timer_fn, tag, "never")
    t.cancel()
    assert t.active is False
    time.sleep(1.5)
    assert t.fired == 0
    assert [e for e in P.EVENTS if e[0] == tag] == []


def test_timer_on_a_chosen_worker(tag, n_workers):
    timers = [pyparallel.timer(0.01, P.timer_fn, tag, w, worker=w) for w in range(n_workers)]
    fired = wait_events(tag, "timer", n_workers)
    assert sorted((e[0], e[2]) for e in fired) == [(w, w) for w in range(n_workers)]
    wait_for(lambda: all(t.fired == 1 for t in timers), what="fired counts")


def test_timer_exception_is_counted_and_periodic_timer_keeps_running(tag):
    t = pyparallel.timer(0.01, P.timer_raise, tag, period=0.05)
    try:
        wait_for(lambda: t.errors >= 3, what="3 failing beats")
        assert t.active is True
    finally:
        t.cancel()
    wait_for(lambda: t.errors == t.fired, what="errors == fired")


def test_timer_exception_is_logged(tmp_path):
    r = support.run_code(tmp_path, """
        import time
        import pyparallel
        import io_protocols
        t = pyparallel.timer(0.01, io_protocols.timer_raise, "x")
        deadline = time.monotonic() + 30
        while t.errors < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        print("fired", t.fired, "errors", t.errors, flush=True)
        """, timeout=90)
    r.assert_clean_exit(0)
    assert "fired 1 errors 1" in r.stdout
    assert "Traceback" in r.stderr and "RuntimeError: timer boom" in r.stderr, r.describe()


def test_timer_function_must_be_importable():
    with pytest.raises(pyparallel.TransferError):
        pyparallel.timer(0.01, lambda: None)

    def local():
        pass

    with pytest.raises(pyparallel.TransferError):
        pyparallel.timer(0.01, local)


def test_zero_delay_timer(tag):
    t = pyparallel.timer(0.0, P.timer_fn, tag, "now")
    ((label, _, _, parallel, _, _),) = wait_events(tag, "timer")
    assert label == "now" and parallel is True
    wait_for(lambda: t.fired == 1, what="fired")


# --------------------------------------------------------------------------
# run() / stop()


def test_run_timeout():
    t0 = time.monotonic()
    assert pyparallel.run(timeout=0.2) == "timeout"
    assert time.monotonic() - t0 >= 0.19


def test_stop_from_a_timer():
    pyparallel.timer(0.1, P.call_stop)
    assert pyparallel.run(timeout=60) == "stop"


def test_stop_from_a_task():
    pyparallel.submit(P.call_stop).result(timeout=60)
    # stop() before run(): the next run() returns at once
    assert pyparallel.run(timeout=60) == "stop"
    # ... and only that one
    assert pyparallel.run(timeout=0.1) == "timeout"


def test_stop_from_main_before_run():
    pyparallel.stop()
    assert pyparallel.run(timeout=60) == "stop"
    assert pyparallel.run(timeout=0.1) == "timeout"


def test_stop_from_another_thread():
    threading.Timer(0.1, pyparallel.stop).start()
    assert pyparallel.run(timeout=60) == "stop"


def test_stop_from_a_protocol_callback():
    with serving("127.0.0.1", 0, P.Stopper) as srv:
        def poke():
            with connect(srv.address) as s:
                s.sendall(b"STOP")
                assert recv_exactly(s, 9) == b"stopping\n"
        th = threading.Thread(target=poke)
        th.start()
        assert pyparallel.run(timeout=60) == "stop"
        th.join(30)
        # servers keep running after run() returns
        with connect(srv.address) as s:
            s.sendall(b"still")
            assert recv_exactly(s, 5) == b"still"


def test_call_from_main_thread_runs_while_run_blocks(tag):
    pyparallel.timer(0.05, P.timer_fn, tag, "during-run")
    pyparallel.timer(0.5, P.call_stop)
    assert pyparallel.run(timeout=60) == "stop"
    assert wait_events(tag, "timer")[0][0] == "during-run"


@pytest.mark.parametrize("sig, name", [(signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")])
def test_run_returns_on_signal(tmp_path, sig, name):
    # "ready" is printed from another thread a little after run() is called:
    # a signal that came before run() would meet Python's default handlers.
    path = support.write_script(tmp_path, """
        import threading
        import pyparallel
        import io_protocols
        with pyparallel.server("127.0.0.1", 0, io_protocols.BareEcho) as srv:
            threading.Timer(0.5, print, ("ready",), {"flush": True}).start()
            print("run:", pyparallel.run(timeout=120), flush=True)
        print("closed", flush=True)
        """)
    r, _ = support.run_until_ready_then_signal([sys.executable, path], sig=sig, timeout=90)
    r.assert_clean_exit(0)
    assert "run: %s" % name in r.stdout
    assert "closed" in r.stdout
