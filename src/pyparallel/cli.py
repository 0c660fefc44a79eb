"""The pyparallel command: ``pyparallel serve MODULE:APP [options]``, and
``pyparallel wiki [--dump PATH]`` (pyparallel.wiki).

Serves a native pyparallel.http.App or a WSGI app on every core of one
process.  Errors a user can fix (a bad app path, an import error in the
app, a port in use) print one line and exit 2 or 1.
"""

import argparse
import os
import sys

from ._http import HTTPConfig, cpu_count


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return v


def _seconds(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return v


def _static_mount(text):
    prefix, eq, directory = text.partition("=")
    if not eq or not prefix.startswith("/") or not directory:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not PREFIX=DIR (for example /assets=./public)")
    if not os.path.isdir(directory):
        raise argparse.ArgumentTypeError(f"{directory!r} is not a directory")
    return prefix, os.path.abspath(directory)


def _parser():
    p = argparse.ArgumentParser(prog="pyparallel", description=(
        "pyparallel: Python handlers on every core of one process."))
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("wiki", help="serve a MediaWiki XML dump on every core "
                   "(pyparallel wiki --help)", add_help=False)
    s = sub.add_parser(
        "serve", help="serve an HTTP app",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=("Serve APP over HTTP/1.1 with WORKERS worker interpreters, "
                     "each on its own core, handlers called on the worker that "
                     "accepted the connection."))
    d = HTTPConfig.FIELDS
    s.add_argument("app", metavar="APP",
                   help="the app: MODULE:NAME (examples.tfb:app), or a file "
                        "path.py[:NAME] (NAME defaults to 'app')")
    s.add_argument("--bind", "-b", action="append", metavar="ADDRESS",
                   help="HOST:PORT, [IPv6]:PORT or unix:PATH; repeat for more "
                        "(default: 127.0.0.1:8000)")
    s.add_argument("--workers", "-w", type=_positive_int, default=cpu_count(),
                   help="worker interpreters (default: the CPUs this process may use)")
    s.add_argument("--interface", choices=("native", "wsgi"),
                   help="native (a pyparallel.http.App) or wsgi (PEP 3333); "
                        "detected from the app when not given")
    s.add_argument("--threads", type=_positive_int, default=1,
                   help="handler threads per worker: 1 calls handlers on the "
                        "worker's loop thread (fastest); N > 1 runs them on N "
                        "threads of the worker interpreter, so a handler that "
                        "blocks (a database, time.sleep) stalls only its thread")
    s.add_argument("--backlog", type=_positive_int, default=1024,
                   help="listen backlog")
    s.add_argument("--max-connections", type=_positive_int, default=None,
                   help="open connections across workers (default: no limit)")
    s.add_argument("--graceful-timeout", type=_seconds, default=30.0,
                   help="on SIGTERM/SIGINT, seconds to finish requests in "
                        "flight before connections are cut")
    s.add_argument("--keepalive-timeout", type=_seconds, default=d["keepalive_timeout"],
                   help="close a kept-alive connection idle this long")
    s.add_argument("--head-timeout", type=_seconds, default=d["head_timeout"],
                   help="a request head must arrive whole within this (408; "
                        "against slowloris)")
    s.add_argument("--body-timeout", type=_seconds, default=d["body_timeout"],
                   help="a request body must arrive within this of its head (408)")
    s.add_argument("--send-timeout", type=_seconds, default=d["send_timeout"],
                   help="drop a client that takes none of its response for this long")
    s.add_argument("--max-line", type=_positive_int, default=d["max_line"],
                   help="request line bytes (414 beyond)")
    s.add_argument("--max-head", type=_positive_int, default=d["max_head"],
                   help="request head bytes (431 beyond)")
    s.add_argument("--max-headers", type=_positive_int, default=d["max_headers"],
                   help="request header fields (431 beyond)")
    s.add_argument("--max-body", type=_positive_int, default=d["max_body"],
                   help="request body bytes (413 beyond)")
    s.add_argument("--max-pipeline", type=_positive_int, default=d["max_pipeline"],
                   help="pipelined requests read ahead of their answers")
    s.add_argument("--static", action="append", type=_static_mount, default=[],
                   metavar="PREFIX=DIR",
                   help="serve the files under DIR at URL PREFIX (/assets=./public) "
                        "from the engine, with sendfile, ranges and 304s; repeat "
                        "for more (default: none)")
    s.add_argument("--access-log", metavar="PATH", default=None,
                   help="log every answer to PATH ('-': standard output); "
                        "off when not given")
    s.add_argument("--access-log-format", default="common", metavar="FORMAT",
                   help="the access log's lines: common, combined, or a format "
                        "of %%h (client) %%t (time) %%r (request line) %%m %%U "
                        "%%q %%H %%s (status) %%b/%%B (bytes) %%D (microseconds) "
                        "%%T (seconds) %%{Header}i %%l %%u %%%% (gunicorn's, "
                        "Apache's)")
    s.add_argument("--debug", action="store_true",
                   help="send a handler's traceback in its 500 answer (never in production)")
    s.add_argument("--server-header", default="pyparallel",
                   help="the Server header's value")
    return p


def _fail(msg, code=1):
    print(f"pyparallel serve: {msg}", file=sys.stderr)
    return code


def serve_main(args):
    from . import _api, _http, _io

    # Like gunicorn: the current directory is importable.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        app, spec = _http.load_app(args.app)
    except (ValueError, FileNotFoundError) as e:
        return _fail(str(e), 2)
    except ImportError as e:
        return _fail(f"cannot import the app {args.app!r}: {e}", 1)
    except AttributeError as e:
        return _fail(str(e), 2)
    except Exception as e:  # noqa: BLE001 -- the app's own import failed
        return _fail(f"importing {args.app!r} raised {type(e).__name__}: {e}", 1)
    try:
        interface = args.interface or _http.detect_interface(app)
    except TypeError as e:
        return _fail(str(e), 2)
    config = _http.HTTPConfig(
        max_line=args.max_line, max_head=args.max_head, max_headers=args.max_headers,
        max_body=args.max_body, max_pipeline=args.max_pipeline,
        head_timeout=args.head_timeout, body_timeout=args.body_timeout,
        keepalive_timeout=args.keepalive_timeout, send_timeout=args.send_timeout)
    _api.configure(workers=args.workers)
    # From here on a SIGTERM or Ctrl-C means "drain" (also one that comes
    # while the workers start, or just after the listening line).
    signals = _http.StopSignals()
    try:
        servers = _http.start(app, spec, binds=args.bind or ["127.0.0.1:8000"],
                              interface=interface, config=config,
                              backlog=args.backlog, debug=args.debug,
                              server_name=args.server_header,
                              max_connections=args.max_connections,
                              access_log=args.access_log, static=args.static,
                              threads=args.threads,
                              access_log_format=args.access_log_format)
    except (OSError, ValueError, TypeError) as e:
        return _fail(str(e), 1)
    except RuntimeError as e:
        return _fail(f"the workers could not load the app: {e}", 1)
    for s in servers:
        where = (f"unix:{s.address}" if isinstance(s.address, str)
                 else "http://%s:%d" % s.address if ":" not in s.address[0]
                 else "http://[%s]:%d" % s.address)
        print(f"pyparallel serve: {spec} ({interface}) on {where} with "
              f"{args.workers} worker{'s' if args.workers != 1 else ''}",
              flush=True)
    how = _io.run()
    if signals.caught:
        how = signals.caught[0]
    signals.restore()
    print(f"pyparallel serve: {how}: draining (at most "
          f"{args.graceful_timeout:g} s)", flush=True)
    _http.drain(servers, args.graceful_timeout)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["wiki"]:
        from . import wiki
        return wiki.main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        parser.print_help()
        return 2
    return serve_main(args)


if __name__ == "__main__":
    sys.exit(main())
