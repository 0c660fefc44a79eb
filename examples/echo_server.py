"""Echo server (RFC 862 style): every byte a client sends comes back.

Each connection lives in the worker that accepted it; `Echo.data_received`
returns the data, and pyparallel sends it back with one send().

    python examples/echo_server.py                 # 127.0.0.1:8007
    python examples/echo_server.py --port 0        # any free port
    nc 127.0.0.1 8007                              # type lines, see them back
    python examples/client.py echo --port 8007     # a pyparallel client

Ctrl-C (or SIGTERM) stops it.
"""


import pyparallel

import serving


class Echo:
    def data_received(self, transport, data):
        return data


def main():
    # The whole of it, spelled out (the other examples use serving.serve()).
    args = serving.arguments(__doc__, 8007).parse_args()
    with pyparallel.server(args.host, args.port, Echo) as server:
        print("listening on", serving.format_address(server.address), flush=True)
        how = pyparallel.run()                  # Ctrl-C, SIGTERM or stop()
    print("run() returned %s" % how, flush=True)


if __name__ == "__main__":
    main()
