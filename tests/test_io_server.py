"""pyparallel.server(): the protocol contract of docs/io.md, seen from plain
sockets in the test process.  Protocol classes live in io_protocols (workers
import them by name); callbacks report back through io_protocols.emit."""

import errno
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

import pytest

import pyparallel

import io_protocols as P
import support
from io_support import (closed_by_peer, connect, events, have_ipv6, recv_exactly, recv_to_eof,
                        recv_until, roundtrip, serving, tag, tcp_server, wait_events, wait_for,
                        wait_stat)

assert tag  # a fixture, used by name


def test_public_names():
    for name in ("server", "client", "timer", "run", "stop", "Future"):
        assert hasattr(pyparallel, name), name


# --------------------------------------------------------------------------
# basics


def test_echo_roundtrip_and_address(tag):
    with tcp_server(P.Echo, tag) as srv:
        host, port = srv.address
        assert host == "127.0.0.1"
        assert port == srv.port and isinstance(port, int) and port > 0
        with connect(srv.address) as s:
            for i in range(50):
                msg = b"message %d\n" % i
                s.sendall(msg)
                assert recv_exactly(s, len(msg)) == msg
        made = wait_events(tag, "made")
        assert len(made) == 1
        lost = wait_events(tag, "lost")
        assert lost == [(None, "", False)]      # the client closed: clean


def test_host_none_means_localhost():
    with serving(None, 0, P.BareEcho) as srv:
        assert srv.address[0] == "127.0.0.1"
        assert roundtrip(srv.address) == b"ping\n"


def test_context_manager_closes_and_stops_accepting():
    with pyparallel.server("127.0.0.1", 0, P.BareEcho) as srv:
        address = srv.address
        assert roundtrip(address) == b"ping\n"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=10).close()
    srv.close()                      # idempotent


def test_stats(tag):
    with tcp_server(P.Echo, tag) as srv:
        st = srv.stats()
        for key in ("connections", "accepted", "closed", "callback_errors",
                    "bytes_read", "bytes_written"):
            assert st[key] == 0, (key, st)
        socks = [connect(srv.address) for _ in range(5)]
        try:
            for i, s in enumerate(socks):
                s.sendall(b"%05d" % i)
                assert recv_exactly(s, 5) == b"%05d" % i
            wait_stat(srv, "connections", lambda v: v == 5)
            assert srv.stats()["accepted"] == 5
        finally:
            for s in socks:
                s.close()
        wait_stat(srv, "connections", lambda v: v == 0)
        wait_stat(srv, "closed", lambda v: v == 5)
        st = srv.stats()
        assert st["accepted"] == 5
        assert st["bytes_read"] == 25 and st["bytes_written"] == 25, st
        assert st["callback_errors"] == 0


def test_transport_info_and_shared(tag, n_workers):
    with tcp_server(P.Info, tag, shared={"value": [1, 2]}) as srv:
        with connect(srv.address) as s:
            (info,), = wait_events(tag, "info")
            assert tuple(info["peername"]) == s.getsockname()
            assert tuple(info["sockname"]) == srv.address
            assert info["family"] == socket.AF_INET
            assert info["missing"] == "dflt"
            assert isinstance(info["worker_id"], int) and 0 <= info["worker_id"] < n_workers
            assert info["shared_is_frozen"] is True
            assert info["shared_value"] == (1, 2)      # frozen: list -> tuple
            assert info["parallel"] is True
            assert info["is_closing"] is False


def test_shared_is_none_by_default():
    with serving("127.0.0.1", 0, P.InfoNoShared) as srv:
        with connect(srv.address):
            def mine():
                return [e for e in P.EVENTS
                        if e[1] == "noshared" and tuple(e[3])[1] == srv.port]
            (ev,) = wait_for(mine, what="the noshared event")
            assert ev[2] is True


def test_shared_frozen_data_is_shared_by_pointer(tag):
    data = pyparallel.freeze({"value": "x" * 1000, "tag": tag})
    with serving("127.0.0.1", 0, P.Info, shared=data) as srv:
        with connect(srv.address):
            (info,), = wait_events(tag, "info")
            assert info["shared_value"] == "x" * 1000


def test_many_connections_are_spread_over_workers(tag, n_workers):
    if n_workers < 2:
        pytest.skip("one worker")
    with tcp_server(P.Echo, tag) as srv:
        for i in range(60):
            assert roundtrip(srv.address, b"%d\n" % i) == b"%d\n" % i
        made = wait_events(tag, "made", 60)
        workers = {m[0] for m in made}
        assert len(workers) >= 2, workers


@pytest.mark.parametrize("word, reply", [
    (b"bytes", b"bytes-ok\n"),
    (b"str", "str-ok \u00e9\n".encode()),
    (b"bytearray", b"bytearray-ok\n"),
    (b"memoryview", b"memoryview-ok\n"),
    (b"list", b"list-ok\n"),
    (b"tuple", b"tuple-ok\n"),
    (b"none", b"none-ok\n"),
    (b"writelines", b"writelines-ok\n"),
])
def test_data_received_return_types(word, reply):
    with serving("127.0.0.1", 0, P.ReturnTypes) as srv:
        with connect(srv.address) as s:
            s.sendall(word)
            assert recv_exactly(s, len(reply)) == reply


def test_lines_mode(tag):
    with tcp_server(P.LinesEcho, tag) as srv:
        with connect(srv.address) as s:
            s.sendall(b"a\r\nb\nc")
            got = recv_until(s, b"<b>\n")
            s.sendall(b"d\n\n")
            got += recv_until(s, b"<>\n")
            s.sendall(b"tail")                 # no newline: delivered at EOF
            s.shutdown(socket.SHUT_WR)
            got += recv_to_eof(s)
        assert got == b"<a>\n<b>\n<cd>\n<>\n<tail>\n"
        assert wait_events(tag, "lost") == [(None, "", False)]


def test_lines_mode_many_lines_in_pieces():
    lines = [b"line %d %s" % (i, b"x" * (i % 37)) for i in range(2000)]
    blob = b"\n".join(lines) + b"\n"
    with serving("127.0.0.1", 0, P.LinesEcho) as srv:
        with connect(srv.address) as s:
            def send():
                for i in range(0, len(blob), 777):
                    s.sendall(blob[i:i + 777])
                s.shutdown(socket.SHUT_WR)
            t = threading.Thread(target=send)
            t.start()
            got = recv_to_eof(s)
            t.join()
        assert got == b"".join(b"<" + line + b">\n" for line in lines)


def test_lines_mode_long_line_in_small_pieces_is_scanned_once():
    # A line that arrives in many small reads: each read must search only
    # the new bytes for a newline, not the whole unconsumed buffer again
    # (quadratic up to read_limit).  stats()["line_bytes_scanned"] counts
    # the bytes searched; it must equal the bytes read.
    long = bytes(range(97, 123)) * 20000                 # 520000 bytes, no newline
    tail = b"a\r\nb\nc\r"                              # a CR that waits for its LF
    with serving("127.0.0.1", 0, P.LinesEcho) as srv:
        with connect(srv.address) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(0, len(long), 1000):
                s.sendall(long[i:i + 1000])
                if i % 50000 == 0:
                    time.sleep(0.01)                   # let some reads be separate
            s.sendall(b"\n" + tail)
            assert recv_exactly(s, len(long) + 3) == b"<" + long + b">\n"
            s.sendall(b"\nd\n")
            assert recv_exactly(s, 16) == b"<a>\n<b>\n<c>\n<d>\n"
            st = srv.stats()
            assert st["bytes_read"] == len(long) + 1 + len(tail) + 3, st
            assert st["line_bytes_scanned"] == st["bytes_read"], st


def test_send_complete_ids(tag):
    with tcp_server(P.SendIds, tag) as srv:
        with connect(srv.address) as s:
            assert recv_exactly(s, 3) == b"hi\n"          # initial_bytes_to_send: id 1
            for i in range(3):                            # three returns: ids 2, 3, 4
                s.sendall(b"m%d" % i)
                assert recv_exactly(s, 2) == b"m%d" % i
            ids = [e[0] for e in wait_events(tag, "send_complete", 4)]
        assert ids == [1, 2, 3, 4], ids


def test_initial_bytes_callable_come_before_connection_made_writes():
    with serving("127.0.0.1", 0, P.InitialCallable) as srv:
        with connect(srv.address) as s:
            want = b"from-callable\nfrom-connection-made\n"
            assert recv_exactly(s, len(want)) == want


def test_initial_bytes_str():
    with serving("127.0.0.1", 0, P.InitialStr) as srv:
        with connect(srv.address) as s:
            assert recv_exactly(s, 9) == b"from-str\n"


# --------------------------------------------------------------------------
# half-close, write_eof, close/abort


def test_half_close_from_client_gets_every_echo(tag):
    data = os.urandom(1 << 20)
    with tcp_server(P.Echo, tag) as srv:
        with connect(srv.address) as s:
            def send():
                for i in range(0, len(data), 65536):
                    s.sendall(data[i:i + 65536])
                s.shutdown(socket.SHUT_WR)
            t = threading.Thread(target=send)
            t.start()
            got = recv_to_eof(s)
            t.join()
        assert len(got) == len(data) and got == data
        assert wait_events(tag, "lost") == [(None, "", False)]


def test_eof_received_true_keeps_connection_open(tag):
    with tcp_server(P.KeepOpenAfterEof, tag) as srv:
        s = connect(srv.address)
        try:
            s.sendall(b"abc")
            assert recv_exactly(s, 3) == b"abc"
            s.shutdown(socket.SHUT_WR)
            assert recv_exactly(s, 10) == b"after-eof\n"   # written after our EOF
            wait_events(tag, "eof")
            s.settimeout(0.5)
            with pytest.raises(socket.timeout):            # still open
                s.recv(1)
            assert events(tag, "lost") == []
            assert srv.stats()["connections"] == 1
            srv.close()                                    # now it goes
            assert closed_by_peer(s)
        finally:
            s.close()
        assert wait_events(tag, "lost") == [(None, "", False)]


def test_write_eof_half_closes_from_server(tag):
    with tcp_server(P.HalfCloseFromServer, tag) as srv:
        with connect(srv.address) as s:
            s.sendall(b"HALF")
            assert recv_to_eof(s) == b"bye\n"       # the server's side is shut
            s.sendall(b"more")                      # ours is still open
            assert wait_events(tag, "data") == [(b"more",)]
            s.shutdown(socket.SHUT_WR)
            wait_events(tag, "eof")
        assert wait_events(tag, "lost") == [(None, "", False)]


@pytest.mark.parametrize("how", [b"close", b"abort"])
def test_write_after_close_raises_broken_pipe(tag, how):
    with tcp_server(P.WriteAfterClose, tag) as srv:
        with connect(srv.address) as s:
            s.sendall(how)
            got = recv_to_eof(s, reset_ok=True)
            if how == b"close":
                assert got == b"closing\n"          # close(): queued data is sent first
        (ev,) = wait_events(tag, "write_after")
        assert ev == (how, "BrokenPipeError", True)
        wait_events(tag, "lost")


def test_pause_reading(tag):
    with tcp_server(P.PauseProbe, tag) as srv:
        with connect(srv.address) as s:
            s.sendall(b"one")
            assert recv_exactly(s, 3) == b"one"
            s.sendall(b"pause")
            assert recv_exactly(s, 7) == b"paused\n"
            read = srv.stats()["bytes_read"]
            s.sendall(b"more")
            time.sleep(0.5)
            assert events(tag, "data") == [(b"one",)]       # "more" is not delivered
            assert srv.stats()["bytes_read"] == read
            srv.close()                                     # closes a paused connection
        assert wait_events(tag, "lost") == [(None, "", False)]


def test_resume_reading(tag):
    with tcp_server(P.ResumeProbe, tag) as srv:
        with connect(srv.address) as s:
            s.sendall(b"early")                 # arrives while reading is paused
            assert recv_exactly(s, 3) == b"hi\n"
            assert recv_exactly(s, 5) == b"early"
        # Events reach the test through call_from_main_thread, which may
        # trail the echo itself.
        wait_events(tag, "data")
        kinds = [e[1] for e in P.EVENTS if e[0] == tag]
        assert kinds[:3] == ["paused", "resuming", "data"], kinds


def test_transport_kept_past_connection_lost_is_detached(tag, n_workers):
    # docs/io.md: write() raises BrokenPipeError, close() does nothing,
    # get_extra_info() returns its default.
    with tcp_server(P.KeepsTransport, tag) as srv:
        for i in range(n_workers * 3 + 1):
            assert roundtrip(srv.address, b"%d" % i) == b"%d" % i
            wait_events(tag, "lost", i + 1)
        stale = events(tag, "stale")
        assert stale, "no connection met an older one's transport"
        for name, exc, *value in stale:
            if name == "write":
                assert exc == "BrokenPipeError", exc
            else:
                assert exc is None and value == ["None"], (name, exc, value)
        assert srv.stats()["connections"] == 0
        assert roundtrip(srv.address) == b"ping\n"


def test_transport_cannot_be_pickled_or_sent(tag):
    with tcp_server(P.SendTransport, tag) as srv:
        with connect(srv.address):
            (pickled,) = wait_events(tag, "pickle")
            (sent,) = wait_events(tag, "send")
        assert pickled[0] is not None, "a transport was pickled"
        assert sent[0] is not None, "a transport was sent to main"
        assert events(tag, "sent") == []


def test_reuse_port_false(tag):
    with tcp_server(P.Echo, tag, reuse_port=False) as srv:
        for i in range(40):
            assert roundtrip(srv.address, b"%d\n" % i) == b"%d\n" % i
        assert len(wait_events(tag, "made", 40)) == 40


# --------------------------------------------------------------------------
# sendfile


def test_sendfile_whole_and_parts(tmp_path):
    content = os.urandom(3 << 20)
    path = tmp_path / "data.bin"
    path.write_bytes(content)
    with serving("127.0.0.1", 0, P.SendFileParts) as srv:
        with connect(srv.address) as s:
            s.sendall(b"%s 0 -\n" % str(path).encode())
            assert recv_exactly(s, len(content) + 2) == b"[" + content + b"]"
            s.sendall(b"%s 10 5\n" % str(path).encode())
            assert recv_exactly(s, 7) == b"[" + content[10:15] + b"]"
            s.sendall(b"%s %d -\n" % (str(path).encode(), len(content) - 100))
            assert recv_exactly(s, 102) == b"[" + content[-100:] + b"]"


def test_sendfile_missing_file_raises_in_worker(tag, tmp_path):
    good = tmp_path / "good.txt"
    good.write_bytes(b"good content\n")
    with tcp_server(P.SendFileMissing, tag) as srv:
        with connect(srv.address) as s:
            s.sendall(b"GET %s\n" % str(tmp_path / "missing.txt").encode())
            assert recv_until(s, b"\n") == b"ERR FileNotFoundError\n"
            (ev,) = wait_events(tag, "handled")
            assert ev[0] == "FileNotFoundError"
            # the handler kept the connection open
            s.sendall(b"GET %s\n" % str(good).encode())
            assert recv_exactly(s, 3 + 13) == b"OK\ngood content\n"


# --------------------------------------------------------------------------
# Unix sockets and IPv6


@pytest.fixture
def short_dir():
    d = tempfile.mkdtemp(prefix="ppio", dir="/tmp")   # sun_path is short
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_unix_socket_path(tag, short_dir):
    path = os.path.join(short_dir, "s.sock")
    with serving(None, None, P.Info, unix=path, shared={"tag": tag}) as srv:
        assert srv.address == path
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(path)
            s.sendall(b"unix\n")
            assert recv_exactly(s, 5) == b"unix\n"
            (info,), = wait_events(tag, "info")
            assert info["family"] == socket.AF_UNIX
            assert info["sockname"] == path


def test_unix_socket_stale_file_is_replaced(short_dir):
    path = os.path.join(short_dir, "stale.sock")
    old = socket.socket(socket.AF_UNIX)
    old.bind(path)
    old.close()                          # leaves the socket file behind
    assert os.path.exists(path)
    with serving(None, None, P.BareEcho, unix=path):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(path)
            s.sendall(b"x")
            assert recv_exactly(s, 1) == b"x"


def test_unix_socket_abstract(tag):
    name = "@pyparallel-test-" + tag
    with serving(None, None, P.Echo, unix=name, shared={"tag": tag}) as srv:
        assert srv.address == name
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect("\0" + name[1:])
            s.sendall(b"abstract\n")
            assert recv_exactly(s, 9) == b"abstract\n"
        assert not os.path.exists(name)


@pytest.mark.parametrize("host, port", [("127.0.0.1", 0), ("127.0.0.1", None), (None, 0)])
def test_unix_with_host_or_port_is_an_error(short_dir, host, port):
    with pytest.raises((TypeError, ValueError)):
        srv = pyparallel.server(host, port, P.BareEcho, unix=os.path.join(short_dir, "x.sock"))
        srv.close()


def test_ipv6(tag):
    if not have_ipv6():
        pytest.skip("::1 is not available")
    with serving("::1", 0, P.Info, shared={"tag": tag}) as srv:
        assert srv.address[0] == "::1"
        assert srv.address[1] == srv.port
        with socket.socket(socket.AF_INET6) as s:
            s.settimeout(30)
            s.connect(("::1", srv.port))
            s.sendall(b"six\n")
            assert recv_exactly(s, 4) == b"six\n"
            (info,), = wait_events(tag, "info")
            assert info["family"] == socket.AF_INET6
            assert info["peername"][0] == "::1"


# --------------------------------------------------------------------------
# bad input


def test_lambda_protocol_is_a_type_error():
    # not a class at all: a bad argument (TypeError; TransferError is one too)
    with pytest.raises(TypeError):
        pyparallel.server("127.0.0.1", 0, lambda: None).close()


def test_local_class_protocol_is_a_transfer_error():
    class Local:
        def data_received(self, transport, data):
            return data

    with pytest.raises(pyparallel.TransferError):
        pyparallel.server("127.0.0.1", 0, Local).close()


def test_lines_mode_without_lines_received_is_a_type_error():
    with pytest.raises(TypeError):
        pyparallel.server("127.0.0.1", 0, P.LinesNoCallback).close()


def test_lines_received_without_lines_mode_is_a_type_error():
    with pytest.raises(TypeError):
        pyparallel.server("127.0.0.1", 0, P.LinesCallbackNoMode).close()


def test_port_in_use():
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as ei:
            pyparallel.server("127.0.0.1", port, P.BareEcho).close()
        assert ei.value.errno == errno.EADDRINUSE
        assert str(port) in str(ei.value)           # the message names the address
    finally:
        taken.close()


@pytest.mark.parametrize("port", [-1, 65536])
def test_bad_port_is_a_value_error(port):
    with pytest.raises(ValueError):
        pyparallel.server("127.0.0.1", port, P.BareEcho).close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may bind ports below 1024")
def test_privileged_port_is_a_permission_error():
    with pytest.raises(PermissionError):
        pyparallel.server("127.0.0.1", 1, P.BareEcho).close()


# --------------------------------------------------------------------------
# limits


def _try_recv(s):
    """What has arrived on s, without waiting (b"" at EOF, None if nothing)."""
    s.setblocking(False)
    try:
        return s.recv(1000)
    except BlockingIOError:
        return None
    finally:
        s.setblocking(True)


def test_max_connections(tag, n_workers):
    # reuse_port (the default): every worker has its own listener and the
    # kernel picks one per connection.  A worker holding
    # ceil(max_connections / workers) -- here one -- stops accepting, and
    # what lands on it waits in its backlog.  So: while we keep a worker's
    # answered connection open, that worker answers no other; once we close
    # it, the next in its backlog is served; in the end every connection is
    # served, exactly once.
    limit = n_workers
    n = 3 * limit + 2
    with tcp_server(P.WhoEcho, tag, max_connections=limit) as srv:
        socks = [connect(srv.address) for _ in range(n)]
        try:
            for i, s in enumerate(socks):
                s.sendall(b"%d\n" % i)
            bufs = [b""] * n
            waiting = set(range(n))
            served = []
            while waiting:
                holding = {}                    # worker -> connection, open

                def poll():
                    for i in sorted(waiting):
                        chunk = _try_recv(socks[i])
                        assert chunk != b"", "connection %d closed unanswered" % i
                        if chunk:
                            bufs[i] += chunk
                        if bufs[i].endswith(b" %d\n" % i):
                            w = int(bufs[i].split()[0][1:])
                            assert w not in holding, (
                                "worker %d answered connection %d while connection %d "
                                "it had answered was still open" % (w, i, holding[w]))
                            holding[w] = i
                            waiting.discard(i)
                            served.append(i)
                    return holding

                wait_for(poll, 60, "a connection to be answered (waiting: %r)" % waiting)
                # Every holder answers once more: each holding worker's loop has run
                # since; what arrived meanwhile is checked before we let go.
                for w, i in holding.items():
                    socks[i].sendall(b"again\n")
                    want = b"w%d again\n" % w
                    assert recv_exactly(socks[i], len(want)) == want
                poll()
                assert len(holding) <= limit, holding
                for i in holding.values():
                    socks[i].close()
            assert sorted(served) == list(range(n))
        finally:
            for s in socks:
                s.close()
        wait_stat(srv, "connections", lambda v: v == 0)
        st = srv.stats()
        assert st["accepted"] == n, st
        assert sum(w["accepted"] for w in st["workers"]) == n, st


def test_max_connections_holds_back_the_rest(tag, n_workers):
    # One listener shared by the workers (reuse_port=False), so any worker
    # with a free place takes the next connection: the limit is reached
    # exactly, the next connection gets no reply while it is held, and it is
    # served as soon as one of the others closes.
    limit = n_workers
    with tcp_server(P.Echo, tag, max_connections=limit, reuse_port=False) as srv:
        held = []
        extra = None
        try:
            for i in range(limit):
                s = connect(srv.address)
                held.append(s)
                s.sendall(b"%d" % i)
                assert recv_exactly(s, len(b"%d" % i)) == b"%d" % i   # every one answered
            st = wait_stat(srv, "connections", lambda v: v == limit)
            st = srv.stats()
            assert st["connections"] == limit and st["accepted"] == limit, st
            assert sorted(w["connections"] for w in st["workers"]) == [1] * n_workers, st

            extra = connect(srv.address)        # the kernel completes the handshake
            extra.sendall(b"x")
            # Every worker's loop runs after the extra connection arrived...
            for i, s in enumerate(held):
                s.sendall(b"again")
                assert recv_exactly(s, 5) == b"again"
            time.sleep(0.5)
            # ... and none took it.
            assert _try_recv(extra) is None, "served over the limit"
            st = srv.stats()
            assert st["accepted"] == limit and st["connections"] == limit, st

            held.pop(0).close()                 # a place frees up
            assert recv_exactly(extra, 1) == b"x"
            st = wait_stat(srv, "accepted", lambda v: v == limit + 1)
            assert srv.stats()["connections"] <= limit
        finally:
            for s in held:
                s.close()
            if extra is not None:
                extra.close()


def test_second_server_on_a_port_is_refused(tag):
    # SO_REUSEPORT must not let a second server silently share the port.
    with tcp_server(P.Echo, tag) as srv:
        with pytest.raises(OSError) as info:
            pyparallel.server("127.0.0.1", srv.port, P.Echo)
        assert info.value.errno == errno.EADDRINUSE
        assert str(srv.port) in str(info.value)
        assert roundtrip(srv.address) == b"ping\n"


def test_max_connections_is_server_wide(tag, n_workers):
    # A limit below the worker count still holds across workers: one
    # connection is served, and one accepted over the limit is closed at once
    # (before its protocol exists).
    with tcp_server(P.Echo, tag, max_connections=1) as srv:
        first = connect(srv.address)
        try:
            first.sendall(b"a")
            assert recv_exactly(first, 1) == b"a"
            extra = [connect(srv.address) for _ in range(n_workers + 2)]
            closed = 0
            for s in extra:
                s.settimeout(2)
                try:
                    s.sendall(b"b")
                    data = s.recv(10)
                except (ConnectionResetError, BrokenPipeError):
                    data = b""
                except socket.timeout:
                    data = None          # waiting in a backlog: not served
                assert data in (b"", None), data
                closed += data == b""
                s.close()
            first.sendall(b"c")
            assert recv_exactly(first, 1) == b"c"
            assert srv.stats()["connections"] <= 1
        finally:
            first.close()


def test_idle_timeout(tag):
    with tcp_server(P.Echo, tag, idle_timeout=0.5) as srv:
        with connect(srv.address) as s:
            s.sendall(b"once")
            assert recv_exactly(s, 4) == b"once"
            assert closed_by_peer(s)                # then nothing: closed for us
        (lost,) = wait_events(tag, "lost")
        assert lost[0] == "TimeoutError"
        assert lost[2] is True                      # TimeoutError is an OSError
        assert roundtrip(srv.address) == b"ping\n"  # the server carries on


def test_read_limit_exceeded(tag):
    with tcp_server(P.SlowLoris, tag, read_limit=1024) as srv:
        with connect(srv.address) as s:
            s.sendall(b"y" * 500 + b"\n")
            assert recv_exactly(s, 501) == b"y" * 500 + b"\n"
            try:
                s.sendall(b"x" * 8192)              # no newline, past the limit
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert closed_by_peer(s)
        (lost,) = wait_events(tag, "lost")
        assert lost[0] == "BufferError"
        assert roundtrip(srv.address, b"fine\n") == b"fine\n"   # others carry on


# --------------------------------------------------------------------------
# close with connections open, and at exit


def test_close_with_connections_open(tag):
    srv = pyparallel.server("127.0.0.1", 0, P.Echo, shared={"tag": tag})
    socks = []
    try:
        for i in range(10):
            s = connect(srv.address)
            s.sendall(b"%d" % i)
            assert recv_exactly(s, len(b"%d" % i)) == b"%d" % i
            socks.append(s)
        wait_stat(srv, "connections", lambda v: v == 10)
        srv.close()
        assert srv.stats()["connections"] == 0
        for s in socks:
            assert closed_by_peer(s)
        lost = wait_events(tag, "lost", 10)
        assert len(lost) == 10
        assert all(ev[0] is None for ev in lost), lost
        srv.close()                                 # idempotent
    finally:
        for s in socks:
            s.close()
        srv.close()


def test_close_while_sending_drops_queued_output(tag):
    with tcp_server(P.BigReply, tag) as srv:
        s = connect(srv.address)
        try:
            s.sendall(b"go")
            recv_exactly(s, 1000)                   # it is sending; we stop reading
            srv.close()
            assert closed_by_peer(s)
        finally:
            s.close()
        (lost,) = wait_events(tag, "lost")
        assert lost[0] is None                      # Server.close(): a clean close


def test_servers_still_open_are_closed_at_exit(tmp_path):
    r = support.run_code(tmp_path, """
        import socket
        import pyparallel
        import io_protocols
        srv = pyparallel.server("127.0.0.1", 0, io_protocols.PrintLost)
        s = socket.create_connection(srv.address, timeout=30)
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        print("exiting", flush=True)
        """, timeout=90)
    r.assert_clean_exit(0)
    assert "exiting" in r.stdout
    assert "lost None" in r.stdout, r.describe()


def test_stats_per_worker(tag, n_workers):
    with tcp_server(P.Echo, tag) as srv:
        for i in range(4 * n_workers):
            assert roundtrip(srv.address) == b"ping\n"
        st = srv.stats()
        assert [w["worker"] for w in st["workers"]] == list(range(n_workers))
        assert sum(w["accepted"] for w in st["workers"]) == st["accepted"] == 4 * n_workers
        assert sum(w["connections"] for w in st["workers"]) == st["connections"]
    assert srv.stats()["accepted"] == 0            # closed: counters are gone



CTRL_C_DURING_START = """
import signal, socket, sys, time
import pyparallel
import tasks


def slow_handler(signum, frame):
    # Ctrl-C whose handler runs long enough for the worker to finish the
    # start that main stopped waiting for.
    time.sleep(4)
    raise KeyboardInterrupt


if __name__ == "__main__":
    # Imported here, not at the top: workers run the top of this script, and
    # must import the protocol's module only when the server's start command
    # asks for the class (slowly: see slow_import_protocol).
    import slow_import_protocol
    if sys.argv[1] == "slow-handler":
        signal.signal(signal.SIGINT, slow_handler)
    pyparallel.configure(workers=2)
    pyparallel.submit(tasks.noop).result(60)          # the workers are up
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    try:
        srv = pyparallel.server("127.0.0.1", port, slow_import_protocol.Echo)
    except KeyboardInterrupt:
        print("server() raised KeyboardInterrupt", flush=True)
    else:
        print("server() returned", srv, flush=True)
        sys.exit(1)
    # A listener of our own, opened at once: it may get the number of a
    # listener server() closed.  Nobody but us may accept on it, even after
    # the worker's slow start has finished.
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen()
    time.sleep(3)
    with socket.create_connection(trap.getsockname(), timeout=10) as c:
        c.sendall(b"ping")
        trap.settimeout(10)
        try:
            conn, _ = trap.accept()
        except TimeoutError:
            print("a worker accepted the connection to our own listener",
                  flush=True)
            sys.exit(1)
        assert conn.recv(4) == b"ping"
        conn.close()
    trap.close()
    print("our listener is ours", flush=True)
    try:
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
    except ConnectionRefusedError:
        print("nothing accepts", flush=True)
    with socket.socket() as s:         # no SO_REUSEPORT: free, or EADDRINUSE
        s.bind(("127.0.0.1", port))
        s.listen()
    print("port free", flush=True)
"""


@pytest.mark.parametrize("handler", ["default", "slow-handler"])
def test_ctrl_c_while_server_starts_leaves_nothing_listening(tmp_path, handler):
    # server() waits for each worker to start its endpoint.  A Ctrl-C during
    # that wait must not leave the start to finish unseen: with the default
    # handler the start completes after server() has raised (and closed its
    # listeners); with a slow handler it completes before server() cleans
    # up.  Either way server() raises KeyboardInterrupt, nothing accepts on
    # the port or on a socket opened afterwards, and the process exits at
    # once, with no second Ctrl-C.
    path = support.write_script(tmp_path, CTRL_C_DURING_START)
    r, elapsed = support.run_until_ready_then_signal(
        [sys.executable, path, handler], sig=signal.SIGINT,
        ready="importing in a worker", timeout=60)
    r.assert_clean_exit(0)
    for line in ("server() raised KeyboardInterrupt", "our listener is ours",
                 "nothing accepts", "port free"):
        assert line in r.stdout, r.describe()


@pytest.mark.parametrize("shared", [[1, 2], {"tag": "x"}, bytearray(b"x"), 10 ** 30 + 1],
                         ids=["list", "dict", "bytearray", "mortal-int"])
def test_server_core_refuses_shared_that_is_not_frozen(shared):
    # pyparallel.server() freezes shared=; the C type, reachable as
    # pyparallel._pyparallel.ServerCore, must not rely on that: a mortal
    # object read by every worker would be a reference-count race.
    from pyparallel import _api, _pyparallel
    pool = _api._executor()._get_pool()
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(TypeError) as info:
        _pyparallel.ServerCore(pool, "127.0.0.1", port, P.BareEcho, None, 16, shared)
    msg = str(info.value)
    assert "shared" in msg and "frozen" in msg and "pyparallel.freeze" in msg, msg
    assert type(shared).__name__ in msg, msg
    with socket.socket() as s:              # refused before it listened
        s.bind(("127.0.0.1", port))
    core = _pyparallel.ServerCore(pool, "127.0.0.1", 0, P.BareEcho, None, 16,
                                  pyparallel.freeze(shared))
    core.close()
