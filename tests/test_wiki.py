"""The wiki server (pyparallel.wiki, docs/wiki.md): the index built from
MediaWiki XML exports, its saved form, and every route over HTTP, with bad
input; a real Wikipedia excerpt end to end."""

import bz2
import http.client
import json
import os
import re
import subprocess
import sys
import urllib.parse
import zipfile

import pytest

import support
from pyparallel import _pyparallel as _pp
from pyparallel import wiki
from wiki_support import Wiki, make_export

PAGES = [
    ("Apple", "A fruit. 1 < 2 & 3 > 2.", None),
    ("Apple pie", "A pie with [[Apple]]s.", None),
    ("Applesauce", "#REDIRECT [[Apple]]", "Apple"),
    ("AT&T", "A company.", None),
    ("Banana", "Yellow.", None),
    ("Émile Zola", "Écrivain français.", None),
    ("Ωmega", "Greek letter, last.", None),
    ("東京", "Tokyo.", None),
    ("Zola", "#REDIRECT [[Émile Zola]]", "Émile Zola#Life"),
    ("Redirect to nowhere", "#REDIRECT [[Missing page]]", "Missing page"),
    ("Under_score", "A title with an underscore.", None),
]


def quiet():
    return wiki.Progress("test", 0, enabled=False, stream=open(os.devnull, "w"))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("wiki")
    path = str(d / "small.xml")
    pages = make_export(path, PAGES)
    return path, pages


def test_index_titles_offsets_and_redirects(small):
    path, pages = small
    image = wiki.build_index(path, progress=quiet())
    data = open(path, "rb").read()
    info = _pp.wiki_info(image)
    assert info["titles"] == len(PAGES) and info["pages"] == len(PAGES)
    assert info["redirects"] == 2        # the one to a missing page is a plain page
    rows, total = _pp.wiki_offsets(image, "", 100)
    titles = [r[0] for r in rows]
    assert titles == sorted(titles, key=lambda t: t.encode())
    assert set(titles) == {p[0] for p in PAGES}
    for title, start, end in rows:
        assert data[start:end] == pages[title], title
    # Redirects resolve to their target's entry; "#section" is dropped.
    z = _pp.wiki_find(image, "Zola")
    assert _pp.wiki_page(image, _pp.wiki_page(image, z)[3])[0] == "Émile Zola"
    assert _pp.wiki_page(image, _pp.wiki_find(image, "Redirect to nowhere"))[3] == -1
    assert _pp.wiki_find(image, "Nope") == -1
    assert _pp.wiki_find(image, "\udcff") == -1          # no UTF-8 form: no title
    # Case-insensitive search, Unicode included.
    assert _pp.wiki_search(image, "ÉMI", 10) == (["Émile Zola"], 1)
    assert _pp.wiki_search(image, "ωm", 10) == (["Ωmega"], 1)
    assert _pp.wiki_search(image, "app", 2) == (["Apple", "Apple pie"], 3)
    assert _pp.wiki_offsets(image, "App", 0) == ([], 3)
    _pp.wiki_close(image)


def test_the_progress_bar(small):
    """On a terminal: bytes, pages, rate and time left; elsewhere only the
    summary line."""
    import io
    path, _ = small
    tty = io.StringIO()
    bar = wiki.Progress("indexing x", 2_000_000, stream=tty, enabled=True)
    bar.t0 -= 2.0                       # two seconds in, half done
    bar.update(1_000_000, 1234, force=True)
    line = tty.getvalue()
    assert "50.0%" in line and "1.0 MB / 2.0 MB" in line and "1,234 pages" in line
    assert "500.0 KB/s" in line and "0:02 left" in line
    piped = io.StringIO()
    image = wiki.build_index(path, progress=wiki.Progress("indexing", 1, stream=piped,
                                                            enabled=False))
    assert piped.getvalue().startswith("indexed 11 pages") and "\r" not in piped.getvalue()
    _pp.wiki_close(image)


def test_duplicate_titles_keep_the_first_page(tmp_path):
    path = str(tmp_path / "dup.xml")
    make_export(path, [("A", "first", None), ("B", "b", None), ("A", "second", None)])
    image = wiki.build_index(path, progress=quiet())
    info = _pp.wiki_info(image)
    assert (info["titles"], info["pages"], info["duplicates"]) == (2, 3, 1)
    _, start, length, _ = _pp.wiki_page(image, _pp.wiki_find(image, "A"))
    assert b"first" in open(path, "rb").read()[start:start + length]
    _pp.wiki_close(image)


def test_a_page_larger_than_any_buffer(tmp_path):
    path = str(tmp_path / "big.xml")
    big = "word " * (wiki.CHUNK // 5 * 2 + 12345)       # ~2.5 scan buffers
    pages = make_export(path, [("Before", "x", None), ("Big", big, None), ("After", "y", None)])
    image = wiki.build_index(path, progress=quiet())
    data = open(path, "rb").read()
    for title in ("Before", "Big", "After"):
        _, start, length, _ = _pp.wiki_page(image, _pp.wiki_find(image, title))
        assert data[start:start + length] == pages[title]
    assert length < len(data)
    _pp.wiki_close(image)


@pytest.mark.parametrize("cut, where", [
    ("inside a page", "page"), ("between pages", "end"), ("inside a tag", "tag")])
def test_a_truncated_dump_is_refused_naming_the_offset(tmp_path, cut, where):
    path = str(tmp_path / "cut.xml")
    make_export(path, PAGES)
    data = open(path, "rb").read()
    third = data.index(b"<page>", data.index(b"<page>", data.index(b"<page>") + 1) + 1)
    n = {"page": third + 40, "end": third, "tag": third + 3}[where]
    with open(path, "wb") as f:
        f.write(data[:n])
    with pytest.raises(wiki.WikiError) as e:
        wiki.load_index(path, log=lambda m: None)
    msg = str(e.value)
    assert "truncated" in msg
    assert re.match(r"byte (\d+):", msg)
    at = int(re.match(r"byte (\d+):", msg).group(1))
    if where == "page":
        assert at == third                   # where the unfinished page starts
    assert not os.path.exists(path + wiki.INDEX_SUFFIX)       # nothing half-built kept


def test_not_an_export_and_a_missing_dump(tmp_path):
    path = tmp_path / "notes.xml"
    path.write_text("<html><body>hello</body></html>\n")
    with pytest.raises(wiki.WikiError, match="not a MediaWiki"):
        wiki.build_index(str(path), progress=quiet())
    with pytest.raises(FileNotFoundError, match="no dump at"):
        wiki.load_index(str(tmp_path / "missing.xml"))


def test_the_saved_index_is_reused_then_rebuilt_when_the_dump_changes(tmp_path):
    path = str(tmp_path / "s.xml")
    make_export(path, PAGES)
    logs = []
    image, xml = wiki.load_index(path, log=logs.append)
    assert xml == path and os.path.exists(path + wiki.INDEX_SUFFIX)
    again, _ = wiki.load_index(path, log=logs.append)
    assert again == image and any("loaded the saved index" in m for m in logs)
    make_export(path, PAGES + [("New page", "new", None)])
    logs.clear()
    changed, _ = wiki.load_index(path, log=logs.append)
    assert any("changed" in m for m in logs)
    assert _pp.wiki_info(changed)["titles"] == len(PAGES) + 1
    # A damaged saved index (same header, broken body) is rebuilt, not trusted.
    saved = bytearray(open(path + wiki.INDEX_SUFFIX, "rb").read())
    saved[-3] ^= 0xFF                        # inside the folded keys: out of order
    saved[200] ^= 0x7F                       # inside the entries
    with open(path + wiki.INDEX_SUFFIX, "wb") as f:
        f.write(saved)
    st = os.stat(path)
    os.utime(path + wiki.INDEX_SUFFIX, ns=(st.st_atime_ns, st.st_mtime_ns))
    logs.clear()
    fixed, _ = wiki.load_index(path, log=logs.append)
    assert any("damaged" in m for m in logs), logs
    assert fixed == changed
    for img in (image, again, changed, fixed):
        _pp.wiki_close(img)


def test_lookups_refuse_unchecked_bytes(small):
    path, _ = small
    image = wiki.build_index(path, progress=quiet())
    copy = bytes(bytearray(image))          # equal bytes, never checked
    with pytest.raises(ValueError, match="not an open wiki index"):
        _pp.wiki_find(copy, "Apple")
    with pytest.raises(TypeError):
        _pp.wiki_find(bytearray(image), "Apple")
    with pytest.raises(ValueError, match="not a valid wiki index"):
        _pp.wiki_open(image[:-8])
    with pytest.raises(ValueError, match="limit"):
        _pp.wiki_offsets(image, "App", -1)
    _pp.wiki_close(image)
    with pytest.raises(ValueError, match="not an open wiki index"):
        _pp.wiki_find(image, "Apple")


def test_workers_read_a_frozen_index_while_main_opens_and_closes_others(tmp_path):
    """The table of checked images under load: workers look titles up in a
    frozen index by pointer while main opens and closes (slot reuse) other,
    unfrozen ones, hundreds of times."""
    import pyparallel
    import wiki_support
    path = str(tmp_path / "shared.xml")
    titles = [f"Title {i:05d} é" for i in range(300)]
    make_export(path, [(t, "x", None) for t in titles])
    image = pyparallel.freeze(wiki.build_index(path, progress=quiet()))
    _pp.wiki_open(image)
    futures = [pyparallel.submit(wiki_support.lookup_loop, image, titles, 60)
               for _ in range(4)]
    other = str(tmp_path / "other.xml")
    make_export(other, PAGES)
    for _ in range(300):
        img = wiki.build_index(other, progress=quiet())
        assert _pp.wiki_find(img, "Apple") >= 0
        _pp.wiki_close(img)
        with pytest.raises(ValueError):
            _pp.wiki_find(img, "Apple")
    assert [f.result(timeout=120) for f in futures] == [300 * 60] * 4
    with pytest.raises(ValueError, match="frozen"):
        _pp.wiki_close(image)


def test_a_bz2_dump_is_decompressed_once_beside_it(tmp_path):
    plain = str(tmp_path / "multi.xml")
    pages = make_export(plain, PAGES)
    data = open(plain, "rb").read()
    # Multistream, as Wikipedia's: the head, the pages, the tail, each its own stream.
    first, last = data.index(b"  <page>"), data.rindex(b"</mediawiki>")
    dump = str(tmp_path / "multi-copy.xml.bz2")
    with open(dump, "wb") as f:
        for part in (data[:first], data[first:last], data[last:]):
            f.write(bz2.compress(part))
    image, xml = wiki.load_index(dump, log=lambda m: None)
    assert xml == dump[:-4] and open(xml, "rb").read() == data
    for title, start, end in _pp.wiki_offsets(image, "", 100)[0]:
        assert data[start:end] == pages[title]
    # A truncated .bz2 is refused.
    bad = str(tmp_path / "bad.xml.bz2")
    with open(bad, "wb") as f:
        f.write(bz2.compress(data)[:-40])
    with pytest.raises(wiki.WikiError, match="truncated"):
        wiki.load_index(bad, log=lambda m: None)
    assert not os.path.exists(bad[:-4]) and not os.path.exists(bad[:-4] + ".tmp")
    _pp.wiki_close(image)


def test_a_multistream_bz2_is_decompressed_by_the_workers(tmp_path, monkeypatch):
    """Wikipedia's multistream form: many streams, found by their headers,
    decompressed in batches by the workers; the same copy and index as main
    alone makes."""
    plain = str(tmp_path / "src.xml")
    titles = [f"Page {i:04d} {'é' * (i % 3)}" for i in range(400)]
    make_export(plain, [(t, f"text of {t} " * (i % 50 + 1), None) for i, t in enumerate(titles)])
    data = open(plain, "rb").read()
    cuts = [0] + [m.start() for m in re.finditer(rb"  <page>", data)][::7] + [len(data)]
    blob = b"".join(bz2.compress(data[a:b]) for a, b in zip(cuts, cuts[1:]))
    ranges = wiki._bz2_batches(blob, 1000)
    assert ranges is not None and len(ranges) > 15
    assert ranges[0][0] == 0 and ranges[-1][1] == len(blob)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert wiki._bz2_batches(bz2.compress(data), 2000) is None      # one stream
    monkeypatch.setattr(wiki, "BZ2_BATCH", 1000)
    monkeypatch.setattr(wiki, "BZ2_PARALLEL_MIN", 0)
    par, seq = str(tmp_path / "par.xml.bz2"), str(tmp_path / "seq.xml.bz2")
    for p in (par, seq):
        with open(p, "wb") as f:
            f.write(blob)
    a = wiki.build_index(par, progress=quiet())
    b = wiki.build_index(seq, progress=quiet(), parallel=False)
    assert open(par[:-4], "rb").read() == data == open(seq[:-4], "rb").read()
    assert _pp.wiki_offsets(a, "", 1000) == _pp.wiki_offsets(b, "", 1000)
    assert _pp.wiki_info(a)["titles"] == 400
    # Streams cut anywhere -- inside pages, titles, tags: pages cross the
    # batches, and main scans those seams; still the same index.
    import random
    rnd = random.Random(5)
    for trial in range(6):
        cuts = sorted({0, len(data), *(rnd.randrange(len(data)) for _ in range(rnd.choice((3, 40, 300))))})
        odd = str(tmp_path / f"odd{trial}.xml.bz2")
        with open(odd, "wb") as f:
            f.write(b"".join(bz2.compress(data[x:y]) for x, y in zip(cuts, cuts[1:])))
        monkeypatch.setattr(wiki, "BZ2_BATCH", rnd.choice((1, 300, 1000, 5000)))
        c = wiki.build_index(odd, progress=quiet())
        assert open(odd[:-4], "rb").read() == data
        assert _pp.wiki_offsets(c, "", 1000) == _pp.wiki_offsets(b, "", 1000), trial
        assert _pp.wiki_info(c)["pages"] == 400
        _pp.wiki_close(c)
    monkeypatch.setattr(wiki, "BZ2_BATCH", 1000)
    # A malformed page inside a batch: the error names its offset in the dump.
    broken = data.replace(b"<title>Page 0300 </title>", b"<title>Page 0300 <b></title>")
    cut_at = [0] + [m.start() for m in re.finditer(rb"  <page>", broken)][::7] + [len(broken)]
    with open(par, "wb") as f:
        f.write(b"".join(bz2.compress(broken[x:y]) for x, y in zip(cut_at, cut_at[1:])))
    for parallel in (True, False):
        with pytest.raises(wiki.WikiError) as e:
            wiki.build_index(par, progress=quiet(), parallel=parallel)
        assert str(e.value) == f"byte {broken.index(b'<b></title>')}: markup inside a <title>"
    # A damaged batch: a clear error, and no copy left behind.
    bad = str(tmp_path / "bad.xml.bz2")
    with open(bad, "wb") as f:
        f.write(blob[:len(blob) // 2] + b"\0" * 64 + blob[len(blob) // 2 + 64:])
    for parallel in (True, False):
        with pytest.raises(wiki.WikiError, match="damaged"):
            wiki.build_index(bad, progress=quiet(), parallel=parallel)
        assert not os.path.exists(bad[:-4]) and not os.path.exists(bad[:-4] + ".tmp")
    # Bytes after the last stream are not dropped in silence either.
    with open(bad, "wb") as f:
        f.write(blob + b"trailing junk")
    for parallel in (True, False):
        with pytest.raises(wiki.WikiError, match="damaged"):
            wiki.build_index(bad, progress=quiet(), parallel=parallel)
    for img in (a, b):
        _pp.wiki_close(img)


# ---- over HTTP -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(small):
    path, pages = small
    w = Wiki(path)
    yield w, pages
    r = w.stop()
    r.assert_no_crash_output()
    assert r.returncode == 0, r.describe()


def url(title):
    return "/wiki/" + urllib.parse.quote(title)


def test_wiki_pages_are_the_dumps_bytes(served):
    w, pages = served
    assert "curl http://127.0.0.1:" in w.banner
    for title, body in pages.items():
        status, headers, got = w.get(url(title) + "?redirect=no")
        assert status == 200, title
        assert got == body, title
        assert headers["Content-Type"] == "application/xml; charset=utf-8"
    # As a reader types a title in a URL: '_' for ' ', a lower-case first letter.
    assert w.get("/wiki/Apple_pie")[2] == pages["Apple pie"]
    assert w.get("/wiki/apple")[2] == pages["Apple"]
    assert w.get("/wiki/Under_score")[2] == pages["Under_score"]


def test_redirects_answer_301(served):
    w, pages = served
    status, headers, _ = w.get("/wiki/Applesauce")
    assert status == 301 and headers["Location"] == "/wiki/Apple"
    status, headers, _ = w.get("/wiki/Zola")
    assert status == 301
    assert urllib.parse.unquote(headers["Location"]) == "/wiki/Émile_Zola"
    assert w.get(headers["Location"])[2] == pages["Émile Zola"]
    # A redirect whose target is missing is served as the page it is.
    assert w.get(url("Redirect to nowhere"))[2] == pages["Redirect to nowhere"]


@pytest.mark.parametrize("path", [
    "/wiki/Nope", "/wiki/", "/wiki/..%2F..%2Fetc%2Fpasswd", "/wiki/../../etc/passwd",
    "/wiki/%00", "/wiki/%ff%fe", "/wiki/" + "A" * 5000, "/wiki/Apple%2F..",
    "/wiki/%25", "/wiki/Apple%0d%0aX-Injected:%20yes",
])
def test_unknown_and_hostile_titles_are_404(served, path):
    w, _ = served
    status, headers, body = w.get(path)
    assert status in (404, 400, 414), (path, status)
    assert "X-Injected" not in headers
    assert b"root:" not in body


def test_offsets(served):
    w, pages = served
    status, headers, rows = w.json("/offsets/App")
    assert status == 200 and headers["X-Matches"] == "3"
    assert [r[0] for r in rows] == ["Apple", "Apple pie", "Applesauce"]
    data = open(w.proc.args[w.proc.args.index("--dump") + 1], "rb").read()
    for title, start, end in rows:
        assert data[start:end] == pages[title]
    assert w.json("/offsets/" + urllib.parse.quote("Émi"))[2][0][0] == "Émile Zola"
    # Characters are counted, not bytes: two CJK characters are too short.
    assert w.json("/offsets/" + urllib.parse.quote("東京"))[0] == 400
    assert w.json("/offsets/App?limit=1")[2] == rows[:1]
    assert w.json("/offsets/Xyz")[:3:2] == (200, [])
    # Huge limits are bounded, not obeyed.
    status, headers, rows = w.json("/offsets/App?limit=99999999999999999999")
    assert status == 200 and len(rows) == 3


@pytest.mark.parametrize("path", ["/offsets/Ap", "/offsets/", "/offsets/%C3%89",
                                  "/offsets/App?limit=x", "/offsets/App?limit=-1",
                                  "/offsets/App?limit=1e9"])
def test_offsets_refuses_bad_input(served, path):
    w, _ = served
    status, headers, body = w.json(path)
    assert status == 400 and "error" in body, (path, body)
    assert headers["Content-Type"] == "application/json"


def test_search_ignores_case(served):
    w, _ = served
    s, _, r = w.json("/search?q=app")
    assert s == 200 and r["titles"] == ["Apple", "Apple pie", "Applesauce"] and r["total"] == 3
    assert w.json("/search?q=" + urllib.parse.quote("émile"))[2]["titles"] == ["Émile Zola"]
    assert w.json("/search?q=" + urllib.parse.quote("ΩMEGA"))[2]["titles"] == ["Ωmega"]
    assert w.json("/search?q=a&limit=1")[2]["titles"] == ["Apple"]
    assert len(w.json("/search?q=a&limit=100000")[2]["titles"]) <= wiki.SEARCH_MAX
    assert w.json("/search?q=")[2] == {"q": "", "total": 0, "titles": []}
    assert w.json("/search")[2]["titles"] == []
    assert w.json("/search?q=a&limit=zz")[0] == 400


def test_stats_and_the_search_page(served):
    w, _ = served
    for _ in range(6):
        w.get("/wiki/Apple")
    status, _, st = w.json("/stats")
    assert status == 200
    assert st["titles"] == len(PAGES) and st["pages"] == len(PAGES)
    assert st["index_bytes"] > 0 and st["index_bytes_per_title"] > 24
    assert sum(st["requests_per_worker"]) >= 7
    status, headers, page = w.get("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'id="q"' in page and b"/search?" in page and b"small.xml" in page


def test_many_clients_at_once(served):
    """Stress: 8 threads, each on its own keep-alive connection, mixing
    every route; every answer is the right one."""
    import threading
    w, pages = served
    errors = []

    def client(k):
        c = http.client.HTTPConnection("127.0.0.1", w.port, timeout=20)
        try:
            for i in range(150):
                title = list(pages)[(i + k) % len(pages)]
                c.request("GET", url(title) + "?redirect=no")
                r = c.getresponse()
                if r.read() != pages[title]:
                    errors.append(("wiki", title))
                c.request("GET", "/offsets/App?limit=2")
                r = c.getresponse()
                if [x[0] for x in json.loads(r.read())] != ["Apple", "Apple pie"]:
                    errors.append(("offsets", i))
                c.request("GET", "/wiki/Nope%2F" + str(i))
                r = c.getresponse()
                r.read()
                if r.status != 404:
                    errors.append(("404", r.status))
        except Exception as e:       # noqa: BLE001 -- reported below
            errors.append(repr(e))
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sum(w.json("/stats")[2]["requests_per_worker"]) >= 8 * 150 * 3


def test_no_route_writes_into_the_frozen_index(small):
    """Safety-proof mode: the frozen shared data is write-protected, so a
    hidden write by any route (a refcount, a cached hash) would crash the
    server instead of racing in silence."""
    path, pages = small
    w = Wiki(path, safety=True)
    try:
        for title in pages:
            assert w.get(url(title) + "?redirect=no")[2] == pages[title]
        for p in ("/offsets/App", "/search?q=%C3%A9mi", "/stats", "/", "/wiki/Nope",
                  "/wiki/Applesauce", "/offsets/ab"):
            assert w.get(p)[0] in (200, 301, 400, 404)
    finally:
        r = w.stop()
    r.assert_no_crash_output()
    assert r.returncode == 0, r.describe()


def test_only_reads_are_answered(served):
    w, _ = served
    for path in ("/wiki/Apple", "/offsets/App", "/search?q=a", "/stats", "/"):
        c = http.client.HTTPConnection("127.0.0.1", w.port, timeout=10)
        c.request("POST", path, body=b"x=1")
        r = c.getresponse()
        assert r.status == 405 and r.getheader("Allow") == "GET, HEAD", path
        r.read()
        c.close()
    c = http.client.HTTPConnection("127.0.0.1", w.port, timeout=10)
    c.request("HEAD", "/wiki/Apple")
    r = c.getresponse()
    assert r.status == 200 and int(r.getheader("Content-Length")) > 0 and r.read() == b""


def test_the_command_reports_a_bad_dump(tmp_path):
    path = str(tmp_path / "cut.xml")
    make_export(path, PAGES)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 30)
    r = support.run([sys.executable, "-m", "pyparallel", "wiki", "--dump", path,
                     "--bind", "127.0.0.1:0"], timeout=60)
    assert r.returncode == 1, r.describe()
    assert "truncated" in r.stderr and "byte " in r.stderr
    r.assert_no_crash_output()
    r = support.run([sys.executable, "-m", "pyparallel", "wiki", "--dump",
                     str(tmp_path / "none.xml")], timeout=60)
    assert r.returncode == 1 and "no dump at" in r.stderr


# ---- a real Wikipedia excerpt ---------------------------------------------------------------

ENWIKI = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def enwiki_excerpt():
    """The enwiki excerpt that ships inside the gensim wheel (206 pages,
    Wikipedia's own dump format), fetched once with pip and cached; gensim
    is never installed."""
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                         "pyparallel", "test-data")
    out = os.path.join(cache, os.path.basename(ENWIKI))
    if os.path.exists(out):
        return out
    os.makedirs(cache, exist_ok=True)
    wheels = os.path.join(cache, "wheels")
    # Only a data file is read out of it: any one wheel will do, whatever
    # this interpreter's version or machine (a fixed tag that PyPI has).
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                        "--disable-pip-version-check", "--only-binary", ":all:",
                        "--python-version", "3.12", "--implementation", "cp",
                        "--abi", "cp312", "--platform", "manylinux_2_17_x86_64",
                        "-d", wheels, "gensim"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, "pip download gensim failed:\n" + r.stderr
    wheel = next(os.path.join(wheels, f) for f in os.listdir(wheels) if f.endswith(".whl"))
    with zipfile.ZipFile(wheel) as z, open(out + ".tmp", "wb") as f:
        f.write(z.read(ENWIKI))
    os.replace(out + ".tmp", out)
    os.unlink(wheel)
    return out


def test_a_real_enwiki_excerpt_end_to_end(tmp_path):
    src = enwiki_excerpt()
    dump = str(tmp_path / os.path.basename(src))
    with open(src, "rb") as f, open(dump, "wb") as g:
        g.write(f.read())
    data = bz2.decompress(open(dump, "rb").read())
    starts = [m.start() for m in re.finditer(rb"<page>", data)]
    assert len(starts) == 206
    w = Wiki(dump)
    try:
        status, _, st = w.json("/stats")
        assert st["pages"] == 206 and st["titles"] == 206
        assert st["redirects"] > 0
        titles = re.findall(rb"<title>(.*?)</title>", data)
        import html
        for raw in titles:
            title = html.unescape(raw.decode())
            status, headers, body = w.get(url(title) + "?redirect=no")
            assert status == 200, title
            start = data.index(b"<title>" + raw + b"</title>") - len(b"<page>\n    ")
            assert data[start:start + len(body)] == body, title
            assert body.startswith(b"<page>") and body.endswith(b"</page>")
        # A real redirect of the excerpt answers 301 to its target.
        m = re.search(rb'<title>([^<]*)</title>\s*<ns>0</ns>\s*<id>\d+</id>\s*<redirect title="([^"]*)"', data)
        if m:
            status, headers, _ = w.get(url(html.unescape(m.group(1).decode())))
            target = html.unescape(m.group(2).decode())
            if _target_present(data, target):
                assert status == 301
                assert urllib.parse.unquote(headers["Location"]) == "/wiki/" + target.replace(" ", "_")
    finally:
        w.stop().assert_no_crash_output()


def _target_present(data, target):
    return ("<title>" + target.replace("&", "&amp;") + "</title>").encode() in data


def test_gcide_is_the_default_corpus(tmp_path):
    """`pyparallel wiki` with no --dump: the GCIDE export (Debian's
    dict-gcide), made once in the cache directory, indexed, served."""
    if not os.path.exists("/usr/share/dictd/gcide.index"):
        pytest.fail("dict-gcide is not installed: apt-get install dict-gcide "
                    "(scripts/setup installs it)")
    w_cmd = [sys.executable, "-m", "pyparallel", "wiki", "--cache-dir", str(tmp_path),
             "--bind", "127.0.0.1:0", "--workers", "2"]
    proc = subprocess.Popen(w_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=support.child_env())
    line = proc.stdout.readline()
    try:
        m = re.search(r"serving ([\d,]+) titles of gcide-pages-articles.xml on http://127\.0\.0\.1:(\d+)", line)
        assert m, line + proc.stderr.read() if proc.poll() is not None else line
        assert int(m.group(1).replace(",", "")) > 100000
        c = http.client.HTTPConnection("127.0.0.1", int(m.group(2)), timeout=10)
        c.request("GET", "/wiki/Abacus")
        r = c.getresponse()
        body = r.read()
        assert r.status == 200 and b"<title>Abacus</title>" in body
        c.request("GET", "/offsets/Abac")
        r = c.getresponse()
        assert [row[0] for row in json.loads(r.read())][:2] == ["Abaca", "Abaci"]
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert os.path.exists(tmp_path / ("gcide-pages-articles.xml" + wiki.INDEX_SUFFIX))
    assert "indexed" in err
