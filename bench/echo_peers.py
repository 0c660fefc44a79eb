#!/usr/bin/env python3
"""echo_peers.py -- the echo servers that bench/bench_io.py measures.

    python bench/echo_peers.py pyparallel   --port P [--workers N]
    python bench/echo_peers.py pyparallel-c --port P [--workers N]
    python bench/echo_peers.py uvloop       --port P [--procs N]

pyparallel     pyparallel.server(host, P, Echo): every worker's event loop
               accepts, and Echo.data_received (Python, in the worker's
               sub-interpreter) returns the data, which the engine sends back.
pyparallel-c   the same engine with the internal keyword _native="echo": the
               engine echoes in C and no Python runs per connection or per
               read.  The ceiling for the Python-callback server.
uvloop         asyncio with uvloop: a Protocol whose data_received does
               transport.write(data).  --procs 1 (the default) is one process;
               --procs N starts N processes, each with its own SO_REUSEPORT
               listener on the same port (for a Unix socket: all accepting from
               one listener they inherit), under a small supervisor process.

--port 0 (the default) picks a free port.  --unix PATH listens on a Unix
stream socket instead.  Every server raises RLIMIT_NOFILE's soft limit to the
hard limit, prints "READY <port>" ("READY <path>" for --unix) on stdout once it
accepts connections, and exits cleanly on SIGTERM or SIGINT.  At exit the
pyparallel servers print "STATS {...}" (Server.stats()) on stderr.

pyparallel's workers import this file by name (as __mp_main__), so it imports
nothing heavy at the top level: uvloop and asyncio only where they are used.
"""

import os
import signal
import sys


class Echo:
    """The pyparallel echo protocol: what data_received returns is sent back."""

    def data_received(self, transport, data):
        return data


def raise_nofile():
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


# --------------------------------------------------------------- pyparallel

def serve_pyparallel(args, native):
    import json

    import pyparallel
    if not hasattr(pyparallel, "server"):
        sys.exit("echo_peers: this pyparallel has no server() (parallel I/O not built in)")
    workers = args.workers or int(os.environ.get("PYPARALLEL_BENCH_WORKERS", "0") or 0)
    if workers:
        pyparallel.configure(workers=workers)
    kw = {"backlog": args.backlog, "reuse_port": not args.shared_accept}
    if native:
        kw["_native"] = "echo"
    if args.unix:
        srv = pyparallel.server(None, None, Echo, unix=args.unix, **kw)
        where = args.unix
    else:
        srv = pyparallel.server(args.host, args.port, Echo, **kw)
        where = srv.port
    with srv:
        print(f"READY {where}", flush=True)
        reason = pyparallel.run()
        try:
            stats = srv.stats()
        except Exception as e:              # report, but exit cleanly
            stats = {"error": repr(e)}
    print("STATS " + json.dumps({"reason": reason, "workers": workers or None, **stats}),
          file=sys.stderr, flush=True)


# ------------------------------------------------------------------- uvloop

def serve_uvloop(args):
    import asyncio
    import socket

    import uvloop

    conns = set()

    class EchoProtocol(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            conns.add(transport)

        def data_received(self, data):
            self.transport.write(data)

        def connection_lost(self, exc):
            conns.discard(self.transport)

    async def main():
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        if args.fd is not None:                 # a listener inherited from the supervisor
            family = socket.AF_UNIX if args.unix else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM, fileno=args.fd)
            server = await loop.create_server(EchoProtocol, sock=sock, backlog=args.backlog)
        elif args.unix:
            server = await loop.create_unix_server(EchoProtocol, path=args.unix,
                                                   backlog=args.backlog)
        else:
            server = await loop.create_server(EchoProtocol, args.host, args.port,
                                              reuse_port=True, backlog=args.backlog)
        name = server.sockets[0].getsockname()
        print(f"READY {args.unix or name[1]}", flush=True)
        await stop
        server.close()
        for t in list(conns):
            t.abort()
        await asyncio.sleep(0)

    uvloop.run(main())


def supervise_uvloop(args):
    """--procs N > 1: N uvloop processes on one port, then wait for SIGTERM."""
    import socket
    import subprocess
    import time

    procs = args.procs
    holder = None                               # keeps the port until every child listens
    pass_fds = ()
    child_args = ["--backlog", str(args.backlog), "--procs", "1", "--child"]
    if args.unix:
        if os.path.exists(args.unix):
            os.unlink(args.unix)
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        holder.bind(args.unix)
        holder.listen(args.backlog)
        holder.set_inheritable(True)
        pass_fds = (holder.fileno(),)
        child_args += ["--unix", args.unix, "--fd", str(holder.fileno())]
        where = args.unix
    else:
        # A bound, not listening, SO_REUSEPORT socket reserves the port (port 0
        # resolved) without joining the listeners' group.
        holder = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((args.host, args.port))
        where = holder.getsockname()[1]
        child_args += ["--host", args.host, "--port", str(where)]

    children = []

    def stop_children():
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for c in children:
            try:
                c.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()

    class Stop(Exception):
        pass

    def on_signal(signum, frame):
        raise Stop(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rc = 0
    try:
        for _ in range(procs):
            children.append(subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "uvloop", *child_args],
                stdout=subprocess.PIPE, text=True, pass_fds=pass_fds))
        for c in children:
            line = c.stdout.readline()
            if not line.startswith("READY"):
                sys.exit(f"echo_peers: a uvloop child did not start (exit {c.wait()})")
        if not args.unix:
            holder.close()
        print(f"READY {where}", flush=True)
        while True:
            pid, status = os.wait()             # a child ending on its own is an error
            sys.stderr.write(f"echo_peers: uvloop child {pid} ended ({status:#x})\n")
            rc = 1
            break
    except Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_children()
        if holder is not None:
            holder.close()
    sys.exit(rc)


def main():
    import argparse
    ap = argparse.ArgumentParser(description="echo servers for bench/bench_io.py")
    ap.add_argument("kind", choices=["pyparallel", "pyparallel-c", "uvloop"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--unix", default=None, help="listen on this Unix socket path instead")
    ap.add_argument("--backlog", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=None,
                    help="pyparallel: pyparallel.configure(workers=N) before server() "
                         "(default: $PYPARALLEL_BENCH_WORKERS, else pyparallel's own default)")
    ap.add_argument("--procs", type=int, default=1, help="uvloop: processes (SO_REUSEPORT)")
    ap.add_argument("--shared-accept", action="store_true",
                    help="pyparallel: every worker accepts from one listener "
                         "(reuse_port=False) instead of one SO_REUSEPORT listener each")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--fd", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    raise_nofile()
    if args.kind == "uvloop":
        if args.procs > 1:
            supervise_uvloop(args)
        else:
            serve_uvloop(args)
    else:
        serve_pyparallel(args, native=args.kind == "pyparallel-c")


if __name__ == "__main__":
    main()
