"""A pyparallel.client() driver for the example servers.

Each connection runs in a worker's event loop, driven by a protocol class
like a server-side connection; the value its `connection_lost` returns comes
back as the result of the Future that `pyparallel.client()` returned.

    python examples/client.py echo    [--host H] [--port 8007] [-n 100] [-c 4] [--size 64]
    python examples/client.py chargen [--host H] [--port 8019] [--bytes 100000] [-c 1]
    python examples/client.py chat    [--host H] [--port 8023] [COMMAND ...]
    python examples/client.py file    [--host H] [--port 8070] PATH [-o OUTPUT]

It prints what it got and exits with status 0 when every check passed, 1
when one failed, 2 when a connection failed.
"""

import argparse
import sys
import zlib

import pyparallel

# --------------------------------------------------------------------------
# echo: n messages, each sent after the previous one came back


class EchoClient:
    def connection_made(self, transport):
        self.count = transport.shared["count"]
        self.size = transport.shared["size"]
        self.me = "%s:%s" % transport.get_extra_info("sockname")[:2]
        self.sent = self.ok = 0
        self.got = b""
        self._send_next(transport)

    def _message(self, i):
        head = "%s #%d " % (self.me, i)
        body = (head * (self.size // len(head) + 1))[:self.size - 1] + "\n"
        return body.encode()

    def _send_next(self, transport):
        if self.sent == self.count:
            transport.close()
            return
        self.expect = self._message(self.sent)
        self.sent += 1
        transport.write(self.expect)

    def data_received(self, transport, data):
        self.got += data
        if len(self.got) >= len(self.expect):
            if self.got == self.expect:
                self.ok += 1
            self.got = b""
            self._send_next(transport)

    def connection_lost(self, transport, exc):
        return {"sent": self.sent, "ok": self.ok,
                "error": None if exc is None else repr(exc)}


# --------------------------------------------------------------------------
# chargen: read `bytes` bytes, then hang up

PRINTABLE = bytes(range(32, 127))


def chargen_expected(n):
    """The first n bytes of the RFC 864 stream (line i starts at char i % 95)."""
    twice = PRINTABLE + PRINTABLE
    out = bytearray()
    i = 0
    while len(out) < n:
        k = i % 95
        out += twice[k:k + 72] + b"\r\n"
        i += 1
    return bytes(out[:n])


class ChargenClient:
    def connection_made(self, transport):
        self.want = transport.shared["bytes"]
        self.got = bytearray()

    def data_received(self, transport, data):
        if len(self.got) < self.want:
            self.got += data
            if len(self.got) >= self.want:
                transport.close()

    def connection_lost(self, transport, exc):
        return bytes(self.got[:self.want])


# --------------------------------------------------------------------------
# chat: send the commands, collect every line until the server hangs up


class ChatClient:
    def connection_made(self, transport):
        self.got = b""
        transport.writelines(c.encode() + b"\n" for c in transport.shared["commands"])

    def data_received(self, transport, data):
        self.got += data

    def connection_lost(self, transport, exc):
        return self.got.decode("utf-8", "replace")


# --------------------------------------------------------------------------
# file: GET one file


class FileClient:
    def connection_made(self, transport):
        self.buf = b""
        self.header = None
        self.size = None
        transport.write(b"GET %s\n" % transport.shared["path"].encode())

    def data_received(self, transport, data):
        self.buf += data
        if self.header is None and b"\n" in self.buf:
            header, self.buf = self.buf.split(b"\n", 1)
            self.header = header.decode("utf-8", "replace")
            if self.header.startswith("OK "):
                self.size = int(self.header[3:])
            else:
                transport.close()
                return
        if self.size is not None and len(self.buf) >= self.size:
            transport.write(b"QUIT\n")
            transport.close()

    def connection_lost(self, transport, exc):
        return (self.header, self.buf[:self.size] if self.size is not None else b"",
                None if exc is None else repr(exc))


# --------------------------------------------------------------------------

DEFAULT_PORTS = {"echo": 8007, "chargen": 8019, "chat": 8023, "file": 8070}
DEFAULT_CHAT = ["NICK pyparallel", "SAY hello from a worker", "WHO", "TIME", "BOGUS", "QUIT"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("server", choices=sorted(DEFAULT_PORTS))
    ap.add_argument("args", nargs="*", help="chat: commands to send; file: the path")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int)
    ap.add_argument("-n", "--count", type=int, default=100, help="echo: messages per connection")
    ap.add_argument("--size", type=int, default=64, help="echo: bytes per message")
    ap.add_argument("-c", "--connections", type=int, default=4, help="echo/chargen: connections")
    ap.add_argument("--bytes", type=int, default=100000, help="chargen: bytes to read")
    ap.add_argument("-o", "--output", help="file: where to write the file")
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_intermixed_args()
    port = a.port if a.port is not None else DEFAULT_PORTS[a.server]

    def connect(protocol, shared, n=1):
        futures = [pyparallel.client(a.host, port, protocol, shared=shared) for _ in range(n)]
        try:
            return [f.result(timeout=a.timeout) for f in futures]
        except OSError as e:
            print("%s: cannot connect to %s:%d: %r" % (a.server, a.host, port, e))
            sys.exit(2)

    ok = True
    if a.server == "echo":
        size = max(a.size, 2)
        results = connect(EchoClient, {"count": a.count, "size": size}, a.connections)
        good = sum(r["ok"] for r in results)
        total = a.count * a.connections
        errors = [r["error"] for r in results if r["error"]]
        print("echo: %d connections, %d/%d replies ok%s"
              % (len(results), good, total, "; errors: %s" % errors if errors else ""))
        ok = good == total and not errors
    elif a.server == "chargen":
        results = connect(ChargenClient, {"bytes": a.bytes}, a.connections)
        expected = chargen_expected(a.bytes)
        good = sum(r == expected for r in results)
        print("chargen: %d connections, %d bytes each, %d/%d match the RFC 864 pattern"
              % (len(results), a.bytes, good, len(results)))
        print(results[0][:74 * 3].decode("ascii", "replace"), end="")
        ok = good == len(results)
    elif a.server == "chat":
        commands = a.args or DEFAULT_CHAT
        if commands[-1].upper() != "QUIT":
            commands.append("QUIT")
        (text,) = connect(ChatClient, {"commands": commands})
        print(text, end="")
        ok = text.rstrip("\n").rsplit("\n", 1)[-1].startswith("bye ")
        print("chat: %s" % ("ok" if ok else "no goodbye from the server"))
    elif a.server == "file":
        if len(a.args) != 1:
            ap.error("file: give exactly one PATH")
        ((header, body, error),) = connect(FileClient, {"path": a.args[0]})
        if header is not None and header.startswith("OK "):
            ok = len(body) == int(header[3:])
            print("file: %s: %d bytes, crc32 %08x%s" % (a.args[0], len(body), zlib.crc32(body),
                                                        "" if ok else " (short)"))
            if a.output:
                with open(a.output, "wb") as f:
                    f.write(body)
        else:
            ok = False
            print("file: %s: %s" % (a.args[0], header if header is not None else "no reply (%s)" % error))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
