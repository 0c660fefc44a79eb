"""A transport used from a thread other than its connection's loop thread:
a submit()ed task running in the same worker (it shares the worker's
interpreter and GIL with the loop thread), or a thread that task starts.

The peer sends nothing while the other thread writes, so the loop thread
sleeps in its poll: bytes (and close / write_eof) must still go out at once,
in order, and exceptions must reach the calling thread.  Each case runs in a
subprocess with one worker (so that submit() lands in the worker that owns
the connection), under the epoll and the io_uring poller."""

import pytest

import support

SCRIPT = r"""
import socket, sys, time
import pyparallel
import io_protocols as P

in_thread = sys.argv[1] == "thread"
pyparallel.configure(workers=1)
srv = pyparallel.server("127.0.0.1", 0, P.HandOff)
WAIT = 20            # the bytes come at once; without the fix, never


def recv_exactly(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "EOF after %r" % buf[-100:]
        buf += chunk
    return buf


def assert_eof(s, reset_ok=False):
    try:
        rest = s.recv(100)
    except ConnectionResetError:
        assert reset_ok
        return
    assert rest == b"", rest


def events(port, kind):
    return [e[2:] for e in list(P.EVENTS) if e[0] == port and e[1] == kind]


def wait_event(port, kind):
    deadline = time.monotonic() + WAIT
    while not events(port, kind):
        assert time.monotonic() < deadline, "no %r event from %d" % (kind, port)
        time.sleep(0.01)
    return events(port, kind)[0]


def session(ops):
    # The client sends nothing: only the other thread's calls can make the
    # loop thread do anything.
    s = socket.create_connection(srv.address, timeout=WAIT)
    port = s.getsockname()[1]
    pyparallel.submit(P.use_handed_off, port, ops, in_thread).result(60)
    return s, port


def results(port):
    (out,) = wait_event(port, "ops")
    return {op: (exc, r) for op, exc, r in out}


# Writes: small, a list, then a big bytes object (sent by reference), in
# the order of the calls.
big = bytes(range(256)) * 400
s, port = session([("sleep", 0.3), ("write", b"hello"),
                   ("writelines", [b", ", "world"]), ("write", big),
                   ("write", bytearray(b"!"))])
assert recv_exactly(s, 12 + len(big) + 1) == b"hello, world" + big + b"!"
assert all(exc is None for exc, r in results(port).values()), results(port)
s.close()
print("writes ok", flush=True)

# close(): what was queued goes out, then EOF; a later write raises
# BrokenPipeError in the calling thread.
s, port = session([("sleep", 0.3), ("write", b"bye"), ("close",),
                   ("is_closing",), ("write", b"late")])
assert recv_exactly(s, 3) == b"bye"
assert_eof(s)
r = results(port)
assert r["close"] == (None, None), r
assert r["is_closing"] == (None, True), r
assert r["write"][0] == "BrokenPipeError", r
assert wait_event(port, "lost") == (None,)
s.close()
print("close ok", flush=True)

# write_eof(): queued bytes, then EOF; our side stays open and is read.
s, port = session([("sleep", 0.3), ("write", b"half"), ("write_eof",),
                   ("write", b"late")])
assert recv_exactly(s, 4) == b"half"
assert_eof(s)
r = results(port)
assert r["write_eof"] == (None, None), r
assert r["write"][0] == "BrokenPipeError", r
s.sendall(b"still open")
assert wait_event(port, "data") == (b"still open",)
s.close()
print("write_eof ok", flush=True)

# abort(): closed at once.
s, port = session([("sleep", 0.3), ("abort",), ("write", b"x")])
assert_eof(s, reset_ok=True)
assert results(port)["write"][0] == "BrokenPipeError"
s.close()
print("abort ok", flush=True)

# The rest of the methods that touch the connection.
s, port = session([("sleep", 0.3), ("pause_reading",), ("resume_reading",),
                   ("get_write_buffer_size",), ("get_extra_info", "peername")])
r = results(port)
assert r["pause_reading"] == (None, None), r
assert r["resume_reading"] == (None, None), r
assert r["get_write_buffer_size"] == (None, 0), r
assert r["get_extra_info"] == (None, s.getsockname()), r
s.sendall(b"read")
assert wait_event(port, "data") == (b"read",)
s.close()
print("others ok", flush=True)
srv.close()
print("all ok", flush=True)
"""


@pytest.mark.parametrize("loop", ["epoll", "io_uring"])
@pytest.mark.parametrize("where", ["task", "thread"])
def test_transport_from_another_thread_of_the_worker(tmp_path, loop, where):
    r = support.run_code(tmp_path, SCRIPT, args=(where,), timeout=120,
                         env_extra={"PYPARALLEL_LOOP": loop})
    r.assert_clean_exit(0)
    assert "all ok" in r.stdout, r.describe()
