"""Test-side helpers for tests/test_io_*.py (imported by the test modules
only, never by workers)."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

import pyparallel

import io_protocols
import support

EXAMPLES = os.path.join(support.ROOT, "examples")
TIMEOUT = 30          # generous: a slow, loaded 2-vCPU VM


def new_tag():
    return uuid.uuid4().hex


def events(tag, kind=None):
    """Events reported by callbacks of connections tagged `tag` (a snapshot)."""
    return [e[2:] for e in list(io_protocols.EVENTS)
            if e[0] == tag and (kind is None or e[1] == kind)]


def wait_for(pred, timeout=TIMEOUT, what="condition", interval=0.01):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)


def wait_events(tag, kind, n=1, timeout=TIMEOUT):
    wait_for(lambda: len(events(tag, kind)) >= n, timeout,
             "%d %r event(s); have %r" % (n, kind, events(tag)))
    return events(tag, kind)


def wait_stat(srv, key, pred, timeout=TIMEOUT):
    last = {}

    def check():
        last.update(srv.stats())
        return pred(last[key])
    wait_for(check, timeout, "stats()[%r] (last stats: %r)" % (key, last))
    return last[key]


@contextlib.contextmanager
def serving(*args, **kwargs):
    """pyparallel.server(...), closed on the way out whatever happens."""
    srv = pyparallel.server(*args, **kwargs)
    try:
        yield srv
    finally:
        srv.close()


def tcp_server(protocol, tag=None, **kwargs):
    shared = kwargs.pop("shared", None)
    if tag is not None:
        shared = dict(shared or {}, tag=tag)
    return serving("127.0.0.1", 0, protocol, shared=shared, **kwargs)


def connect(address, timeout=TIMEOUT, family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(address)
    return s


def recv_until(s, marker, timeout=TIMEOUT):
    """Read until `marker` is in what was received (or EOF); return it all."""
    s.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while marker not in buf:
        if time.monotonic() > deadline:
            raise AssertionError("no %r within %ss; got %r" % (marker, timeout, buf[-500:]))
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError("EOF before %r; got %r" % (marker, buf[-500:]))
        buf += chunk
    return buf


def recv_exactly(s, n, timeout=TIMEOUT):
    s.settimeout(timeout)
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise AssertionError("EOF after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)


def recv_to_eof(s, timeout=TIMEOUT, reset_ok=False):
    """Everything until EOF.  With reset_ok, a connection reset also ends it."""
    s.settimeout(timeout)
    buf = bytearray()
    while True:
        try:
            chunk = s.recv(1 << 20)
        except ConnectionResetError:
            if reset_ok:
                return bytes(buf)
            raise
        if not chunk:
            return bytes(buf)
        buf += chunk


def closed_by_peer(s, timeout=TIMEOUT):
    """True once the peer has closed (EOF or reset); reads and drops data."""
    recv_to_eof(s, timeout, reset_ok=True)
    return True


def roundtrip(address, payload=b"ping\n", family=socket.AF_INET):
    with connect(address, family=family) as s:
        s.sendall(payload)
        return recv_exactly(s, len(payload))


def rst_close(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()


def unused_port():
    """A port nothing listens on: a socket bound to it (not listening) is
    kept open so nobody else takes it.  Returns (socket, port)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def have_ipv6():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# example servers in subprocesses


class ExampleServer:
    def __init__(self, proc, host, port, out_path, err_path):
        self.proc = proc
        self.host = host
        self.port = port
        self.address = (host, port)
        self.out_path = out_path
        self.err_path = err_path

    def output(self):
        with open(self.out_path) as f:
            out = f.read()
        with open(self.err_path) as f:
            err = f.read()
        return out, err


def parse_listening(line):
    """'listening on 127.0.0.1:8007' / 'listening on [::1]:8007' -> (host, port)."""
    addr = line.split("listening on", 1)[1].strip()
    host, port = addr.rsplit(":", 1)
    return host.strip("[]"), int(port)


@contextlib.contextmanager
def example_server(name, *args, tmp_path, cwd=None, sig=signal.SIGINT, expect_clean=True):
    """Run examples/<name> --port 0 ARGS; yield an ExampleServer once it has
    printed 'listening on host:port'; then send `sig` and check that it
    exits cleanly (rc 0, no crash output)."""
    out_path = os.path.join(str(tmp_path), name + ".out")
    err_path = os.path.join(str(tmp_path), name + ".err")
    cmd = [sys.executable, os.path.join(EXAMPLES, name), "--port", "0", *args]
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=support.child_env(),
                                cwd=cwd or support.ROOT)
    try:
        def listening():
            with open(out_path) as f:
                for line in f:
                    if "listening on" in line and line.endswith("\n"):
                        return line
            if proc.poll() is not None:
                with open(err_path) as f:
                    raise AssertionError("%s exited (rc=%s) before listening:\n%s"
                                         % (name, proc.returncode, f.read()[-4000:]))
            return None
        line = wait_for(listening, 60, "%s to print 'listening on'" % name, 0.05)
        host, port = parse_listening(line)
        server = ExampleServer(proc, host, port, out_path, err_path)
        yield server
        # The example prints its address just before it calls run(), which is
        # what handles SIGINT/SIGTERM; give it a moment to get there.
        time.sleep(0.3)
        proc.send_signal(sig)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            out, err = server.output()
            raise AssertionError("%s did not exit after %s\n--- stdout ---\n%s\n--- stderr ---\n%s"
                                 % (name, sig, out[-4000:], err[-4000:]))
        if expect_clean:
            out, err = server.output()
            r = support.Result(rc, out, err, cmd)
            r.assert_clean_exit(0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_example(name, *args, timeout=120, cwd=None):
    return support.run([sys.executable, os.path.join(EXAMPLES, name), *args],
                       timeout=timeout, cwd=cwd)


def skip_unless_ipv6():
    if not have_ipv6():
        pytest.skip("::1 is not available")


@pytest.fixture
def tag():
    """A unique tag for this test's servers (see io_protocols)."""
    t = new_tag()
    yield t
    io_protocols.EVENTS[:] = [e for e in io_protocols.EVENTS if e[0] != t]
