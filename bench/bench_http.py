#!/usr/bin/env python3
"""bench_http.py -- pyparallel's HTTP server against its peers, TechEmpower shapes, one run.

Server kinds (--kinds; each started afresh, in a process group of its own,
on a free port, for every round and set-up):
  pyparallel       pyparallel serve examples/tfb.py:app (native App)
  pyparallel-wsgi  pyparallel serve --interface wsgi bench/http_apps/tfb_peers.py:wsgi
  pyparallel-threads  the native app with --threads 4: handlers on 4 handler
                   threads per worker instead of the loop thread (what a
                   handler that blocks needs; here it only costs the hand-off)
  granian-rsgi     granian --interface rsgi  tfb_peers:rsgi   (from .venv-bench)
  granian-wsgi     granian --interface wsgi  tfb_peers:wsgi
  uvicorn          uvicorn --loop uvloop --http httptools tfb_peers:asgi
  gunicorn         gunicorn -k sync tfb_peers:wsgi
  go               Go net/http, bench/http_apps/main.go (built with go build into
                   a temporary directory; GOMAXPROCS = its workers)
  nginx            nginx, return 200 "Hello, World!" from a generated nginx.conf:
                   the C ceiling

Every kind answers /plaintext with "Hello, World!" (text/plain) and /json
with {"message":"Hello, World!"} (application/json); one answer of each is
checked before a kind is loaded (a kind that answers wrongly is dropped with
the reason).  The Python peers run in .venv-bench (bench/setup_http.sh makes
it with .venv's CPython; this script runs that set-up itself when wrk, nginx,
go or a peer is missing, and says what is still missing after it).

Shapes (--shapes), each at every --conns (default 64 and 256), loaded by
wrk as TechEmpower does (Host, Accept and Connection: keep-alive headers,
--latency, --timeout 8):
  plaintext   GET /plaintext, one request at a time per connection
  pipelined   GET /plaintext, --pipeline (16) requests per write (a Lua script)
  json        GET /json, one at a time

Set-ups (--setups):
  per-core    every server with 1 worker, pinned to --server-cpu (default the
              first CPU this process may use); wrk pinned to --wrk-cpus
              (default the second), one thread per CPU it has
  all-cores   every server with --workers workers (default: the CPUs this
              process may use); wrk unpinned, one thread per CPU

Rounds (--rounds, default 3): in every round each set-up runs every kind in
turn, in an order that rotates from round to round, so that drifting load
from outside falls on all of them alike; a figure is the median over rounds,
a ratio the median over rounds of the ratio within a round.  Per
measurement: requests/s (wrk), requests per server CPU-second (utime + stime
of the server's process tree, from /proc, before and after), p50/p99
latency (wrk's histogram, read by the Lua script: see WRK_DONE; pipelined,
a latency is that of a whole batch), the server tree's RSS after the run,
wrk's errors (non-2xx/3xx answers, connect/read/write errors, timeouts: a
measurement with any is flagged ⚠), and the CPU that other processes used
meanwhile (/proc/stat; '*' at >= --noise CPUs).  Each server starts with
--warmup seconds of wrk, not measured.  Server options: every one gets
--backlog; granian runs as its own benchmarks do (--http 1 --no-ws
--runtime-threads 1 --runtime-mode mt); the exact command lines are in the
JSON ("commands").

Idle (unless --no-idle): for --idle-kinds (pyparallel, nginx, go) in the
--idle-setup set-up, --idle-conns (10,000) keep-alive connections are opened,
each sends one request and reads the answer, and all are held open: the
server tree's RSS increase / connections = bytes per connection.
RLIMIT_NOFILE is raised to its hard limit for this and the servers; the
servers' keep-alive timeouts are raised to 600 s for it (pyparallel serve's
--max-connections defaults to no limit, so it is not given; nginx gets
worker_connections up to RLIMIT_NOFILE).

Output: markdown tables on stdout (to paste into docs/benchmarks.md), JSON
in bench/results/http-<python>-<date>.json (or --json-out), progress on
stderr.

    bench/setup_http.sh          # optional: wrk, nginx, go, .venv-bench (the script runs it too)
    .venv/bin/python bench/bench_http.py                   # full run, ~55 min on 2 cores
    .venv/bin/python bench/bench_http.py --quick           # smoke run: 1 round of 1 s, 64 conns, ~1.5 min
    .venv/bin/python bench/bench_http.py --rounds 1 --duration 1 --conns 64 --warmup 0
    .venv/bin/python bench/bench_http.py --kinds pyparallel,nginx --setups per-core --shapes json
    .venv/bin/python bench/bench_http.py --report bench/results/http-3.13.0-....json
"""

import http.client
import json
import os
import random
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

# bench/: the script's own folder is on sys.path
from sysinfo import (cpus_usable, fmt_rate, log, machine_facts, median, pinned, read_str,
                     run_accounted, sample_while, save_json, tree_cpu, tree_rss)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APPS = os.path.join(HERE, "http_apps")
SETUP = os.path.join(HERE, "setup_http.sh")
TFB_NATIVE = os.path.join(ROOT, "examples", "tfb.py")

KINDS = ["pyparallel", "pyparallel-wsgi", "pyparallel-threads", "granian-rsgi", "granian-wsgi",
         "uvicorn",
         "gunicorn", "go", "nginx"]
PP_KINDS = ("pyparallel", "pyparallel-wsgi", "pyparallel-threads")
LABELS = {"pyparallel": "pyparallel native", "pyparallel-wsgi": "pyparallel WSGI",
          "pyparallel-threads": "pyparallel native, --threads 4",
          "granian-rsgi": "granian RSGI", "granian-wsgi": "granian WSGI",
          "uvicorn": "uvicorn + uvloop + httptools", "gunicorn": "gunicorn sync",
          "go": "Go net/http", "nginx": "nginx (C ceiling)"}
SHORT = {"pyparallel": "pyparallel", "pyparallel-wsgi": "pyparallel WSGI",
         "pyparallel-threads": "pyparallel --threads 4",
         "granian-rsgi": "granian RSGI", "granian-wsgi": "granian WSGI", "uvicorn": "uvicorn",
         "gunicorn": "gunicorn", "go": "Go", "nginx": "nginx"}
# the Python modules a kind needs in the peer environment
PEER_MODULES = {"granian-rsgi": ["granian"], "granian-wsgi": ["granian"],
                "uvicorn": ["uvicorn", "uvloop", "httptools"], "gunicorn": ["gunicorn"]}
ALL_PEER_MODULES = ["granian", "uvicorn", "uvloop", "httptools", "gunicorn"]
# (a, b): a's rate ÷ b's, per set-up and measurement
RATIO_PAIRS = ([(k, "nginx") for k in KINDS if k != "nginx"]
               + [("pyparallel", p) for p in ("granian-rsgi", "granian-wsgi", "go", "uvicorn",
                                              "gunicorn")]
               + [("pyparallel-wsgi", p) for p in ("granian-wsgi", "gunicorn")]
               + [("pyparallel-threads", "pyparallel")])

SHAPES = {"plaintext": "/plaintext", "pipelined": "/plaintext", "json": "/json"}
SHAPE_LABELS = {"plaintext": "plaintext", "pipelined": "plaintext pipelined", "json": "json"}
SETUPS = ["per-core", "all-cores"]
# TechEmpower's Accept headers (toolset/test_types/*)
ACCEPT = {"/plaintext": "text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,"
                        "application/xml;q=0.8,*/*;q=0.7",
          "/json": "application/json,text/html;q=0.9,application/xhtml+xml;q=0.9,"
                   "application/xml;q=0.8,*/*;q=0.7"}
# TechEmpower's Content-Type checks (toolset/test_types/verifications.py)
CTYPE_RE = {"/plaintext": re.compile(r"^text/plain(; ?charset=(UTF|utf)-8)?$"),
            "/json": re.compile(r"^application/json(; ?charset=(UTF|utf)-8)?$")}
IDLE_KEEPALIVE = 600            # seconds: servers' keep-alive timeout in the idle measurement

# wrk's report, as one JSON line (wrk prints its own text report too).
# Latency percentiles: wrk corrects its histogram for coordinated omission
# (synthetic samples at every mean interval up to each slow one) and then
# ranks over all samples but sums only those from the lowest measured value
# up, so when the correction adds samples below that minimum -- it does with
# pipelining, where the interval is per response, not per batch --
# percentile(p) returns 0 beyond some p.  That share ("below") is found by
# bisection, and percentile(p) read at p - below, which is what wrk means:
# the rank among all samples, the synthetic low ones counted first.
WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  local lo, hi = 0, 100
  if summary.requests > 0 then
    for i = 1, 50 do
      local mid = (lo + hi) / 2
      if latency:percentile(mid) > 0 then lo = mid else hi = mid end
    end
  end
  local below = 100 - lo
  -- no latency at all (no request, or no pipelined batch ever completed): -1
  local none = summary.requests == 0 or latency.max == 0 or lo == 0
  local pct = function(p)
    if none then return -1 end
    if p - below <= 0 then return latency.min end
    return latency:percentile(p - below)
  end
  io.write(string.format(
    "WRK_JSON {\"requests\": %.0f, \"duration_us\": %.0f, \"bytes\": %.0f, " ..
    "\"connect\": %.0f, \"read\": %.0f, \"write\": %.0f, \"status\": %.0f, \"timeout\": %.0f, " ..
    "\"mean_us\": %.1f, \"max_us\": %.0f, \"p50_us\": %.0f, \"p90_us\": %.0f, \"p99_us\": %.0f, " ..
    "\"below_pct\": %.6f}\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    none and -1 or latency.mean, none and -1 or latency.max,
    pct(50), pct(90), pct(99), below))
end
"""
# TechEmpower's pipeline.lua: args[1] requests in every write
WRK_PIPELINE = r"""
init = function(args)
  local r = {}
  local depth = tonumber(args[1]) or 1
  for i = 1, depth do
    r[i] = wrk.format()
  end
  req = table.concat(r)
end

request = function()
  return req
end
""" + WRK_DONE


class ServerError(Exception):
    pass


# --------------------------------------------------------------------------
# Set-up: tools, the peer environment, the Go server, nginx's configuration.

def nginx_path():
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK)
                                     else None)


def peer_python(args):
    return os.path.join(args.peer_venv, "bin", "python")


def peer_versions(args):
    """{module: version or None} in the peer environment, and its Python version."""
    py = peer_python(args)
    if not os.access(py, os.X_OK):
        return {m: None for m in ALL_PEER_MODULES}, None
    code = ("import importlib, importlib.metadata as md, json, platform\n"
            "out = {}\n"
            f"for m in {ALL_PEER_MODULES!r}:\n"
            "    try:\n"
            "        importlib.import_module(m)\n"
            "        out[m] = md.version(m)\n"
            "    except Exception:\n"
            "        out[m] = None\n"
            "print(json.dumps([out, platform.python_version()]))\n")
    try:
        r = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=60,
                           cwd=tempfile.gettempdir())
        mods, ver = json.loads(r.stdout)
        return mods, ver
    except (OSError, ValueError, subprocess.SubprocessError):
        return {m: None for m in ALL_PEER_MODULES}, None


def missing_for(kinds, machine, peers, args):
    """{kind: why it cannot run} (and "wrk" when the load generator is missing)."""
    out = {}
    if not shutil.which("wrk"):
        out["wrk"] = "wrk is not installed (apt-get install wrk)"
    pp = machine["pyparallel"]
    for k in kinds:
        if k in PP_KINDS and (pp.get("error") or not pp.get("has_http")):
            out[k] = ("pyparallel does not import: " + pp["error"] if pp.get("error")
                      else "this pyparallel has no pyparallel.http (HTTP server not built)")
        elif k in PEER_MODULES:
            gone = [m for m in PEER_MODULES[k] if not peers.get(m)]
            if gone:
                out[k] = (f"{', '.join(gone)} not importable in {args.peer_venv} "
                          f"(bench/setup_http.sh installs them)")
        elif k == "go" and not shutil.which("go"):
            out[k] = "go is not installed (apt-get install golang-go)"
        elif k == "nginx" and not nginx_path():
            out[k] = "nginx is not installed (apt-get install nginx-light)"
    return out


def run_setup(args):
    """bench/setup_http.sh, with this interpreter's base CPython for the peers."""
    base = getattr(sys, "_base_executable", sys.executable)
    env = dict(os.environ, BENCH_VENV=args.peer_venv)
    log(f"running {os.path.relpath(SETUP, ROOT)} {base}")
    r = subprocess.run(["bash", SETUP, base], cwd=ROOT, env=env)
    if r.returncode != 0:
        log(f"{os.path.relpath(SETUP, ROOT)} exited with {r.returncode} (see its MISSING lines)")


def tool_versions(args, peers, peer_py_version):
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            return ((r.stdout or "") + (r.stderr or "")).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return None
    ng = nginx_path()
    def word(line, prefix):
        """The word starting with prefix in line ("wrk debian/4.1.0-3+b2 [epoll] ..." -> "4.1.0-3+b2")."""
        for x in (line or "").replace("/", " ").split():
            if x.startswith(prefix):
                return x
        return line
    return {"wrk": word(first_line(["wrk", "-v"]), "4") if shutil.which("wrk") else None,
            "nginx": word(first_line([ng, "-v"]), "1") if ng else None,
            "go": word(first_line(["go", "version"]), "go1") if shutil.which("go") else None,
            "peer_venv": args.peer_venv, "peer_python": peer_py_version, **peers}


def build_go(tmpdir):
    exe = os.path.join(tmpdir, "tfb_go")
    env = dict(os.environ, GOTOOLCHAIN="local", GO111MODULE="off", CGO_ENABLED="0")
    if not env.get("HOME"):
        env["GOCACHE"] = os.path.join(tmpdir, "gocache")
    cmd = ["go", "build", "-o", exe, os.path.join(APPS, "main.go")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=APPS, timeout=600)
    if r.returncode != 0:
        raise ServerError(f"go build failed: {' '.join(cmd)}: {(r.stderr or r.stdout).strip()[-400:]}")
    return exe


def nginx_conf(tmpdir, port, workers, backlog, keepalive):
    """Write an nginx.conf for one run; returns its path."""
    d = os.path.join(tmpdir, f"nginx-{port}")
    os.makedirs(d, exist_ok=True)
    try:
        built = subprocess.run([nginx_path(), "-V"], capture_output=True, text=True).stderr
    except OSError:
        built = ""
    temp = ["client_body"] + [m for m in ("proxy", "fastcgi", "uwsgi", "scgi")
                              if f"--without-http_{m}_module" not in built]
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if nofile == resource.RLIM_INFINITY:
        nofile = 1 << 20
    user = ""
    if os.geteuid() == 0:
        import grp
        import pwd
        user = (f"user {pwd.getpwuid(os.geteuid()).pw_name} "
                f"{grp.getgrgid(os.getegid()).gr_name};\n")
    temps = "".join(f"    {t}_temp_path {d}/{t};\n" for t in temp)
    conf = f"""# generated by bench/bench_http.py
{user}worker_processes {workers};
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile {nofile};
events {{
    worker_connections {max(1024, nofile - 64)};
}}
http {{
    access_log off;
    server_tokens off;
    keepalive_timeout {keepalive}s;
    keepalive_requests 100000000;
{temps}    server {{
        listen 127.0.0.1:{port} reuseport backlog={backlog};
        location = /plaintext {{
            default_type text/plain;
            return 200 "Hello, World!";
        }}
        location = /json {{
            default_type application/json;
            return 200 '{{"message":"Hello, World!"}}';
        }}
    }}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


def free_port(host):
    """A port nobody listens on, below the ephemeral range (so that wrk's own
    connections never take it), else one the kernel picks."""
    lo = 32768
    rng = read_str("/proc/sys/net/ipv4/ip_local_port_range")
    try:
        lo = int(rng.split()[0])
    except (AttributeError, ValueError, IndexError):
        pass
    for _ in range(50):
        port = random.randint(max(1025, lo - 12000), max(1026, lo - 1))
        with socket.socket() as s:
            try:
                s.bind((host, port))
                return port
            except OSError:
                continue
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def raise_nofile(need):
    """Raise RLIMIT_NOFILE's soft limit to the hard one (and the hard one to
    need, where allowed).  Returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return need
        except (ValueError, OSError):
            pass
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    except (ValueError, OSError):
        return soft


# --------------------------------------------------------------------------
# Servers.

LIVE = set()                    # servers started and not yet stopped


def server_command(kind, port, workers, args, tmpdir, idle=False):
    """(argv, environment, working directory) that start kind on port."""
    host = args.host
    env = dict(os.environ)
    bindir = os.path.join(args.peer_venv, "bin")
    if kind in PP_KINDS:
        app = (f"{os.path.join(APPS, 'tfb_peers.py')}:wsgi" if kind == "pyparallel-wsgi"
               else f"{TFB_NATIVE}:app")
        cmd = [sys.executable, "-m", "pyparallel", "serve", app, "--bind", f"{host}:{port}",
               "--workers", str(workers), "--backlog", str(args.backlog),
               "--graceful-timeout", "1",
               "--interface", "wsgi" if kind == "pyparallel-wsgi" else "native"]
        if kind == "pyparallel-threads":
            cmd += ["--threads", "4"]
        if idle:
            cmd += ["--keepalive-timeout", str(IDLE_KEEPALIVE)]
        return cmd, env, tempfile.gettempdir()
    if kind.startswith("granian-"):
        iface = kind.split("-", 1)[1]
        # granian's own benchmark method: --http 1, --no-ws, 1 runtime thread, mt runtime
        cmd = [os.path.join(bindir, "granian"), "--interface", iface, "--host", host,
               "--port", str(port), "--workers", str(workers), "--http", "1", "--no-ws",
               "--runtime-threads", "1", "--runtime-mode", "mt", "--backlog", str(args.backlog),
               "--log-level", "warning", "--working-dir", APPS, f"tfb_peers:{iface}"]
        return cmd, env, APPS
    if kind == "uvicorn":
        cmd = [os.path.join(bindir, "uvicorn"), "tfb_peers:asgi", "--app-dir", APPS,
               "--host", host, "--port", str(port), "--workers", str(workers),
               "--loop", "uvloop", "--http", "httptools", "--no-access-log",
               "--log-level", "warning", "--backlog", str(args.backlog), "--lifespan", "on",
               "--timeout-graceful-shutdown", "1"]
        if idle:
            cmd += ["--timeout-keep-alive", str(IDLE_KEEPALIVE)]
        return cmd, env, APPS
    if kind == "gunicorn":
        cmd = [os.path.join(bindir, "gunicorn"), "-w", str(workers), "-k", "sync",
               "-b", f"{host}:{port}", "--backlog", str(args.backlog), "--graceful-timeout", "1",
               "--log-level", "warning", "--chdir", APPS, "tfb_peers:wsgi"]
        return cmd, env, APPS
    if kind == "go":
        env["GOMAXPROCS"] = str(workers)
        return [args.go_exe, f"{host}:{port}"], env, tmpdir
    if kind == "nginx":
        conf = nginx_conf(tmpdir, port, workers, args.backlog,
                          IDLE_KEEPALIVE if idle else 75)
        d = os.path.dirname(conf)
        return [nginx_path(), "-p", d, "-c", conf, "-e", os.path.join(d, "error.log")], env, d
    raise ValueError(kind)


def http_get(host, port, path, timeout=5.0, conn=None):
    """(status, {lower-case header: value}, body) of one GET."""
    c = conn or http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": "localhost", "Accept": ACCEPT.get(path, "*/*")})
        r = c.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        if conn is None:
            c.close()


def check_answers(host, port):
    """(problems, warnings, headers seen): one /plaintext and one /json answer
    against TechEmpower's rules, over one connection."""
    problems, warnings, seen = [], [], {}
    c = http.client.HTTPConnection(host, port, timeout=10)
    try:
        for path, want in (("/plaintext", b"Hello, World!"), ("/json", {"message": "Hello, World!"})):
            try:
                status, h, body = http_get(host, port, path, conn=c)
            except (OSError, http.client.HTTPException) as e:
                problems.append(f"GET {path}: {type(e).__name__}: {e}")
                continue
            seen[path] = h
            if status != 200:
                problems.append(f"GET {path}: status {status}")
            if path == "/plaintext" and body != want:
                problems.append(f"GET {path}: body {body[:80]!r}, not {want!r}")
            if path == "/json":
                try:
                    ok = json.loads(body) == want
                except ValueError:
                    ok = False
                if not ok:
                    problems.append(f"GET {path}: body {body[:80]!r}, not {json.dumps(want)}")
            ct = h.get("content-type", "")
            if not CTYPE_RE[path].match(ct):
                problems.append(f"GET {path}: Content-Type {ct!r}")
            if "content-length" not in h and "transfer-encoding" not in h:
                problems.append(f"GET {path}: no Content-Length or Transfer-Encoding")
            for name in ("server", "date"):
                if name not in h:
                    warnings.append(f"GET {path}: no {name.title()} header (TechEmpower requires it)")
            if h.get("connection", "").lower() == "close" and path == "/plaintext":
                warnings.append("closes the connection after every answer (no keep-alive): wrk "
                                "reconnects for every request, and of a pipelined batch only the "
                                "first request is answered (no latency is recorded there)")
    finally:
        c.close()
    return problems, warnings, seen


class ServerProcess:
    """A server's process tree, in a process group of its own, listening on
    a port; its output goes to a log file.  Subclasses build the command
    and wait until it answers (bench_wiki.py's servers are these too)."""

    def _spawn(self, kind, host, port, cmd, env, cwd, tmpdir, preexec_fn=None):
        self.kind, self.host, self.port, self.cmd = kind, host, port, cmd
        self.logpath = os.path.join(tmpdir, f"{kind}-{port}.log")
        self.log = open(self.logpath, "w+")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                     start_new_session=True, preexec_fn=preexec_fn)
        LIVE.add(self)

    def cpu(self):
        return tree_cpu(self.proc.pid)

    def rss(self):
        return tree_rss(self.proc.pid)

    def alive(self):
        return self.proc.poll() is None

    def log_tail(self, n=500):
        try:
            with open(self.logpath) as f:
                s = f.read()
        except OSError:
            return ""
        return " | ".join(x for x in s.strip().splitlines())[-n:] or "(no output)"

    def stop(self):
        """SIGTERM to the process group, SIGKILL after 10 s; every straggler
        in the group is killed too."""
        LIVE.discard(self)
        pg = self.proc.pid
        if self.proc.poll() is None:
            try:
                os.killpg(pg, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                log(f"  {self.kind}: no exit 10 s after SIGTERM; killing its process group")
        try:
            os.killpg(pg, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()
        return self.proc.returncode


class Server(ServerProcess):
    """One HTTP server under test on a free port, ready when it answers."""

    def __init__(self, kind, workers, cpus, args, tmpdir, idle=False):
        port = free_port(args.host)
        cmd, env, cwd = server_command(kind, port, workers, args, tmpdir, idle)
        self._spawn(kind, args.host, port, cmd, env, cwd, tmpdir, pinned(cpus))
        try:
            self._wait_ready(args.start_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.kind} exited with {self.proc.returncode} at start: "
                                  f"{self.log_tail()}")
            try:
                http_get(self.host, self.port, "/plaintext", timeout=2)
                return
            except (OSError, http.client.HTTPException) as e:
                last = e
            time.sleep(0.1)
        raise ServerError(f"{self.kind} did not answer on port {self.port} within {timeout:g} s "
                          f"({type(last).__name__}: {last}): {self.log_tail()}")


def start_server(kind, workers, cpus, args, tmpdir, idle=False):
    """A Server; tried again on another port when the one picked was taken meanwhile."""
    for attempt in range(3):
        try:
            return Server(kind, workers, cpus, args, tmpdir, idle)
        except ServerError as e:
            if attempt == 2 or "in use" not in str(e).lower():
                raise
            log(f"  {kind}: port taken, trying another")


def stop_all():
    for s in list(LIVE):
        try:
            s.stop()
        except Exception as e:  # noqa: BLE001 -- keep stopping the others
            log(f"stopping {s.kind}: {e}")


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------
# Load: wrk.

def run_wrk(srv, shape, conns, duration, threads, cpus, scripts, pipeline, timeout):
    """One wrk run against srv; returns its figures with the CPU accounting."""
    path = SHAPES[shape]
    threads = max(1, min(threads, conns))
    cmd = ["wrk", "-H", "Host: localhost", "-H", f"Accept: {ACCEPT[path]}",
           "-H", "Connection: keep-alive", "--latency", "-d", f"{duration}s", "-c", str(conns),
           "-t", str(threads), "--timeout", "8",
           "-s", scripts["pipeline" if shape == "pipelined" else "plain"],
           f"http://{srv.host}:{srv.port}{path}"]
    if shape == "pipelined":
        cmd += ["--", str(pipeline)]
    r, acct = run_accounted(cmd, timeout, cpus, srv.cpu)
    if r is None:
        return {"error": f"wrk timed out after {timeout} s", "cmd": cmd}
    line = next((x for x in r.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        return {"error": f"wrk exit {r.returncode}: {(r.stderr or r.stdout).strip()[-400:]}",
                "cmd": cmd}
    w = json.loads(line[len("WRK_JSON "):])
    for k in ("mean_us", "max_us", "p50_us", "p90_us", "p99_us"):
        if w[k] < 0:
            w[k] = None                 # no latency recorded
    server_cpu = acct["server_cpu_s"]
    secs = w["duration_us"] / 1e6 or acct["wall_s"]
    errors = {k: int(w[k]) for k in ("connect", "read", "write", "timeout", "status")}
    out = {"requests": int(w["requests"]), "rps": w["requests"] / secs, "duration_s": round(secs, 3),
           "wall_s": acct["wall_s"], "bytes": int(w["bytes"]),
           "server_cpu_s": server_cpu, "wrk_cpu_s": acct["client_cpu_s"],
           "server_cpus": round(server_cpu / secs, 3),
           "other_cpus": acct["other_cpus"], "steal_cpus": acct["steal_cpus"],
           "req_per_cpu_s": w["requests"] / server_cpu if server_cpu > 0 else None,
           "lat_us": {"p50": w["p50_us"], "p90": w["p90_us"], "p99": w["p99_us"],
                      "max": w["max_us"], "mean": w["mean_us"],
                      "below_min_pct": w["below_pct"]},
           "errors": errors, "error_total": sum(errors.values()), "threads": threads}
    out["flagged"] = out["error_total"] > 0 or out["requests"] == 0
    return out


# --------------------------------------------------------------------------
# Idle keep-alive connections.

def _response_done(buf):
    """True once buf holds a whole response (every kind sends Content-Length)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    m = re.search(rb"(?im)^content-length:\s*(\d+)", bytes(buf[:end]))
    return m is not None and len(buf) >= end + 4 + int(m.group(1))


def open_idle(host, port, n, in_flight=256, timeout=120.0):
    """Open n connections, each sending one GET /plaintext and reading the
    answer, at most in_flight at a time.  Returns (sockets held, failures)."""
    req = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n"
    sel = selectors.DefaultSelector()
    held, failed, pending, started = [], 0, {}, 0
    deadline = time.monotonic() + timeout
    try:
        while len(held) + failed < n and time.monotonic() < deadline:
            while started < n and len(pending) < in_flight:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.connect_ex((host, port))
                sel.register(s, selectors.EVENT_WRITE)
                pending[s] = bytearray()
                started += 1
            for key, ev in sel.select(timeout=1.0):
                s = key.fileobj
                try:
                    if ev & selectors.EVENT_WRITE:
                        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            raise OSError(err, os.strerror(err))
                        s.send(req)
                        sel.modify(s, selectors.EVENT_READ)
                        continue
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed by the server")
                    pending[s] += data
                    if _response_done(pending[s]):
                        sel.unregister(s)
                        del pending[s]
                        held.append(s)
                except OSError:
                    sel.unregister(s)
                    del pending[s]
                    s.close()
                    failed += 1
    finally:
        for s in pending:
            s.close()
        failed += len(pending)
        sel.close()
    return held, failed


def still_open(socks):
    """How many of socks the server has not closed (no EOF readable)."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed = len(sel.select(timeout=0))
    sel.close()
    return len(socks) - closed


def measure_idle(kind, args, tmpdir, scripts):
    workers, cpus, wrk_cpus, wrk_threads = setup_params(args.idle_setup, args)
    srv = start_server(kind, workers, cpus, args, tmpdir, idle=True)
    held = []
    try:
        # Touch every worker first, so that start-up allocations are in the
        # baseline, not in the per-connection figure.
        warm = run_wrk(srv, "plaintext", max(4 * workers, 8), 1, wrk_threads, wrk_cpus, scripts,
                       args.pipeline, 60)
        if "error" in warm:
            return {"error": "warm-up: " + warm["error"]}
        time.sleep(0.5)
        base, nprocs = srv.rss()
        t0 = time.monotonic()
        held, failed = open_idle(args.host, srv.port, args.idle_conns)
        setup_s = time.monotonic() - t0
        samples = sample_while(args.idle_hold, lambda: srv.rss()[0])
        open_after = still_open(held)
        peak = max(samples)
        for s in held:
            s.close()
        conns = len(held)
        held = []
        time.sleep(0.5)
        after, _ = srv.rss()
        res = {"conns": conns, "requested": args.idle_conns, "failed": failed,
               "open_after_hold": open_after, "processes": nprocs, "workers": workers,
               "setup": args.idle_setup, "rss_before": base, "rss_held": peak,
               "rss_after_close": after, "rss_samples": samples, "setup_s": round(setup_s, 3),
               "bytes_per_conn": round((peak - base) / conns, 1) if conns else None,
               "note": "RSS of the server's processes (user-space memory); kernel socket "
                       "buffers are not in it"}
        if not srv.alive():
            res["error"] = f"{kind} died: {srv.log_tail()}"
        return res
    finally:
        for s in held:
            s.close()
        srv.stop()


def run_idle(idle_kinds, args, tmpdir, scripts, res):
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile < args.idle_conns + 256:
        log(f"idle: RLIMIT_NOFILE is {nofile}, too low for {args.idle_conns:,} connections; "
            f"asking for {nofile - 256:,}")
        args.idle_conns = max(1, nofile - 256)
    res["idle"] = {}
    for kind in (k for k in idle_kinds if k not in res["not_available"]):
        log(f"idle: {kind}, {args.idle_conns:,} connections")
        try:
            r = res["idle"][kind] = measure_idle(kind, args, tmpdir, scripts)
        except ServerError as e:
            r = res["idle"][kind] = {"error": str(e)}
        if r.get("bytes_per_conn") is None:
            log(f"  error: {r.get('error')}")
            continue
        log(f"  {r['conns']:,} held ({r['failed']} failed, {r['open_after_hold']:,} still open "
            f"after the hold): RSS {r['rss_before'] / 2**20:.1f} -> {r['rss_held'] / 2**20:.1f} MB"
            f" = {r['bytes_per_conn']:,.0f} B/conn (after close "
            f"{r['rss_after_close'] / 2**20:.1f} MB)")


# --------------------------------------------------------------------------
# Rounds.

def setup_params(setup, args):
    """(server workers, server CPUs or None, wrk CPUs or None, wrk threads)."""
    if setup == "per-core":
        return 1, {args.server_cpu}, set(args.wrk_cpus), len(args.wrk_cpus)
    return args.workers, None, None, cpus_usable()


def tests_of(args):
    return [f"{shape}-{c}" for shape in args.shapes for c in args.conns]


def test_label(test, pipeline=16):
    shape, _, c = test.rpartition("-")
    lab = SHAPE_LABELS[shape] + (f" {pipeline}" if shape == "pipelined" else "")
    return f"{lab}, {c} conns"


def run_one(kind, setup, rnd, args, tmpdir, scripts, res):
    workers, cpus, wrk_cpus, wrk_threads = setup_params(setup, args)
    try:
        srv = start_server(kind, workers, cpus, args, tmpdir)
    except ServerError as e:
        log(f"  {kind}: {e}")
        res["errors"].setdefault(kind, []).append(f"round {rnd + 1} {setup}: {e}")
        return
    try:
        res["commands"].setdefault(kind, {})[setup] = srv.cmd
        problems, warnings, seen = check_answers(args.host, srv.port)
        res["checks"].setdefault(kind, {"warnings": warnings, "headers": seen})
        if problems:
            why = "wrong answers: " + "; ".join(problems)
            log(f"  {kind}: {why}; dropped")
            res["not_available"][kind] = why
            return
        for wmsg in warnings:
            log(f"  {kind}: warning: {wmsg}")
        if args.warmup:
            run_wrk(srv, "plaintext", max(args.conns), args.warmup, wrk_threads, wrk_cpus,
                    scripts, args.pipeline, args.warmup + 60)
        for shape in args.shapes:
            for c in args.conns:
                out = run_wrk(srv, shape, c, args.duration, wrk_threads, wrk_cpus, scripts,
                              args.pipeline, args.duration + 60)
                rss, nprocs = srv.rss()
                out.update(round=rnd, setup=setup, kind=kind, shape=shape, conns=c,
                           test=f"{shape}-{c}", workers=workers, rss=rss, processes=nprocs)
                out["noisy"] = out.get("other_cpus", 0) >= args.noise
                res["runs"].append(out)
                if "error" in out:
                    log(f"  {kind:<15} {shape:<9} c={c:<4} error: {out['error']}")
                    res["errors"].setdefault(kind, []).append(
                        f"round {rnd + 1} {setup} {shape}-{c}: {out['error']}")
                else:
                    e = out["errors"]
                    errs = (f"  ERRORS {out['error_total']}: " + ", ".join(
                        f"{k} {v}" for k, v in e.items() if v)) if out["flagged"] else ""
                    log(f"  {kind:<15} {shape:<9} c={c:<4} {out['rps']:>10,.0f} req/s  "
                        f"{fmt_rate(out['req_per_cpu_s'])}/CPU-s  server {out['server_cpus']:.2f} CPU  "
                        f"p50 {fmt_lat(out['lat_us']['p50'])} p99 {fmt_lat(out['lat_us']['p99'])}  "
                        f"RSS {rss / 2**20:.0f} MB  others {out['other_cpus']:.2f}"
                        f"{'*' if out['noisy'] else ''}{errs}")
                if not srv.alive():
                    raise ServerError(f"{kind} died: {srv.log_tail()}")
    except ServerError as e:
        log(f"  {e}")
        res["errors"].setdefault(kind, []).append(f"round {rnd + 1} {setup}: {e}")
    finally:
        srv.stop()


# --------------------------------------------------------------------------
# Medians, ratios and the markdown tables.

def summarize(res):
    """Per set-up, test and kind: medians over rounds; per pair: paired ratios."""
    by = {}                                     # (setup, test, kind) -> {round: run}
    for r in (x for x in res["runs"] if "error" not in x):
        by.setdefault((r["setup"], r["test"], r["kind"]), {})[r["round"]] = r
    summary = {}
    for (setup, test, kind), runs in by.items():
        rs = list(runs.values())
        rates = [r["rps"] for r in rs]
        summary.setdefault(setup, {}).setdefault(test, {})[kind] = {
            "rps_median": median(rates), "rps_min": min(rates), "rps_max": max(rates),
            "rps": rates, "rounds": sorted(runs),
            "req_per_cpu_s": median([r["req_per_cpu_s"] for r in rs if r["req_per_cpu_s"]]),
            "server_cpus": median([r["server_cpus"] for r in rs]),
            "p50_us": median([r["lat_us"]["p50"] for r in rs if r["lat_us"]["p50"] is not None]),
            "p99_us": median([r["lat_us"]["p99"] for r in rs if r["lat_us"]["p99"] is not None]),
            "rss": median([r["rss"] for r in rs]),
            "errors": sum(r["error_total"] for r in rs),
            "flagged": sum(1 for r in rs if r["flagged"]),
            "noisy": sum(1 for r in rs if r.get("noisy")),
        }
    ratios = {}
    for setup in res["params"]["setups"]:
        for test in res["params"]["tests"]:
            for a, b in RATIO_PAIRS:
                mine, theirs = by.get((setup, test, a), {}), by.get((setup, test, b), {})
                rounds = sorted(set(mine) & set(theirs))
                per = [mine[i]["rps"] / theirs[i]["rps"] for i in rounds if theirs[i]["rps"]]
                if not per:
                    continue
                eff = [mine[i]["req_per_cpu_s"] / theirs[i]["req_per_cpu_s"] for i in rounds
                       if mine[i]["req_per_cpu_s"] and theirs[i]["req_per_cpu_s"]]
                ratios.setdefault(setup, {}).setdefault(test, {})[f"{a}/{b}"] = {
                    "ratio": median(per), "per_round": per, "cpu_ratio": median(eff),
                    "flagged": any(mine[i]["flagged"] or theirs[i]["flagged"] for i in rounds)}
    res["summary"] = summary
    res["ratios"] = ratios


def fmt_lat(us):
    if us is None:
        return "-"
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 100000:
        return f"{us / 1000:.1f} ms"
    return f"{us / 1000:.0f} ms"


def setup_title(setup, p):
    if setup == "per-core":
        return (f"Per core: every server with 1 worker pinned to CPU {p['server_cpu']}; "
                f"wrk ({len(p['wrk_cpus'])} thread{'s' if len(p['wrk_cpus']) != 1 else ''}) "
                f"pinned to CPU{'s' if len(p['wrk_cpus']) != 1 else ''} "
                f"{','.join(map(str, p['wrk_cpus']))}")
    return (f"All cores: every server with {p['workers']} workers (processes, threads or "
            f"interpreters), unpinned; wrk unpinned, {p['cpus']} threads")


def chart(res, path):
    if path:
        from http_chart import write_svg
        write_svg(res, path, LABELS, test_label)
        log(f"chart: {path}")


def report(res, out=sys.stdout):
    p, m, v = res["params"], res["machine"], res["versions"]
    pp = m.get("pyparallel", {})
    w = lambda s="": print(s, file=out)  # noqa: E731
    w("## HTTP: pyparallel vs peers, TechEmpower plaintext and json")
    w()
    w(f"CPython {m['python']}, {m['cpu_model']}, {m['cpus']} CPUs, Linux {m['kernel']}, {res['date']}.  ")
    w(f"pyparallel at {pp.get('repo_commit', '?')}"
      f"{' + uncommitted changes in src/' if pp.get('repo_src_modified') else ''} "
      f"(module built {pp.get('module_built', '?')}).  ")
    peers = ", ".join(f"{k} {v[k]}" for k in ALL_PEER_MODULES if v.get(k))
    w(f"Peers: {peers} (CPython {v.get('peer_python')}); nginx {v.get('nginx') or '-'}; "
      f"Go {v.get('go') or '-'}; wrk {v.get('wrk') or '-'}.  ")
    w(f"{p['rounds']} round(s) of {p['duration']} s per measurement ({p['warmup']} s wrk warm-up "
      f"per server start); wrk --latency --timeout 8, TechEmpower's headers; pipelined: "
      f"{p['pipeline']} requests per write.  ")
    w(f"Command: `{res['command']}`")
    if res.get("note"):
        w(f"Note: {res['note']}")
    w()
    tests = p["tests"]
    heads = " | ".join(test_label(t, p["pipeline"]) for t in tests)
    for setup in p["setups"]:
        summ = res["summary"].get(setup, {})
        kinds = [k for k in p["kinds"] if any(k in summ.get(t, {}) for t in tests)]
        if not kinds:
            continue
        w(f"### {setup_title(setup, p)}")
        w()
        w("Requests/s: median over rounds (lowest–highest). ⚠ n: wrk counted n errors "
          f"(non-2xx/3xx or socket errors); *: other processes used ≥ {p['noise']} CPUs.")
        w()
        w(f"| server | {heads} |")
        w("|---|" + "---|" * len(tests))
        for k in kinds:
            cells = []
            for t in tests:
                s = summ.get(t, {}).get(k)
                if not s:
                    cells.append("error")
                    continue
                c = f"**{fmt_rate(s['rps_median'])}**"
                if s["rps_max"] > s["rps_min"]:
                    c += f" ({fmt_rate(s['rps_min'])}–{fmt_rate(s['rps_max'])})"
                if s["errors"]:
                    c += f" ⚠ {s['errors']:,}"
                if s["noisy"]:
                    c += " *"
                cells.append(c)
            w(f"| {LABELS[k]} | " + " | ".join(cells) + " |")
        w()
        w("Requests per server CPU-second · p50 / p99 latency · server RSS after the run "
          "(whole process tree); medians over rounds.")
        w()
        w(f"| server | {heads} |")
        w("|---|" + "---|" * len(tests))
        for k in kinds:
            cells = []
            for t in tests:
                s = summ.get(t, {}).get(k)
                cells.append(f"{fmt_rate(s['req_per_cpu_s'])} · {fmt_lat(s['p50_us'])} / "
                             f"{fmt_lat(s['p99_us'])} · {s['rss'] / 2**20:.0f} MB" if s else "-")
            w(f"| {LABELS[k]} | " + " | ".join(cells) + " |")
        w()
        rat = res["ratios"].get(setup, {})

        def cell(t, a, b):
            r = rat.get(t, {}).get(f"{a}/{b}")
            if not r:
                return "-"
            c = f"{r['ratio']:.2f}"
            if r.get("cpu_ratio") is not None:
                c += f" ({r['cpu_ratio']:.2f})"
            return c + (" ⚠" if r["flagged"] else "")
        vs_nginx = [k for k in kinds if k != "nginx" and any(f"{k}/nginx" in rat.get(t, {})
                                                            for t in tests)]
        if vs_nginx:
            w("Server ÷ nginx: requests/s (in brackets: requests per server CPU-second), "
              "median over rounds of the ratio within a round; ⚠: errors in a round.")
            w()
            w(f"| ÷ nginx | {heads} |")
            w("|---|" + "---|" * len(tests))
            for k in vs_nginx:
                w(f"| {LABELS[k]} | " + " | ".join(cell(t, k, "nginx") for t in tests) + " |")
            w()
        for a in PP_KINDS:
            bs = [b for x, b in RATIO_PAIRS if x == a and b != "nginx"
                  and any(f"{a}/{b}" in rat.get(t, {}) for t in tests)]
            if not bs:
                continue
            w(f"{LABELS[a]} ÷ peer: requests/s (in brackets: requests per server CPU-second).")
            w()
            w("| measurement | " + " | ".join(f"÷ {SHORT[b]}" for b in bs) + " |")
            w("|---|" + "---|" * len(bs))
            for t in tests:
                w(f"| {test_label(t, p['pipeline'])} | " + " | ".join(cell(t, a, b) for b in bs) + " |")
            w()
    if res.get("idle"):
        w(f"### Idle keep-alive connections ({p['idle_setup']} set-up)")
        w()
        w(f"{p['idle_conns']:,} connections opened, each sends one GET /plaintext and reads the "
          "answer, then all are held; server RSS (all its processes) before, the highest while "
          "holding, and after closing them.")
        w()
        w("| server | connections held | RSS before | RSS holding | per connection | RSS after close |")
        w("|---|---|---|---|---|---|")
        MB = 1 << 20
        for k, r in res["idle"].items():
            if "rss_held" not in r:
                w(f"| {LABELS.get(k, k)} | error: {str(r.get('error', '?'))[:200]} | | | | |")
                continue
            extra = []
            if r.get("failed"):
                extra.append(f"{r['failed']:,} failed")
            if r.get("open_after_hold") is not None and r["open_after_hold"] < r["conns"]:
                extra.append(f"{r['conns'] - r['open_after_hold']:,} closed by the server")
            w(f"| {LABELS.get(k, k)} | {r['conns']:,}{' (' + ', '.join(extra) + ')' if extra else ''} "
              f"| {r['rss_before'] / MB:.1f} MB | {r['rss_held'] / MB:.1f} MB "
              f"| {r['bytes_per_conn']:,.0f} B | {r['rss_after_close'] / MB:.1f} MB |")
        w()
    wanted = set(p["kinds"]) | set(p.get("idle_kinds", []))
    for k, why in res.get("not_available", {}).items():
        if k in wanted:
            w(f"- {k}: not measured: {why}")
    for k, chk in res.get("checks", {}).items():
        for wmsg in chk.get("warnings", []):
            w(f"- {k}: {wmsg}")
    for k, errs in res.get("errors", {}).items():
        if k in res.get("not_available", {}):
            continue
        e = errs[0] if len(errs[0]) <= 300 else errs[0][:60] + " ... " + errs[0][-240:]
        w(f"- {k}: {len(errs)} error(s); first: {e}")


# --------------------------------------------------------------------------

def main():
    import argparse
    import shlex
    ncpu = cpus_usable()
    allowed = sorted(os.sched_getaffinity(0))
    ap = argparse.ArgumentParser(
        description="pyparallel's HTTP server vs granian, uvicorn, gunicorn, Go and nginx, "
                    "with wrk (TechEmpower plaintext and json)")
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help=f"servers, comma-separated (default: all: {','.join(KINDS)})")
    ap.add_argument("--setups", default=",".join(SETUPS), help="per-core,all-cores (both)")
    ap.add_argument("--shapes", default=",".join(SHAPES),
                    help="plaintext,pipelined,json (all three)")
    ap.add_argument("--conns", default="64,256", help="wrk connections, comma-separated (64,256)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per measurement (10)")
    ap.add_argument("--warmup", type=int, default=2,
                    help="seconds of wrk warm-up after every server start, not measured (2; 0: none)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; kinds take turns (3)")
    ap.add_argument("--pipeline", type=int, default=16, help="pipelined requests per write (16)")
    ap.add_argument("--workers", type=int, default=ncpu,
                    help=f"workers of every server in the all-cores set-up (default: {ncpu}, "
                         "the CPUs this process may use)")
    ap.add_argument("--server-cpu", type=int, default=allowed[0],
                    help=f"per-core: the server's CPU (default {allowed[0]})")
    ap.add_argument("--wrk-cpus", default=None,
                    help="per-core: wrk's CPUs, comma-separated (default: the second CPU this "
                         "process may use)")
    ap.add_argument("--backlog", type=int, default=1024, help="listen backlog of every server (1024)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--no-idle", action="store_true", help="skip the idle-connection measurement")
    ap.add_argument("--idle-kinds", default="pyparallel,nginx,go",
                    help="servers whose idle memory is measured (pyparallel,nginx,go)")
    ap.add_argument("--idle-conns", type=int, default=10000, help="idle connections (10000)")
    ap.add_argument("--idle-hold", type=float, default=3.0,
                    help="seconds the idle connections are held while RSS is sampled (3)")
    ap.add_argument("--idle-setup", choices=SETUPS, default="all-cores",
                    help="the servers' set-up for the idle measurement (all-cores)")
    ap.add_argument("--noise", type=float, default=0.2,
                    help="CPUs used by other processes that mark a measurement noisy (0.2)")
    ap.add_argument("--start-timeout", type=float, default=30.0,
                    help="seconds a server may take to answer its first request (30)")
    ap.add_argument("--peer-venv", default=os.path.join(ROOT, ".venv-bench"),
                    help="the virtual environment with granian, uvicorn, gunicorn (.venv-bench)")
    ap.add_argument("--no-setup", action="store_true",
                    help="do not run bench/setup_http.sh when something is missing")
    ap.add_argument("--json-out", default=None,
                    help="where the JSON goes (default bench/results/http-<python>-<date>.json; "
                         "'' for nowhere)")
    ap.add_argument("--report", default=None, metavar="JSON",
                    help="measure nothing: print the tables of a saved run")
    ap.add_argument("--chart", nargs="?", const=os.path.join(ROOT, "docs", "bench-http.svg"),
                    default=None, metavar="PATH",
                    help="write an SVG bar chart (default path docs/bench-http.svg)")
    ap.add_argument("--note", default=None, help="a note kept in the JSON")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 round of 1 s, 64 conns, no warm-up, 2,000 idle connections")
    args = ap.parse_args()

    if args.report:
        with open(args.report) as f:
            res = json.load(f)
        summarize(res)
        report(res)
        chart(res, args.chart)
        return

    if args.quick:
        args.rounds, args.duration, args.warmup, args.conns = 1, 1, 0, "64"
        args.idle_conns, args.idle_hold = min(args.idle_conns, 2000), 1.0
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    kinds, setups, shapes = split(args.kinds), split(args.setups), split(args.shapes)
    idle_kinds = [] if args.no_idle else split(args.idle_kinds)
    for k in kinds + idle_kinds:
        if k not in KINDS:
            ap.error(f"unknown kind {k!r}; the kinds are {', '.join(KINDS)}")
    for s in setups:
        if s not in SETUPS:
            ap.error(f"unknown set-up {s!r}; the set-ups are {', '.join(SETUPS)}")
    for s in shapes:
        if s not in SHAPES:
            ap.error(f"unknown shape {s!r}; the shapes are {', '.join(SHAPES)}")
    try:
        args.conns = [int(x) for x in split(args.conns)]
        args.wrk_cpus = ([int(x) for x in split(args.wrk_cpus)] if args.wrk_cpus
                         else allowed[1:2])
    except ValueError as e:
        ap.error(str(e))
    if (args.rounds < 1 or args.duration < 1 or args.workers < 1 or not args.conns
            or min(args.conns) < 1 or args.pipeline < 1 or args.warmup < 0):
        ap.error("--rounds, --duration, --workers, --conns and --pipeline must be >= 1")
    args.shapes = shapes
    if "per-core" in setups:
        if not args.wrk_cpus:
            log("per-core set-up skipped: it needs 2 CPUs (one for the server, one for wrk)")
            setups.remove("per-core")
        elif args.server_cpu in args.wrk_cpus or not {args.server_cpu, *args.wrk_cpus} <= set(allowed):
            ap.error(f"--server-cpu {args.server_cpu} and --wrk-cpus {args.wrk_cpus}: distinct CPUs "
                     f"among those this process may use ({allowed})")
    args.peer_venv = os.path.abspath(args.peer_venv)
    nofile = raise_nofile(args.idle_conns + 1024)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)

    res = {"not_available": {}, "errors": {}, "runs": [], "commands": {}, "checks": {}}
    machine, now = machine_facts(ROOT)
    peers, peer_py = peer_versions(args)
    missing = missing_for(kinds + idle_kinds, machine, peers, args)
    if missing and not args.no_setup:
        log("missing: " + "; ".join(f"{k}: {v}" for k, v in missing.items()))
        run_setup(args)
        peers, peer_py = peer_versions(args)
        missing = missing_for(kinds + idle_kinds, machine, peers, args)
    if "wrk" in missing:
        sys.exit(f"bench_http: {missing['wrk']}; nothing can be measured")
    for k, why in missing.items():
        log(f"{k}: not measured: {why}")
        res["not_available"][k] = why
    if peer_py and peer_py != machine["python"] and any(k in PEER_MODULES for k in kinds):
        log(f"note: the peers run CPython {peer_py}, pyparallel CPython {machine['python']}")
    versions = tool_versions(args, peers, peer_py)
    res.update({
        "machine": machine, "versions": versions, "date": now.isoformat(timespec="seconds"),
        "note": args.note,
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "params": {"kinds": kinds, "setups": setups, "shapes": shapes, "conns": args.conns,
                   "tests": tests_of(args), "duration": args.duration, "warmup": args.warmup,
                   "rounds": args.rounds, "pipeline": args.pipeline, "workers": args.workers,
                   "cpus": ncpu, "server_cpu": args.server_cpu, "wrk_cpus": args.wrk_cpus,
                   "backlog": args.backlog, "host": args.host, "idle_kinds": idle_kinds,
                   "idle_conns": args.idle_conns, "idle_hold": args.idle_hold,
                   "idle_setup": args.idle_setup, "noise": args.noise, "rlimit_nofile": nofile,
                   "env": {k: v for k, v in os.environ.items() if k.startswith("PYPARALLEL")}},
    })
    log(f"CPython {machine['python']}, {machine['cpu_model']}, {ncpu} CPUs; pyparallel "
        f"{machine['pyparallel'].get('repo_commit', '?')}; "
        + ", ".join(f"{k} {versions[k]}" for k in ALL_PEER_MODULES if versions.get(k)))

    try:
        with tempfile.TemporaryDirectory(prefix="bench_http.") as tmpdir:
            scripts = {"plain": os.path.join(tmpdir, "report.lua"),
                       "pipeline": os.path.join(tmpdir, "pipeline.lua")}
            with open(scripts["plain"], "w") as f:
                f.write(WRK_DONE)
            with open(scripts["pipeline"], "w") as f:
                f.write(WRK_PIPELINE)
            args.go_exe = None
            if "go" in kinds + idle_kinds and "go" not in res["not_available"]:
                try:
                    args.go_exe = build_go(tmpdir)
                except (ServerError, OSError, subprocess.SubprocessError) as e:
                    log(f"go: not measured: {e}")
                    res["not_available"]["go"] = str(e)
            for rnd in range(args.rounds):
                for setup in setups:
                    avail = [k for k in kinds if k not in res["not_available"]]
                    if not avail:
                        break
                    order = avail[rnd % len(avail):] + avail[:rnd % len(avail)]
                    log(f"round {rnd + 1}/{args.rounds}, {setup}: {', '.join(order)}")
                    for kind in order:
                        if kind not in res["not_available"]:
                            run_one(kind, setup, rnd, args, tmpdir, scripts, res)
            if idle_kinds:
                run_idle(idle_kinds, args, tmpdir, scripts, res)
    finally:
        stop_all()

    summarize(res)
    path = args.json_out
    if path is None:
        path = os.path.join(HERE, "results",
                            f"http-{machine['python']}-{now.strftime('%Y%m%d-%H%M%S')}.json")
    if path:
        save_json(res, path)
    print()
    report(res)
    chart(res, args.chart)


if __name__ == "__main__":
    main()
