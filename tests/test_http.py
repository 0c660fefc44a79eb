"""The HTTP server end to end: `pyparallel serve` in a subprocess, driven by
http.client and raw sockets, answers read byte for byte by h11 (an
independent parser).  Conformance, TechEmpower's header rules, every limit
and refusal, smuggling shapes, slowloris, handler errors, WSGI (plain,
Flask, Bottle), the CLI's errors, graceful drain, and 1,000 keep-alive
clients."""

import email.utils
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import h11
import pytest

import support

APPS = "http_apps"


class Served:
    def __init__(self, proc, port):
        self.proc = proc
        self.port = port

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def get(self, path, **kw):
        c = self.conn()
        c.request("GET", path, **kw)
        r = c.getresponse()
        body = r.read()
        c.close()
        return r, body

    def raw(self, data, timeout=10):
        """Sends bytes, reads until the server closes; returns them."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        finally:
            s.close()
        return out

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError("the server did not stop:\n" + err)
        return support.Result(self.proc.returncode, out, err, self.proc.args)


def start(app, *args, workers=2):
    cmd = [sys.executable, "-m", "pyparallel", "serve", app, "--bind",
           "127.0.0.1:0", "--workers", str(workers), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=support.TESTS_DIR,
                            env=support.child_env())
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if not m:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"server did not start: {line}{out}\n{err}")
    return Served(proc, int(m.group(1)))


# Every test of these fixtures runs twice: handlers called on the loop
# thread (the fast path) and on handler threads (--threads 3).
THREADS = [pytest.param("1", id="loop"), pytest.param("3", id="threads")]


@pytest.fixture(scope="module", params=THREADS)
def native(request):
    s = start(f"{APPS}:app", "--head-timeout", "1", "--body-timeout", "1",
              "--max-body", "100000", "--max-line", "1000", "--max-head", "4000",
              "--max-headers", "20", "--threads", request.param)
    yield s
    r = s.stop()
    r.assert_no_crash_output()


@pytest.fixture(scope="module", params=THREADS)
def wsgi(request):
    s = start(f"{APPS}:wsgi_app", "--max-body", "10000000", "--threads", request.param)
    s.threads = int(request.param)
    yield s
    s.stop().assert_no_crash_output()


def h11_responses(data, n=None, method=b"GET"):
    """Parses data as responses with h11; returns [(Response, body)]."""
    out = []
    conn = h11.Connection(h11.CLIENT)
    while n is None or len(out) < n:
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "t")]))
        conn.send(h11.EndOfMessage())
        if data is not None:
            conn.receive_data(data)
            data = None
        resp, body = None, b""
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                conn.receive_data(b"")
                if ev is h11.NEED_DATA and resp is None:
                    return out
                continue
            if isinstance(ev, h11.Response):
                resp = ev
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                out.append((resp, body))
                break
            elif isinstance(ev, h11.ConnectionClosed):
                return out
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            return out
        conn.start_next_cycle()
    return out


# ---- TechEmpower shapes, conformance ------------------------------------------


def test_techempower_headers_with_an_independent_parser(native):
    raw = native.raw(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    [(resp, body)] = h11_responses(raw)
    h = {k.decode().lower(): v.decode() for k, v in resp.headers}
    assert resp.status_code == 200 and body == b"Hello, World!"
    assert h["server"] == "pyparallel"
    assert re.match(r"^text/plain(; ?charset=(UTF|utf)-8)?$", h["content-type"])
    assert h["content-length"] == "13"
    d1 = email.utils.parsedate_to_datetime(h["date"])
    assert abs(d1.timestamp() - time.time()) < 5
    time.sleep(1.2)
    raw = native.raw(b"GET /json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    [(resp, body)] = h11_responses(raw)
    h2 = {k.decode().lower(): v.decode() for k, v in resp.headers}
    assert json.loads(body) == {"message": "Hello, World!"}
    assert re.match(r"^application/json(; ?charset=(UTF|utf)-8)?$", h2["content-type"])
    assert h2["date"] != h["date"]           # refreshed, not frozen


def test_examples_tfb_app(tmp_path):
    s = subprocess.Popen([sys.executable, "-m", "pyparallel", "serve", "examples.tfb:app",
                          "--bind", "127.0.0.1:0", "--workers", "2"],
                         cwd=support.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=support.child_env())
    line = s.stdout.readline()
    port = int(re.search(r":(\d+) with 2 workers", line).group(1))
    served = Served(s, port)
    r, body = served.get("/plaintext")
    assert body == b"Hello, World!" and r.getheader("Content-Type") == "text/plain"
    r, body = served.get("/json")
    assert json.loads(body) == {"message": "Hello, World!"}
    served.stop().assert_clean_exit(0)


def test_keep_alive_many_requests_one_connection(native):
    c = native.conn()
    for i in range(200):
        c.request("GET", f"/hello/n{i}")
        r = c.getresponse()
        assert r.status == 200 and r.read() == f"<p>hello n{i}</p>".encode()
        assert r.getheader("Content-Type") == "text/html; charset=utf-8"
    c.close()


def test_routes_request_fields_and_return_types(native):
    r, body = native.get("/request?a=1&b=x%20y&a=2", headers={"X-Custom": "v", "X-Custom2": "w"})
    d = json.loads(body)
    assert d["method"] == "GET" and d["path"] == "/request"
    assert d["query"] == "a=1&b=x%20y&a=2" and d["params"] == {"a": "1", "b": "x y"}
    assert d["headers"]["x-custom"] == "v" and d["client"][0] == "127.0.0.1"
    assert d["version"] == "HTTP/1.1"
    r, body = native.get("/hello/%C3%A9t%C3%A9")             # decoded once
    assert body.decode() == "<p>hello été</p>"
    r, body = native.get("/hello/%2541")                      # ...not twice
    assert body == b"<p>hello %41</p>"
    r, body = native.get("/files/a/b/c.txt")
    assert json.loads(body) == {"rest": "a/b/c.txt"}
    r, body = native.get("/none")
    assert r.status == 204 and body == b""
    r, body = native.get("/status?code=418")
    assert r.status == 418
    r, body = native.get("/file")
    assert body == open(os.path.join(support.TESTS_DIR, "http_apps.py"), "rb").read()
    assert r.getheader("Content-Type") == "text/x-python; charset=utf-8"
    r, body = native.get("/big")
    assert len(body) == 1_000_000 and r.getheader("Content-Length") == "1000000"
    r, body = native.get("/nope")
    assert r.status == 404


def test_shared_data_built_once_in_main_read_by_every_worker(native):
    pids = set()
    for _ in range(20):
        r, body = native.get("/shared/pear")
        d = json.loads(body)
        assert d["count"] == 5
        pids.add(d["pid"])
    assert pids == {native.proc.pid}


def test_methods_head_and_post_bodies(native):
    c = native.conn()
    c.request("POST", "/echo", body=b"x" * 5000)
    r = c.getresponse()
    assert r.read() == b"x" * 5000 and r.getheader("X-Length") == "5000"
    c.request("GET", "/echo")
    r = c.getresponse()
    r.read()
    assert r.status == 405 and r.getheader("Allow") == "POST, PUT"
    c.request("HEAD", "/plaintext")
    r = c.getresponse()
    assert r.getheader("Content-Length") == "13" and r.read() == b""
    # A chunked request body.
    c.putrequest("POST", "/echo")
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    c.send(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    r = c.getresponse()
    assert r.read() == b"hello world"
    c.close()
    # Expect: 100-continue
    out = native.raw(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                     b"Expect: 100-continue\r\nConnection: close\r\n\r\nabc")
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
    assert out.endswith(b"abc")


def test_pipelined_answers_in_order_with_slow_ones(native):
    reqs = b"".join(b"GET /sleep?s=%s&tag=%d HTTP/1.1\r\nHost: t\r\n\r\n"
                    % (b"0.2" if i % 3 == 0 else b"0", i) for i in range(9))
    out = native.raw(reqs + b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    got = h11_responses(out)
    assert [b for _, b in got] == [b"slept %d" % i for i in range(9)] + [b"Hello, World!"]


def test_handler_exception_is_500_logged_once_and_the_server_goes_on(native):
    r, body = native.get("/boom")
    assert r.status == 500 and b"ValueError" not in body    # no traceback sent
    r, body = native.get("/bad-return")
    assert r.status == 500
    r, body = native.get("/bad-header")
    assert r.status == 500                                 # no header injection
    assert r.getheader("Set-Cookie") is None
    r, body = native.get("/plaintext")
    assert r.status == 200


# ---- refusals: each closes its connection, everyone else is served ---------------


REFUSALS = [
    (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"b" * 5000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(25)) + b"\r\n", 431),
    (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\n", 413),
    (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
     b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc", 400),
    (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc", 400),
    (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400),
    (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400),
    (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: t\n\n", 400),
    (b"GET / HTTP/1.1\r\nHost: t\rX: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/3.0\r\nHost: t\r\n\r\n", 505),
]


@pytest.mark.parametrize("raw,status", REFUSALS, ids=[str(i) for i in range(len(REFUSALS))])
def test_refusals_close_and_nothing_behind_them_is_read(native, raw, status):
    out = native.raw(raw)
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:200]
    assert out.count(b"HTTP/1.1 ") == 1, out                 # nothing smuggled through
    assert b"Connection: close\r\n" in out
    r, body = native.get("/plaintext")
    assert body == b"Hello, World!"


def test_slowloris_gets_408_within_the_head_timeout(native):
    s = socket.create_connection(("127.0.0.1", native.port), timeout=10)
    t0 = time.monotonic()
    s.sendall(b"GET /plaintext HTTP/1.1\r\n")
    out = b""
    try:
        for _ in range(40):                  # a byte every 0.1 s keeps it busy
            s.sendall(b"X")
            time.sleep(0.1)
    except (BrokenPipeError, ConnectionResetError):
        pass
    s.settimeout(5)
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    assert out.startswith(b"HTTP/1.1 408 "), out
    assert time.monotonic() - t0 < 4


def test_a_thousand_keep_alive_clients(native):
    socks = []
    try:
        for i in range(1000):
            socks.append(socket.create_connection(("127.0.0.1", native.port), timeout=30))
        for rnd in range(2):
            for s in socks:
                s.sendall(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
            for s in socks:
                buf = b""
                while not buf.endswith(b"Hello, World!"):
                    chunk = s.recv(4096)
                    assert chunk, "a connection closed early"
                    buf += chunk
                assert buf.startswith(b"HTTP/1.1 200 OK")
    finally:
        for s in socks:
            s.close()


# ---- WSGI ------------------------------------------------------------------------


def test_wsgi_environ_and_bodies(wsgi):
    r, body = wsgi.get("/env?q=1", headers={"X-Custom": "c", "Content-Type": "text/x",
                                            "User-Agent": "t/1"})
    env = json.loads(body)
    assert env == {"REQUEST_METHOD": "GET", "PATH_INFO": "/env", "QUERY_STRING": "q=1",
                   "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_TYPE": "text/x",
                   "CONTENT_LENGTH": None, "HTTP_X_CUSTOM": "c", "REMOTE_ADDR": "127.0.0.1",
                   "SCRIPT_NAME": "", "wsgi.url_scheme": "http",
                   "wsgi.multithread": wsgi.threads > 1, "HTTP_USER_AGENT": "t/1"}
    # Repeated headers are joined with commas (PEP 3333, RFC 9110 5.3).
    out = wsgi.raw(b"PATCH /env HTTP/1.0\r\nX-Custom: a\r\nx-custom: b\r\n\r\n")
    env = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert env["HTTP_X_CUSTOM"] == "a,b" and env["REQUEST_METHOD"] == "PATCH"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0" and env["QUERY_STRING"] == ""
    c = wsgi.conn()
    big = os.urandom(3 << 20)               # past the 1 MiB spill: read from a file
    c.request("POST", "/upload", body=big)
    r = c.getresponse()
    assert r.read() == b"%d" % len(big)
    c.request("POST", "/lines", body=b"a\nb\nc\n")
    r = c.getresponse()
    assert r.read() == b"3 lines"
    c.close()


def test_wsgi_streaming_write_file_wrapper_and_close(wsgi):
    if os.path.exists("/tmp/pyparallel-wsgi-closed"):
        os.unlink("/tmp/pyparallel-wsgi-closed")
    out = wsgi.raw(b"GET /stream HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    if wsgi.threads == 1:
        assert b"Transfer-Encoding: chunked\r\n" in out
    else:                                   # collected by the handler thread
        assert b"Content-Length: 30\r\n" in out
    [(resp, body)] = h11_responses(out)
    assert body == b"part0;part1;part2;part3;part4;"
    r, body = wsgi.get("/write")
    assert body == b"written;returned"
    r, body = wsgi.get("/file")
    assert body == open(os.path.join(support.TESTS_DIR, "http_apps.py"), "rb").read()
    r, body = wsgi.get("/closing")
    assert body == b"ab"
    assert open("/tmp/pyparallel-wsgi-closed").read() == "closed"


def _wait_for(pred, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def _read_text(path):
    try:
        return open(path).read()
    except OSError:
        return ""


def test_wsgi_streaming_waits_for_a_slow_reader(wsgi, tmp_path):
    # With handler threads too: a thread collects the first MiB, the loop
    # thread streams the rest at the client's pace.
    mark = str(tmp_path / "made")
    n = 1000                                    # 64 MB if nobody waited
    s = socket.create_connection(("127.0.0.1", wsgi.port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"GET /big-stream?n=%d&mark=%s HTTP/1.1\r\nHost: t\r\n"
              b"Connection: close\r\n\r\n" % (n, mark.encode()))
    time.sleep(1.5)                             # not reading
    made = int(_read_text(mark) or 0)
    assert made < 200, f"{made} chunks made while the client read nothing"
    got = 0
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        got += len(chunk)
    s.close()
    assert got > n * 65536                      # every chunk, plus the head
    assert _wait_for(lambda: _read_text(mark) == "closed %d" % n), _read_text(mark)


def test_wsgi_stream_to_a_client_that_leaves_is_closed(wsgi, tmp_path):
    mark = str(tmp_path / "made")
    s = socket.create_connection(("127.0.0.1", wsgi.port), timeout=30)
    s.sendall(b"GET /big-stream?mark=%s HTTP/1.1\r\nHost: t\r\n\r\n" % mark.encode())
    assert len(s.recv(65536)) > 0               # an endless body, streamed
    s.close()
    assert _wait_for(lambda: _read_text(mark).startswith("closed")), _read_text(mark)


def test_wsgi_errors(wsgi):
    r, body = wsgi.get("/error-before")
    assert r.status == 500
    r, body = wsgi.get("/exc-info")
    assert r.status == 500 and body == b"replaced"
    r, body = wsgi.get("/nothing-here")
    assert r.status == 404


@pytest.mark.parametrize("app,checks", [
    ("flask_app", [("GET", "/", None, b"flask index"),
                   ("GET", "/hello/ann", None, b"hello ann from flask"),
                   ("POST", "/json", b'{"a": 1}', b'"got"')]),
    ("bottle_app", [("GET", "/", None, b"bottle index"),
                    ("POST", "/form", b"name=bo", b"name=bo")]),
    ("falcon_app", [("GET", "/hello/fa", None, b"hello fa from falcon"),
                    ("POST", "/json", b'{"a": 1}', b'{"got": {"a": 1}}')]),
    ("django_app", [("GET", "/", None, b"django index"),
                    ("GET", "/hello/dj?q=2", None, b'{"hello": "dj", "q": "2"}')]),
])
def test_frameworks_under_wsgi(app, checks):
    s = start(f"{APPS}:{app}", "--interface", "wsgi")
    try:
        for method, path, body, want in checks:
            c = s.conn()
            headers = {}
            if body is not None:
                headers["Content-Type"] = ("application/json" if body.startswith(b"{")
                                           else "application/x-www-form-urlencoded")
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            got = r.read()
            assert r.status == 200 and want in got, (path, r.status, got)
            c.close()
    finally:
        s.stop().assert_no_crash_output()


# ---- the CLI and the server's life ---------------------------------------------------


def cli(*args, timeout=60):
    return support.run([sys.executable, "-m", "pyparallel", "serve", *args],
                       timeout=timeout, cwd=support.TESTS_DIR)


def test_cli_errors_are_one_clear_line():
    r = cli("no_such_module_xyz:app", "--bind", "127.0.0.1:0")
    assert r.returncode == 1 and "cannot import the app" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = cli(f"{APPS}:missing", "--bind", "127.0.0.1:0")
    assert r.returncode == 2 and "has no attribute 'missing'" in r.stderr
    r = cli("not a spec!", "--bind", "127.0.0.1:0")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    r = cli(f"{APPS}:app", "--bind", "127.0.0.1")
    assert r.returncode == 1 and "HOST:PORT" in r.stderr
    r = cli(f"{APPS}:app", "--workers", "0")
    assert r.returncode == 2 and "--workers" in r.stderr
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    try:
        r = cli(f"{APPS}:app", "--bind", "127.0.0.1:%d" % held.getsockname()[1])
        assert r.returncode == 1 and "in use" in r.stderr.lower() or "held by another" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    finally:
        held.close()


def test_serve_help_documents_every_option_with_its_default():
    r = support.run([sys.executable, "-m", "pyparallel", "serve", "--help"])
    assert r.returncode == 0
    for opt in ("--bind", "--workers", "--threads", "--interface", "--backlog",
                "--graceful-timeout", "--keepalive-timeout", "--head-timeout",
                "--max-body", "--max-head", "--max-line", "--max-headers"):
        assert opt in r.stdout
    assert "(default: 30.0)" in r.stdout and "127.0.0.1:8000" in r.stdout


def _read_all(sock):
    out = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return out
        out += chunk


def test_graceful_drain_finishes_requests_in_flight():
    s = start(f"{APPS}:app", "--graceful-timeout", "10", workers=1)
    busy = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    upload = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    idle = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    idle.sendall(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
    assert idle.recv(4096).endswith(b"Hello, World!")
    upload.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
    busy.sendall(b"GET /sleep?s=1&tag=inflight HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGTERM)
    # The handler running when the drain came finishes and is sent.
    out = _read_all(busy)
    assert out.endswith(b"slept inflight"), out
    # A request still arriving is finished and answered, with a close.
    time.sleep(0.2)
    upload.sendall(b"defghij")
    out = _read_all(upload)
    assert out.endswith(b"abcdefghij") and b"Connection: close\r\n" in out, out
    assert idle.recv(4096) == b""             # idle keep-alive closed at once
    with pytest.raises(OSError):              # no longer accepting
        socket.create_connection(("127.0.0.1", s.port), timeout=2).recv(1)
    r = s.stop(sig=None)                      # exits by itself once drained
    r.assert_clean_exit(0)
    assert "draining" in r.stdout


@pytest.mark.parametrize("fmt", ["common", "combined"])
def test_access_log_lines_escape_what_a_client_sends(tmp_path, fmt):
    log = tmp_path / "access.log"
    log.write_text("an earlier line\n")                # appended to, never truncated
    s = start(f"{APPS}:app", "--access-log", str(log), "--access-log-format", fmt)
    try:
        got, _ = s.get("/plaintext", headers={"User-Agent": 'ua "quoted"\\', "Referer": "http://r/"})
        assert got.status == 200
        s.get("/no-such-page")
        # A target with a quote and a byte that is not ASCII: escaped, so no
        # client can forge a field or a line.  (llhttp 8 takes it, and the
        # app answers 404; llhttp 9 refuses such a target: 400.)
        out = s.raw(b'GET /x"\xff HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n')
        hostile = out[9:12]
        assert hostile in (b"404", b"400"), out
        s.raw(b"BROKEN\r\n\r\n")                          # refused: logged too
    finally:
        r = s.stop()
    r.assert_clean_exit(0)                            # the drain flushes the log
    raw = log.read_bytes()
    assert all(32 <= c < 127 or c == 10 for c in raw), raw      # nothing forged
    lines = log.read_text().splitlines()
    assert lines[0] == "an earlier line"
    lines = lines[1:]
    assert len(lines) == 4, lines
    stamp = r'\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\]'
    tail = r' "http://r/" "ua \\x22quoted\\x22\\x5c"' if fmt == "combined" else ""
    # Two workers each write their own lines: whole lines, in no set order.
    order = ["/plaintext", "/no-such", "/x" if hostile == b"404" else '"-" 400', '"-" 400']
    lines.sort(key=lambda l: next(i for i, k in enumerate(order) if k in l))
    assert re.fullmatch(r'127\.0\.0\.1 - - ' + stamp +
                        r' "GET /plaintext HTTP/1\.1" 200 13' + tail, lines[0]), lines[0]
    assert re.search(r'"GET /no-such-page HTTP/1\.1" 404 \d+', lines[1]), lines[1]
    if hostile == b"404":
        assert r'"GET /x\x22\xff HTTP/1.1" 404' in lines[2], lines[2]
    else:
        assert re.search(r'"-" 400 \d+', lines[2]), lines[2]
    assert re.search(r'"-" 400 \d+', lines[3]), lines[3]


def test_access_log_that_cannot_be_opened_is_one_clear_line(tmp_path):
    cmd = [sys.executable, "-m", "pyparallel", "serve", f"{APPS}:app", "--bind",
           "127.0.0.1:0", "--access-log", str(tmp_path / "no-such-dir" / "log")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=support.TESTS_DIR,
                       env=support.child_env(), timeout=60)
    assert r.returncode != 0
    assert "no-such-dir" in r.stderr and "Traceback" not in r.stderr, r.stderr


# ---- static files ------------------------------------------------------------------

@pytest.fixture(scope="module")
def static(tmp_path_factory):
    base = tmp_path_factory.mktemp("static")
    root = base / "public"
    (root / "docs").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_bytes(b"0123456789")
    (root / "page.html").write_text("<p>hi</p>")
    (root / "style.css").write_text("p{}")
    (root / "docs" / "index.html").write_text("<h1>docs</h1>")
    (root / ".env").write_text("SECRET=1")
    (root / "big.bin").write_bytes(os.urandom(3_000_000))
    (base / "secret.txt").write_text("outside the root")
    os.symlink(base / "secret.txt", root / "out.txt")       # a link out: refused
    os.symlink("a.txt", root / "in.txt")                     # a link inside: served
    s = start(f"{APPS}:app", "--static", f"/s={root}", workers=2)
    s.root = root
    yield s
    s.stop().assert_no_crash_output()


def _raw_get(s, target, headers=b""):
    out = s.raw(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n" + headers +
                b"Connection: close\r\n\r\n")
    return h11_parse(out)


def h11_parse(data):
    """(status, headers dict, body) of one answer, read by h11."""
    c = h11.Connection(h11.CLIENT)
    c.send(h11.Request(method="GET", target="/", headers=[("Host", "t")]))
    c.receive_data(data)
    status, headers, body = None, {}, b""
    while True:
        ev = c.next_event()
        if isinstance(ev, h11.Response):
            status = ev.status_code
            headers = {k.decode().lower(): v.decode() for k, v in ev.headers}
        elif isinstance(ev, h11.Data):
            body += ev.data
        elif isinstance(ev, (h11.EndOfMessage, h11.ConnectionClosed)) or ev is h11.NEED_DATA:
            return status, headers, body


def test_static_files_types_and_sendfile(static):
    st, h, body = _raw_get(static, b"/s/a.txt")
    assert (st, body) == (200, b"0123456789")
    assert h["content-type"] == "text/plain; charset=utf-8" and h["accept-ranges"] == "bytes"
    assert h["etag"].startswith('"') and h["last-modified"].endswith(" GMT")
    assert _raw_get(static, b"/s/page.html")[1]["content-type"] == "text/html; charset=utf-8"
    assert _raw_get(static, b"/s/style.css")[1]["content-type"] == "text/css; charset=utf-8"
    st, h, body = _raw_get(static, b"/s/big.bin")
    assert st == 200 and body == (static.root / "big.bin").read_bytes()
    assert h["content-type"] == "application/octet-stream"
    assert _raw_get(static, b"/s/in.txt")[2] == b"0123456789"
    r, body = static.get("/plaintext")                  # the app still answers the rest
    assert body == b"Hello, World!"


@pytest.mark.parametrize("target", [
    b"/s/../secret.txt", b"/s/%2e%2e/secret.txt", b"/s/%2E%2e/secret.txt",
    b"/s/docs/..%2f..%2fsecret.txt", b"/s/%2f..%2fsecret.txt",
    b"/s/%c0%ae%c0%ae/secret.txt", b"/s/%252e%252e/secret.txt",
    b"/s/out.txt", b"/s/.env", b"/s/docs/../../secret.txt", b"/s/nope",
])
def test_static_never_escapes_its_root(static, target):
    st, _, body = _raw_get(static, target)
    assert st == 404 and b"outside" not in body and b"SECRET" not in body, (target, st, body)


def test_static_bad_escapes_and_methods(static):
    assert _raw_get(static, b"/s/a.txt%00")[0] == 400
    assert _raw_get(static, b"/s/%zz")[0] == 400
    out = static.raw(b"POST /s/a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n"
                     b"Connection: close\r\n\r\n")
    st, h, _ = h11_parse(out)
    assert st == 405 and h["allow"] == "GET, HEAD"
    c = static.conn()
    c.request("HEAD", "/s/a.txt")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Length") == "10" and r.read() == b""
    c.close()


def test_static_directories_are_never_listed(static):
    st, h, _ = _raw_get(static, b"/s/docs?x=1")
    assert st == 301 and h["location"] == "/s/docs/?x=1"
    st, h, body = _raw_get(static, b"/s/docs/")
    assert (st, body) == (200, b"<h1>docs</h1>")
    assert _raw_get(static, b"/s/empty/")[0] == 404
    assert _raw_get(static, b"/s/")[0] == 404


def test_static_ranges(static):
    def rng(value, extra=b""):
        return _raw_get(static, b"/s/a.txt", b"Range: " + value + b"\r\n" + extra)
    st, h, body = rng(b"bytes=2-4")
    assert (st, body, h["content-range"]) == (206, b"234", "bytes 2-4/10")
    assert rng(b"bytes=7-")[2] == b"789"
    assert rng(b"bytes=-3")[2] == b"789"
    assert rng(b"bytes=-30")[2] == b"0123456789"          # more than the file: all of it
    assert rng(b"bytes=8-100")[2] == b"89"
    st, h, body = rng(b"bytes=10-")
    assert st == 416 and h["content-range"] == "bytes */10"
    assert rng(b"bytes=-0")[0] == 416
    # Lists, other units and nonsense are ignored: the whole file.
    for v in (b"bytes=0-1,4-5", b"items=0-1", b"bytes=5-2", b"bytes=x-y"):
        st, _, body = rng(v)
        assert (st, body) == (200, b"0123456789"), v
    etag = _raw_get(static, b"/s/a.txt")[1]["etag"].encode()
    assert rng(b"bytes=0-0", b"If-Range: " + etag + b"\r\n")[0] == 206
    assert rng(b"bytes=0-0", b'If-Range: "stale"\r\n')[0] == 200


def test_static_conditional_requests(static):
    _, h, _ = _raw_get(static, b"/s/a.txt")
    etag, lastmod = h["etag"].encode(), h["last-modified"].encode()
    st, h2, body = _raw_get(static, b"/s/a.txt", b"If-None-Match: " + etag + b"\r\n")
    assert (st, body) == (304, b"") and h2["etag"] == h["etag"]
    assert _raw_get(static, b"/s/a.txt", b'If-None-Match: "x", W/' + etag + b"\r\n")[0] == 304
    assert _raw_get(static, b"/s/a.txt", b"If-None-Match: *\r\n")[0] == 304
    assert _raw_get(static, b"/s/a.txt", b'If-None-Match: "other"\r\n')[0] == 200
    assert _raw_get(static, b"/s/a.txt", b"If-Modified-Since: " + lastmod + b"\r\n")[0] == 304
    assert _raw_get(static, b"/s/a.txt",
                    b"If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT\r\n")[0] == 200
    assert _raw_get(static, b"/s/a.txt", b"If-Modified-Since: yesterday\r\n")[0] == 200
    # If-None-Match wins over If-Modified-Since.
    assert _raw_get(static, b"/s/a.txt", b'If-None-Match: "other"\r\nIf-Modified-Since: ' +
                    lastmod + b"\r\n")[0] == 200


@pytest.mark.parametrize("arg, message", [
    ("nodir", "is not PREFIX=DIR"),
    ("/x=/no/such/dir", "is not a directory"),
    ("x=.", "is not PREFIX=DIR"),
])
def test_static_option_errors_are_one_clear_line(arg, message):
    cmd = [sys.executable, "-m", "pyparallel", "serve", f"{APPS}:app", "--bind",
           "127.0.0.1:0", "--static", arg]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=support.TESTS_DIR,
                       env=support.child_env(), timeout=60)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


# ---- handler threads ---------------------------------------------------------------

def _timed_gets(port, paths):
    """Sends every GET at once, each on its own connection; returns the
    seconds each answer took, in order, and the bodies."""
    import threading
    took, bodies = [None] * len(paths), [None] * len(paths)

    def one(i, path):
        t0 = time.monotonic()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", path)
        bodies[i] = c.getresponse().read()
        took[i] = time.monotonic() - t0
        c.close()

    ts = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(paths)]
    for i, t in enumerate(ts):
        t.start()
        if i == 0:
            time.sleep(0.2)                 # the blocking one goes first
    for t in ts:
        t.join()
    return took, bodies


@pytest.mark.parametrize("app", ["app", "wsgi_app"])
def test_threads_a_blocking_handler_stalls_only_its_thread(app):
    slow = "/sleep?s=1.5"
    for threads in ("1", "4"):
        s = start(f"{APPS}:{app}", "--threads", threads, workers=1)
        try:
            took, bodies = _timed_gets(s.port, [slow, "/plaintext", "/plaintext"])
        finally:
            s.stop().assert_clean_exit(0)
        assert bodies[1] == bodies[2] == b"Hello, World!", bodies
        if threads == "1":
            # The fast path: the loop thread sleeps, the others wait for it.
            assert min(took[1:]) > 0.8, took
        else:
            assert max(took[1:]) < 0.8 and took[0] >= 1.4, took


def test_threads_run_handlers_side_by_side_and_answer_in_order():
    s = start(f"{APPS}:app", "--threads", "4", workers=1)
    try:
        took, _ = _timed_gets(s.port, ["/sleep?s=1"] * 4)
        assert max(took) < 2.5, took       # four 1 s sleeps at once, not 4 s
        # Pipelined on one connection: answers in request order, whichever
        # thread finishes first.
        out = s.raw(b"GET /sleep?s=0.5&tag=a HTTP/1.1\r\nHost: t\r\n\r\n"
                    b"GET /sleep?s=0&tag=b HTTP/1.1\r\nHost: t\r\n\r\n"
                    b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert [b for _, b in h11_responses(out)] == [b"slept a", b"slept b", b"Hello, World!"]
    finally:
        s.stop().assert_clean_exit(0)


def test_threads_drain_finishes_what_handler_threads_run():
    s = start(f"{APPS}:app", "--threads", "2", "--graceful-timeout", "10", workers=1)
    busy = [socket.create_connection(("127.0.0.1", s.port), timeout=10) for _ in range(2)]
    for i, b in enumerate(busy):
        b.sendall(b"GET /sleep?s=1&tag=t%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGTERM)
    for i, b in enumerate(busy):
        out = _read_all(b)
        assert out.endswith(b"slept t%d" % i) and b"Connection: close\r\n" in out, out
        b.close()
    s.stop(sig=None).assert_clean_exit(0)


def test_threads_option_is_checked():
    cmd = [sys.executable, "-m", "pyparallel", "serve", f"{APPS}:app", "--threads", "0"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=support.TESTS_DIR,
                       env=support.child_env(), timeout=60)
    assert r.returncode == 2 and "--threads" in r.stderr and "Traceback" not in r.stderr


def test_access_log_format_string(tmp_path):
    log = tmp_path / "access.log"
    fmt = '%m %U%q %H %s %B %b %{X-Trace}i %Dus %Ts 100%%'
    s = start(f"{APPS}:app", "--access-log", str(log), "--access-log-format", fmt,
              workers=1)
    try:
        s.get("/sleep?s=0.3&tag=a", headers={"X-Trace": 'id "7"'})
        c = s.conn()
        c.request("HEAD", "/plaintext")
        c.getresponse().read()
        c.close()
    finally:
        r = s.stop()
    r.assert_clean_exit(0)
    slow, head = log.read_text().splitlines()
    m = re.fullmatch(r'GET /sleep\?s=0\.3&tag=a HTTP/1\.1 200 7 7 id \\x227\\x22 (\d+)us '
                     r'(\d+\.\d{3})s 100%', slow)
    assert m, slow
    assert 300_000 <= int(m.group(1)) < 5_000_000 and float(m.group(2)) >= 0.3, slow
    assert re.fullmatch(r'HEAD /plaintext HTTP/1\.1 200 0 - - \d+us \d+\.\d{3}s 100%', head), head


@pytest.mark.parametrize("fmt", ["%h %Z", "%{Referer", "%{}i", "50%"])
def test_access_log_bad_format_is_one_clear_line(tmp_path, fmt):
    cmd = [sys.executable, "-m", "pyparallel", "serve", f"{APPS}:app", "--bind",
           "127.0.0.1:0", "--access-log", str(tmp_path / "log"), "--access-log-format", fmt]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=support.TESTS_DIR,
                       env=support.child_env(), timeout=60)
    assert r.returncode != 0 and "unknown directive" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr


def test_sigterm_right_after_start_drains_cleanly():
    # The listening line comes before the main thread waits for signals: a
    # SIGTERM at once must still mean "drain", never the default kill.
    for _ in range(5):
        s = start(f"{APPS}:app", workers=1)
        r = s.stop()
        r.assert_clean_exit(0)
        assert "SIGTERM: draining" in r.stdout


def test_response_arguments_and_subclasses(native):
    from pyparallel.http import Response
    r = Response(b"x", content_type="text/plain")
    assert (r.body, r.status, r.headers, r.content_type) == (b"x", 200, None, "text/plain")
    assert Response().body == b"" and repr(Response(status=404)) == "<Response 404>"
    r.status = 201
    assert r.status == 201
    for bad in (lambda: Response(nope=1), lambda: Response(1, 2, 3, 4, 5),
                lambda: Response(b"", body=b"")):
        with pytest.raises(TypeError):
            bad()
    resp, body = native.get("/subclass")
    assert (resp.status, body, resp.getheader("Content-Type")) == (202, b"lazy 202", "text/x-lazy")
