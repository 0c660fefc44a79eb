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
