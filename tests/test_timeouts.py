"""Timeouts and delays at every entry point that takes seconds: None and inf
mean "for ever", finite values too big for 64-bit nanoseconds mean for ever
(a timer's delay or period: "not before then"), nan and negative values are
a ValueError naming the parameter, a non-number a TypeError -- and a bad
value changes nothing."""

import math

import pytest

import support

import pyparallel
from pyparallel import _api

import io_protocols as P
import tasks
from io_support import closed_by_peer, connect, roundtrip, serving, tag, wait_events

assert tag  # a fixture, used by name

FOREVER = [math.inf, 1e300, 2 ** 80]
BAD_VALUES = [(math.nan, ValueError, "not nan"), (-1, ValueError, "not -1"),
              (-0.5, ValueError, "not -0.5"), (-math.inf, ValueError, "not -inf"),
              (-2 ** 80, ValueError, "not -%d" % 2 ** 80),
              ("1", TypeError, "not str"), (b"1", TypeError, "not bytes")]


def check_bad(call, name, value, exc, text, or_none=True):
    with pytest.raises(exc) as info:
        call(value)
    msg = str(info.value)
    assert msg.startswith(name + " must be "), msg
    assert "number of seconds" in msg and text in msg, msg
    assert ("or None" in msg) == or_none, msg


# --------------------------------------------------------------------------
# Future.result / exception (Task.wait)


@pytest.mark.parametrize("timeout", FOREVER)
def test_future_result_waits_for_ever(timeout):
    fut = pyparallel.submit(tasks.sleep_return, 0.3, "done")
    assert fut.result(timeout) == "done"
    fut = pyparallel.submit(tasks.sleep_return, 0.3, "done")
    assert fut.exception(timeout) is None


@pytest.mark.parametrize("value, exc, text", BAD_VALUES)
def test_future_result_bad_timeout(value, exc, text):
    fut = pyparallel.submit(tasks.sleep_return, 0.5, "done")
    check_bad(fut.result, "timeout", value, exc, text)
    check_bad(fut.exception, "timeout", value, exc, text)
    assert fut.result(60) == "done"              # nothing lost


def test_future_result_tiny_and_zero_timeouts():
    fut = pyparallel.submit(tasks.sleep_return, 1.0, "done")
    for timeout in (0, 0.0, 1e-300):
        with pytest.raises(TimeoutError):
            fut.result(timeout)
    assert fut.result(60) == "done"


# --------------------------------------------------------------------------
# Pool.wait_ready


def test_pool_wait_ready():
    pool = _api._executor()._get_pool()
    for timeout in [None] + FOREVER:
        assert pool.wait_ready(timeout) is True
    for value, exc, text in BAD_VALUES:
        check_bad(pool.wait_ready, "timeout", value, exc, text)


# --------------------------------------------------------------------------
# Server.close


@pytest.mark.parametrize("timeout", FOREVER)
def test_server_close_waits_for_ever(timeout):
    srv = pyparallel.server("127.0.0.1", 0, P.BareEcho)
    try:
        s = connect(srv.address)
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        assert srv.close(timeout) is True
        assert closed_by_peer(s)
        s.close()
    finally:
        srv.close()


@pytest.mark.parametrize("value, exc, text", BAD_VALUES)
def test_server_close_bad_timeout(value, exc, text):
    with serving("127.0.0.1", 0, P.BareEcho) as srv:
        check_bad(srv.close, "timeout", value, exc, text)
        assert not srv.closed
        assert roundtrip(srv.address) == b"ping\n"   # still serving


# --------------------------------------------------------------------------
# run()


@pytest.mark.parametrize("timeout", [None] + FOREVER)
def test_run_waits_for_ever(timeout):
    pyparallel.stop()
    assert pyparallel.run(timeout) == "stop"


@pytest.mark.parametrize("value, exc, text", BAD_VALUES)
def test_run_bad_timeout(value, exc, text):
    pyparallel.stop()
    check_bad(pyparallel.run, "timeout", value, exc, text)
    assert pyparallel.run(0) == "stop"           # the stop() was not used up
    assert pyparallel.run(0) == "timeout"


# --------------------------------------------------------------------------
# timer(delay, period=...)


@pytest.mark.parametrize("delay", FOREVER)
def test_timer_huge_delay_never_fires_early(tag, delay):
    late = pyparallel.timer(delay, P.timer_fn, tag, "late", worker=0)
    try:
        soon = pyparallel.timer(0.01, P.timer_fn, tag, "soon", worker=0)
        (ev,) = wait_events(tag, "timer")
        assert ev[0] == "soon"
        assert soon.fired == 1
        # Created first, on the same loop: had its deadline wrapped round it
        # would have fired before "soon".
        assert late.active and late.fired == 0
    finally:
        late.cancel()
    assert not late.active


@pytest.mark.parametrize("period", FOREVER)
def test_timer_huge_period(tag, period):
    t = pyparallel.timer(0, P.timer_fn, tag, "first", period=period)
    try:
        (ev,) = wait_events(tag, "timer")
        assert ev[0] == "first"
        assert t.active                     # periodic: its next beat is far off
    finally:
        t.cancel()
    assert not t.active and t.fired == 1


@pytest.mark.parametrize("value, exc, text", BAD_VALUES + [(None, TypeError, "not NoneType")])
def test_timer_bad_delay(value, exc, text):
    check_bad(lambda v: pyparallel.timer(v, P.noop_tick), "delay", value, exc,
              text, or_none=False)


@pytest.mark.parametrize("value, exc, text", BAD_VALUES + [(0, ValueError, "not 0")])
def test_timer_bad_period(value, exc, text):
    with pytest.raises(exc) as info:
        pyparallel.timer(0, P.noop_tick, period=value)
    msg = str(info.value)
    assert msg.startswith("period must be "), msg
    assert "seconds" in msg and text in msg and "or None" in msg, msg


# --------------------------------------------------------------------------
# server(idle_timeout=...)


@pytest.mark.parametrize("idle", FOREVER)
def test_idle_timeout_for_ever(idle):
    with serving("127.0.0.1", 0, P.BareEcho, idle_timeout=idle) as srv:
        assert roundtrip(srv.address) == b"ping\n"


def test_tiny_idle_timeout_is_not_rounded_to_none(tag):
    # Half a nanosecond is a timeout, not "no timeout".
    with serving("127.0.0.1", 0, P.Echo, idle_timeout=5e-10,
                 shared={"tag": tag}) as srv:
        with connect(srv.address, timeout=20) as s:
            assert closed_by_peer(s, timeout=20)
        (lost,) = wait_events(tag, "lost")
        assert lost[0] == "TimeoutError"


@pytest.mark.parametrize("value, exc, text", BAD_VALUES + [(0, ValueError, "not 0")])
def test_idle_timeout_bad(value, exc, text):
    with pytest.raises(exc) as info:
        pyparallel.server("127.0.0.1", 0, P.BareEcho, idle_timeout=value).close()
    msg = str(info.value)
    assert msg.startswith("idle_timeout must be "), msg
    assert "seconds" in msg and text in msg and "or None" in msg, msg


def test_waits_on_a_busy_loop_time_out(tmp_path):
    # Server.stats() and Timer.cancel() wait for a worker's loop; a loop
    # held by a long callback makes them raise TimeoutError after timeout.
    r = support.run_code(tmp_path, """
        import socket, time, pyparallel, tasks
        import io_protocols as P
        pyparallel.configure(workers=1)
        srv = pyparallel.server("127.0.0.1", 0, P.SleepsOnData)
        t = pyparallel.timer(60, tasks.noop)
        s = socket.create_connection(srv.address, timeout=30)
        s.sendall(b"2.0")
        time.sleep(0.3)                      # the loop sleeps in the callback
        for what, call in (("stats", lambda: srv.stats(timeout=0.2)),
                           ("cancel", lambda: t.cancel(timeout=0.2))):
            t0 = time.monotonic()
            try:
                call()
                print(what, "returned")
            except TimeoutError as e:
                print(what, "TimeoutError", round(time.monotonic() - t0, 1), e)
        assert s.recv(100) == b"slept\\n"
        print("after", srv.stats(timeout=10)["accepted"])
        t.cancel(timeout=10)
        print("active", t.active)
        srv.close()
        """, timeout=60)
    r.assert_clean_exit(0)
    for what in ("stats", "cancel"):
        line = next(l for l in r.stdout.splitlines() if l.startswith(what + " "))
        assert "TimeoutError 0.2" in line and "I/O loop" in line, r.describe()
    assert "after 1" in r.stdout and "active False" in r.stdout
