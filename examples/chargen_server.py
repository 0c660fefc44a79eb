"""Character generator (RFC 864): a client that connects gets an endless
stream of 72-character lines, each starting one character further along the
95 printable ASCII characters, until it disconnects.  Input is discarded.

The stream is paced by the socket: `initial_bytes_to_send` queues the first
chunk, and `send_complete` (called once a chunk has been handed to the
kernel) returns the next one, so a slow reader slows the server down instead
of growing a buffer.

    python examples/chargen_server.py              # 127.0.0.1:8019
    nc 127.0.0.1 8019 | head -5
    python examples/client.py chargen --port 8019 --bytes 100000
"""


import serving

PRINTABLE = bytes(range(32, 127))          # the 95 printable ASCII characters
LINE = 72


def chargen_lines(start=0, count=len(PRINTABLE)):
    """`count` lines of the RFC 864 pattern, starting with line `start`."""
    twice = PRINTABLE + PRINTABLE
    out = []
    for i in range(start, start + count):
        k = i % len(PRINTABLE)
        out.append(twice[k:k + LINE] + b"\r\n")
    return b"".join(out)


# One full cycle (95 lines) repeated: every chunk ends where the pattern
# starts again, so each chunk is the same bytes object.
CYCLE = chargen_lines()
CHUNK = CYCLE * 9                        # 95 * 74 * 9 = 63,270 bytes


class Chargen:
    initial_bytes_to_send = CHUNK

    def data_received(self, transport, data):
        return None                      # RFC 864: input is thrown away

    def send_complete(self, transport, send_id):
        return CHUNK                     # the kernel took the last chunk: next one


def main():
    ap = serving.arguments(__doc__, 8019)
    args = ap.parse_args()
    serving.serve(args, Chargen)


if __name__ == "__main__":
    main()
