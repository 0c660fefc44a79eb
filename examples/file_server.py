"""A tiny file server: "GET <relative path>" sends a file from a root folder.

Protocol (one request per line; several may follow on one connection):

    GET <relative path>   -> OK <size>\\n followed by exactly <size> bytes
                             (transport.sendfile: the kernel copies the file)
                          -> ERR <reason>\\n when the path is absolute, leaves
                             the root (.., symbolic links), or is not a file
    QUIT                  -> the server hangs up
    anything else         -> ERR usage: GET <relative path>

The root is resolved once in the main interpreter and passed to every worker
as frozen `shared` data.

    python examples/file_server.py --root .        # 127.0.0.1:8070
    printf 'GET README.md\\n' | nc -q1 127.0.0.1 8070
    python examples/client.py file --port 8070 README.md
"""

import os

import pyparallel

import serving


def resolve(root, name):
    """(full path, None) for a file under root, or (None, reason)."""
    if not name:
        return None, "usage: GET <relative path>"
    if os.path.isabs(name):
        return None, "absolute paths are refused"
    full = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, full]) != root:
        return None, "path escapes the root"
    if not os.path.exists(full):
        return None, "not found"
    if not os.path.isfile(full):
        return None, "not a file"
    return full, None


class FileServer:
    lines_mode = True

    def lines_received(self, transport, lines):
        if transport.is_closing():       # input that followed a QUIT
            return None
        root = transport.shared["root"]
        for raw in lines:
            cmd, _, name = os.fsdecode(raw).strip().partition(" ")
            if cmd.upper() == "QUIT":
                transport.close()
                return None
            if cmd.upper() != "GET":
                transport.write(b"ERR usage: GET <relative path>\n")
                continue
            try:
                path, reason = resolve(root, name.strip())
                if path is not None:
                    size = os.stat(path).st_size
                    transport.sendfile(path, 0, size, before=b"OK %d\n" % size)
                    continue
            except (OSError, ValueError) as e:      # vanished, unreadable, NUL in name
                reason = getattr(e, "strerror", None) or str(e)
            transport.write(b"ERR %s\n" % reason.encode("utf-8", "replace"))
        return None


def main():
    ap = serving.arguments(__doc__, 8070)
    ap.add_argument("--root", default=".", help="folder to serve (default: the current one)")
    args = ap.parse_args()
    root = os.path.realpath(args.root)
    if not os.path.isdir(root):
        ap.error("--root %s is not a folder" % args.root)
    shared = pyparallel.freeze({"root": root})
    print("serving %s" % root, flush=True)
    serving.serve(args, FileServer, shared=shared)


if __name__ == "__main__":
    main()
