"""pyparallel._gcide: GCIDE (dictd) -> MediaWiki XML export."""

import gzip
import hashlib
import os
import xml.etree.ElementTree as ET

import pytest

from pyparallel import _gcide

NS = "{http://www.mediawiki.org/xml/export-0.10/}"
MTIME = 1577836800  # 2020-01-01T00:00:00Z
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

# Definition blocks, written to the .dict file in this order.
BLOCKS = {
    "info": "00-database-info\n   A made-up dictionary for tests.\n",
    "apple": ('apple \\ap"ple\\, n.\n   A fruit; see {Pie} & <b>bold</b>'
              " tags.\n   [1913 Webster]\n"),
    "Apple": "Apple \\Ap\"ple\\, v. t.\n   To apple.\n",
    "elan": "\u00e9lan \\\u00e9*lan\\, n.\n   Ardor; caf\u00e9 \u2014 zest.\n",
    "fish": "Fish & chips \\Fish & chips\\, n.\n   A dish.\n",
    "zebra": "Zebra \\Ze\"bra\\, n.\n   A striped animal.\n",
}
# (headword, block) in index order.
INDEX = [
    ("00-database-info", "info"),     # dictd meta entries: skipped
    ("00databaseurl", "info"),
    ("apple", "apple"),
    ("apple pie", "apple"),           # only in Apple's block: a redirect
    ("Apple", "Apple"),               # merges with "apple"
    ("apple", "apple"),               # the same block again: once on the page
    ("\u00e9lan", "elan"),            # -> "\u00c9lan"
    ("fish & chips", "fish"),
    ("a[b]", "zebra"),                # titles MediaWiki refuses: dropped
    ("x|y", "zebra"),
    ("big  cat ", "zebra"),           # -> "Big cat", redirect to Zebra
    ("striped", "zebra"),             # in two owners' blocks: a real page
    ("striped", "elan"),
    ("Zebra", "zebra"),
]
HEADWORDS = len(INDEX) - 2 - 2        # not meta, not dropped

EXPECTED_TITLES = ["Apple", "Apple pie", "\u00c9lan", "Fish & chips",
                   "Big cat", "Striped", "Zebra"]


def b64(n):
    digits = ""
    while True:
        n, r = divmod(n, 64)
        digits = B64[r] + digits
        if not n:
            return digits


def block(name):
    return BLOCKS[name].strip("\n")


def make_dictd(directory, *, compressed=False):
    """Write gcide.index and gcide.dict (or gcide.dict.dz) in *directory*."""
    directory.mkdir(parents=True, exist_ok=True)
    data = b""
    where = {}
    for name, text in BLOCKS.items():
        raw = text.encode("utf-8")
        where[name] = (len(data), len(raw))
        data += raw + b"\n"
    lines = [f"{hw}\t{b64(where[b][0])}\t{b64(where[b][1])}\n"
             for hw, b in INDEX]
    index = directory / "gcide.index"
    index.write_text("".join(lines), encoding="utf-8")
    if compressed:
        dict_path = directory / "gcide.dict.dz"
        dict_path.write_bytes(gzip.compress(data, mtime=0))
    else:
        dict_path = directory / "gcide.dict"
        dict_path.write_bytes(data)
    for p in (index, dict_path):
        os.utime(p, (MTIME, MTIME))
    return directory


def sha1_base36(text):
    n = int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16)
    digits = ""
    while n:
        n, r = divmod(n, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
    return digits.rjust(31, "0")


def pages_of(path):
    root = ET.parse(path).getroot()
    out = []
    for page in root.findall(NS + "page"):
        rev = page.find(NS + "revision")
        text = rev.find(NS + "text")
        redirect = page.find(NS + "redirect")
        out.append({
            "children": [c.tag[len(NS):] for c in page],
            "title": page.findtext(NS + "title"),
            "ns": page.findtext(NS + "ns"),
            "id": page.findtext(NS + "id"),
            "redirect": None if redirect is None else redirect.get("title"),
            "rev_children": [c.tag[len(NS):] for c in rev],
            "rev_id": rev.findtext(NS + "id"),
            "timestamp": rev.findtext(NS + "timestamp"),
            "username": rev.findtext(f"{NS}contributor/{NS}username"),
            "model": rev.findtext(NS + "model"),
            "format": rev.findtext(NS + "format"),
            "text": text.text or "",
            "bytes": int(text.get("bytes")),
            "space": text.get("{http://www.w3.org/XML/1998/namespace}space"),
            "sha1": rev.findtext(NS + "sha1"),
        })
    return root, out


def test_export_structure_titles_and_text(tmp_path):
    src = make_dictd(tmp_path / "dict")
    out = tmp_path / "out" / "x.xml"
    out.parent.mkdir()
    result = _gcide.export(str(out), dict_dir=str(src))

    assert result == {"pages": len(EXPECTED_TITLES),
                      "bytes": out.stat().st_size}
    assert sorted(os.listdir(out.parent)) == ["x.xml"]   # no .tmp left

    raw = out.read_bytes()
    assert raw.startswith(b'<mediawiki xmlns="http://www.mediawiki.org/'
                          b'xml/export-0.10/"')
    assert raw.endswith(b"  </page>\n</mediawiki>\n")
    assert b"\n  <page>\n    <title>Apple</title>\n    <ns>0</ns>\n" in raw

    root, pages = pages_of(out)
    assert root.tag == NS + "mediawiki"
    assert root.get("version") == "0.10"
    assert root.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    site = root.find(NS + "siteinfo")
    assert site.findtext(NS + "sitename") == "GCIDE"
    assert site.findtext(NS + "dbname") == "gcide"
    assert site.findtext(NS + "generator") == "pyparallel gcide export"
    assert site.findtext(NS + "case") == "first-letter"
    assert site.findtext(NS + "base")
    keys = [n.get("key") for n in site.find(NS + "namespaces")]
    assert "0" in keys
    assert [c.tag for c in root][0] == NS + "siteinfo"

    assert [p["title"] for p in pages] == EXPECTED_TITLES
    assert [p["id"] for p in pages] == [str(i) for i in
                                        range(1, len(pages) + 1)]
    for p in pages:
        assert p["ns"] == "0"
        assert p["rev_id"] == p["id"]
        assert p["timestamp"] == "2020-01-01T00:00:00Z"
        assert p["username"] == "GCIDE"
        assert p["model"] == "wikitext"
        assert p["format"] == "text/x-wiki"
        assert p["space"] == "preserve"
        assert p["bytes"] == len(p["text"].encode("utf-8"))
        assert p["sha1"] == sha1_base36(p["text"])
        expected_children = ["title", "ns", "id", "revision"]
        if p["redirect"] is not None:
            expected_children.insert(3, "redirect")
        assert p["children"] == expected_children
        assert p["rev_children"] == ["id", "timestamp", "contributor",
                                     "model", "format", "text", "sha1"]

    by = {p["title"]: p for p in pages}
    # Merged duplicates, each block once, in index order.
    assert by["Apple"]["text"] == block("apple") + "\n\n" + block("Apple")
    assert by["Apple"]["redirect"] is None
    assert by["Striped"]["text"] == block("zebra") + "\n\n" + block("elan")
    assert by["Zebra"]["text"] == block("zebra")
    # Unicode headword, first letter upper-cased; Unicode text.
    assert by["\u00c9lan"]["text"] == block("elan")
    assert "caf\u00e9 \u2014 zest" in by["\u00c9lan"]["text"]
    # Redirects.
    assert by["Apple pie"]["redirect"] == "Apple"
    assert by["Apple pie"]["text"] == "#REDIRECT [[Apple]]"
    assert by["Big cat"]["redirect"] == "Zebra"
    # Escaping: the parsed text round-trips, the raw file has entities.
    assert "& <b>bold</b> tags" in by["Apple"]["text"]
    assert b"see {Pie} &amp; &lt;b&gt;bold&lt;/b&gt; tags" in raw
    assert b"<title>Fish &amp; chips</title>" in raw
    assert by["Fish & chips"]["text"] == block("fish")
    assert "\u00c9lan".encode("utf-8") in raw
    # Meta entries and refused titles are nowhere.
    assert b"00-database" not in raw
    assert b"made-up dictionary" not in raw
    assert not any(c in p["title"] for p in pages for c in "[]|")


def test_deterministic_and_dz_equals_plain(tmp_path):
    plain = make_dictd(tmp_path / "plain")
    dz = make_dictd(tmp_path / "dz", compressed=True)
    assert _gcide.find_source(str(plain)) == (
        str(plain / "gcide.index"), str(plain / "gcide.dict"))
    assert _gcide.find_source(dz) == (
        str(dz / "gcide.index"), str(dz / "gcide.dict.dz"))

    a, b, c = (tmp_path / n for n in ("a.xml", "b.xml", "c.xml"))
    _gcide.export(a, dict_dir=plain)
    _gcide.export(b, dict_dir=plain)
    _gcide.export(c, dict_dir=dz)
    assert a.read_bytes() == b.read_bytes() == c.read_bytes()


def test_overwrites_atomically(tmp_path):
    src = make_dictd(tmp_path / "dict")
    out = tmp_path / "x.xml"
    out.write_text("old")
    _gcide.export(str(out), dict_dir=src)
    assert out.read_bytes().endswith(b"</mediawiki>\n")
    assert not os.path.exists(str(out) + ".tmp")


def test_find_source_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dict-gcide"):
        _gcide.find_source(str(tmp_path))
    (tmp_path / "gcide.index").write_text("")
    with pytest.raises(FileNotFoundError, match="apt-get install dict-gcide"):
        _gcide.find_source(tmp_path)
    with pytest.raises(FileNotFoundError, match="dict-gcide"):
        _gcide.export(tmp_path / "x.xml", dict_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="dict-gcide"):
        _gcide.ensure(tmp_path / "cache", dict_dir=tmp_path)
    assert not (tmp_path / "x.xml").exists()
    assert not (tmp_path / "x.xml.tmp").exists()


def test_bad_index_line(tmp_path):
    src = make_dictd(tmp_path / "dict")
    (src / "gcide.index").write_text("apple\tA\n")
    with pytest.raises(ValueError, match="gcide.index:1"):
        _gcide.export(tmp_path / "x.xml", dict_dir=src)
    assert not (tmp_path / "x.xml.tmp").exists()


def test_progress(tmp_path):
    src = make_dictd(tmp_path / "dict")
    calls = []
    _gcide.export(tmp_path / "x.xml", dict_dir=src,
                  progress=lambda done, total: calls.append((done, total)))
    assert calls
    assert calls[-1] == (HEADWORDS, HEADWORDS)
    assert all(total == HEADWORDS for _, total in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done)


def test_ensure(tmp_path):
    src = make_dictd(tmp_path / "dict")
    cache = tmp_path / "cache" / "nested"
    path = _gcide.ensure(cache, dict_dir=src)
    assert path == os.path.join(str(cache), "gcide-pages-articles.xml")
    first = os.stat(path)

    # Fresh: not rebuilt.
    assert _gcide.ensure(str(cache), dict_dir=str(src)) == path
    assert os.stat(path).st_ino == first.st_ino

    # Older than the dictionary: rebuilt (a new file replaces it).
    os.utime(path, (MTIME - 10, MTIME - 10))
    assert _gcide.ensure(cache, dict_dir=src) == path
    again = os.stat(path)
    assert again.st_ino != first.st_ino
    assert again.st_mtime > MTIME

    # Missing: rebuilt.
    os.unlink(path)
    calls = []
    _gcide.ensure(cache, dict_dir=src, progress=lambda *a: calls.append(a))
    assert os.path.exists(path) and calls[-1] == (HEADWORDS, HEADWORDS)


def test_sha1_matches_mediawiki():
    # MediaWiki's well-known sha1 of the empty text.
    assert _gcide._sha1_base36(b"") == "phoiac9h4m842xq45sp7s6u21eteeq1"


REAL_INDEX = os.path.join(_gcide.DICT_DIR, "gcide.index")


@pytest.mark.skipif(not os.path.exists(REAL_INDEX),
                    reason="dict-gcide is not installed "
                           "(apt-get install dict-gcide)")
def test_real_gcide(tmp_path):
    path = _gcide.ensure(tmp_path)
    pages = 0
    abacus = None
    titles = set()
    for _, el in ET.iterparse(path):
        if el.tag == NS + "page":
            pages += 1
            title = el.findtext(NS + "title")
            assert title not in titles
            titles.add(title)
            if title == "Abacus":
                abacus = el.findtext(f"{NS}revision/{NS}text")
            el.clear()
    assert pages > 100000
    assert abacus is not None and "calculating" in abacus
    assert os.path.getsize(path) > 10_000_000
