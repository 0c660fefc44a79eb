"""Self-test of tests/browser.py: drive headless chromium through a tiny
search page (type a query, see results appear, open one).

Needs Debian's chromium (apt-get install chromium).  Skipped only where
chromium is missing AND PYPARALLEL_NO_BROWSER is set (CI lanes in a chroot
without it); missing chromium otherwise is a failure.
"""

import http.server
import json
import threading
import urllib.parse

import pytest

from browser import CDPError, browser  # noqa: F401 (browser: a fixture)

WORDS = ["alpha", "alphabet", "alpine", "beta", "gamma", "delta"]

INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>search</title></head>
<body>
<input id="q" autocomplete="off">
<ul id="results"></ul>
<script>
  window.inputEvents = 0;
  let seq = 0;
  const q = document.getElementById('q');
  const ul = document.getElementById('results');
  q.addEventListener('input', async () => {
    window.inputEvents++;
    const mine = ++seq, query = q.value;
    const r = await fetch('/api?q=' + encodeURIComponent(query));
    const names = await r.json();
    if (mine !== seq) return;          // a later keystroke's answer wins
    ul.replaceChildren(...names.map(n => {
      const li = document.createElement('li'), a = document.createElement('a');
      a.href = '/page/' + encodeURIComponent(n);
      a.textContent = n;
      li.append(a);
      return li;
    }));
    ul.dataset.q = query;
  });
</script>
</body></html>
"""


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        self.server.seen.append(self.path)
        if url.path == "/":
            self._send(200, "text/html; charset=utf-8", INDEX)
        elif url.path == "/api":
            q = urllib.parse.parse_qs(url.query).get("q", [""])[0]
            hits = [w for w in WORDS if q and w.startswith(q)]
            self._send(200, "application/json", json.dumps(hits))
        elif url.path.startswith("/page/"):
            name = urllib.parse.unquote(url.path[len("/page/"):])
            self._send(200, "text/html; charset=utf-8",
                       f"<!doctype html><title>{name}</title>"
                       f"<h1>Page {name}</h1><p>all about {name}</p>")
        else:
            self._send(404, "text/plain", "not found")

    def _send(self, code, ctype, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.seen = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    t.join(5)


@pytest.fixture
def page(browser):
    p = browser.new_page()
    yield p
    p.close()


def test_search_type_results_open(server, page):
    srv, base = server
    page.goto(base + "/")
    assert page.url() == base + "/"
    page.type("#q", "alp")
    page.wait_for("document.getElementById('results').dataset.q === 'alp'")
    # every keystroke fired an 'input' event, and each asked the server
    assert page.eval("window.inputEvents") == 3
    assert sorted(p for p in srv.seen if p.startswith("/api")) == \
        ["/api?q=a", "/api?q=al", "/api?q=alp"]
    links = page.eval("[...document.querySelectorAll('#results a')]"
                      ".map(a => [a.textContent, a.getAttribute('href')])")
    assert links == [["alpha", "/page/alpha"], ["alphabet", "/page/alphabet"],
                     ["alpine", "/page/alpine"]]

    page.click("#results li:nth-child(2) a")
    page.wait_for("location.pathname === '/page/alphabet'"
                  " && document.readyState === 'complete'")
    assert page.url() == base + "/page/alphabet"
    assert page.text().splitlines()[0] == "Page alphabet"
    assert "all about alphabet" in page.text()


def test_harness_errors(server, page):
    _, base = server
    page.goto(base + "/page/x")
    assert page.eval("1 + 1") == 2
    assert page.eval("new Promise(r => setTimeout(() => r('late'), 50))") == "late"
    assert page.eval("undefined") is None
    with pytest.raises(CDPError, match="nope is not defined"):
        page.eval("nope()")
    with pytest.raises(CDPError, match="no element matches"):
        page.click("#missing")
    with pytest.raises(AssertionError, match=r"(?s)'false'.*Page x"):
        page.wait_for("false", timeout=0.3)
