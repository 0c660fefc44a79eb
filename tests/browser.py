"""A small driver for headless chromium over the Chrome DevTools Protocol.

    with Browser() as b:
        page = b.new_page()
        page.goto("http://127.0.0.1:8000/")
        page.type("#q", "alp")
        page.wait_for("document.querySelectorAll('#results a').length > 0")
        page.click("#results a")

One websocket to the browser target carries everything: each page is a
target attached in "flat" mode, so its commands and events are tagged with a
sessionId.  Responses are matched by id; events that arrive in between are
kept (briefly) for goto(), which waits for the new document's "load"
lifecycle event.

Needs Debian's `chromium` (apt-get install chromium) and PyPI's
`websocket-client`.
"""

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
import websocket  # PyPI: websocket-client

NAMES = ("chromium", "chromium-browser", "google-chrome")

# Why each flag is here (see also the module docstring):
FLAGS = [
    "--headless=new",                # no display in the container
    "--disable-gpu",                 # no GPU either; skip the probe
    "--disable-dev-shm-usage",       # /dev/shm may be tiny (64 MB in docker)
    "--no-first-run",                # no first-run UI / import
    "--no-default-browser-check",
    "--disable-background-networking",  # no network: don't phone home
    "--disable-extensions",
    "--no-proxy-server",             # a proxy from the environment must not
                                     # intercept 127.0.0.1 test servers
    "--window-size=1280,800",        # a fixed viewport for mouse clicks
    "--remote-debugging-port=0",     # pick a free port, print it on stderr
]


class CDPError(RuntimeError):
    pass


def find_chromium():
    """The path of a chromium/chrome binary on PATH, or None."""
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    def __init__(self, binary=None, start_timeout=30.0, extra_flags=()):
        self.binary = binary or find_chromium()
        self.start_timeout = start_timeout
        self.extra_flags = list(extra_flags)
        self.proc = self.ws = self.profile = None
        self._next_id = 0
        self._events = collections.deque(maxlen=2000)

    # -- lifetime ----------------------------------------------------------
    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def _start(self):
        if self.binary is None:
            raise RuntimeError("chromium not found on PATH "
                               "(apt-get install chromium)")
        self.profile = tempfile.mkdtemp(prefix="cdp-profile-")
        self._log_path = os.path.join(self.profile, "stderr.log")
        flags = FLAGS + self.extra_flags + ["--user-data-dir=" + self.profile]
        if os.geteuid() == 0:
            flags.append("--no-sandbox")  # chromium refuses to sandbox as root
        with open(self._log_path, "wb") as log:
            # XDG_*: crashpad's "Crash Reports" and caches go to the temp
            # profile too, not to ~/.config/chromium.
            # The sanitizer runtimes the suite may run under (scripts/
            # sanitizer-env.sh) are for pyparallel, not for chromium.
            env = {k: v for k, v in os.environ.items()
                   if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")}
            env.update(XDG_CONFIG_HOME=self.profile, XDG_CACHE_HOME=self.profile)
            self.proc = subprocess.Popen(
                [self.binary, *flags, "about:blank"], stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, env=env, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while True:
            m = re.search(r"DevTools listening on (ws://\S+)", self._log())
            if m:
                break
            if self.proc.poll() is not None:
                self._fail(f"chromium exited with status {self.proc.returncode}")
            if time.monotonic() > deadline:
                self._fail(f"chromium printed no DevTools URL in "
                           f"{self.start_timeout:g}s")
            time.sleep(0.02)
        # No Origin header: chromium refuses websockets from origins it was
        # not told to allow (--remote-allow-origins).
        self.ws = websocket.create_connection(m.group(1), timeout=10,
                                              suppress_origin=True)

    def _log(self):
        with open(self._log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def _fail(self, why):
        lines = [l for l in self._log().splitlines() if "dbus" not in l]
        tail = "\n".join(lines[-25:])  # (no D-Bus here: that noise is dropped)
        raise RuntimeError(f"{why}: {self.binary}\n--- chromium stderr (tail) "
                           f"---\n{tail}")

    def close(self):
        if self.ws is not None:
            try:
                self.send("Browser.close", timeout=2)
            except Exception:
                pass
            self.ws.close()
            self.ws = None
        if self.proc is not None:
            # The whole process group: the launcher script, chromium, zygotes
            # and renderers (crashpad's handlers exit by themselves).
            for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, None)):
                try:
                    os.killpg(self.proc.pid, sig)
                    self.proc.wait(grace)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
            self.proc.wait()
            self.proc = None
        if self.profile is not None:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None

    # -- protocol ----------------------------------------------------------
    def send(self, method, params=None, session=None, timeout=10.0):
        """Send one command; return its result, keeping events that arrive
        before the response."""
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            reply = self._recv(deadline, method)
            if reply.get("id") == msg["id"]:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error'].get('message')}"
                                   f" {reply['error'].get('data', '')}".rstrip())
                return reply.get("result", {})
            if "method" in reply:
                self._events.append(reply)

    def wait_event(self, method, session=None, timeout=10.0, match=None):
        """Return (and consume) the params of the first event `method` of
        `session` for which match(params) is true."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in list(self._events):
                params = ev.get("params", {})
                if (ev["method"] == method and ev.get("sessionId") == session
                        and (match is None or match(params))):
                    self._events.remove(ev)
                    return params
            msg = self._recv(deadline, method)
            if "method" in msg:
                self._events.append(msg)

    def _recv(self, deadline, what):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer from chromium for {what}")
        self.ws.settimeout(left)
        try:
            return json.loads(self.ws.recv())
        except websocket.WebSocketTimeoutException:
            raise TimeoutError(f"no answer from chromium for {what}") from None
        except websocket.WebSocketConnectionClosedException:
            self._fail(f"chromium closed the DevTools connection during {what}")

    def new_page(self):
        target = self.send("Target.createTarget", {"url": "about:blank"})
        session = self.send("Target.attachToTarget",
                            {"targetId": target["targetId"], "flatten": True})
        page = Page(self, target["targetId"], session["sessionId"])
        page.send("Page.enable")
        page.send("Page.setLifecycleEventsEnabled", {"enabled": True})
        return page


class Page:
    def __init__(self, browser, target_id, session):
        self.browser, self.target_id, self.session = browser, target_id, session

    def send(self, method, params=None, timeout=10.0):
        return self.browser.send(method, params, self.session, timeout)

    def goto(self, url, timeout=10.0):
        """Navigate and wait for the new document's load event."""
        res = self.send("Page.navigate", {"url": url}, timeout)
        if res.get("errorText"):
            raise RuntimeError(f"goto {url}: {res['errorText']}")
        if res.get("loaderId"):  # none for a same-document (#hash) navigation
            self.browser.wait_event(
                "Page.lifecycleEvent", self.session, timeout,
                lambda p: p["name"] == "load" and p["loaderId"] == res["loaderId"])

    def eval(self, js, timeout=10.0):
        """Evaluate a JS expression; return its value (promises awaited)."""
        res = self.send("Runtime.evaluate", {
            "expression": js, "returnByValue": True, "awaitPromise": True,
        }, timeout)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            text = d.get("exception", {}).get("description") or d.get("text")
            raise CDPError(f"JS error in {js!r}: {text}")
        return res["result"].get("value")

    def _on(self, selector, body):
        """Run JS `body` with `el` bound to the element `selector` matches."""
        sel = json.dumps(selector)
        return self.eval(f"(() => {{ const el = document.querySelector({sel});"
                         f" if (!el) throw new Error('no element matches ' + {sel});"
                         f" {body} }})()")

    def type(self, selector, text):
        """Focus the element, then press a key per character, as a user does:
        keydown, keypress, beforeinput, input and keyup fire for each."""
        self._on(selector, "el.focus();")
        for ch in text:
            key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13,
                   "text": "\r"} if ch == "\n" else {"key": ch, "text": ch}
            self.send("Input.dispatchKeyEvent", {"type": "keyDown", **key})
            self.send("Input.dispatchKeyEvent",
                      {"type": "keyUp", "key": key["key"]})

    def click(self, selector):
        """A real left click (move, press, release) at the element's centre."""
        x, y = self._on(selector, """
            el.scrollIntoView({block: 'center', inline: 'center'});
            const r = el.getBoundingClientRect();
            if (!r.width || !r.height) throw new Error('element is not visible');
            return [r.left + r.width / 2, r.top + r.height / 2];""")
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {
                "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def wait_for(self, js_expr, timeout=10.0, interval=0.05):
        """Poll until js_expr is truthy; return its value.  Errors while
        polling (e.g. during a navigation) count as not yet."""
        deadline = time.monotonic() + timeout
        error = None
        while True:
            try:
                value = self.eval(js_expr, timeout=max(deadline - time.monotonic(), 1))
                if value:
                    return value
                error = None
            except (CDPError, TimeoutError) as e:
                error = e
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:g}s waiting for {js_expr!r}"
                    + (f"\nlast error: {error}" if error else "")
                    + f"\nurl: {_try(self.url)}"
                    + f"\npage text:\n{_try(self.text)[:1500]}")
            time.sleep(interval)

    def url(self):
        return self.eval("location.href")

    def text(self):
        return self.eval("document.body ? document.body.innerText : ''")

    def close(self):
        self.browser.send("Target.closeTarget", {"targetId": self.target_id})


def _try(fn):
    try:
        return fn()
    except Exception as e:
        return f"<unreadable: {e}>"


@pytest.fixture(scope="module")
def browser():
    """A Browser for a test module (import this fixture by name).  Skipped
    only where chromium is missing AND PYPARALLEL_NO_BROWSER is set (CI
    lanes in a chroot without it); a missing chromium is a failure
    otherwise."""
    if find_chromium() is None:
        if os.environ.get("PYPARALLEL_NO_BROWSER"):
            pytest.skip("no chromium on PATH and PYPARALLEL_NO_BROWSER is set")
        pytest.fail("chromium not found on PATH: apt-get install chromium "
                    "(scripts/test installs it; or set PYPARALLEL_NO_BROWSER=1 "
                    "where it cannot be)")
    with Browser() as b:
        yield b
