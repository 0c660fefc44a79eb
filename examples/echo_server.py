"""Echo server (RFC 862 style): every byte a client sends comes back.

Each connection lives in the worker that accepted it; `Echo.data_received`
returns the data, and pyparallel sends it back with one send().

    python examples/echo_server.py                 # 127.0.0.1:8007
    python examples/echo_server.py --port 0        # any free port
    nc 127.0.0.1 8007                              # type lines, see them back
    python examples/client.py echo --port 8007     # a pyparallel client

Ctrl-C (or SIGTERM) stops it.
"""

import argparse

import pyparallel


class Echo:
    def data_received(self, transport, data):
        return data


def format_address(address):
    host, port = address[0], address[1]
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8007)
    args = ap.parse_args()
    with pyparallel.server(args.host, args.port, Echo) as server:
        print("listening on %s" % format_address(server.address), flush=True)
        how = pyparallel.run()
        print("run() returned %s; stats: %s" % (how, server.stats()), flush=True)


if __name__ == "__main__":
    main()
