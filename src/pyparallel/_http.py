"""The Python side of pyparallel's HTTP server: apps and routes, response
types, loading an app inside a worker, and serve() (docs/http.md).

The request path is C (src/engine/http.c, src/binding/http.c and wsgi.c);
what lives here runs once per worker at start-up, or -- for pattern
routes only -- once per request that no exact route matched.
"""

import json
import mimetypes
import os
import re
import sys

from . import _io
from . import _pyparallel as _pp

__all__ = ["App", "Response", "FileResponse", "FileWrapper", "serve",
           "load_app", "HTTPConfig"]


# What a handler returns to choose the status, headers or content type: a C
# type (src/binding/response.c), cheap to make once per request.
Response = _pp.Response


class FileResponse:
    """A file, or length bytes of it from offset (length None: to its end),
    sent with sendfile(2); the content type is guessed from the name unless
    given."""

    __slots__ = ("path", "status", "headers", "content_type", "offset", "length")

    def __init__(self, path, content_type=None, status=200, headers=None,
                 offset=0, length=None):
        self.path = os.fspath(path)
        self.status = status
        self.headers = headers
        self.offset = offset
        self.length = length
        if content_type is None:
            content_type, _ = mimetypes.guess_type(self.path)
            content_type = content_type or "application/octet-stream"
            if content_type.startswith("text/"):
                content_type += "; charset=utf-8"
        self.content_type = content_type


class FileWrapper:
    """wsgi.file_wrapper: a file with a real descriptor is sent with
    sendfile(2) from its current position; anything else is iterated."""

    def __init__(self, filelike, blksize=65536):
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self):
        while True:
            data = self.filelike.read(self.blksize)
            if not data:
                return
            yield data

    def close(self):
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(path))?\}")


def _compile(pattern):
    out, pos = [], 0
    for m in _PARAM.finditer(pattern):
        out.append(re.escape(pattern[pos:m.start()]))
        out.append(f"(?P<{m.group(1)}>.+)" if m.group(2) else f"(?P<{m.group(1)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out) + r"\Z")


def _only(methods, fn):
    allowed = frozenset(m.upper() for m in methods)
    allow = ", ".join(sorted(allowed))

    def handler(request, **kwargs):
        if request.method not in allowed:
            return Response(b"405 Method Not Allowed\n", status=405,
                            headers={"Allow": allow},
                            content_type="text/plain; charset=utf-8")
        return fn(request, **kwargs)
    handler.__wrapped__ = fn
    return handler


class App:
    """A native pyparallel web app.

    Routes come from decorators::

        app = App()

        @app.route("/wiki/{title}")
        def wiki(request, title): ...

    or from the methods of a subclass, PyParallel style: a public method
    ``plaintext(self, request)`` serves ``/plaintext`` (``index`` serves
    ``/``).  A handler returns bytes (text/plain), str (text/html), a dict
    or list (JSON), None (204), a Response or a FileResponse.

    shared: data every worker reads by pointer -- an object (frozen when
    the server starts) or a function that builds it, called once, in the
    main interpreter only.  Handlers read it as ``request.shared`` (or
    ``self.shared``)."""

    def __init__(self, shared=None):
        self._shared = shared
        self.shared = None if callable(shared) else shared
        self._exact = {}
        self._patterns = []
        for name in dir(type(self)):
            if name.startswith("_") or name in _APP_ATTRS:
                continue
            fn = getattr(self, name)
            if callable(fn):
                self._exact["/" if name == "index" else "/" + name] = fn

    def route(self, path, methods=None):
        """Decorator: serve path (which may hold {name} segments, or
        {name:path} for the rest of the path) with the function."""
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"a route must be a str that starts with '/', not {path!r}")

        def deco(fn):
            handler = _only(methods, fn) if methods else fn
            if _PARAM.search(path):
                self._patterns.append((_compile(path), handler))
            else:
                self._exact[path] = handler
            return fn
        return deco

    def _match(self, path):
        for rx, handler in self._patterns:
            m = rx.match(path)
            if m:
                return handler, m.groupdict()
        return None

    def _build_shared(self):
        """Main interpreter: the frozen shared data for the server."""
        if callable(self._shared):
            self.shared = self._shared()
        if self.shared is not None:
            self.shared = _pp.freeze(self.shared)
        return self.shared


_APP_ATTRS = frozenset(dir(App))

# ---- loading an app ------------------------------------------------------------


def _split_spec(spec):
    """'pkg.mod:attr', 'path/to/file.py:attr' or 'path/to/file.py' ->
    (directory to put on sys.path or None, module name, attribute)."""
    if not isinstance(spec, str) or not spec:
        raise ValueError("an app is named 'module:attribute' (for example "
                         "examples.tfb:app) or 'path/to/file.py[:attribute]'")
    mod, sep, attr = spec.partition(":")
    attr = attr if sep else "app"
    if not attr.isidentifier() and not all(p.isidentifier() for p in attr.split(".")):
        raise ValueError(f"{attr!r} in {spec!r} is not an attribute name")
    if mod.endswith(".py") or os.sep in mod:
        path = os.path.abspath(mod)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such app file: {mod}")
        directory, name = os.path.split(path)
        return directory, name[:-3] if name.endswith(".py") else name, attr
    if not all(p.isidentifier() for p in mod.split(".")):
        raise ValueError(f"{mod!r} in {spec!r} is not a module name")
    return None, mod, attr


def load_app(spec):
    """Imports the app named by spec in this interpreter.  Returns
    (app, "module:attr")."""
    import importlib
    directory, mod, attr = _split_spec(spec)
    if directory and directory not in sys.path:
        sys.path.insert(0, directory)
    module = importlib.import_module(mod)
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(f"module {mod!r} has no attribute {attr!r} "
                                 f"(the app {spec!r})") from None
    return obj, f"{mod}:{attr}"


def detect_interface(app):
    """'native' for an App, 'wsgi' for any other callable."""
    if isinstance(app, App):
        return "native"
    if callable(app):
        return "wsgi"
    raise TypeError(f"{app!r} is neither a pyparallel.http.App nor a WSGI "
                    "callable")


def _json_encoder():
    """encode(obj, 0) -> chunks of compact JSON: the stdlib's C encoder
    (json.encoder.c_make_encoder, as JSONEncoder(separators=(",", ":"))
    makes it, without the circular-reference check: a cycle ends in
    RecursionError, a 500), or JSONEncoder.encode where _json is missing."""
    from json import encoder as je
    e = json.JSONEncoder(separators=(",", ":"))
    if je.c_make_encoder is None:
        return lambda obj, _level: (e.encode(obj),)
    return je.c_make_encoder(None, e.default, je.encode_basestring_ascii, None,
                             ":", ",", False, False, True)


def _worker_site(spec, interface, shared):
    """In a worker: load the app by name and give the C site what it
    needs: (app, exact routes, matcher, JSON encoder, Response,
    FileResponse)."""
    from . import _worker
    mod, _, attr = spec.partition(":")
    app = _worker.resolve(mod, attr)
    encode = _json_encoder()
    if interface == "native":
        if not isinstance(app, App):
            raise TypeError(f"{spec} is not a pyparallel.http.App (use "
                            "--interface wsgi for a WSGI app)")
        app.shared = shared
        return app, app._exact, app._match, encode, Response, FileResponse
    if not callable(app):
        raise TypeError(f"{spec} is not callable: a WSGI app is "
                        "app(environ, start_response)")
    return app, {}, None, encode, Response, FileResponse


# ---- serving -----------------------------------------------------------------------


class HTTPConfig:
    """Limits and timeouts of an HTTP server (seconds for timeouts)."""

    FIELDS = {
        "max_line": 8192, "max_head": 65536, "max_headers": 100,
        "max_body": 16 << 20, "body_spill": 1 << 20, "max_pipeline": 64,
        "head_timeout": 10.0, "body_timeout": 30.0, "keepalive_timeout": 5.0,
        "send_timeout": 30.0,
    }

    def __init__(self, **kw):
        for k, v in self.FIELDS.items():
            setattr(self, k, kw.pop(k, v))
        if kw:
            raise TypeError(f"unknown HTTP settings: {', '.join(sorted(kw))}")
        for k in self.FIELDS:
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise ValueError(f"{k} must be a positive number, not {v!r}")


def parse_bind(bind):
    """'HOST:PORT', ':PORT', '[::1]:PORT' or 'unix:PATH' -> (host, port,
    unix)."""
    if bind.startswith("unix:"):
        path = bind[5:]
        if not path:
            raise ValueError("unix: needs a path (unix:/run/app.sock)")
        return None, None, path
    host, sep, port = bind.rpartition(":")
    if not sep:
        raise ValueError(f"--bind {bind!r}: give HOST:PORT (for example "
                         "127.0.0.1:8000) or unix:PATH")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port)
    except ValueError:
        raise ValueError(f"--bind {bind!r}: the port must be a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"--bind {bind!r}: the port must be 0-65535")
    return host, port, None


def start(app, spec, *, binds=("127.0.0.1:8000",), interface=None,
          config=None, backlog=1024, debug=False, server_name="pyparallel",
          max_connections=None, access_log=None, access_log_format="common",
          static=(), threads=1):
    """Starts HTTP servers for app (already loaded in main, named by spec
    for the workers) on every bind.  static: (prefix, directory) pairs
    answered by the engine before the app sees them.  threads: handler
    threads per worker (1: the loop thread calls handlers).  Returns the
    list of Servers."""
    interface = interface or detect_interface(app)
    if interface not in ("native", "wsgi"):
        raise ValueError(f"interface must be 'native' or 'wsgi', not {interface!r}")
    if interface == "native" and not isinstance(app, App):
        raise TypeError(f"{spec} is not a pyparallel.http.App; use "
                        "interface='wsgi' for a WSGI callable")
    config = config or HTTPConfig()
    shared = app._build_shared() if isinstance(app, App) else None
    settings = {k: getattr(config, k) for k in HTTPConfig.FIELDS}
    if not isinstance(access_log_format, str):
        raise TypeError("access_log_format must be 'common', 'combined' or a format string")
    settings.update(app=spec, interface=interface, debug=bool(debug),
                    server=server_name, access_log=access_log,
                    access_log_format=access_log_format,
                    static=[(str(p), os.fspath(d)) for p, d in static],
                    threads=int(threads))
    servers = []
    try:
        for bind in binds:
            host, port, unix = parse_bind(bind)
            servers.append(_io._http_server(host, port, unix, settings,
                                            shared=shared, backlog=backlog,
                                            max_connections=max_connections))
    except BaseException:
        for s in servers:
            s.close()
        raise
    return servers


class StopSignals:
    """From now on SIGTERM and SIGINT mean "stop and drain": each is
    recorded (by name, in caught) and stops pyparallel.run().  Installed
    before the servers start, so one that comes while the workers start is
    not the default action's kill.  restore() puts the old handlers back."""

    def __init__(self):
        import signal
        self.caught = []

        def on_signal(signum, frame):
            self.caught.append(signal.Signals(signum).name)
            _pp.stop()

        self.previous = {sig: signal.signal(sig, on_signal)
                         for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore(self):
        import signal
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def drain(servers, graceful_timeout):
    """Graceful stop: stop accepting, let answers in flight finish (with
    Connection: close), close idle keep-alive connections at once, and cut
    whatever is left after graceful_timeout seconds.  Returns True when
    nothing had to be cut."""
    import time
    deadline = time.monotonic() + graceful_timeout
    for s in servers:
        s._core.drain()
    done = False
    while not done:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            done = all(s.stats(timeout=left)["connections"] == 0 for s in servers)
        except TimeoutError:
            break
        if not done:
            time.sleep(min(0.02, max(left, 0)))
    for s in servers:
        s.close()
    return done


def serve(app, *, bind="127.0.0.1:8000", workers=None, graceful_timeout=30.0,
          **kw):
    """Serve app (a pyparallel.http.App or a WSGI callable defined at the
    top level of a module) until SIGINT or SIGTERM, then drain.  bind: one
    address or a list."""
    from . import _api
    spec = kw.pop("spec", None) or _spec_of(app)
    if workers is not None:
        _api.configure(workers=workers)
    binds = [bind] if isinstance(bind, str) else list(bind)
    servers = start(app, spec, binds=binds, **kw)
    try:
        return _io.run(), servers
    finally:
        drain(servers, graceful_timeout)


def _spec_of(app):
    """Finds where app lives, for the workers to import it by name."""
    for modname, module in list(sys.modules.items()):
        d = getattr(module, "__dict__", None)
        if not d or modname == "__mp_main__":
            continue
        for name, value in list(d.items()):
            if value is app and not name.startswith("__"):
                return f"{modname}:{name}"
    raise TypeError(f"{app!r} must be a module-level global (workers import "
                    "the app by name)")


def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1

