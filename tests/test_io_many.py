"""Many clients at once: 1,000+ connections to one echo server, all open at
the same time, driven by non-blocking sockets and one selector in one thread
(no thread per client: the test machine may have 2 CPUs)."""

import errno
import resource
import selectors
import socket
import time

import pytest

import io_protocols as P
from io_support import tag, tcp_server, wait_events, wait_stat

assert tag  # a fixture, used by name

N_CLIENTS = 1200


@pytest.fixture
def enough_fds():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * N_CLIENTS + 512           # both ends live in this process
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, need))
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def message(i):
    return (b"client %06d " % i) * (1 + i % 20) + b"\n"


def test_echo_with_many_concurrent_clients(enough_fds, tag):
    with tcp_server(P.Echo, tag) as srv:
        sel = selectors.DefaultSelector()
        socks = []
        try:
            # 1. Open every connection (in waves, so a small accept backlog
            #    does not turn into SYN retries), and keep them all open.
            for start in range(0, N_CLIENTS, 200):
                for i in range(start, min(start + 200, N_CLIENTS)):
                    s = socket.socket()
                    s.setblocking(False)
                    rc = s.connect_ex(srv.address)
                    assert rc in (0, errno.EINPROGRESS), rc
                    socks.append(s)
                wait_stat(srv, "connections", lambda v: v >= min(start + 200, N_CLIENTS), 60)
            st = srv.stats()
            assert st["connections"] == N_CLIENTS, st      # all open at once

            # 2. Every client sends its message and reads its echo.
            state = {}
            for i, s in enumerate(socks):
                state[s] = [i, message(i), 0, bytearray()]
                sel.register(s, selectors.EVENT_WRITE | selectors.EVENT_READ)
            pending = set(socks)
            deadline = time.monotonic() + 90
            while pending:
                assert time.monotonic() < deadline, "%d clients still waiting" % len(pending)
                for key, ev in sel.select(timeout=1.0):
                    s = key.fileobj
                    i, msg, sent, got = state[s]
                    if ev & selectors.EVENT_WRITE and sent < len(msg):
                        try:
                            sent += s.send(msg[sent:])
                        except BlockingIOError:
                            pass
                        state[s][2] = sent
                        if sent == len(msg):
                            sel.modify(s, selectors.EVENT_READ)
                    if ev & selectors.EVENT_READ:
                        try:
                            chunk = s.recv(65536)
                        except BlockingIOError:
                            continue
                        assert chunk, "client %d: EOF after %r" % (i, bytes(got))
                        got += chunk
                        if len(got) >= len(msg):
                            assert bytes(got) == msg, i
                            sel.unregister(s)
                            pending.discard(s)
            assert srv.stats()["connections"] == N_CLIENTS   # still all open
        finally:
            sel.close()
            for s in socks:
                s.close()
        wait_stat(srv, "connections", lambda v: v == 0, 60)
        st = srv.stats()
        total = sum(len(message(i)) for i in range(N_CLIENTS))
        assert st["accepted"] == N_CLIENTS and st["closed"] == N_CLIENTS, st
        assert st["bytes_read"] == total and st["bytes_written"] == total, st
        assert st["callback_errors"] == 0
        lost = wait_events(tag, "lost", N_CLIENTS, 60)
        assert all(ev[0] is None for ev in lost)


def _echo_clients(address, n, rounds, errors):
    try:
        for _ in range(rounds):
            socks = [socket.create_connection(address, timeout=30) for _ in range(n)]
            for i, s in enumerate(socks):
                s.sendall(message(i))
            for i, s in enumerate(socks):
                want, got = message(i), b""
                while len(got) < len(want):
                    chunk = s.recv(65536)
                    assert chunk, "server closed early"
                    got += chunk
                assert got == want
                s.close()
    except Exception as e:                     # reported to the test thread
        errors.append(e)


def test_tasks_timers_and_connections_share_the_workers(tag):
    # A worker's task thread and loop thread share its interpreter's GIL:
    # tasks, timers and connections all going at once must all finish, with
    # nothing lost, and the server still answers afterwards.
    import threading

    import pyparallel
    import tasks

    with tcp_server(P.Echo, tag) as srv:
        errors = []
        clients = [threading.Thread(target=_echo_clients, args=(srv.address, 20, 10, errors))
                   for _ in range(3)]
        timer = pyparallel.timer(0, P.noop_tick, period=0.002)
        try:
            for t in clients:
                t.start()
            futures = [pyparallel.submit(tasks.square, i) for i in range(3000)]
            assert [f.result(timeout=120) for f in futures] == [i * i for i in range(3000)]
            for t in clients:
                t.join(120)
                assert not t.is_alive()
            assert errors == []
        finally:
            timer.cancel()
        assert timer.fired > 0 and timer.errors == 0
        fired = timer.fired
        time.sleep(0.05)
        assert timer.fired == fired            # cancelled: no more calls
        st = srv.stats()
        assert st["accepted"] == 3 * 20 * 10 and st["callback_errors"] == 0, st
