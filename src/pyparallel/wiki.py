"""pyparallel.wiki: PyParallel's wiki server, on the pyparallel HTTP server
(docs/wiki.md).

The main interpreter indexes a MediaWiki XML export (Wikipedia's
pages-articles format, plain or .bz2) once: every title in sorted order
with the byte offset and length of its <page> element, and the redirects.
The index is one flat bytes image (src/engine/pp_wiki.h), frozen, which
every worker reads by pointer; each request is answered by the worker that
accepted it:

    /wiki/<title>        the page's XML, sent from the dump with sendfile(2)
    /offsets/<prefix>    [[title, start, end], ...] (prefix of >= 3 chars)
    /search?q=&limit=    titles starting with q, ignoring case
    /stats               pages, index memory, requests per worker
    /                    a search page

    pyparallel wiki                       # the GCIDE dictionary (Debian's dict-gcide)
    pyparallel wiki --dump enwiki-latest-pages-articles.xml.bz2
"""

import argparse
import bz2
import functools
import html
import os
import sys
import time
import urllib.parse

from . import _pyparallel as _pp
from ._http import App, FileResponse, Response, cpu_count

INDEX_SUFFIX = ".ppindex"
CHUNK = 8 << 20                 # bytes read per scan step
OFFSETS_LIMIT = 100             # /offsets default, and its bound:
OFFSETS_MAX = 10000
SEARCH_LIMIT = 10               # /search default, and its bound:
SEARCH_MAX = 100
MIN_PREFIX = 3

XML_TYPE = "application/xml; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"


def _stderr(msg):
    print(msg, file=sys.stderr, flush=True)


class WikiError(Exception):
    """A dump that cannot be indexed (the message names the byte offset)."""


# ---- progress -----------------------------------------------------------------------


def _size(n):
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


class Progress:
    """A one-line progress bar on a terminal (bytes, pages, rate, time
    left); silent elsewhere, where only the summary line is printed."""

    def __init__(self, label, total, stream=None, enabled=None):
        self.label, self.total = label, total
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.t0 = self.last = time.monotonic()

    def update(self, done, pages, force=False):
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.2 and not force):
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-6)
        frac = min(done / self.total, 1.0) if self.total else 0.0
        bar = "#" * int(frac * 24)
        left = (self.total - done) / rate if rate and self.total else 0
        self.stream.write(
            f"\r{self.label} [{bar:<24}] {frac * 100:5.1f}%  {_size(done)} / {_size(self.total)}"
            f"  {pages:,} pages  {_size(rate)}/s  {int(left) // 60}:{int(left) % 60:02d} left \x1b[K")
        self.stream.flush()

    def done(self, summary):
        if self.enabled:
            self.stream.write("\r\x1b[K")
        self.stream.write(summary + "\n")
        self.stream.flush()


# ---- building the index ---------------------------------------------------------------


def _scan(builder, read, progress, position=None):
    """Feeds builder with read(view) -> bytes put in view, until it puts
    none; progress is shown at position() (default: the dump bytes
    scanned)."""
    buf = bytearray(CHUNK + 65536)
    mv = memoryview(buf)
    have = 0
    while True:
        n = read(mv[have:have + CHUNK])
        eof = not n
        have += n
        try:
            used = builder.feed(mv[:have], eof)
        except ValueError as e:
            raise WikiError(str(e)) from None
        if eof:
            return
        rest = have - used
        if rest:
            buf[:rest] = bytes(mv[used:have])
        have = rest
        progress.update(position() if position else builder.pos, builder.pages)


def _bz2_reader(src, out):
    """read(view) over the decompressed bytes of a (multistream) .bz2 file,
    writing them to out as they go."""
    d = bz2.BZ2Decompressor()
    fed = False                 # has d been given any input?
    pending = memoryview(b"")

    def read(view):
        nonlocal d, fed, pending
        while not len(pending):
            if d.eof:           # the next stream of a multistream file
                rest = d.unused_data
                d, fed = bz2.BZ2Decompressor(), False
                if rest:
                    fed = True
                    try:
                        pending = memoryview(d.decompress(rest, len(view)))
                    except OSError as e:
                        raise WikiError(f"{src.name}: near byte {src.tell()}: {e}: the "
                                        ".bz2 file is damaged") from None
                    continue
            if d.needs_input:
                data = src.read(1 << 20)
                if not data:
                    if fed:
                        raise WikiError(f"{src.name}: the .bz2 file ends inside a "
                                        "compressed stream: it is truncated")
                    return 0
                fed = True
            else:
                data = b""
            try:
                pending = memoryview(d.decompress(data, len(view)))
            except OSError as e:
                raise WikiError(f"{src.name}: near byte {src.tell()}: {e}: the .bz2 "
                                "file is damaged") from None
        n = min(len(view), len(pending))
        view[:n] = pending[:n]
        out.write(pending[:n])
        pending = pending[n:]
        return n

    return read


# A .bz2 dump made of many streams (Wikipedia's pages-articles-multistream
# files: 100 pages a stream) is decompressed by every worker: the streams
# are found by their byte-aligned headers, grouped into batches, and each
# batch decompressed by a worker while main writes the copy and scans it
# in order.  A single-stream file is decompressed by main alone.
BZ2_BATCH = 4 << 20             # compressed bytes per worker task
BZ2_PARALLEL_MIN = 16 << 20     # smaller files: main alone
_BZ2_MAGIC = b"1AY&SY"          # the block header after "BZh1".."BZh9"


def _bz2_batches(data, batch):
    """[start, end) byte ranges of data, each a run of whole bz2 streams of
    about batch bytes; None when data has a single stream."""
    starts, pos = [0], 4
    while True:
        at = data.find(_BZ2_MAGIC, pos)
        if at < 0:
            break
        head = data[at - 4:at]
        if head[:3] == b"BZh" and 0x31 <= head[3] <= 0x39 and at - 4 > starts[-1]:
            starts.append(at - 4)
        pos = at + 1
    if len(starts) < 2:
        return None
    ranges, first = [], 0
    for s in starts[1:]:
        if s - first >= batch:
            ranges.append((first, s))
            first = s
    ranges.append((first, len(data)))
    return ranges


def _decompress_streams(part):
    """In a worker: the bytes of one batch of whole bz2 streams.  Strict,
    unlike bz2.decompress(), which drops what follows the last good stream:
    any byte that is not part of a whole stream is an error."""
    out = []
    while part:
        d = bz2.BZ2Decompressor()
        out.append(d.decompress(part))
        if not d.eof:
            raise EOFError("the data ends inside a compressed stream")
        part = d.unused_data
    return b"".join(out)


def _decompress_and_scan(part):
    """In a worker: decompress one batch and scan it for the pages wholly
    inside it -> (data, packed pages, head, tail)."""
    data = _decompress_streams(part)
    packed, head, tail = _pp.wiki_scan_fragment(data)
    return data, packed, head, tail


def _scan_bz2_parallel(builder, src, out, progress):
    """Indexes a multistream .bz2 with every worker: each decompresses a
    batch of streams and scans the pages wholly inside it; main writes the
    copy, adds those pages, and scans only the seams (what lies between a
    batch's last whole page and the next one's first, where a page may
    cross the cut).  Returns False (nothing done) when the file is not
    multistream or too small to gain."""
    import collections
    import mmap
    from . import _api
    size = os.fstat(src.fileno()).st_size
    if size < BZ2_PARALLEL_MIN:
        return False
    m = mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ)
    ranges = _bz2_batches(m, BZ2_BATCH)
    if ranges is None:
        m.close()
        return False
    ex = _api._executor()
    todo, flight = collections.deque(ranges), collections.deque()
    base, carry = 0, b""        # dump offset of the batch; seam bytes not yet consumed

    def feed(chunk, eof):
        nonlocal carry
        buf = carry + chunk if carry else chunk
        try:
            used = builder.feed(buf, eof)
        except ValueError as e:
            raise WikiError(str(e)) from None
        carry = bytes(buf[used:])

    try:
        while todo or flight:
            while todo and len(flight) < 2 * ex.max_workers:
                a, b = todo.popleft()
                flight.append((b, ex.submit(_decompress_and_scan, m[a:b])))
            end, fut = flight.popleft()
            try:
                data, packed, head, tail = fut.result()
            except (OSError, EOFError) as e:
                raise WikiError(f"{src.name}: bytes before {end} do not decompress "
                                f"({e}): the .bz2 file is damaged or truncated") from None
            except ValueError as e:     # the scan of the batch: offsets within it
                at, _, why = str(e).partition(": ")
                n = int(at[5:]) if at.startswith("byte ") and at[5:].isdigit() else 0
                raise WikiError(f"byte {base + n}: {why or e}") from None
            out.write(data)
            feed(memoryview(data)[:head], False)
            if head < len(data):
                if carry or builder.pos != base + head:
                    raise WikiError(f"byte {base + head}: the batches of the dump do not "
                                    "join up at a page boundary")
                builder.add_pages(packed, base)
                try:
                    builder.skip(base + tail)
                except ValueError as e:
                    raise WikiError(str(e)) from None
                feed(memoryview(data)[tail:], False)
            base += len(data)
            progress.update(end, builder.pages)
        feed(b"", True)
    finally:
        for _, fut in flight:
            fut.cancel()
        m.close()
    return True


def xml_path_of(dump):
    """The uncompressed XML that /wiki/ pages are sent from: the dump
    itself, or for a .bz2 dump the copy made beside it at index time."""
    return dump[:-4] if dump.endswith(".bz2") else dump


def index_path_of(dump):
    return dump + INDEX_SUFFIX


def build_index(dump, *, progress=None, parallel=True):
    """Scans dump (a MediaWiki XML export, or a .bz2 of one) and returns
    the index image (bytes).  A .bz2 dump is decompressed once, to
    xml_path_of(dump); a multistream one by every worker of the default
    executor (parallel=False: by main alone).  WikiError names the byte offset of a malformed or
    truncated dump; nothing half-built is returned or kept."""
    dump = os.fspath(dump)
    st = os.stat(dump)
    builder = _pp.WikiBuilder()
    compressed = dump.endswith(".bz2")
    progress = progress or Progress("indexing " + os.path.basename(dump), st.st_size)
    t0 = time.monotonic()
    if compressed:
        xml = xml_path_of(dump)
        tmp = xml + ".tmp"
        with open(dump, "rb") as src, open(tmp, "wb") as out:
            try:
                if not (parallel and _scan_bz2_parallel(builder, src, out, progress)):
                    _scan(builder, _bz2_reader(src, out), progress, src.tell)
            except BaseException:
                out.close()
                os.unlink(tmp)
                raise
        os.replace(tmp, xml)
    else:
        xml = dump
        with open(dump, "rb", buffering=0) as f:
            _scan(builder, f.readinto, progress)
    xst = os.stat(xml)
    image = builder.finish(xst.st_size, xst.st_mtime_ns, st.st_size, st.st_mtime_ns)
    secs = time.monotonic() - t0
    _pp.wiki_open(image)
    info = _pp.wiki_info(image)
    progress.done(
        f"indexed {info['pages']:,} pages ({info['titles']:,} titles, "
        f"{info['redirects']:,} redirects) of {_size(xst.st_size)} in {secs:.1f} s "
        f"({_size(xst.st_size / max(secs, 1e-6))}/s); index {_size(len(image))}, "
        f"{len(image) / max(info['titles'], 1):.0f} B per title")
    return image


def _fresh(header, dump):
    """Does a saved index's header match the dump (and its copy) now?"""
    if header is None:
        return False
    st = os.stat(dump)
    if (header["source_size"], header["source_mtime_ns"]) != (st.st_size, st.st_mtime_ns):
        return False
    try:
        xst = os.stat(xml_path_of(dump))
    except FileNotFoundError:
        return False
    return (header["dump_size"], header["dump_mtime_ns"]) == (xst.st_size, xst.st_mtime_ns)


def load_index(dump, *, rebuild=False, save=True, progress=None, log=None, parallel=True):
    """The index of dump: the saved one beside it (dump + '.ppindex') when
    it matches the dump, else built now (and saved, atomically).  Returns
    (image, xml_path); the image is checked (wiki_open) and ready for
    lookups."""
    dump = os.fspath(dump)
    log = log or _stderr
    if not os.path.isfile(dump):
        raise FileNotFoundError(f"no dump at {dump!r}: give a MediaWiki XML export "
                                "(pages-articles .xml or .xml.bz2)")
    path = index_path_of(dump)
    if not rebuild and os.path.exists(path):
        with open(path, "rb") as f:
            image = f.read()
        if _fresh(_pp.wiki_header(image), dump):
            try:
                _pp.wiki_open(image)
                log(f"loaded the saved index {path} ({_size(len(image))})")
                return image, xml_path_of(dump)
            except ValueError as e:
                log(f"the saved index {path} is damaged ({e}); rebuilding it")
        else:
            log(f"the dump changed since {path} was saved; rebuilding it")
        del image
    image = build_index(dump, progress=progress, parallel=parallel)
    if save:
        tmp = path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(image)
            os.replace(tmp, path)
        except OSError as e:
            log(f"could not save the index to {path} ({e}); it will be rebuilt next time")
    return image, xml_path_of(dump)


# ---- the routes ---------------------------------------------------------------------


def _wiki_url(title):
    return "/wiki/" + urllib.parse.quote(title.replace(" ", "_"), safe="/:,()'!*~@$")


def _limit(params, default, bound):
    """limit from the query: a whole number >= 0, at most bound (larger
    ones are clamped: the answer is bounded whatever is asked)."""
    text = params.get("limit")
    if text is None or text == "":
        return default
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"limit must be a whole number, not {text!r}") from None
    if n < 0:
        raise ValueError("limit must be >= 0")
    return min(n, bound)


def find_title(image, title):
    """The entry of title as a reader may spell it in a URL: exactly, with
    '_' for ' ', or with a lower-case first letter (MediaWiki's titles
    start with a capital).  -1 if none."""
    i = _pp.wiki_find(image, title)
    if i < 0 and "_" in title:
        title = title.replace("_", " ")
        i = _pp.wiki_find(image, title)
    if i < 0 and title[:1].islower():
        i = _pp.wiki_find(image, title[:1].upper() + title[1:])
    return i


def answer_wiki(image, title, params):
    """(status, extra headers, body) for /wiki/<title>: 200 with body
    (start, length), the page's bytes in the dump (XML_TYPE); else a
    TEXT_TYPE body."""
    i = find_title(image, title)
    if i < 0:
        return 404, [], f"no page is titled {title!r}\n".encode("utf-8", "backslashreplace")
    name, start, length, redirect = _pp.wiki_page(image, i)
    if redirect >= 0 and params.get("redirect") != "no":
        target = _pp.wiki_page(image, redirect)[0]
        return 301, [("Location", _wiki_url(target))], \
            f"{name} redirects to {target}\n".encode("utf-8", "backslashreplace")
    return 200, [], (start, length)


def answer_offsets(image, prefix, params):
    """(status, extra headers, JSON value) for /offsets/<prefix>."""
    if len(prefix) < MIN_PREFIX:
        return 400, [], {"error": f"a prefix needs at least {MIN_PREFIX} characters, "
                                  f"not {len(prefix)}"}
    try:
        limit = _limit(params, OFFSETS_LIMIT, OFFSETS_MAX)
    except ValueError as e:
        return 400, [], {"error": str(e)}
    rows, total = _pp.wiki_offsets(image, prefix, limit)
    return 200, [("X-Matches", str(total))], rows


def answer_search(image, params):
    """(status, JSON value) for /search?q=&limit=."""
    q = params.get("q", "")
    try:
        limit = _limit(params, SEARCH_LIMIT, SEARCH_MAX)
    except ValueError as e:
        return 400, {"error": str(e)}
    if not q.strip():
        return 200, {"q": q, "total": 0, "titles": []}
    titles, total = _pp.wiki_search(image, q, limit)
    return 200, {"q": q, "total": total, "titles": titles}


def stats_of(image, xml, served):
    info = _pp.wiki_info(image)
    return {
        "pages": info["pages"], "titles": info["titles"],
        "redirects": info["redirects"], "duplicate_titles": info["duplicates"],
        "dump": xml, "dump_bytes": info["dump_size"],
        "index_bytes": info["bytes"],
        "index_bytes_per_title": round(info["bytes"] / max(info["titles"], 1), 1),
        "requests_per_worker": served,
    }


class WikiApp(App):
    """The wiki server as a native pyparallel app; shared is
    {"index": image, "xml": path, "name": ...}, frozen."""

    def _build_shared(self):
        global _main_shared
        shared = App._build_shared(self)
        _pp.wiki_open(shared["index"])     # the frozen copy is the one workers see
        if _main_shared is not None and not _pp.is_frozen(_main_shared["index"]):
            _pp.wiki_close(_main_shared["index"])  # the unfrozen image: freed, not kept twice
            _main_shared = None
        return shared


app = WikiApp(shared=lambda: _main_shared)
_main_shared = None


# Every route only reads: GET and HEAD (App's methods=, 405 with Allow otherwise).
_READ = ("GET", "HEAD")


@app.route("/wiki/{title:path}", methods=_READ)
def wiki(request, title):
    _pp.wiki_request()
    sh = request.shared
    status, headers, body = answer_wiki(sh["index"], title, request.query_params)
    if status == 200:
        return FileResponse(sh["xml"], XML_TYPE, offset=body[0], length=body[1])
    return Response(body, status=status, headers=headers, content_type=TEXT_TYPE)


@app.route("/offsets", methods=_READ)
@app.route("/offsets/", methods=_READ)
@app.route("/offsets/{prefix:path}", methods=_READ)
def offsets(request, prefix=""):
    _pp.wiki_request()
    status, headers, value = answer_offsets(request.shared["index"], prefix,
                                            request.query_params)
    return Response(value, status=status, headers=headers)


@app.route("/search", methods=_READ)
def search(request):
    _pp.wiki_request()
    status, value = answer_search(request.shared["index"], request.query_params)
    return value if status == 200 else Response(value, status=status)


@app.route("/stats", methods=_READ)
def stats(request):
    _pp.wiki_request()
    sh = request.shared
    out = stats_of(sh["index"], sh["xml"], _pp.wiki_requests())
    out["worker"] = _pp.worker_id()
    out["name"] = sh["name"]
    return out


@app.route("/", methods=_READ)
def index(request):
    _pp.wiki_request()
    return search_page(request.shared["name"])


@functools.lru_cache(maxsize=8)
def search_page(name):
    """The HTML page at / for a dump called name (made once per worker)."""
    from ._wiki_page import PAGE
    return PAGE.replace("{{name}}", html.escape(name))


# ---- the same app over WSGI (for the process-per-worker servers it is measured against) ----


def make_wsgi(dump, *, name=None):
    """A WSGI app serving dump's routes as the native app does, loading the
    index into this process (each process of gunicorn or granian loads its
    own: the comparison in bench/bench_wiki.py)."""
    import json
    image, xml = load_index(dump, log=lambda m: None)
    name = name or os.path.basename(dump)
    served = [0]

    def reply(start_response, status, headers, body):
        start_response(f"{status} {_REASONS.get(status, 'OK')}",
                       headers + [("Content-Length", str(len(body)))])
        return [body]

    def as_json(value):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()

    def application(environ, start_response):
        served[0] += 1
        if environ.get("REQUEST_METHOD") not in _READ:
            return reply(start_response, 405, [("Content-Type", TEXT_TYPE),
                                               ("Allow", ", ".join(_READ))],
                         b"405 Method Not Allowed\n")
        path = environ.get("PATH_INFO", "")
        # PEP 3333: PATH_INFO is latin-1 of the raw bytes; titles are UTF-8.
        path = path.encode("latin-1").decode("utf-8", "surrogateescape")
        params = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
        if path.startswith("/wiki/"):
            status, headers, body = answer_wiki(image, path[6:], params)
            if status != 200:
                return reply(start_response, status, headers + [("Content-Type", TEXT_TYPE)], body)
            start, length = body
            f = open(xml, "rb")
            f.seek(start)
            start_response("200 OK", [("Content-Type", XML_TYPE), ("Content-Length", str(length))])
            wrapper = environ.get("wsgi.file_wrapper")
            if wrapper is not None:
                return wrapper(_Part(f, length), 65536)
            return _Part(f, length)
        if path.startswith("/offsets/"):
            status, headers, value = answer_offsets(image, path[9:], params)
            return reply(start_response, status,
                         [("Content-Type", "application/json")] + headers, as_json(value))
        if path == "/search":
            status, value = answer_search(image, params)
            return reply(start_response, status, [("Content-Type", "application/json")],
                         as_json(value))
        if path == "/stats":
            out = stats_of(image, xml, [served[0]])
            out["pid"] = os.getpid()
            out["name"] = name
            return reply(start_response, 200, [("Content-Type", "application/json")],
                         as_json(out))
        if path == "/":
            return reply(start_response, 200, [("Content-Type", "text/html; charset=utf-8")],
                         search_page(name).encode())
        return reply(start_response, 404, [("Content-Type", "text/plain")], b"not found\n")

    return application


class _Part:
    """length bytes of an open file from its position: iterable, and with
    read()/fileno() so a server's file_wrapper can sendfile it."""

    def __init__(self, f, length):
        self.f, self.left = f, length

    def read(self, n=-1):
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data

    def __iter__(self):
        while self.left:
            data = self.read(65536)
            if not data:
                return
            yield data

    def fileno(self):
        return self.f.fileno()

    def close(self):
        self.f.close()


_REASONS = {200: "OK", 301: "Moved Permanently", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed"}


# ---- the command ----------------------------------------------------------------------


def default_dump(cache_dir=None, log=None):
    """The embedded default: the GCIDE dictionary (Debian's dict-gcide) as
    a MediaWiki export, made once in the cache directory."""
    from . import _gcide
    cache_dir = cache_dir or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pyparallel")
    log = log or _stderr
    out = os.path.join(cache_dir, "gcide-pages-articles.xml")
    bar = None
    if not os.path.exists(out):
        log(f"making a MediaWiki export of GCIDE (dict-gcide) at {out}")
        bar = Progress("converting GCIDE", 0)

    def progress(done, total):
        if bar is not None and bar.enabled:
            bar.stream.write(f"\rconverting GCIDE: {done:,} / {total:,} headwords "
                             f"({done * 100 // max(total, 1)}%)\x1b[K")
            bar.stream.flush()

    path = _gcide.ensure(cache_dir, progress=progress)
    if bar is not None and bar.enabled:
        bar.stream.write("\r\x1b[K")
    return path


def _parser():
    p = argparse.ArgumentParser(
        prog="pyparallel wiki", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Serve a MediaWiki XML dump on every core: one frozen index "
                    "shared by all workers (PyParallel's wiki example).")
    p.add_argument("--dump", metavar="PATH",
                   help="a MediaWiki XML export (.xml or .xml.bz2); default: the GCIDE "
                        "dictionary from Debian's dict-gcide, converted once")
    p.add_argument("--bind", "-b", default="127.0.0.1:8080", metavar="ADDRESS",
                   help="HOST:PORT to listen on")
    p.add_argument("--workers", "-w", type=int, default=cpu_count(),
                   help="worker interpreters (one per core)")
    p.add_argument("--rebuild", action="store_true",
                   help="index the dump again even if a saved index matches it")
    p.add_argument("--no-save", action="store_true",
                   help="do not save the index beside the dump")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="where the GCIDE export is made (default ~/.cache/pyparallel)")
    return p


def main(argv=None):
    global _main_shared
    from . import _api, _http, _io
    args = _parser().parse_args(argv)
    say = lambda msg: print(f"pyparallel wiki: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    if args.workers < 1:
        say("--workers must be at least 1")
        return 2
    _api.configure(workers=args.workers)    # the index build's workers, then the server's
    try:
        dump = args.dump or default_dump(args.cache_dir, log=say)
        image, xml = load_index(dump, rebuild=args.rebuild, save=not args.no_save, log=say)
    except (FileNotFoundError, WikiError, OSError) as e:
        say(str(e))
        return 1
    _main_shared = {"index": image, "xml": os.path.abspath(xml),
                    "name": os.path.basename(dump)}
    del image
    signals = _http.StopSignals()
    try:
        servers = _http.start(app, "pyparallel.wiki:app", binds=[args.bind])
    except (OSError, ValueError) as e:
        say(str(e))
        return 1
    host, port = servers[0].address[:2]
    url = f"http://{host if ':' not in host else '[' + host + ']'}:{port}"
    info = _pp.wiki_info(app.shared["index"])
    print(f"pyparallel wiki: serving {info['titles']:,} titles of {app.shared['name']} "
          f"on {url} with {args.workers} worker{'s' if args.workers != 1 else ''}\n"
          f"  open {url}/ in a browser, or try:\n"
          f"  curl {url}/offsets/{_example_prefix(app.shared['index'])}\n"
          f"  curl {url}/stats", flush=True)
    how = _io.run()
    signals.restore()
    say(f"{signals.caught[0] if signals.caught else how}: stopping")
    _http.drain(servers, 5.0)
    return 0


def _example_prefix(image):
    for p in ("Abac", "Pyth", "Appl", "Wiki"):
        if _pp.wiki_offsets(image, p, 1)[1]:
            return p
    rows, _ = _pp.wiki_offsets(image, "", 1)
    return urllib.parse.quote(rows[0][0][:4]) if rows else "Abc"


if __name__ == "__main__":
    sys.exit(main())
