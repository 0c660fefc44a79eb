"""A line-based command server in the style of a chat.

Every connection is served by the worker that accepted it, and objects never
outlive their connection, so there is no room (no shared mutable state to
broadcast through): each connection talks to the server alone.  What they all
share is read-only -- the message of the day and the help text, passed once
as `shared=` and frozen, read by pointer from every worker.

Commands, one per line (case-insensitive):

    NICK <name>   set your nickname            -> hello <name>
    SAY <text>    say something                -> <nick>: <text>
    WHO           who and where you are        -> <nick> at <host:port> on worker <n>
    TIME          the server's clock (UTC)     -> TIME 2024-01-01T12:00:00Z
    MOTD          the message of the day       -> * lines
    HELP          this list                    -> * lines
    QUIT          say goodbye and hang up      -> bye <nick>
    anything else                              -> ERR unknown command

Try it:

    python examples/chat_server.py                 # 127.0.0.1:8023
    nc 127.0.0.1 8023
    python examples/client.py chat --port 8023
"""

import time

import pyparallel

import serving

GREETING = b"* pyparallel chat: type HELP for the commands\n"

SHARED = {
    "motd": [
        "Welcome to the pyparallel chat server.",
        "Every connection has a worker, an interpreter and a GIL of its own.",
    ],
    "help": [
        "NICK <name>  set your nickname",
        "SAY <text>   say something",
        "WHO          who and where you are",
        "TIME         the server's clock (UTC)",
        "MOTD         the message of the day",
        "HELP         this list",
        "QUIT         leave",
    ],
    "max_nick": 32,
}


def _star(lines):
    return [b"* " + line.encode() + b"\n" for line in lines]


class Chat:
    lines_mode = True
    initial_bytes_to_send = GREETING

    def connection_made(self, transport):
        self.nick = "guest"
        transport.writelines(_star(transport.shared["motd"]))

    def lines_received(self, transport, lines):
        if transport.is_closing():       # input that followed a QUIT
            return None
        out = []
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            cmd, _, arg = line.partition(" ")
            cmd = cmd.upper()
            arg = arg.strip()
            if cmd == "NICK":
                if arg and " " not in arg and len(arg) <= transport.shared["max_nick"]:
                    self.nick = arg
                    out.append(b"hello %s\n" % arg.encode())
                else:
                    out.append(b"ERR a nick is one word of at most %d characters\n"
                               % transport.shared["max_nick"])
            elif cmd == "SAY":
                out.append(b"%s: %s\n" % (self.nick.encode(), arg.encode()))
            elif cmd == "WHO":
                host, port = transport.get_extra_info("peername")[:2]
                out.append(b"%s at %s:%d on worker %d\n"
                           % (self.nick.encode(), host.encode(), port, transport.worker_id))
            elif cmd == "TIME":
                out.append(time.strftime("TIME %Y-%m-%dT%H:%M:%SZ\n", time.gmtime()).encode())
            elif cmd == "MOTD":
                out.extend(_star(transport.shared["motd"]))
            elif cmd == "HELP":
                out.extend(_star(transport.shared["help"]))
            elif cmd == "QUIT":
                out.append(b"bye %s\n" % self.nick.encode())
                transport.writelines(out)
                transport.close()        # after the queued replies are sent
                return None              # lines after QUIT are ignored
            else:
                out.append(b"ERR unknown command\n")
        return out


def main():
    ap = serving.arguments(__doc__, 8023)
    args = ap.parse_args()
    shared = pyparallel.freeze(SHARED)
    serving.serve(args, Chat, shared=shared)


if __name__ == "__main__":
    main()
