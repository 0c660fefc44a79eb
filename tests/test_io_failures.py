"""Failure paths: peers that reset or vanish, slow readers, and exceptions in
every protocol callback (with and without exception_handler)."""

import socket
import time

import pytest

import io_protocols as P
import support
from io_support import (closed_by_peer, connect, events, recv_exactly, recv_until, roundtrip,
                        rst_close, tag, tcp_server, wait_events, wait_stat)

assert tag  # a fixture, used by name


# --------------------------------------------------------------------------
# peers that go away


def test_client_reset(tag):
    with tcp_server(P.Echo, tag) as srv:
        s = connect(srv.address)
        s.sendall(b"hello")
        assert recv_exactly(s, 5) == b"hello"
        rst_close(s)                                   # SO_LINGER 0: RST
        (lost,) = wait_events(tag, "lost")
        assert lost[0] in ("ConnectionResetError", None), lost
        assert roundtrip(srv.address) == b"ping\n"     # still serving
        wait_stat(srv, "connections", lambda v: v == 0)
        assert srv.stats()["callback_errors"] == 0


def test_many_client_resets(tag):
    with tcp_server(P.Echo, tag) as srv:
        for i in range(50):
            s = connect(srv.address)
            s.sendall(b"x")
            assert recv_exactly(s, 1) == b"x"
            rst_close(s)
        lost = wait_events(tag, "lost", 50)
        assert {ev[0] for ev in lost} <= {"ConnectionResetError", None}, lost
        assert roundtrip(srv.address) == b"ping\n"
        wait_stat(srv, "connections", lambda v: v == 0)


@pytest.mark.parametrize("reset", [False, True], ids=["close", "rst"])
def test_client_vanishes_mid_send(tag, reset):
    with tcp_server(P.Gone, tag) as srv:
        s = connect(srv.address)
        s.sendall(b"go")
        recv_exactly(s, 1 << 20)                       # the stream is flowing
        if reset:
            rst_close(s)
        else:
            s.close()                                  # unread data: the kernel resets
        (lost,) = wait_events(tag, "lost")
        assert lost[0] in ("BrokenPipeError", "ConnectionResetError"), lost
        assert lost[2] is True                         # an OSError
        wait_stat(srv, "connections", lambda v: v == 0)
        with connect(srv.address) as s2:               # still serving
            s2.sendall(b"go")
            assert recv_exactly(s2, 262144) == b"z" * 262144


def test_client_vanishes_during_one_big_reply(tag):
    with tcp_server(P.BigReply, tag) as srv:
        s = connect(srv.address)
        s.sendall(b"go")
        recv_exactly(s, 1 << 20)
        s.close()
        (lost,) = wait_events(tag, "lost")
        assert lost[0] in ("BrokenPipeError", "ConnectionResetError"), lost
        wait_stat(srv, "connections", lambda v: v == 0)


def test_server_keeps_serving_after_vanished_clients(tag):
    with tcp_server(P.Gone, tag) as srv:
        for _ in range(5):
            s = connect(srv.address)
            s.sendall(b"go")
            recv_exactly(s, 300000)
            s.close()
        wait_events(tag, "lost", 5)
        s = connect(srv.address)
        try:
            s.sendall(b"go")
            assert recv_exactly(s, 262144) == b"z" * 262144
        finally:
            s.close()


# --------------------------------------------------------------------------
# back-pressure


def wait_stable(get, quiet=0.5, timeout=30):
    """get() once it has returned the same value for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last = get()
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = get()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError("never settled: %r" % (last,))


def test_slow_reader_back_pressure(tag):
    high, low = 65536, 16384
    with tcp_server(P.Amplify, tag, write_high=high, write_low=low) as srv:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)   # before connect:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)   # no autotuning
        s.settimeout(30)
        s.connect(srv.address)
        try:
            # Send without reading until the server stops taking input.
            s.setblocking(False)
            chunk = b"abcdefgh" * 8192                 # 64 KiB
            sent = 0
            cap = 64 << 20
            last_progress = time.monotonic()
            while sent < cap and time.monotonic() - last_progress < 3.0:
                try:
                    n = s.send(chunk)
                except BlockingIOError:
                    time.sleep(0.01)
                    continue
                sent += n
                last_progress = time.monotonic()
            assert sent < cap, "the server never stopped reading (%d bytes taken)" % sent

            # Stalled: no more input is read (bytes_read stops growing) ...
            before = srv.stats()["bytes_read"]
            time.sleep(1.0)
            stalled = srv.stats()
            assert stalled["bytes_read"] == before, (before, stalled)
            # ... and no data_received ran with more than write_high queued.
            drs = events(tag, "dr")
            assert drs, "data_received never ran"
            worst = max(size for _, size in drs)
            assert worst <= high, "data_received ran with %d bytes queued (> write_high %d)" % (
                worst, high)
            # What the server holds is bounded: replies made minus bytes
            # handed to the kernel is at most write_high plus one reply.
            drs = wait_stable(lambda: events(tag, "dr"))
            made = 4 * sum(n for n, _ in drs)
            biggest = 4 * max(n for n, _ in drs)
            queued = made - stalled["bytes_written"]
            assert queued <= high + biggest, (made, stalled, biggest)
            assert stalled["bytes_read"] <= sent

            # Now read: the server drains, resumes, and every reply comes.
            s.setblocking(True)
            s.shutdown(socket.SHUT_WR)
            total = 0
            s.settimeout(30)
            while True:
                data = s.recv(1 << 20)
                if not data:
                    break
                total += len(data)
            assert total == 4 * sent
        finally:
            s.close()
        (lost,) = wait_events(tag, "lost")
        assert lost[0] is None


# --------------------------------------------------------------------------
# exceptions in callbacks

CALLBACKS = ["connection_made", "initial_bytes_to_send", "data_received", "lines_received",
             "send_complete", "eof_received", "connection_lost"]


def protocol_for(callback, handled):
    if callback == "lines_received":
        return P.FaultyLinesHandled if handled else P.FaultyLines
    if callback == "initial_bytes_to_send":
        return P.FaultyInitialHandled if handled else P.FaultyInitial
    return P.FaultyHandled if handled else P.Faulty


def trigger(s, callback):
    """Make the connection's `callback` run (and raise)."""
    if callback in ("data_received", "lines_received"):
        s.sendall(b"boom\n")
    elif callback == "send_complete":
        s.sendall(b"ping\n")
    elif callback == "eof_received":
        s.sendall(b"ping\n")
        assert recv_exactly(s, 5) == b"ping\n"
        s.shutdown(socket.SHUT_WR)
    elif callback == "connection_lost":
        s.sendall(b"ping\n")
        assert recv_exactly(s, 5) == b"ping\n"
        s.close()


@pytest.mark.parametrize("callback", CALLBACKS)
def test_exception_without_handler_aborts_the_connection(tag, callback):
    with tcp_server(protocol_for(callback, False), tag, shared={"fail": callback}) as srv:
        s = connect(srv.address)
        try:
            trigger(s, callback)
            if callback != "connection_lost":
                assert closed_by_peer(s)               # aborted
        finally:
            s.close()
        (lost,) = wait_events(tag, "lost")
        if callback == "connection_lost":
            assert lost[0] is None
        else:
            assert lost[0] == "ValueError", lost       # connection_lost gets the exception
            assert lost[1] == "boom " + callback
        wait_stat(srv, "callback_errors", lambda v: v >= 1)
        assert srv.stats()["callback_errors"] == 1
        # other connections carry on
        if callback not in ("connection_made", "initial_bytes_to_send", "send_complete"):
            assert roundtrip(srv.address) == b"ping\n"
        wait_stat(srv, "connections", lambda v: v == 0)


@pytest.mark.parametrize("callback", CALLBACKS)
def test_exception_with_handler_keeps_the_connection(tag, callback):
    with tcp_server(protocol_for(callback, True), tag, shared={"fail": callback}) as srv:
        s = connect(srv.address)
        try:
            trigger(s, callback)
            if callback == "connection_lost":
                wait_events(tag, "lost")
            else:
                (handled,) = wait_events(tag, "handled")[:1]
                assert handled == ("ValueError", "boom " + callback)
                note = b"handled: boom " + callback.encode() + b"\n"
                if callback == "eof_received":
                    # what the handler wrote is sent; then (eof_received having
                    # returned nothing) the connection may close -- cleanly
                    recv_until(s, note)
                    assert events(tag, "lost") in ([], [(None, "", False)])
                else:
                    s.sendall(b"again\n")                # still open both ways
                    got = recv_until(s, b"again\n")
                    if callback != "send_complete":      # its note may follow the echo
                        assert note in got, got
                    assert events(tag, "lost") == []
        finally:
            s.close()
        if callback != "connection_lost":
            wait_events(tag, "lost")
        # the server carries on
        s2 = connect(srv.address)
        try:
            s2.sendall(b"next\n")
            assert b"next\n" in recv_until(s2, b"next\n")
        finally:
            s2.close()


def test_exception_handler_that_raises_closes_the_connection(tmp_path):
    # in a subprocess: a crash here must not take the whole suite down
    r = support.run_code(tmp_path, """
        import socket, time
        import pyparallel
        import io_protocols
        with pyparallel.server("127.0.0.1", 0, io_protocols.HandlerRaises,
                               shared={"fail": "data_received"}) as srv:
            s = socket.create_connection(srv.address, timeout=30)
            s.sendall(b"boom")
            try:
                print("after boom:", s.recv(100), flush=True)   # closed: b''
            except ConnectionResetError:
                print("after boom: reset", flush=True)
            s.close()
            deadline = time.monotonic() + 30
            while srv.stats()["connections"] and time.monotonic() < deadline:
                time.sleep(0.01)
            s = socket.create_connection(srv.address, timeout=30)
            s.sendall(b"fine")
            print("next:", s.recv(100), flush=True)
            s.close()
            print("errors:", srv.stats()["callback_errors"] >= 1, flush=True)
        """, timeout=90)
    r.assert_clean_exit(0)
    assert ("after boom: b''" in r.stdout or "after boom: reset" in r.stdout), r.describe()
    assert "next: b'fine'" in r.stdout, r.describe()
    assert "errors: True" in r.stdout, r.describe()
    # both are logged
    assert "ValueError: boom data_received" in r.stderr, r.describe()
    assert "RuntimeError: handler failed too" in r.stderr, r.describe()


def test_callback_errors_counts_each_connection(tag):
    with tcp_server(P.Faulty, tag, shared={"fail": "data_received"}) as srv:
        for _ in range(7):
            with connect(srv.address) as s:
                s.sendall(b"boom")
                assert closed_by_peer(s)
        wait_stat(srv, "callback_errors", lambda v: v == 7)
        assert roundtrip(srv.address) == b"ping\n"
        wait_events(tag, "lost", 8)
        assert srv.stats()["callback_errors"] == 7


def test_traceback_is_logged_to_stderr(tmp_path):
    r = support.run_code(tmp_path, """
        import socket, time
        import pyparallel
        import io_protocols
        with pyparallel.server("127.0.0.1", 0, io_protocols.Faulty,
                               shared={"fail": "data_received"}) as srv:
            s = socket.create_connection(srv.address, timeout=30)
            s.sendall(b"boom")
            assert s.recv(100) == b""
            s.close()
            deadline = time.monotonic() + 30
            while srv.stats()["callback_errors"] < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            s = socket.create_connection(srv.address, timeout=30)
            s.sendall(b"fine")
            assert s.recv(100) == b"fine"
            s.close()
            print("errors", srv.stats()["callback_errors"], flush=True)
        """, timeout=90)
    r.assert_clean_exit(0)
    assert "errors 1" in r.stdout
    assert "Traceback" in r.stderr, r.describe()
    assert "ValueError: boom data_received" in r.stderr, r.describe()
    assert "in data_received" in r.stderr, r.describe()


def test_handled_exception_is_not_logged(tmp_path):
    r = support.run_code(tmp_path, """
        import socket, time
        import pyparallel
        import io_protocols
        with pyparallel.server("127.0.0.1", 0, io_protocols.FaultyHandled,
                               shared={"fail": "data_received"}) as srv:
            s = socket.create_connection(srv.address, timeout=30)
            s.sendall(b"boom")
            buf = b""
            while not buf.endswith(b"\\n"):
                buf += s.recv(100)
            print(buf.decode().strip(), flush=True)
            s.close()
        """, timeout=90)
    r.assert_clean_exit(0)
    assert "handled: boom data_received" in r.stdout
    assert "Traceback" not in r.stderr, r.describe()


def test_a_failing_poll_is_reported_and_the_worker_closes_its_connections(tmp_path):
    # A loop whose poll fails (a kernel error, say) cannot go on; it must say
    # so, still close what it holds (connection_lost runs), and let
    # Server.close() and the exit finish -- not spin or hang.
    r = support.run_code(tmp_path, """
        import socket
        import pyparallel
        import io_protocols

        if __name__ == "__main__":
            pyparallel.configure(workers=1)
            srv = pyparallel.server("127.0.0.1", 0, io_protocols.BreakPoller)
            s = socket.create_connection(srv.address, timeout=30)
            s.sendall(b"x")
            assert s.recv(1) == b"x"
            s.sendall(b"break")
            got = b""
            while True:
                chunk = s.recv(100)
                if not chunk:
                    break
                got += chunk
            assert got in (b"", b"broken\\n"), got
            print("closed by the worker", flush=True)
            assert srv.close(30) is True
            print("server closed", flush=True)
        """, timeout=60)
    r.assert_clean_exit(0)
    assert "closed by the worker" in r.stdout and "server closed" in r.stdout, r.describe()
    assert "lost None" in r.stdout, r.describe()
    assert "pyparallel: worker 0: its event loop's poll failed" in r.stderr, r.describe()
