"""GCIDE (dictd format) -> MediaWiki XML export, like Wikipedia's dumps.

Debian's ``dict-gcide`` package installs the GNU Collaborative
International Dictionary of English as a dictd database:

* ``gcide.index``: one line per headword, ``HEADWORD TAB OFFSET TAB
  LENGTH``, where OFFSET and LENGTH are byte counts into the *uncompressed*
  ``.dict`` file written in dictd's base64 digits (most significant digit
  first, no padding, alphabet ``A-Z a-z 0-9 + /``).  Many headwords point at
  the same block (every sub-entry, synonym or Latin name a block mentions).
* ``gcide.dict.dz``: the definitions, compressed with dictzip, which is an
  ordinary gzip member with a random-access table in its extra field, so
  ``gzip.decompress`` reads it.  A plain ``gcide.dict`` is accepted too.

:func:`export` writes one ``<page>`` per title in the format of a
``pages-articles.xml`` dump (export schema 0.10).  Titles are the
headwords normalised as MediaWiki does for a "first-letter" wiki: runs of
spaces and underscores become one space, leading and trailing ones go, and
the first letter is upper-cased.  Headwords that end up with the same title
("cock", "Cock") share one page whose text is their blocks, in index
order, each block once, separated by a blank line.

Redirects: a block's own headword is the text before `` \\`` on its first
line (``Cod \\Cod\\, n. ...`` belongs to "Cod").  A title that owns none of
its blocks and whose blocks all appear on the page of the owner of its first
block ("Cod fishery", defined inside the entry "Cod") becomes
``#REDIRECT [[Cod]]`` with ``<redirect title="Cod" />``, as in real dumps.
Targets always own a block of their own, so there are no double redirects.

Only the standard library is used.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import time

__all__ = ["DICT_DIR", "find_source", "export", "ensure"]

DICT_DIR = "/usr/share/dictd"

_INDEX_NAME = "gcide.index"
_DICT_NAMES = ("gcide.dict.dz", "gcide.dict")
_CACHE_NAME = "gcide-pages-articles.xml"
_PACKAGE_HINT = "apt-get install dict-gcide"

# dictd's base64 digits (dictd's b64 encoder uses the RFC 4648 alphabet,
# but as a positional number system, not as a byte encoding).
_B64_DIGITS = {c: i for i, c in enumerate(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}

# The characters MediaWiki folds to one space in titles (Title/
# MediaWikiTitleCodec): space, underscore, NBSP and the Unicode spaces.
_TITLE_SPACES = re.compile(
    "[ _\u00a0\u1680\u180e\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
# Directional marks MediaWiki silently removes from titles.
_TITLE_BIDI = re.compile("[\u200e\u200f\u202a-\u202e]")
# Titles MediaWiki refuses.  Such headwords are DROPPED (not repaired): a
# repaired title could collide with, or merge into, an unrelated page.  The
# refused characters are # < > [ ] | { }, ASCII control characters and DEL,
# and U+FFFD (what undecodable bytes become); also refused are
# percent-escapes (%41), HTML-entity look-alikes (&amp;), "~~~" (signature
# syntax), a leading ":", the relative paths "." / ".." and titles over 255
# UTF-8 bytes.  (GCIDE 0.48 has no such headword; the rules are for other
# inputs.)
_TITLE_BAD = re.compile(
    r"[#<>\[\]|{}\x00-\x1f\x7f\ufffd]"
    r"|%[0-9A-Fa-f]{2}"
    r"|&[A-Za-z0-9\x80-\U0010ffff]+;"
    r"|~~~"
    r"|^:"
    r"|^\.\.?(?:/|$)|/\.\.?(?:/|$)")

# Characters XML 1.0 cannot carry; they become U+FFFD in page text.
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_LONE_BYTES = re.compile("[\udc80-\udcff]+")

# Reserved names dictfmt adds: 00-database-info/-short/-long/-url/-utf8/...,
# their old spelling 00databaseinfo, and per-database aliases such as
# 00-gcide-long or 00-web1913-info.  No real headword starts with "00-" or
# "00database".
_META = re.compile(r"00-|00database")

_SITEINFO = """\
  <siteinfo>
    <sitename>GCIDE</sitename>
    <dbname>gcide</dbname>
    <base>https://gcide.invalid/wiki/Main_Page</base>
    <generator>pyparallel gcide export</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="0" case="first-letter" />
    </namespaces>
  </siteinfo>
"""

_HEADER = (
    '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.10/ '
    'http://www.mediawiki.org/xml/export-0.10.xsd" '
    'version="0.10" xml:lang="en">\n' + _SITEINFO)

_FOOTER = "</mediawiki>\n"


def find_source(dict_dir=None) -> tuple[str, str]:
    """Return the paths of ``gcide.index`` and ``gcide.dict.dz`` (or
    ``gcide.dict``) in *dict_dir* (default :data:`DICT_DIR`)."""
    d = os.fspath(DICT_DIR if dict_dir is None else dict_dir)
    index = os.path.join(d, _INDEX_NAME)
    if os.path.isfile(index):
        for name in _DICT_NAMES:
            path = os.path.join(d, name)
            if os.path.isfile(path):
                return index, path
        missing = " or ".join(_DICT_NAMES)
    else:
        missing = _INDEX_NAME
    raise FileNotFoundError(
        f"GCIDE dictionary not found: no {missing} in {d}; install the "
        f"Debian package with: {_PACKAGE_HINT}")


def _b64(digits: str) -> int:
    value = 0
    for c in digits:
        value = value * 64 + _B64_DIGITS[c]
    return value


def _decode(raw: bytes) -> str:
    """UTF-8, with any stray byte read as Windows-1252.

    GCIDE 0.48's dictd file is ASCII apart from three such bytes (0x92,
    0xe7, 0xb9: "market's", "facade", "haven't"); cp1252 gets the first two
    right and turns the third into a superscript one.  Bytes cp1252 leaves
    undefined become U+FFFD.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "surrogateescape")
        return _LONE_BYTES.sub(
            lambda m: bytes(ord(c) - 0xDC00 for c in m.group()).decode(
                "cp1252", "replace"), text)


def _title(headword: str):
    """The MediaWiki title for *headword*, or None when it is not valid."""
    t = _TITLE_SPACES.sub(" ", _TITLE_BIDI.sub("", headword)).strip(" ")
    if not t or _TITLE_BAD.search(t) or len(t.encode("utf-8")) > 255:
        return None
    first = t[0].upper()
    # MediaWiki upper-cases one character; keep e.g. "ß" (-> "SS") as is.
    if len(first) == 1:
        t = first + t[1:]
    return t


def _escape(s: str) -> str:
    # htmlspecialchars(), as MediaWiki's exporter uses: & < > and ".
    return (s.replace("&", "&amp;").replace("<", "&lt;")
            .replace(">", "&gt;").replace('"', "&quot;"))


_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
# Every 3-digit base-36 string, so that a 160-bit digest takes 11 divmods.
_BASE36_3 = [a + b + c for a in _BASE36 for b in _BASE36 for c in _BASE36]


def _sha1_base36(data: bytes) -> str:
    """SHA-1 in base 36, zero-padded to 31 digits, as MediaWiki stores it."""
    n = int.from_bytes(hashlib.sha1(data).digest(), "big")
    out = []
    while n:
        n, r = divmod(n, 46656)
        out.append(_BASE36_3[r])
    out.reverse()
    return "".join(out).lstrip("0").rjust(31, "0")


def _read_index(index_path: str):
    """Yield (headword, offset, length) for every real index line."""
    with open(index_path, "rb") as f:
        data = _decode(f.read())
    for lineno, line in enumerate(data.split("\n"), 1):
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{index_path}:{lineno}: not a dictd index line")
        headword, off, size = parts
        if _META.match(headword):
            continue
        try:
            yield headword, _b64(off), _b64(size)
        except KeyError:
            raise ValueError(
                f"{index_path}:{lineno}: bad dictd base64 number") from None


def _read_dict(dict_path: str) -> bytes:
    with open(dict_path, "rb") as f:
        raw = f.read()
    if dict_path.endswith(".dz"):
        return gzip.decompress(raw)
    return raw


def export(out_path, *, dict_dir=None, progress=None) -> dict:
    """Write GCIDE as a MediaWiki XML export to *out_path*.

    The file is written to ``out_path + ".tmp"`` and renamed into place.
    *progress*, if given, is called as ``progress(done, total)`` with
    headword counts, at most about ten times a second and once at the end.
    Returns ``{"pages": number_of_pages, "bytes": file_size}``.
    """
    index_path, dict_path = find_source(dict_dir)
    out_path = os.fspath(out_path)
    stamp = max(os.stat(index_path).st_mtime, os.stat(dict_path).st_mtime)
    timestamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(stamp)))

    # title -> {(offset, length): None} (an ordered set), and how many
    # headwords went into each title (for progress).
    pages: dict[str, dict] = {}
    counts: dict[str, int] = {}
    title_of: dict = {}  # headword -> title (or None): a cache of _title
    for headword, off, size in _read_index(index_path):
        title = title_of.get(headword, "")
        if title == "":
            title = title_of[headword] = _title(headword)
        if title is None:
            continue
        segs = pages.get(title)
        if segs is None:
            pages[title] = segs = {}
            counts[title] = 0
        segs[(off, size)] = None
        counts[title] += 1
    total = sum(counts.values())

    raw = _read_dict(dict_path)
    end = len(raw)
    blocks: dict = {}   # (offset, length) -> text
    owners: dict = {}   # (offset, length) -> title of the block's headword
    for segs in pages.values():
        for seg in segs:
            if seg in blocks:
                continue
            off, size = seg
            if off + size > end:
                raise ValueError(
                    f"{index_path}: entry at {off}+{size} is past the end "
                    f"of {dict_path} ({end} bytes)")
            text = _decode(raw[off:off + size]).replace("\r\n", "\n")
            text = text.replace("\r", "\n").strip("\n")
            if _XML_BAD.search(text):
                text = _XML_BAD.sub("\ufffd", text)
            blocks[seg] = text
            first_line = text.split("\n", 1)[0]
            cut = first_line.find(" \\")
            owner = None
            if cut > 0:
                owner = title_of.get(first_line[:cut], "")
                if owner == "":
                    owner = _title(first_line[:cut])
            owners[seg] = owner
    del raw

    primary = {t for t, segs in pages.items()
               if any(owners[s] == t for s in segs)}

    tmp = out_path + ".tmp"
    last = time.monotonic()
    done = 0
    if progress is not None:
        progress(0, total)
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(_HEADER)
            buf = []
            for page_id, (title, segs) in enumerate(pages.items(), 1):
                redirect = None
                if title not in primary:
                    target = owners[next(iter(segs))]
                    if target in primary:
                        tsegs = pages[target]
                        if all(s in tsegs for s in segs):
                            redirect = target
                if redirect is None:
                    text = "\n\n".join(blocks[s] for s in segs).rstrip()
                else:
                    text = f"#REDIRECT [[{redirect}]]"
                data = text.encode("utf-8")
                buf.append(
                    f"  <page>\n"
                    f"    <title>{_escape(title)}</title>\n"
                    f"    <ns>0</ns>\n"
                    f"    <id>{page_id}</id>\n")
                if redirect is not None:
                    buf.append(
                        f'    <redirect title="{_escape(redirect)}" />\n')
                if data:
                    body = (f'<text bytes="{len(data)}" xml:space="preserve">'
                            f"{_escape(text)}</text>")
                else:
                    body = '<text bytes="0" xml:space="preserve" />'
                buf.append(
                    f"    <revision>\n"
                    f"      <id>{page_id}</id>\n"
                    f"      <timestamp>{timestamp}</timestamp>\n"
                    f"      <contributor>\n"
                    f"        <username>GCIDE</username>\n"
                    f"        <id>0</id>\n"
                    f"      </contributor>\n"
                    f"      <model>wikitext</model>\n"
                    f"      <format>text/x-wiki</format>\n"
                    f"      {body}\n"
                    f"      <sha1>{_sha1_base36(data)}</sha1>\n"
                    f"    </revision>\n"
                    f"  </page>\n")
                done += counts[title]
                if len(buf) >= 2048:
                    f.write("".join(buf))
                    buf.clear()
                    if progress is not None:
                        now = time.monotonic()
                        if now - last >= 0.1:
                            last = now
                            progress(done, total)
            buf.append(_FOOTER)
            f.write("".join(buf))
        os.replace(tmp, out_path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if progress is not None:
        progress(total, total)
    return {"pages": len(pages), "bytes": os.stat(out_path).st_size}


def ensure(cache_dir, *, dict_dir=None, progress=None) -> str:
    """Return ``cache_dir/gcide-pages-articles.xml``, building it with
    :func:`export` when it is missing or older than the dictionary files."""
    cache_dir = os.fspath(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    sources = find_source(dict_dir)
    out_path = os.path.join(cache_dir, _CACHE_NAME)
    newest = max(os.stat(p).st_mtime for p in sources)
    try:
        fresh = os.stat(out_path).st_mtime >= newest
    except FileNotFoundError:
        fresh = False
    if not fresh:
        export(out_path, dict_dir=dict_dir, progress=progress)
    return out_path
