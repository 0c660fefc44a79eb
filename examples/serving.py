"""What every example server shares: --host/--port, and serving until
Ctrl-C or SIGTERM with the bound address printed first (the tests read it)."""

import argparse

import pyparallel


def arguments(doc, default_port):
    """An argument parser with --host (default 127.0.0.1) and --port."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=default_port,
                    help="0: any free port (default %d)" % default_port)
    return ap


def format_address(address):
    host, port = address[0], address[1]
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def serve(args, protocol, **server_kwargs):
    """Runs pyparallel.server(args.host, args.port, protocol, ...) until
    pyparallel.run() returns, then prints why and the server's counters."""
    with pyparallel.server(args.host, args.port, protocol, **server_kwargs) as server:
        print("listening on %s" % format_address(server.address), flush=True)
        how = pyparallel.run()
        print("run() returned %s; stats: %s" % (how, server.stats()), flush=True)
