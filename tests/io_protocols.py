"""Protocol classes and timer functions for the parallel I/O tests
(tests/test_io_*.py).

Workers import this module by name (the protocol classes and timer functions
must live at the top level of an importable module), so -- like tasks.py --
it must import cleanly in a sub-interpreter: no pytest, no hashlib, ...

Reporting back to the test: a callback calls `emit(tag, kind, *data)`, which
sends `(tag, kind, *data)` to the main interpreter with
`pyparallel.call_from_main_thread(record, ...)`; `record` appends it to
`EVENTS` *in the main interpreter's copy of this module* (the one the test
module imported).  Every server a test makes gets a unique tag in its
`shared` data (`shared={"tag": ...}`), so events of an earlier test's
connections that arrive late never confuse a later test.
"""

import itertools
import threading
import time

import pyparallel

# --------------------------------------------------------------------------
# events: worker -> main

EVENTS = []          # only ever appended to in the main interpreter


def record(event):
    EVENTS.append(event)


def tag_of(transport):
    shared = transport.shared
    try:
        return shared["tag"]
    except (TypeError, KeyError, IndexError):
        return None


def emit(tag, kind, *data):
    pyparallel.call_from_main_thread(record, (tag, kind) + tuple(data))


def exc_name(exc):
    return None if exc is None else type(exc).__name__


def emit_lost(transport, exc):
    emit(tag_of(transport), "lost", exc_name(exc), "" if exc is None else str(exc),
         isinstance(exc, OSError))


# --------------------------------------------------------------------------
# plain protocols


class Echo:
    """Sends back what it gets; reports connection_made / connection_lost."""

    def connection_made(self, transport):
        emit(tag_of(transport), "made", transport.worker_id)

    def data_received(self, transport, data):
        return data

    def connection_lost(self, transport, exc):
        emit_lost(transport, exc)


class WhoEcho:
    """Echo that says which worker answers: b"w<worker> " + data."""

    def data_received(self, transport, data):
        return b"w%d " % transport.worker_id + data


class BareEcho:
    """Echo with data_received only (nothing reported)."""

    def data_received(self, transport, data):
        return data


class KeepOpenAfterEof(Echo):
    """Echo; on EOF from the peer it writes b"after-eof\\n" and keeps the
    connection open for writing (returns True)."""

    def eof_received(self, transport):
        emit(tag_of(transport), "eof")
        transport.write(b"after-eof\n")
        return True


class Info:
    """On connection_made, reports what the transport says about itself."""

    def connection_made(self, transport):
        shared = transport.shared
        emit(tag_of(transport), "info", {
            "peername": transport.get_extra_info("peername"),
            "sockname": transport.get_extra_info("sockname"),
            "family": int(transport.get_extra_info("family")),
            "missing": transport.get_extra_info("no-such-thing", "dflt"),
            "worker_id": transport.worker_id,
            "shared_is_frozen": pyparallel.is_frozen(shared),
            "shared_value": None if shared is None else shared.get("value"),
            "parallel": pyparallel.is_parallel_context(),
            "is_closing": transport.is_closing(),
        })

    def data_received(self, transport, data):
        return data

    def connection_lost(self, transport, exc):
        emit_lost(transport, exc)


class InfoNoShared:
    """Reports transport.shared (expected: None when server() got none)."""

    def connection_made(self, transport):
        emit(None, "noshared", transport.shared is None, transport.get_extra_info("sockname"))


class ReturnTypes:
    """A one-word command picks the type data_received returns:
    bytes, str, bytearray, memoryview, list, tuple, none, mixed."""

    def data_received(self, transport, data):
        word = data.strip()
        if word == b"bytes":
            return b"bytes-ok\n"
        if word == b"str":
            return "str-ok \u00e9\n"
        if word == b"bytearray":
            return bytearray(b"bytearray-ok\n")
        if word == b"memoryview":
            return memoryview(b"xxmemoryview-ok\n")[2:]
        if word == b"list":
            return [b"li", "st", bytearray(b"-o"), memoryview(b"k\n")]
        if word == b"tuple":
            return (b"tuple", b"-ok\n")
        if word == b"none":
            transport.write(b"none-ok\n")
            return None
        if word == b"writelines":
            transport.writelines([b"write", b"lines", b"-ok\n"])
            return None
        return b"?\n"


class LinesEcho:
    """lines mode: each line comes back as <line>; also reports each batch."""

    lines_mode = True

    def lines_received(self, transport, lines):
        for line in lines:
            if not isinstance(line, bytes):
                return b"not-bytes\n"
        return [b"<" + line + b">\n" for line in lines]

    def connection_lost(self, transport, exc):
        emit_lost(transport, exc)


class LinesNoCallback:
    lines_mode = True


class LinesCallbackNoMode:
    def lines_received(self, transport, lines):
        return None


class SendIds:
    """Greets with initial_bytes_to_send, echoes, and reports send ids."""

    initial_bytes_to_send = b"hi\n"

    def data_received(self, transport, data):
        return data

    def send_complete(self, transport, send_id):
        emit(tag_of(transport), "send_complete", send_id)


class InitialCallable:
    """initial_bytes_to_send given as a callable (a method)."""

    def initial_bytes_to_send(self, *args):
        return b"from-callable\n"

    def connection_made(self, transport):
        transport.write(b"from-connection-made\n")


class InitialStr:
    initial_bytes_to_send = "from-str\n"


class HalfCloseFromServer:
    """On b"HALF": writes b"bye\\n" and half-closes (write_eof); keeps
    reporting what it still receives."""

    def data_received(self, transport, data):
        if data.startswith(b"HALF"):
            transport.write(b"bye\n")
            transport.write_eof()
            return None
        emit(tag_of(transport), "data", data)
        return None

    def eof_received(self, transport):
        emit(tag_of(transport), "eof")
        return None

    def connection_lost(self, transport, exc):
        emit_lost(transport, exc)


class WriteAfterClose:
    """On b"close" / b"abort": closes the transport that way, then tries to
    write and reports what write() did."""

    def data_received(self, transport, data):
        how = data.strip()
        transport.write(b"closing\n")
        if how == b"close":
            transport.close()
        else:
            transport.abort()
        closing = transport.is_closing()
        try:
            transport.write(b"too late\n")
        except Exception as e:  # noqa: BLE001 - reported to the test
            emit(tag_of(transport), "write_after", how, type(e).__name__, closing)
        else:
            emit(tag_of(transport), "write_after", how, None, closing)
        return None

    def connection_lost(self, transport, exc):
        emit_lost(transport, exc)


class SendFileMissing:
    """GET <path>: sendfile(path); errors go to exception_handler."""

    lines_mode = True

    def lines_received(self, transport, lines):
        for line in lines:
            path = line.split(b" ", 1)[1].decode()
            transport.sendfile(path, before=b"OK\n")
        return None

    def exception_handler(self, transport, exc):
        emit(tag_of(transport), "handled", type(exc).__name__, str(exc))
        transport.write(b"ERR %s\n" % type(exc).__name__.encode())


class SendFileParts:
    """'<path> <offset> <count>' -> sendfile(path, offset, count, before=b'[', after=b']')."""

    lines_mode = True

    def lines_received(self, transport, lines):
        for line in lines:
            path, offset, count = line.decode().split(" ")
            transport.sendfile(path, int(offset), None if count == "-" else int(count),
                               before=b"[", after=b"]")
        return None


class Stopper:
    """Calls pyparallel.stop() when it gets b"STOP"."""

    def data_received(self, transport, data):
        if b"STOP" in data:
            pyparallel.stop()
            return b"stopping\n"
        return data


class ByeAndClose:
    """Says bye and closes at once."""

    initial_bytes_to_send = b"bye\n"

    def connection_made(self, transport):
        transport.close()


class PauseProbe:
    """b"pause" -> pause_reading(), reply b"paused\n"; other input is
    reported and echoed."""

    def data_received(self, transport, data):
        if data.startswith(b"pause"):
            transport.pause_reading()
            emit(tag_of(transport), "paused")
            return b"paused\n"
        emit(tag_of(transport), "data", data)
        return data

    def connection_lost(self, transport, exc):
        emit_lost(transport, exc)


class ResumeProbe:
    """Reading is paused from connection_made until the greeting has gone
    out (send_complete), then resumed."""

    initial_bytes_to_send = b"hi\n"

    def connection_made(self, transport):
        transport.pause_reading()
        emit(tag_of(transport), "paused")

    def send_complete(self, transport, send_id):
        if send_id == 1:
            emit(tag_of(transport), "resuming")
            transport.resume_reading()

    def data_received(self, transport, data):
        emit(tag_of(transport), "data", data)
        return data


_KEPT = []   # per worker interpreter: transports of earlier connections


class KeepsTransport:
    """Breaks the rule on purpose: keeps its transport past connection_lost;
    each new connection on the same worker tries the older ones' methods."""

    def connection_made(self, transport):
        for old in _KEPT:
            for name, call in (("write", lambda: old.write(b"x")),
                               ("close", old.close),
                               ("get_extra_info", lambda: old.get_extra_info("peername"))):
                try:
                    value = call()
                except Exception as e:  # noqa: BLE001 - reported to the test
                    emit(tag_of(transport), "stale", name, type(e).__name__)
                else:
                    emit(tag_of(transport), "stale", name, None, repr(value))
        del _KEPT[:]
        _KEPT.append(transport)

    def data_received(self, transport, data):
        return data

    def connection_lost(self, transport, exc):
        emit_lost(transport, exc)


class SendTransport:
    """Tries to pickle its transport and to send it to the main interpreter."""

    def connection_made(self, transport):
        import pickle
        try:
            pickle.dumps(transport)
        except Exception as e:  # noqa: BLE001 - reported to the test
            emit(tag_of(transport), "pickle", type(e).__name__)
        else:
            emit(tag_of(transport), "pickle", None)
        try:
            pyparallel.call_from_main_thread(record, (tag_of(transport), "sent", transport))
        except Exception as e:  # noqa: BLE001 - reported to the test
            emit(tag_of(transport), "send", type(e).__name__)
        else:
            emit(tag_of(transport), "send", None)

    def data_received(self, transport, data):
        return data


# --------------------------------------------------------------------------
# failure paths


class Gone:
    """Streams 256 KiB chunks for as long as the peer takes them (starts on
    any input); the peer is expected to vanish mid-send."""

    CHUNK = b"z" * 262144

    def data_received(self, transport, data):
        return self.CHUNK

    def send_complete(self, transport, send_id):
        return self.CHUNK

    def connection_lost(self, transport, exc):
        emit_lost(transport, exc)


class BigReply:
    """Any input -> one 32 MiB reply; the peer is expected to vanish."""

    def data_received(self, transport, data):
        return b"y" * (32 << 20)

    def connection_lost(self, transport, exc):
        emit_lost(transport, exc)


class Amplify:
    """Back-pressure probe: every input byte comes back 4 times.  Reports, for
    each data_received, len(data) and the write-buffer size on entry."""

    def data_received(self, transport, data):
        emit(tag_of(transport), "dr", len(data), transport.get_write_buffer_size())
        return data * 4

    def connection_lost(self, transport, exc):
        emit_lost(transport, exc)


class Faulty:
    """Echo that raises ValueError("boom <callback>") in the callback named
    by shared["fail"]: connection_made, send_complete, eof_received and
    connection_lost raise every time, data_received only for input
    containing b"boom"."""

    def _fail(self, transport, name):
        if transport.shared["fail"] == name:
            emit(tag_of(transport), "raising", name)
            raise ValueError("boom " + name)

    def connection_made(self, transport):
        self._fail(transport, "connection_made")

    def data_received(self, transport, data):
        if b"boom" in data:
            self._fail(transport, "data_received")
        return data

    def send_complete(self, transport, send_id):
        self._fail(transport, "send_complete")

    def eof_received(self, transport):
        self._fail(transport, "eof_received")

    def connection_lost(self, transport, exc):
        emit_lost(transport, exc)
        self._fail(transport, "connection_lost")


class FaultyLines(Faulty):
    lines_mode = True

    def lines_received(self, transport, lines):
        if b"boom" in lines:
            self._fail(transport, "lines_received")
        return [line + b"\n" for line in lines]


class FaultyInitial(Faulty):
    def initial_bytes_to_send(self, *args):
        raise ValueError("boom initial_bytes_to_send")


def _handler(self, transport, exc):
    emit(tag_of(transport), "handled", type(exc).__name__, str(exc))
    try:
        transport.write(b"handled: %s\n" % str(exc).encode())
    except Exception:  # noqa: BLE001 - the transport may be gone (connection_lost)
        pass


class FaultyHandled(Faulty):
    exception_handler = _handler


class FaultyLinesHandled(FaultyLines):
    exception_handler = _handler


class FaultyInitialHandled(FaultyInitial):
    exception_handler = _handler


class HandlerRaises(Faulty):
    """exception_handler raises too: both are logged, the connection closes."""

    def exception_handler(self, transport, exc):
        emit(tag_of(transport), "handler_raising", str(exc))
        raise RuntimeError("handler failed too")


class SlowLoris:
    """lines mode; used with a small read_limit."""

    lines_mode = True

    def lines_received(self, transport, lines):
        return [line + b"\n" for line in lines]

    def connection_lost(self, transport, exc):
        emit_lost(transport, exc)


class PrintLost:
    """For subprocess tests: prints when the connection is lost."""

    def data_received(self, transport, data):
        return data

    def connection_lost(self, transport, exc):
        print("lost", exc_name(exc), flush=True)


# --------------------------------------------------------------------------
# clients (driven by pyparallel.client)


class EchoClient:
    """Sends shared["messages"] one at a time, each after the previous one's
    echo; returns the joined replies from connection_lost."""

    def connection_made(self, transport):
        self.msgs = list(transport.shared["messages"])
        self.got = b""
        self.expect = b""
        self._next(transport)

    def _next(self, transport):
        if not self.msgs:
            transport.close()
            return
        m = self.msgs.pop(0)
        self.expect += m
        transport.write(m)

    def data_received(self, transport, data):
        self.got += data
        if self.got == self.expect:
            self._next(transport)
        return None

    def connection_lost(self, transport, exc):
        return {"got": self.got, "exc": exc_name(exc), "worker": transport.worker_id,
                "parallel": pyparallel.is_parallel_context()}


class GreetClient:
    """Sends b"hello\\n" as initial bytes, closes once it is echoed."""

    initial_bytes_to_send = b"hello\n"

    def connection_made(self, transport):
        self.got = b""

    def data_received(self, transport, data):
        self.got += data
        if self.got.endswith(b"\n"):
            transport.close()

    def connection_lost(self, transport, exc):
        return (self.got, exc_name(exc), pyparallel.worker_id())


class RaisingClient:
    initial_bytes_to_send = b"x"

    def data_received(self, transport, data):
        raise KeyError("client-boom")


class ReadUntilClose:
    """Collects everything until the peer closes; returns it."""

    def connection_made(self, transport):
        self.got = b""

    def data_received(self, transport, data):
        self.got += data

    def connection_lost(self, transport, exc):
        return (self.got, exc_name(exc))


# --------------------------------------------------------------------------
# a transport used from another thread of its worker

HANDED = {}          # per worker interpreter: the peer's port -> transport


class HandOff:
    """Leaves its transport where a task running in the same worker finds it
    (by the peer's port: see use_handed_off); reports what it reads."""

    def connection_made(self, transport):
        self.port = transport.get_extra_info("peername")[1]
        HANDED[self.port] = transport

    def data_received(self, transport, data):
        emit(self.port, "data", data)

    def connection_lost(self, transport, exc):
        HANDED.pop(self.port, None)
        emit(self.port, "lost", exc_name(exc))


def _run_ops(transport, ops, port):
    """Runs [(method, *args)] on transport ("sleep" sleeps); emits and
    returns [(method, exception name or None, result)]."""
    out = []
    for op, *args in ops:
        if op == "sleep":
            time.sleep(args[0])
            continue
        try:
            r = getattr(transport, op)(*args)
        except Exception as e:
            out.append((op, type(e).__name__, str(e)))
        else:
            out.append((op, None, r))
    emit(port, "ops", out)
    return out


def use_handed_off(port, ops, in_thread):
    """A task: finds the transport of the connection from `port` in this
    worker and runs ops on it -- in this task's thread, or in a thread it
    starts (then it returns at once)."""
    deadline = time.monotonic() + 30
    while port not in HANDED:
        if time.monotonic() > deadline:
            raise TimeoutError("no connection from port %d in this worker" % port)
        time.sleep(0.002)
    transport = HANDED[port]
    if in_thread:
        threading.Thread(target=_run_ops, args=(transport, ops, port)).start()
        return None
    return _run_ops(transport, ops, port)


class BreakPoller:
    """On b"break", makes its loop's poll fail from then on: every epoll fd
    of the process (a test runs it with one worker, whose loop has the only
    one) becomes /dev/null.  Echoes anything else."""

    def data_received(self, transport, data):
        if data != b"break":
            return data
        import os
        null = os.open("/dev/null", os.O_RDONLY)
        for name in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink("/proc/self/fd/" + name)
            except OSError:
                continue
            if target == "anon_inode:[eventpoll]":
                os.dup2(null, int(name))
        os.close(null)
        return b"broken\n"

    def connection_lost(self, transport, exc):
        import os
        os.write(1, b"lost %s\n" % str(exc_name(exc)).encode())   # one write


# --------------------------------------------------------------------------
# timers

_SEQ = itertools.count()   # per interpreter: a worker's own sequence


def timer_fn(tag, label, *args, **kwargs):
    emit(tag, "timer", label, next(_SEQ), pyparallel.worker_id(),
         pyparallel.is_parallel_context(), args, kwargs)


def timer_raise(tag):
    emit(tag, "timer_raise")
    raise RuntimeError("timer boom")


def timer_slow(tag, seconds):
    emit(tag, "slow_start", time.monotonic())
    time.sleep(seconds)


_CALLS = {}


def timer_slow_first(tag, seconds):
    """Sleeps `seconds` on its first call only (per worker and tag)."""
    n = _CALLS.get(tag, 0)
    _CALLS[tag] = n + 1
    if n == 0:
        time.sleep(seconds)


def call_stop(*args):
    pyparallel.stop()


def noop_tick():
    """A timer callback that only takes its worker's GIL."""
    return None


class LostPrinter:
    """Echoes; prints (from its worker) when its connection is lost."""

    def data_received(self, transport, data):
        return data

    def connection_lost(self, transport, exc):
        print("lost", type(exc).__name__ if exc else None, flush=True)


# --------------------------------------------------------------------------
# main-thread calls from a loop callback (tests/test_main_calls.py)

# Set by the test script in the main interpreter: {"server": Server, ...}.
MAIN = {}


def main_stats():
    return MAIN["server"].stats()["accepted"]


def main_close():
    return MAIN["server"].close()


def main_timer_on(worker):
    t = pyparallel.timer(60, record, ("timer",), worker=worker)
    t.cancel()
    return worker


def main_cancel():
    MAIN["timer"].cancel()
    return "cancelled"


class AsksMain:
    """Each line names a main-side function of this module (and an
    argument); the callback runs it with call_from_main_thread_and_wait()
    and answers with its result or the error it raised."""

    lines_mode = True

    def lines_received(self, transport, lines):
        out = []
        for line in lines:
            name, _, arg = line.decode().partition(" ")
            if name == "whoami":
                out.append("ok %d\n" % transport.worker_id)
                continue
            args = (int(arg),) if arg else ()
            try:
                r = pyparallel.call_from_main_thread_and_wait(globals()[name], *args)
                out.append("ok %r\n" % (r,))
            except Exception as e:
                out.append("%s %s\n" % (type(e).__name__, e))
        return "".join(out)


class SleepsOnData:
    """Its loop is busy: data_received sleeps for the seconds it is sent."""

    def data_received(self, transport, data):
        time.sleep(float(data.decode()))
        return b"slept\n"
