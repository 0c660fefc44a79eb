"""Helpers of the wiki tests: small MediaWiki exports, and a wiki server
run as a user runs it (`python -m pyparallel wiki`)."""

import http.client
import json
import re
import subprocess
import sys

import support

HEAD = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" '
        'xml:lang="en">\n  <siteinfo>\n    <sitename>Test</sitename>\n  </siteinfo>\n')


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def page_xml(title, text, redirect=None, pid=1):
    red = f'    <redirect title="{esc(redirect)}" />\n' if redirect else ""
    return (f"  <page>\n    <title>{esc(title)}</title>\n    <ns>0</ns>\n    <id>{pid}</id>\n"
            f"{red}    <revision>\n      <id>{pid}</id>\n"
            f'      <text bytes="{len(text.encode())}" xml:space="preserve">{esc(text)}</text>\n'
            f"    </revision>\n  </page>\n")


def make_export(path, pages):
    """Writes pages [(title, text, redirect)] as an export; returns {title:
    the bytes of its <page> element}."""
    parts, out = [HEAD.encode()], {}
    for i, (title, text, redirect) in enumerate(pages, 1):
        p = page_xml(title, text, redirect, i).encode()
        out.setdefault(title, p[2:-1])      # without the indent and the newline
        parts.append(p)
    parts.append(b"</mediawiki>\n")
    with open(path, "wb") as f:
        f.write(b"".join(parts))
    return out


class Wiki:
    def __init__(self, dump, *args, workers=2, safety=False):
        cmd = [sys.executable, "-m", "pyparallel", "wiki", "--dump", dump,
               "--bind", "127.0.0.1:0", "--workers", str(workers), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=support.child_env(safety=safety))
        line = self.proc.stdout.readline()
        m = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
        if not m:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"the wiki server did not start: {line}{out}\n{err}")
        self.port = int(m.group(1))
        self.banner = line + "".join(self.proc.stdout.readline() for _ in range(3))

    def get(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def json(self, path):
        status, headers, body = self.get(path)
        return status, headers, json.loads(body)

    def stop(self):
        self.proc.terminate()
        out, err = self.proc.communicate(timeout=30)
        return support.Result(self.proc.returncode, out, err, self.proc.args)




def lookup_loop(image, titles, rounds):
    """In a worker: look every title up, rounds times, in a frozen index
    (while main opens and closes other indexes); returns how many were
    found where they should be."""
    from pyparallel import _pyparallel as _pp
    found = 0
    for _ in range(rounds):
        for t in titles:
            i = _pp.wiki_find(image, t)
            if i >= 0 and _pp.wiki_page(image, i)[0] == t:
                found += 1
        rows, total = _pp.wiki_offsets(image, titles[0][:3], 5)
        if total < 1 or rows[0][0][:3] != titles[0][:3]:
            return -1
    return found
