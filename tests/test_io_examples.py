"""The example servers and client (examples/*.py), each run as a script in a
subprocess on a free port and driven with plain sockets (or client.py)."""

import os
import re
import signal
import socket
import threading
import time

import pytest

from io_support import (example_server, have_ipv6, recv_exactly, recv_to_eof, run_example,
                        unused_port)

EXAMPLES = ["echo_server.py", "chat_server.py", "chargen_server.py", "file_server.py",
            "client.py"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_help(name):
    r = run_example(name, "--help", timeout=60)
    r.assert_clean_exit(0)
    assert "usage:" in r.stdout
    assert "--host" in r.stdout and "--port" in r.stdout


def connect(ex, family=socket.AF_INET):
    s = socket.socket(family)
    s.settimeout(30)
    s.connect(ex.address)
    return s


# --------------------------------------------------------------------------
# echo


def test_echo_server(tmp_path):
    with example_server("echo_server.py", tmp_path=tmp_path) as ex:
        assert ex.host == "127.0.0.1"
        with connect(ex) as s:
            for i in range(20):
                msg = b"echo %d\n" % i
                s.sendall(msg)
                assert recv_exactly(s, len(msg)) == msg
        # half-close: everything sent comes back, then EOF
        data = os.urandom(300000)
        with connect(ex) as s:
            def send():
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            t = threading.Thread(target=send)
            t.start()
            assert recv_to_eof(s) == data
            t.join()
        # several at once
        socks = [connect(ex) for _ in range(20)]
        for i, s in enumerate(socks):
            s.sendall(b"%d" % i)
        for i, s in enumerate(socks):
            assert recv_exactly(s, len(b"%d" % i)) == b"%d" % i
            s.close()
    out, _ = ex.output()
    assert "run() returned SIGINT" in out


def test_echo_server_sigterm(tmp_path):
    with example_server("echo_server.py", tmp_path=tmp_path, sig=signal.SIGTERM) as ex:
        with connect(ex) as s:
            s.sendall(b"x")
            assert recv_exactly(s, 1) == b"x"
    assert "run() returned SIGTERM" in ex.output()[0]


def test_echo_server_ipv6(tmp_path):
    if not have_ipv6():
        pytest.skip("::1 is not available")
    with example_server("echo_server.py", "--host", "::1", tmp_path=tmp_path) as ex:
        assert "listening on [::1]:%d" % ex.port in ex.output()[0]
        with socket.socket(socket.AF_INET6) as s:
            s.settimeout(30)
            s.connect(("::1", ex.port))
            s.sendall(b"six")
            assert recv_exactly(s, 3) == b"six"


# --------------------------------------------------------------------------
# chat


class Lines:
    def __init__(self, sock):
        self.sock = sock
        self.f = sock.makefile("rb")

    def line(self):
        line = self.f.readline()
        assert line.endswith(b"\n"), "connection closed; got %r" % line
        return line[:-1].decode()

    def send(self, *commands):
        self.sock.sendall(b"".join(c.encode() + b"\n" for c in commands))


def open_chat(ex):
    s = connect(ex)
    c = Lines(s)
    assert c.line() == "* pyparallel chat: type HELP for the commands"
    assert c.line() == "* Welcome to the pyparallel chat server."
    assert c.line().startswith("* Every connection")
    return s, c


def test_chat_server(tmp_path):
    with example_server("chat_server.py", tmp_path=tmp_path) as ex:
        s, c = open_chat(ex)
        with s:
            c.send("NICK alice")
            assert c.line() == "hello alice"
            c.send("SAY hi there")
            assert c.line() == "alice: hi there"
            c.send("WHO")
            m = re.fullmatch(r"alice at 127\.0\.0\.1:(\d+) on worker (\d+)", c.line())
            assert m and int(m.group(1)) == s.getsockname()[1]
            c.send("TIME")
            assert re.fullmatch(r"TIME \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", c.line())
            c.send("BOGUS stuff")
            assert c.line() == "ERR unknown command"
            c.send("NICK two words")
            assert c.line().startswith("ERR ")
            c.send("HELP")
            help_lines = [c.line() for _ in range(7)]
            assert all(line.startswith("* ") for line in help_lines)
            assert help_lines[0].startswith("* NICK")
            c.send("MOTD")
            assert c.line() == "* Welcome to the pyparallel chat server."
            c.line()
            # pipelined, lower case, a line in two pieces, an empty line
            s.sendall(b"nick bob\n\nsay one\r\nSA")
            assert c.line() == "hello bob"
            assert c.line() == "bob: one"
            s.sendall(b"Y two\n")
            assert c.line() == "bob: two"
            # QUIT: goodbye, lines after it ignored, then the server hangs up
            c.send("QUIT", "SAY ignored")
            assert c.line() == "bye bob"
            assert c.f.read() == b""


def test_chat_state_is_per_connection(tmp_path):
    with example_server("chat_server.py", tmp_path=tmp_path) as ex:
        s1, c1 = open_chat(ex)
        s2, c2 = open_chat(ex)
        with s1, s2:
            c1.send("NICK carol")
            assert c1.line() == "hello carol"
            c2.send("SAY who am i")
            assert c2.line() == "guest: who am i"
            c1.send("SAY me")
            assert c1.line() == "carol: me"


def test_chat_client_half_close_gets_replies(tmp_path):
    with example_server("chat_server.py", tmp_path=tmp_path) as ex:
        s, c = open_chat(ex)
        with s:
            s.sendall(b"NICK dave\nSAY last words")    # no final newline
            s.shutdown(socket.SHUT_WR)
            assert c.line() == "hello dave"
            assert c.line() == "dave: last words"       # delivered at EOF
            assert c.f.read() == b""


# --------------------------------------------------------------------------
# chargen

PRINTABLE = bytes(range(32, 127))


def chargen_expected(n):
    # RFC 864, written independently of the example: line i holds the 72
    # printable characters starting at the (i mod 95)-th, then CR LF.
    size = 74
    lines = n // size + 1
    text = b"".join(bytes(PRINTABLE[(i + k) % 95] for k in range(72)) + b"\r\n"
                    for i in range(lines))
    return text[:n]


def test_chargen_server(tmp_path):
    n = 500000
    want = chargen_expected(n)
    with example_server("chargen_server.py", tmp_path=tmp_path) as ex:
        with connect(ex) as s:
            s.sendall(b"input is ignored\n")
            got = recv_exactly(s, n)
        assert got[:74] == PRINTABLE[:72] + b"\r\n"
        assert got == want
        lines = got.split(b"\r\n")[:-1]
        assert all(len(line) == 72 for line in lines)
        # a slow reader, then a fresh connection starts at the first line
        with connect(ex) as s:
            got = b""
            for _ in range(5):
                got += recv_exactly(s, 1000)
                time.sleep(0.1)
            assert got == want[:5000]
        with connect(ex) as s:
            assert recv_exactly(s, 74) == want[:74]


def test_chargen_many_readers(tmp_path):
    with example_server("chargen_server.py", tmp_path=tmp_path) as ex:
        socks = [connect(ex) for _ in range(10)]
        want = chargen_expected(100000)
        for s in socks:
            assert recv_exactly(s, 100000) == want
            s.close()


# --------------------------------------------------------------------------
# file server


@pytest.fixture
def file_root(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"hello from a.txt\n")
    (root / "empty").write_bytes(b"")
    (root / "sub" / "b.bin").write_bytes(os.urandom(2 << 20))
    (tmp_path / "secret").write_bytes(b"secret\n")
    os.symlink(str(tmp_path / "secret"), str(root / "link"))
    os.symlink("a.txt", str(root / "alias.txt"))       # stays inside: fine
    return root


def read_response(f):
    header = f.readline()
    assert header.endswith(b"\n"), "no response; got %r" % header
    header = header[:-1].decode()
    if header.startswith("OK "):
        n = int(header[3:])
        body = f.read(n)
        assert len(body) == n
        return header, body
    return header, None


def test_file_server(tmp_path, file_root):
    with example_server("file_server.py", "--root", str(file_root), tmp_path=tmp_path) as ex:
        with connect(ex) as s:
            f = s.makefile("rb")

            def get(name):
                s.sendall(b"GET " + name.encode() + b"\n")
                return read_response(f)

            assert get("a.txt") == ("OK 17", b"hello from a.txt\n")
            big = (file_root / "sub" / "b.bin").read_bytes()
            assert get("sub/b.bin") == ("OK %d" % len(big), big)
            assert get("empty") == ("OK 0", b"")
            assert get("alias.txt") == ("OK 17", b"hello from a.txt\n")
            for bad in ("../secret", "sub/../../secret", "link", "/etc/passwd",
                        "missing.txt", "sub", "", "sub/../a.txt/x"):
                header, body = get(bad)
                assert header.startswith("ERR "), (bad, header)
                assert body is None
            assert get("../secret")[0] == "ERR path escapes the root"
            assert get("link")[0] == "ERR path escapes the root"
            assert get("/etc/passwd")[0] == "ERR absolute paths are refused"
            assert get("missing.txt")[0] == "ERR not found"
            assert get("sub")[0] == "ERR not a file"
            s.sendall(b"PUT x\n")
            assert read_response(f)[0].startswith("ERR usage")
            # pipelined requests come back in order
            s.sendall(b"GET a.txt\nGET missing\nGET a.txt\n")
            assert read_response(f) == ("OK 17", b"hello from a.txt\n")
            assert read_response(f) == ("ERR not found", None)
            assert read_response(f) == ("OK 17", b"hello from a.txt\n")
            s.sendall(b"QUIT\n")
            assert f.read() == b""


def test_file_server_default_root_is_cwd(tmp_path, file_root):
    with example_server("file_server.py", tmp_path=tmp_path, cwd=str(file_root)) as ex:
        with connect(ex) as s:
            f = s.makefile("rb")
            s.sendall(b"GET a.txt\n")
            assert read_response(f) == ("OK 17", b"hello from a.txt\n")


# --------------------------------------------------------------------------
# client.py against each server


def test_client_echo(tmp_path):
    with example_server("echo_server.py", tmp_path=tmp_path) as ex:
        r = run_example("client.py", "echo", "--port", str(ex.port), "-n", "50", "-c", "3",
                        "--size", "100")
        r.assert_clean_exit(0)
        assert "echo: 3 connections, 150/150 replies ok" in r.stdout


def test_client_chargen(tmp_path):
    with example_server("chargen_server.py", tmp_path=tmp_path) as ex:
        r = run_example("client.py", "chargen", "--port", str(ex.port), "--bytes", "50000",
                        "-c", "2")
        r.assert_clean_exit(0)
        assert "2/2 match the RFC 864 pattern" in r.stdout


def test_client_chat(tmp_path):
    with example_server("chat_server.py", tmp_path=tmp_path) as ex:
        r = run_example("client.py", "chat", "--port", str(ex.port), "NICK bob", "SAY hi",
                        "WHO", "NOPE")
        r.assert_clean_exit(0)
        lines = r.stdout.splitlines()
        for want in ("hello bob", "bob: hi", "ERR unknown command", "bye bob", "chat: ok"):
            assert want in lines, r.describe()
        assert any(line.startswith("bob at 127.0.0.1:") for line in lines)


def test_client_file(tmp_path, file_root):
    with example_server("file_server.py", "--root", str(file_root), tmp_path=tmp_path) as ex:
        out = tmp_path / "copy.bin"
        r = run_example("client.py", "file", "--port", str(ex.port), "sub/b.bin", "-o", str(out))
        r.assert_clean_exit(0)
        assert "file: sub/b.bin: %d bytes" % (2 << 20) in r.stdout
        assert out.read_bytes() == (file_root / "sub" / "b.bin").read_bytes()
        r = run_example("client.py", "file", "--port", str(ex.port), "../secret")
        assert r.returncode == 1, r.describe()
        assert "ERR path escapes the root" in r.stdout


def test_client_connection_refused():
    s, port = unused_port()
    try:
        r = run_example("client.py", "echo", "--port", str(port))
        assert r.returncode == 2, r.describe()
        assert "cannot connect" in r.stdout and "ConnectionRefusedError" in r.stdout
        r.assert_no_crash_output()
    finally:
        s.close()
