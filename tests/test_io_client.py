"""pyparallel.client(): a protocol driven from a worker's loop; the Future
completes with what connection_lost returned, or with the error."""

import concurrent.futures
import os
import shutil
import socket
import tempfile

import pytest

import pyparallel

import io_protocols as P
from io_support import have_ipv6, serving, tag, tcp_server, unused_port, wait_events

assert tag  # a fixture, used by name

TIMEOUT = 60


def test_client_echo_result(tag):
    msgs = (b"one\n", b"two\n", b"three" * 5000 + b"\n")
    with tcp_server(P.Echo, tag) as srv:
        fut = pyparallel.client("127.0.0.1", srv.port, P.EchoClient, shared={"messages": msgs})
        assert isinstance(fut, pyparallel.Future)
        assert isinstance(fut, concurrent.futures.Future)
        res = fut.result(timeout=TIMEOUT)
        assert res["got"] == b"".join(msgs)
        assert res["exc"] is None
        assert res["parallel"] is True
        # the server saw one clean connection
        assert wait_events(tag, "lost") == [(None, "", False)]


def test_client_initial_bytes_and_close():
    with serving("127.0.0.1", 0, P.BareEcho) as srv:
        got, exc, wid = pyparallel.client("127.0.0.1", srv.port, P.GreetClient).result(TIMEOUT)
        assert got == b"hello\n" and exc is None and isinstance(wid, int)


def test_client_peer_closes():
    with serving("127.0.0.1", 0, P.ByeAndClose) as srv:
        got, exc = pyparallel.client("127.0.0.1", srv.port, P.ReadUntilClose).result(TIMEOUT)
        assert got == b"bye\n" and exc is None


def test_client_on_a_chosen_worker(n_workers):
    with serving("127.0.0.1", 0, P.BareEcho) as srv:
        futs = [pyparallel.client("127.0.0.1", srv.port, P.GreetClient, worker=w)
                for w in range(n_workers)]
        assert [f.result(TIMEOUT)[2] for f in futs] == list(range(n_workers))


def test_many_clients_at_once():
    with serving("127.0.0.1", 0, P.BareEcho) as srv:
        futs = [pyparallel.client("127.0.0.1", srv.port, P.EchoClient,
                                  shared={"messages": (b"%d\n" % i, b"again %d\n" % i)})
                for i in range(100)]
        for i, f in enumerate(futs):
            assert f.result(TIMEOUT)["got"] == b"%d\nagain %d\n" % (i, i)
        st = srv.stats()
        assert st["accepted"] == 100


def test_client_connection_refused():
    s, port = unused_port()
    try:
        fut = pyparallel.client("127.0.0.1", port, P.GreetClient)
        exc = fut.exception(timeout=TIMEOUT)
        assert isinstance(exc, ConnectionRefusedError), repr(exc)
        with pytest.raises(ConnectionRefusedError):
            fut.result(0)
    finally:
        s.close()


def test_client_callback_exception_without_handler():
    with serving("127.0.0.1", 0, P.BareEcho) as srv:
        fut = pyparallel.client("127.0.0.1", srv.port, P.RaisingClient)
        with pytest.raises(KeyError, match="client-boom"):
            fut.result(TIMEOUT)
        assert srv.stats()["callback_errors"] == 0     # it was the client's error


def test_client_unix_socket():
    d = tempfile.mkdtemp(prefix="ppio", dir="/tmp")
    try:
        path = os.path.join(d, "c.sock")
        with serving(None, None, P.BareEcho, unix=path):
            got, exc, _ = pyparallel.client(None, None, P.GreetClient, unix=path).result(TIMEOUT)
            assert got == b"hello\n" and exc is None
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_client_abstract_unix_socket(tag):
    name = "@pyparallel-client-" + tag
    with serving(None, None, P.BareEcho, unix=name):
        got, exc, _ = pyparallel.client(None, None, P.GreetClient, unix=name).result(TIMEOUT)
        assert got == b"hello\n" and exc is None


def test_client_ipv6():
    if not have_ipv6():
        pytest.skip("::1 is not available")
    with serving("::1", 0, P.BareEcho) as srv:
        got, exc, _ = pyparallel.client("::1", srv.port, P.GreetClient).result(TIMEOUT)
        assert got == b"hello\n" and exc is None


def make_local_class():
    class Local:
        initial_bytes_to_send = b"x"
    return Local


def test_client_bad_protocols():
    with serving("127.0.0.1", 0, P.BareEcho) as srv:
        with pytest.raises(TypeError):                 # not a class
            pyparallel.client("127.0.0.1", srv.port, lambda: None)
        with pytest.raises(pyparallel.TransferError):  # a class no worker can import
            pyparallel.client("127.0.0.1", srv.port, make_local_class())
        with pytest.raises(TypeError):
            pyparallel.client("127.0.0.1", srv.port, P.LinesNoCallback)
        with pytest.raises(TypeError):
            pyparallel.client("127.0.0.1", srv.port, P.LinesCallbackNoMode)


def test_client_to_a_plain_socket_server():
    """The other side is not pyparallel: a plain listening socket."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    lsock.settimeout(TIMEOUT)
    try:
        fut = pyparallel.client("127.0.0.1", lsock.getsockname()[1], P.GreetClient)
        conn, _ = lsock.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            assert conn.recv(100) == b"hello\n"
            conn.sendall(b"hello\n")
            assert conn.recv(100) == b""          # the client closed
        got, exc, _ = fut.result(TIMEOUT)
        assert got == b"hello\n" and exc is None
    finally:
        lsock.close()


def test_clients_finishing_at_once_with_fast_gil_switches():
    # A client may finish (and the completion thread complete its Future)
    # right after client() posts it; client() must not touch the Future's
    # state afterwards.  Tiny switch intervals make that interleaving likely.
    import sys
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with serving("127.0.0.1", 0, P.BareEcho) as srv:
            futs = []
            for _ in range(300):
                futs.append(pyparallel.client("127.0.0.1", srv.port, P.GreetClient))
                sum(range(2000))         # main keeps running Python meanwhile
            for f in futs:
                got, exc, _ = f.result(TIMEOUT)
                assert got == b"hello\n" and exc is None
    finally:
        sys.setswitchinterval(old)


@pytest.mark.parametrize("shared", [[1, 2], {"messages": (b"x",)}, 10 ** 30 + 1],
                         ids=["list", "dict", "mortal-int"])
def test_connect_refuses_shared_that_is_not_frozen(shared):
    # The C entry point behind client() checks for itself that shared= is
    # frozen (a mortal object shared with a worker is a refcount race).
    from pyparallel import _api, _pyparallel
    pool = _api._executor()._get_pool()
    with serving("127.0.0.1", 0, P.Echo) as srv:
        fut = pyparallel.Future()
        fut.set_running_or_notify_cancel()
        with pytest.raises(TypeError) as info:
            _pyparallel._connect(pool, 0, "127.0.0.1", srv.port, None, P.EchoClient,
                                 shared, fut)
        msg = str(info.value)
        assert "shared" in msg and "frozen" in msg and "pyparallel.freeze" in msg, msg
        assert srv.stats()["accepted"] == 0          # nothing was started
        assert not fut.done()
