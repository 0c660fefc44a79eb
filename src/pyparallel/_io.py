"""The parallel I/O API: server(), client(), timer(), run(), stop().

A thin layer: argument checks and defaults here, everything else in C
(src/binding/server.c, client.c, timer.c, protocol.c).  See docs/io.md."""

import atexit
import itertools
import signal
import threading

from . import _api
from . import _pyparallel as _pp

__all__ = ["server", "client", "timer", "run", "stop", "Server"]

_servers = set()            # open servers: kept alive until closed
_servers_lock = threading.Lock()
_next_worker = itertools.count()


def _pool():
    if not _pp._is_main_interpreter():
        raise RuntimeError(
            "servers, clients and timers are started from the main "
            "interpreter (a worker callback cannot start them)")
    return _api._executor()._get_pool()


def _pick_worker(pool, worker):
    if worker is None:
        return next(_next_worker) % pool.nworkers
    if not isinstance(worker, int) or isinstance(worker, bool):
        raise TypeError(f"worker must be an int, not {type(worker).__name__}")
    if not 0 <= worker < pool.nworkers:
        raise ValueError(f"worker must be in 0..{pool.nworkers - 1}, not {worker}")
    return worker


def _check_address(host, port, unix, what):
    if unix is not None:
        if host is not None or port is not None:
            raise ValueError(
                f"{what}: give either unix=path or host and port, not both")
        if not isinstance(unix, str) or not unix:
            raise TypeError(f"{what}: unix must be a non-empty str path")
        return
    if host is not None and not isinstance(host, str):
        raise TypeError(f"{what}: host must be a str or None, not {type(host).__name__}")
    if not isinstance(port, int) or isinstance(port, bool):
        raise TypeError(f"{what}: port must be an int (0: any free port), "
                        f"not {type(port).__name__}")
    if not 0 <= port <= 65535:
        raise ValueError(f"{what}: port must be in 0..65535, not {port}")


def _check_protocol(protocol, what):
    if not isinstance(protocol, type):
        raise TypeError(
            f"{what}: protocol must be a class defined at module level "
            f"(each connection gets an instance), not {protocol!r}")
    lines = bool(getattr(protocol, "lines_mode", False))
    has_lines = getattr(protocol, "lines_received", None) is not None
    if lines and not has_lines:
        raise TypeError(f"{what}: protocol {protocol.__qualname__} sets "
                        "lines_mode = True but defines no lines_received()")
    if has_lines and not lines:
        raise TypeError(f"{what}: protocol {protocol.__qualname__} defines "
                        "lines_received() but not lines_mode = True")
    _api._classify(protocol)       # TransferError for local classes


class Server:
    """A listening server; every worker accepts and serves connections.
    Returned by pyparallel.server()."""

    def __init__(self, core, address, unix):
        self._core = core
        self.address = address
        self._unix = unix

    @property
    def port(self):
        """The bound TCP port (None for a Unix socket)."""
        return self._core.port

    @property
    def closed(self):
        return self._core.closed

    def close(self, timeout=None):
        """Stop accepting, close every connection (each gets
        connection_lost(transport, None)) and wait for that.  Returns False
        if timeout seconds passed first (call again to keep waiting)."""
        done = self._core.close(timeout)
        if done:
            with _servers_lock:
                _servers.discard(self)
        return done

    def stats(self, timeout=None):
        """Counters summed over workers: connections (open now), accepted,
        closed, callback_errors, bytes_read, bytes_written,
        line_bytes_scanned (lines mode); and "workers",
        a list of {"worker", "connections", "accepted"}, one per worker (how
        the kernel spread the connections).  Raises TimeoutError if a
        worker's loop does not answer within timeout seconds."""
        return self._core.stats(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self.closed else "open"
        return f"<pyparallel.Server {self.address!r} {state}>"


def server(host=None, port=None, protocol=None, *, unix=None, backlog=1024,
           shared=None, max_connections=None, idle_timeout=None,
           reuse_port=True, write_high=65536, write_low=16384,
           read_limit=1 << 20, _native=None):
    """Listen on host:port (or unix=path) and serve each connection with a
    new instance of protocol, in the worker that accepted it.  See
    docs/io.md for the protocol members and every option."""
    if unix is None and port is None:
        raise TypeError("server() needs a port (0: any free port) or unix=path")
    _check_address(host, port, unix, "server()")
    if _native not in (None, "echo"):
        raise ValueError("_native must be None or 'echo'")
    if _native is None:
        if protocol is None:
            raise TypeError("server() needs a protocol class")
        _check_protocol(protocol, "server()")
    else:
        protocol = Server            # unused: the engine answers in C
    if max_connections is not None and (not isinstance(max_connections, int)
                                        or max_connections <= 0):
        raise ValueError(f"max_connections must be a positive int or None, "
                         f"not {max_connections!r}")
    if not isinstance(backlog, int) or backlog <= 0:
        raise ValueError(f"backlog must be a positive int, not {backlog!r}")
    if shared is not None:
        shared = _pp.freeze(shared)
    pool = _pool()
    if host is None and unix is None:
        host = "127.0.0.1"
    core = _pp.ServerCore(pool, host, 0 if unix else port, protocol, unix,
                          backlog, shared, max_connections or 0, idle_timeout,
                          bool(reuse_port) and unix is None, write_high,
                          write_low, read_limit, _native is not None)
    address = unix if unix is not None else (host, core.port)
    srv = Server(core, address, unix)
    with _servers_lock:
        _servers.add(srv)
    return srv


def _http_server(host, port, unix, settings, *, shared=None, backlog=1024,
                 max_connections=None):
    """An HTTP server (pyparallel.http.serve() and `pyparallel serve`);
    settings: the dict pyparallel._http.start() builds."""
    _check_address(host, port, unix, "serve()")
    if max_connections is not None and (not isinstance(max_connections, int)
                                        or max_connections <= 0):
        raise ValueError(f"max_connections must be a positive int or None, "
                         f"not {max_connections!r}")
    pool = _pool()
    if host is None and unix is None:
        host = "127.0.0.1"
    core = _pp.ServerCore(pool, host, 0 if unix else port, None, unix,
                          backlog, shared, max_connections or 0, None,
                          unix is None, 65536, 16384, 1 << 20, 2, settings)
    address = unix if unix is not None else (host, core.port)
    srv = Server(core, address, unix)
    with _servers_lock:
        _servers.add(srv)
    return srv


def client(host=None, port=None, protocol=None, *, unix=None, shared=None,
           worker=None, write_high=65536, write_low=16384):
    """Connect from a worker and drive protocol on the connection.  Returns a
    pyparallel.Future completed with connection_lost()'s return value, or
    with the connect error or a callback's exception."""
    if unix is None and port is None:
        raise TypeError("client() needs a port or unix=path")
    _check_address(host, port, unix, "client()")
    if protocol is None:
        raise TypeError("client() needs a protocol class")
    _check_protocol(protocol, "client()")
    if shared is not None:
        shared = _pp.freeze(shared)
    pool = _pool()
    fut = _api.Future()
    # Running before the connect starts: the completion thread may finish
    # the Future as soon as _connect() has posted it.
    fut.set_running_or_notify_cancel()
    fut._task = _pp._connect(pool, _pick_worker(pool, worker), host,
                             0 if unix else port, unix, protocol, shared, fut,
                             write_high, write_low)
    return fut


def timer(delay, fn, /, *args, period=None, worker=None, **kwargs):
    """Run fn(*args, **kwargs) on a worker's loop delay seconds from now, then
    every period seconds if period is given.  Returns a Timer (cancel(),
    active, fired, errors)."""
    if not callable(fn):
        raise TypeError(f"timer() needs a callable, not {fn!r}")
    pool = _pool()               # delay and period are checked in C
    return _pp.Timer(pool, _pick_worker(pool, worker), delay, period, fn,
                     args, kwargs or None)


class _Terminated(BaseException):
    pass


def _raise_terminated(signum, frame):
    raise _Terminated()


def run(timeout=None):
    """Block the main thread until stop() is called, SIGINT or SIGTERM
    arrives, or timeout seconds pass.  Returns "stop", "SIGINT", "SIGTERM"
    or "timeout".  Servers keep running afterwards."""
    if threading.current_thread() is not threading.main_thread() or \
            not _pp._is_main_interpreter():
        raise RuntimeError("pyparallel.run() runs in the main thread of the "
                           "main interpreter")
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return "stop" if _pp._wait_stop(timeout) else "timeout"
    except KeyboardInterrupt:
        return "SIGINT"
    except _Terminated:
        return "SIGTERM"
    finally:
        signal.signal(signal.SIGTERM, previous)


stop = _pp.stop


def _close_all():
    with _servers_lock:
        servers = list(_servers)
    for srv in servers:
        try:
            srv.close()
        except KeyboardInterrupt:
            break


if _pp._is_main_interpreter():
    # Registered after _api's exit hook, so it runs first: servers close
    # (connection_lost runs) before the workers end.
    atexit.register(_close_all)
