#!/usr/bin/env python3
"""bench_wiki.py -- pyparallel's wiki server against WSGI process-per-worker
servers running the same routes, side by side in one run.

Servers (--kinds; each started afresh, in a process group of its own, on a
free port, for every round), every one with --workers N (default 2):
  pyparallel        .venv/bin/python -m pyparallel.wiki --dump D --workers N:
                    N worker interpreters sharing ONE frozen index
  gunicorn-sync     gunicorn -k sync -w N wiki_app:app (bench/wiki_apps/)
  gunicorn-gthread  gunicorn -k gthread -w N --threads T (--gthread-threads, 4)
  granian-wsgi      granian --interface wsgi --workers N, with bench_http's
                    flags (--http 1 --no-ws --runtime-threads 1
                    --runtime-mode mt --backlog 1024); --blocking-threads is
                    granian's default unless --granian-blocking-threads
  Each peer *process* loads its own index: wiki_app.py is
  `app = pyparallel.wiki.make_wsgi(os.environ["PYPARALLEL_WIKI_DUMP"])`.
  The peers run in .venv-bench (bench/setup_http.sh, the same CPython as
  .venv); they import pyparallel through PYTHONPATH set to a temporary
  folder holding only a symbolic link to .venv's installed pyparallel
  package (nothing is installed into .venv-bench).

Corpora (--corpora, default gcide):
  gcide      pyparallel.wiki.default_dump(): GCIDE (Debian's dict-gcide) as a
             MediaWiki export, ~170k pages
  synthetic  a SYNTHETIC export of --synthetic titles (default 5,000,000),
             written once, deterministically, to --cache-dir
             (~/.cache/pyparallel/bench/): word-combination titles (some
             Unicode), 10% redirects, ~100-byte texts
For each corpus: the index is built once more in a subprocess (timed; the
saved .ppindex is written if it is missing or stale), and the time to load
the saved one is measured too; index bytes and bytes per title are reported.

Routes (--routes), loaded by wrk with a Lua script that rotates through
--sample (4000) real paths sampled from the index (deterministic, --seed):
  offsets   GET /offsets/<prefix>?limit=<--offsets-limit, 20>, prefixes of
            3-5 characters of sampled titles, percent-encoded
  wiki      GET /wiki/<title> of sampled non-redirect titles (page XML)
Before a server is loaded, 20 paths of each route are checked against the
index (the same JSON rows; the page's exact byte length); a server that
answers wrongly is dropped with the reason.

Method (bench_http.py's "all-cores" set-up, kept as it is): servers
unpinned with N workers, wrk unpinned with one thread per CPU this process
may use, --conns (64) connections, --duration (5) s per route, --rounds
(3) rounds with the order of kinds rotating from round to round; a figure
is the median over rounds, a ratio the median of the within-round ratios.
Every server first gets --warmup (2) s of wrk on every route (thousands of
requests over the sampled paths, so every process has loaded and touched
its index), then its memory is read: RSS and PSS summed over the server's
whole process tree (parent and children, /proc/PID/smaps_rollup), and
index_bytes from /stats.  /tmp/BENCH_RUNNING exists while measuring.

Targets checked (reported met / not met): pyparallel's tree RSS <=
1.2 x index bytes + N x 20 MB; at 5M titles (synthetic) pyparallel's RSS
<= 0.6 x gunicorn sync's; /offsets rps >= 2 x gunicorn sync and >= 1.2 x
granian WSGI; /wiki rps >= 1.2 x granian WSGI.

    .venv/bin/python bench/bench_wiki.py                                   # GCIDE, N=2
    .venv/bin/python bench/bench_wiki.py --corpora gcide,synthetic --chart # both, + docs/bench-wiki.svg
    .venv/bin/python bench/bench_wiki.py --corpora synthetic --synthetic 5000000 --rounds 3 --duration 5
    .venv/bin/python bench/bench_wiki.py --quick                           # smoke: 1 round of 1 s
    .venv/bin/python bench/bench_wiki.py --report bench/results/wiki-....json --chart

Output: markdown tables on stdout, JSON in bench/results/wiki-<python>-<date>.json
(or --json-out), progress on stderr.
"""

import http.client
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

from sysinfo import cpus_usable, fmt_rate, log, machine_facts, median, save_json, tree
from bench_http import (WRK_DONE, ServerError, ServerProcess, _on_signal, free_port,
                        peer_versions, raise_nofile, run_accounted, run_setup, stop_all)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APPS = os.path.join(HERE, "wiki_apps")
BUSY_FLAG = "/tmp/BENCH_RUNNING"

KINDS = ["pyparallel", "gunicorn-sync", "gunicorn-gthread", "granian-wsgi"]
LABELS = {"pyparallel": "pyparallel wiki (native)", "gunicorn-sync": "gunicorn sync",
          "gunicorn-gthread": "gunicorn gthread", "granian-wsgi": "granian WSGI"}
PEER_MODULES = {"gunicorn-sync": ["gunicorn"], "gunicorn-gthread": ["gunicorn"],
                "granian-wsgi": ["granian"]}
ROUTES = ["offsets", "wiki"]
ROUTE_LABELS = {"offsets": "/offsets/<prefix>", "wiki": "/wiki/<title>"}
MB = 1 << 20
SYNTH_VERSION = 1

WRK_ROTATE = r"""
local counter = 0
setup = function(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

init = function(args)
  paths = {}
  n = 0
  for line in io.lines(args[1]) do
    n = n + 1
    paths[n] = line
  end
  idx = ((tid or 0) * 7919) % n
end

request = function()
  idx = idx % n + 1
  return wrk.format("GET", paths[idx])
end
""" + WRK_DONE


# --------------------------------------------------------------------------
# The synthetic corpus.

_CONS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
         "ñ", "ž", "ł", "λ", "д", "ç"]
_VOWS = ["a", "e", "i", "o", "u", "é"]
_SYLL = [c + v for c in _CONS for v in _VOWS]          # 120 CV syllables: uniquely decodable


def _vocabulary():
    """14,400 distinct two-syllable pseudo-words (some with Unicode letters)."""
    return [a + b for a in _SYLL for b in _SYLL]


def synthetic_title(i, words):
    """The i-th synthetic title: a bijection i -> (a, b) over V*V word pairs
    makes every title unique; some get a third word or a parenthesised one."""
    v = len(words)
    j = (i * 1000003 + 12345) % (v * v)
    a, b = divmod(j, v)
    t = words[a][:1].upper() + words[a][1:] + " " + words[b]
    r = i % 13
    if r == 5:
        t += " " + words[(a * 7 + b) % v]
    elif r == 9:
        t += " (" + words[(a + b * 3) % v] + ")"
    return t


def synthetic_dump(n, cache_dir):
    """Path of the synthetic export with n titles, written once (atomically)."""
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"synthetic-{n}-pages-articles.xml")
    meta = path + ".json"
    want = {"titles": n, "version": SYNTH_VERSION}
    if os.path.exists(path) and os.path.exists(meta):
        try:
            with open(meta) as f:
                if json.load(f) == want:
                    return path
        except (OSError, ValueError):
            pass
    log(f"writing a SYNTHETIC MediaWiki export of {n:,} titles to {path}")
    t0 = time.monotonic()
    words = _vocabulary()
    head = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.10/ '
            'http://www.mediawiki.org/xml/export-0.10.xsd" version="0.10" xml:lang="en">\n'
            '  <siteinfo>\n    <sitename>Synthetic</sitename>\n    <dbname>synthetic</dbname>\n'
            '    <base>https://synthetic.invalid/wiki/Main_Page</base>\n'
            '    <generator>pyparallel bench/bench_wiki.py (synthetic)</generator>\n'
            '    <case>first-letter</case>\n    <namespaces>\n'
            '      <namespace key="0" case="first-letter" />\n    </namespaces>\n  </siteinfo>\n')
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(head)
        out = []
        for i in range(n):
            title = synthetic_title(i, words)
            if i % 10 == 9:                         # redirect to the (non-redirect) page before
                target = synthetic_title(i - 1, words)
                text = f"#REDIRECT [[{target}]]"
                red = f'    <redirect title="{target}" />\n'
            else:
                other = synthetic_title((i * 31 + 7) % n, words)
                text = (f"'''{title}''' is synthetic page {i + 1} of the pyparallel wiki "
                        f"benchmark. See also [[{other}]].")
                red = ""
            out.append(f"  <page>\n    <title>{title}</title>\n    <ns>0</ns>\n    <id>{i + 1}</id>\n"
                       f"{red}    <revision>\n      <id>{i + 1}</id>\n"
                       f'      <text bytes="{len(text.encode())}" xml:space="preserve">{text}</text>\n'
                       f"    </revision>\n  </page>\n")
            if len(out) >= 50000:
                f.write("".join(out))
                out.clear()
        f.write("".join(out))
        f.write("</mediawiki>\n")
    os.replace(tmp, path)
    with open(meta, "w") as f:
        json.dump(want, f)
    log(f"  written in {time.monotonic() - t0:.1f} s, {os.path.getsize(path) / 1e9:.2f} GB")
    return path


# --------------------------------------------------------------------------
# Index: build time, load time, sampled paths and their expected answers.

BUILD_CODE = r"""
import json, os, sys, time
from pyparallel import wiki, _pyparallel as pp
dump = sys.argv[1]
t0 = time.monotonic()
image = wiki.build_index(dump, progress=wiki.Progress("", os.path.getsize(dump), enabled=False))
build_s = time.monotonic() - t0
path = wiki.index_path_of(dump)
saved = False
try:
    with open(path, "rb") as f:
        fresh = f.read() == image
except OSError:
    fresh = False
if not fresh:
    with open(path + ".tmp", "wb") as f:
        f.write(image)
    os.replace(path + ".tmp", path)
    saved = True
del image
t0 = time.monotonic()
image, xml = wiki.load_index(dump, log=lambda m: None)
load_s = time.monotonic() - t0
info = pp.wiki_info(image)
print(json.dumps({"build_s": round(build_s, 3), "load_s": round(load_s, 3), "saved": saved,
                  "info": {k: v for k, v in info.items()}, "xml": xml}))
"""


def index_facts(dump):
    r = subprocess.run([sys.executable, "-c", BUILD_CODE, dump], capture_output=True, text=True,
                       cwd=tempfile.gettempdir(), timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"bench_wiki: indexing {dump} failed: {r.stderr.strip()[-800:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    info = out["info"]
    out["index_bytes"] = info["bytes"]
    out["bytes_per_title"] = info["bytes"] / max(info["titles"], 1)
    return out


def quote_title(s):
    return urllib.parse.quote(s.replace(" ", "_"), safe="")


def sample_paths(dump, n, limit, seed):
    """{route: [(path, expected)]}: n /offsets and n /wiki paths from the index."""
    from pyparallel import _pyparallel as pp
    from pyparallel import wiki
    image, _xml = wiki.load_index(dump, log=lambda m: None)
    titles = pp.wiki_info(image)["titles"]
    rng = random.Random(seed)
    offs, pages, seen = [], [], set()
    tries = 0
    while (len(offs) < n or len(pages) < n) and tries < 50 * n:
        tries += 1
        name, start, length, redirect = pp.wiki_page(image, rng.randrange(titles))
        if len(pages) < n and redirect < 0:
            pages.append(("/wiki/" + quote_title(name), {"length": length, "title": name}))
        if len(offs) < n:
            k = rng.randint(3, 5)
            prefix = name[:k]
            if len(prefix) >= 3 and prefix.strip() == prefix and prefix not in seen:
                seen.add(prefix)
                rows, total = pp.wiki_offsets(image, prefix, limit)
                offs.append((f"/offsets/{urllib.parse.quote(prefix, safe='')}?limit={limit}",
                             {"rows": [list(r) for r in rows], "total": total}))
    del image
    return {"offsets": offs, "wiki": pages}


# --------------------------------------------------------------------------
# Servers.


def peer_pythonpath(tmpdir):
    """A folder holding only a link to .venv's installed pyparallel package."""
    import pyparallel
    d = os.path.join(tmpdir, "pyparallel-link")
    if not os.path.isdir(d):
        os.makedirs(d)
        os.symlink(os.path.dirname(pyparallel.__file__), os.path.join(d, "pyparallel"))
    return d


def server_command(kind, port, dump, args, tmpdir):
    host, n = args.host, str(args.workers)
    env = dict(os.environ)
    bindir = os.path.join(args.peer_venv, "bin")
    if kind == "pyparallel":
        return ([sys.executable, "-m", "pyparallel.wiki", "--dump", dump, "--bind",
                 f"{host}:{port}", "--workers", n], env, tempfile.gettempdir())
    env["PYPARALLEL_WIKI_DUMP"] = dump
    env["PYTHONPATH"] = peer_pythonpath(tmpdir)
    if kind.startswith("gunicorn-"):
        k = kind.split("-", 1)[1]
        cmd = [os.path.join(bindir, "gunicorn"), "-w", n, "-k", k, "-b", f"{host}:{port}",
               "--backlog", str(args.backlog), "--graceful-timeout", "1",
               "--log-level", "warning", "--chdir", APPS]
        if k == "gthread":
            cmd += ["--threads", str(args.gthread_threads)]
        return cmd + ["wiki_app:app"], env, APPS
    if kind == "granian-wsgi":
        cmd = [os.path.join(bindir, "granian"), "--interface", "wsgi", "--host", host,
               "--port", str(port), "--workers", n, "--http", "1", "--no-ws",
               "--runtime-threads", "1", "--runtime-mode", "mt", "--backlog", str(args.backlog),
               "--log-level", "warning", "--working-dir", APPS]
        if args.granian_blocking_threads:
            cmd += ["--blocking-threads", str(args.granian_blocking_threads)]
        return cmd + ["wiki_app:app"], env, APPS
    raise ValueError(kind)


def http_get(host, port, path, timeout=10.0, conn=None):
    c = conn or http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": "localhost"})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        if conn is None:
            c.close()


class Server(ServerProcess):
    """The wiki app on one server, ready when every worker has answered."""

    def __init__(self, kind, dump, args, tmpdir):
        port = free_port(args.host)
        cmd, env, cwd = server_command(kind, port, dump, args, tmpdir)
        t0 = time.monotonic()
        self._spawn(kind, args.host, port, cmd, env, cwd, tmpdir)
        try:
            self.stats = self._wait_ready(args.start_timeout, args.workers)
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.monotonic() - t0

    def _wait_ready(self, timeout, workers):
        """Polls /stats until it answers; for process-per-worker servers
        until N distinct worker pids have answered (every worker loaded)."""
        deadline = time.monotonic() + timeout
        last, pids, stats = None, set(), None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.kind} exited with {self.proc.returncode} at start: "
                                  f"{self.log_tail()}")
            try:
                status, _h, body = http_get(self.host, self.port, "/stats", timeout=5)
                if status == 200:
                    stats = json.loads(body)
                    if "pid" not in stats:
                        return stats
                    pids.add(stats["pid"])
                    if len(pids) >= workers:
                        return stats
                    continue
            except (OSError, http.client.HTTPException, ValueError) as e:
                last = e
            time.sleep(0.1)
        if stats is not None:
            return stats            # answering; not every worker seen (kernel picks)
        raise ServerError(f"{self.kind} did not answer on port {self.port} within {timeout:g} s "
                          f"({type(last).__name__}: {last}): {self.log_tail()}")


def tree_memory(root):
    """{rss, pss, pss_anon, pss_file, pss_shmem, processes}: summed over root's
    process tree, from /proc/PID/smaps_rollup (bytes)."""
    keys = {"Rss:": "rss", "Pss:": "pss", "Pss_Anon:": "pss_anon", "Pss_File:": "pss_file",
            "Pss_Shmem:": "pss_shmem"}
    out = {v: 0 for v in keys.values()}
    pids = tree(root)
    out["processes"] = len(pids)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    parts = line.split()
                    if parts and parts[0] in keys:
                        out[keys[parts[0]]] += int(parts[1]) * 1024
        except OSError:
            out["processes"] -= 1
    return out


def check_answers(srv, samples, count=20):
    """Problems found in count answers of each route (empty: all right)."""
    problems = []
    c = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    try:
        for route in ROUTES:
            for path, want in samples[route][:count]:
                try:
                    status, h, body = http_get(srv.host, srv.port, path, conn=c)
                except (OSError, http.client.HTTPException) as e:
                    c.close()
                    c = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
                    problems.append(f"GET {path}: {type(e).__name__}: {e}")
                    continue
                if status != 200:
                    problems.append(f"GET {path}: status {status}: {body[:120]!r}")
                elif route == "wiki":
                    if len(body) != want["length"] or not body.lstrip().startswith(b"<page>"):
                        problems.append(f"GET {path}: {len(body)} bytes {body[:40]!r}, "
                                        f"not the {want['length']}-byte page")
                else:
                    try:
                        rows = json.loads(body)
                    except ValueError:
                        rows = None
                    if rows != want["rows"]:
                        problems.append(f"GET {path}: {body[:120]!r}, not {want['rows'][:2]}...")
                if len(problems) >= 3:
                    return problems
    finally:
        c.close()
    return problems


def run_wrk(srv, route, paths_file, conns, duration, threads, timeout):
    url = f"http://{srv.host}:{srv.port}/"
    cmd = ["wrk", "-H", "Host: localhost", "-H", "Connection: keep-alive", "--latency",
           "-d", f"{duration}s", "-c", str(conns), "-t", str(max(1, min(threads, conns))),
           "--timeout", "8", "-s", paths_file["script"], url, "--", paths_file[route]]
    r, acct = run_accounted(cmd, timeout, None, srv.cpu)
    if r is None:
        return {"error": f"wrk timed out after {timeout} s", "cmd": cmd}
    line = next((x for x in r.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        return {"error": f"wrk exit {r.returncode}: {(r.stderr or r.stdout).strip()[-400:]}",
                "cmd": cmd}
    w = json.loads(line[len("WRK_JSON "):])
    secs = w["duration_us"] / 1e6 or acct["wall_s"]
    errors = {k: int(w[k]) for k in ("connect", "read", "write", "timeout", "status")}
    sc = acct["server_cpu_s"]
    out = {"requests": int(w["requests"]), "rps": w["requests"] / secs, "duration_s": round(secs, 3),
           "bytes": int(w["bytes"]), "mb_per_s": w["bytes"] / secs / 1e6,
           "server_cpu_s": sc, "wrk_cpu_s": acct["client_cpu_s"],
           "server_cpus": round(sc / secs, 3), "other_cpus": acct["other_cpus"],
           "steal_cpus": acct["steal_cpus"],
           "req_per_cpu_s": w["requests"] / sc if sc > 0 else None,
           "lat_us": {"p50": w["p50_us"], "p99": w["p99_us"], "max": w["max_us"]},
           "errors": errors, "error_total": sum(errors.values())}
    out["flagged"] = out["error_total"] > 0 or out["requests"] == 0
    return out


def run_one(kind, corpus, rnd, args, tmpdir, res):
    c = res["corpora"][corpus]
    key = f"{corpus}/{kind}"
    try:
        srv = Server(kind, c["dump"], args, tmpdir)
    except ServerError as e:
        log(f"  {kind}: {e}")
        res["errors"].setdefault(key, []).append(f"round {rnd + 1}: {e}")
        return
    try:
        res["commands"][kind] = srv.cmd
        problems = check_answers(srv, c["samples_obj"])
        if problems:
            why = "wrong answers: " + "; ".join(problems)
            log(f"  {kind}: {why}; dropped")
            res["not_available"][key] = why
            return
        threads = cpus_usable()
        if args.warmup:
            for route in args.routes:
                run_wrk(srv, route, c["files"], args.conns, args.warmup, threads, args.warmup + 60)
        time.sleep(0.3)
        mem = tree_memory(srv.proc.pid)
        try:
            st = json.loads(http_get(srv.host, srv.port, "/stats")[2])
            index_bytes = st.get("index_bytes")
        except (OSError, http.client.HTTPException, ValueError):
            index_bytes = None
        rec = {"round": rnd, "kind": kind, "corpus": corpus, "mem": mem,
               "index_bytes": index_bytes, "ready_s": round(srv.ready_s, 3), "routes": {}}
        line = [f"  {kind:<17} ready {srv.ready_s:5.1f} s  RSS {mem['rss'] / MB:7.1f} MB  "
                f"PSS {mem['pss'] / MB:7.1f} MB ({mem['processes']} procs)"]
        for route in args.routes:
            out = run_wrk(srv, route, c["files"], args.conns, args.duration, threads,
                          args.duration + 60)
            rec["routes"][route] = out
            if "error" in out:
                line.append(f"{route} error: {out['error']}")
                res["errors"].setdefault(key, []).append(f"round {rnd + 1} {route}: {out['error']}")
            else:
                e = out["errors"]
                errs = (" ERRORS " + ",".join(f"{k} {v}" for k, v in e.items() if v)
                        if out["flagged"] else "")
                line.append(f"{route} {out['rps']:,.0f}/s p99 {out['lat_us']['p99'] / 1000:.1f} ms"
                            f"{errs}")
            if not srv.alive():
                raise ServerError(f"{kind} died: {srv.log_tail()}")
        rec["mem_after"] = tree_memory(srv.proc.pid)
        res["runs"].append(rec)
        log("  ".join(line))
    except ServerError as e:
        log(f"  {e}")
        res["errors"].setdefault(key, []).append(f"round {rnd + 1}: {e}")
    finally:
        srv.stop()


# --------------------------------------------------------------------------
# Summary, targets, tables.

def summarize(res):
    summ, ratios = {}, {}
    for corpus in res["corpora"]:
        by = {}
        for r in res["runs"]:
            if r["corpus"] == corpus:
                by.setdefault(r["kind"], {})[r["round"]] = r
        s = summ.setdefault(corpus, {})
        for kind, runs in by.items():
            rs = list(runs.values())
            d = {"rss": median([r["mem"]["rss"] for r in rs]),
                 "pss": median([r["mem"]["pss"] for r in rs]),
                 "pss_anon": median([r["mem"]["pss_anon"] for r in rs]),
                 "rss_after": median([r["mem_after"]["rss"] for r in rs]),
                 "pss_after": median([r["mem_after"]["pss"] for r in rs]),
                 "processes": max(r["mem"]["processes"] for r in rs),
                 "index_bytes": next((r["index_bytes"] for r in rs if r["index_bytes"]), None),
                 "ready_s": median([r["ready_s"] for r in rs]), "routes": {}}
            for route in res["params"]["routes"]:
                ok = [r["routes"][route] for r in rs
                      if route in r["routes"] and "error" not in r["routes"][route]]
                if not ok:
                    continue
                rates = [o["rps"] for o in ok]
                d["routes"][route] = {
                    "rps_median": median(rates), "rps_min": min(rates), "rps_max": max(rates),
                    "rps": rates, "p99_us": median([o["lat_us"]["p99"] for o in ok]),
                    "server_cpus": median([o["server_cpus"] for o in ok]),
                    "req_per_cpu_s": median([o["req_per_cpu_s"] for o in ok if o["req_per_cpu_s"]]),
                    "errors": sum(o["error_total"] for o in ok),
                    "flagged": sum(1 for o in ok if o["flagged"])}
            s[kind] = d
        rr = ratios.setdefault(corpus, {})
        pp = by.get("pyparallel", {})
        for other in by:
            if other == "pyparallel":
                continue
            for route in res["params"]["routes"]:
                per, eff = [], []
                for i in sorted(set(pp) & set(by[other])):
                    a, b = pp[i]["routes"].get(route, {}), by[other][i]["routes"].get(route, {})
                    if a.get("rps") and b.get("rps"):
                        per.append(a["rps"] / b["rps"])
                    if a.get("req_per_cpu_s") and b.get("req_per_cpu_s"):
                        eff.append(a["req_per_cpu_s"] / b["req_per_cpu_s"])
                if per:
                    rr[f"{route}:pyparallel/{other}"] = {"ratio": median(per), "per_round": per,
                                                         "cpu_ratio": median(eff) if eff else None}
            mem = [pp[i]["mem"]["rss"] / by[other][i]["mem"]["rss"]
                   for i in sorted(set(pp) & set(by[other])) if by[other][i]["mem"]["rss"]]
            if mem:
                rr[f"rss:pyparallel/{other}"] = {"ratio": median(mem), "per_round": mem}
    res["summary"], res["ratios"] = summ, ratios
    res["targets"] = targets(res)


def targets(res):
    out = {}
    n = res["params"]["workers"]
    for corpus, s in res["summary"].items():
        t = []
        rr = res["ratios"].get(corpus, {})
        pp = s.get("pyparallel")
        ib = (pp or {}).get("index_bytes") or res["corpora"][corpus]["index"]["index_bytes"]
        if pp:
            bound = 1.2 * ib + n * 20 * MB
            t.append({"target": f"pyparallel RSS <= 1.2 x index ({ib / MB:.1f} MB) + {n} x 20 MB "
                                f"= {bound / MB:.1f} MB", "value": f"{pp['rss'] / MB:.1f} MB",
                      "met": pp["rss"] <= bound})
            t.append({"target": f"pyparallel PSS <= {bound / MB:.1f} MB (the same bound)",
                      "value": f"{pp['pss'] / MB:.1f} MB", "met": pp["pss"] <= bound})
        titles = res["corpora"][corpus]["index"]["info"]["titles"]
        r = rr.get("rss:pyparallel/gunicorn-sync")
        if r:
            applies = titles >= 5_000_000 and n == 2
            t.append({"target": "pyparallel RSS <= 0.6 x gunicorn sync RSS"
                                + ("" if applies else " (stated for N=2 and 5M titles; "
                                                      "shown for reference)"),
                      "value": f"{r['ratio']:.2f} x", "met": r["ratio"] <= 0.6,
                      "applies": applies})
        for key, bound, label in (("offsets:pyparallel/gunicorn-sync", 2.0, "/offsets rps >= 2 x gunicorn sync"),
                                  ("offsets:pyparallel/granian-wsgi", 1.2, "/offsets rps >= 1.2 x granian WSGI"),
                                  ("wiki:pyparallel/granian-wsgi", 1.2, "/wiki rps >= 1.2 x granian WSGI")):
            r = rr.get(key)
            if r:
                t.append({"target": label, "value": f"{r['ratio']:.2f} x", "met": r["ratio"] >= bound})
        out[corpus] = t
    return out


def corpus_title(res, corpus):
    c = res["corpora"][corpus]
    info = c["index"]["info"]
    what = ("GCIDE (Debian dict-gcide as a MediaWiki export)" if corpus == "gcide"
            else f"SYNTHETIC export, {info['titles']:,} generated titles")
    return what, info


def report(res, out=sys.stdout):
    def w(s=""):
        print(s, file=out)
    p = res["params"]
    m = res["machine"]
    w(f"Machine: {m['cpu_model']}, {m['cpus']} CPUs, {m['mem_total'] / 2**30:.0f} GiB, "
      f"Linux {m['kernel']}, CPython {m['python']}; pyparallel {m['pyparallel'].get('repo_commit')}; "
      f"wrk {res['versions'].get('wrk')}, gunicorn {res['versions'].get('gunicorn')}, "
      f"granian {res['versions'].get('granian')} (peers on CPython {res['versions'].get('peer_python')})")
    w(f"Each server with {p['workers']} workers, unpinned; wrk unpinned, {p['cpus']} threads, "
      f"{p['conns']} connections, {p['duration']} s per route, {p['rounds']} rounds, "
      f"{p['warmup']} s warm-up per route; /offsets with ?limit={p['offsets_limit']}; "
      f"gunicorn gthread --threads {p['gthread_threads']}; granian --blocking-threads "
      f"{p['granian_blocking_threads'] or 'default'}")
    w()
    w("| corpus | titles | pages | redirects | dump | index | bytes per title | build | load saved |")
    w("|---|---|---|---|---|---|---|---|---|")
    for corpus in res["corpora"]:
        what, info = corpus_title(res, corpus)
        ix = res["corpora"][corpus]["index"]
        w(f"| {what} | {info['titles']:,} | {info['pages']:,} | {info['redirects']:,} "
          f"| {info['dump_size'] / 1e6:,.0f} MB | {ix['index_bytes'] / MB:.1f} MB "
          f"| {ix['bytes_per_title']:.1f} | {ix['build_s']:.2f} s | {ix['load_s']:.2f} s |")
    for corpus, s in res["summary"].items():
        what, info = corpus_title(res, corpus)
        w()
        w(f"### {what}")
        w()
        w("| server | processes | RSS | PSS | PSS anon | RSS after load | " +
          " | ".join(f"{ROUTE_LABELS[r]} req/s (min-max) | req/CPU-s | p99" for r in p["routes"]) + " |")
        w("|---|---|---|---|---|---|" + "---|---|---|" * len(p["routes"]))
        for kind in p["kinds"]:
            d = s.get(kind)
            if not d:
                why = res["not_available"].get(f"{corpus}/{kind}") or \
                    (res["errors"].get(f"{corpus}/{kind}") or ["not measured"])[0]
                w(f"| {LABELS[kind]} | {why[:200]} |" + " |" * (4 + 3 * len(p["routes"])))
                continue
            cells = []
            for r in p["routes"]:
                x = d["routes"].get(r)
                if not x:
                    cells += ["-", "-", "-"]
                    continue
                flag = f" ⚠ {x['errors']} errors" if x["errors"] else ""
                others = [rn["routes"][r].get("other_cpus", 0) for rn in res["runs"]
                          if rn["corpus"] == corpus and rn["kind"] == kind and r in rn["routes"]]
                if others and median(others) >= 0.2:
                    flag += "*"
                cells += [f"**{fmt_rate(x['rps_median'])}** ({fmt_rate(x['rps_min'])}–"
                          f"{fmt_rate(x['rps_max'])}){flag}",
                          f"{fmt_rate(x['req_per_cpu_s'])} ({x['server_cpus']:.2f} CPU)",
                          f"{x['p99_us'] / 1000:.1f} ms" if x["p99_us"] else "-"]
            w(f"| {LABELS[kind]} | {d['processes']} | {d['rss'] / MB:.1f} MB | {d['pss'] / MB:.1f} MB "
              f"| {d['pss_anon'] / MB:.1f} MB | {d['rss_after'] / MB:.1f} MB | " + " | ".join(cells) + " |")
        rr = res["ratios"].get(corpus, {})
        if rr:
            w()
            w("| pyparallel ÷ | " + " | ".join(f"{ROUTE_LABELS[r]} req/s (per CPU-s)"
                                                for r in p["routes"]) + " | RSS |")
            w("|---|" + "---|" * (len(p["routes"]) + 1))
            for kind in p["kinds"][1:]:
                cells = []
                for r in p["routes"] + ["rss"]:
                    x = rr.get(f"{r}:pyparallel/{kind}")
                    if not x:
                        cells.append("-")
                    elif x.get("cpu_ratio"):
                        cells.append(f"{x['ratio']:.2f} ({x['cpu_ratio']:.2f})")
                    else:
                        cells.append(f"{x['ratio']:.2f}")
                w(f"| {LABELS[kind]} | " + " | ".join(cells) + " |")
        t = res["targets"].get(corpus, [])
        if t:
            w()
            w("| target | measured | |")
            w("|---|---|---|")
            for x in t:
                verdict = "met" if x["met"] else "**not met**"
                if x.get("applies") is False:
                    verdict += " (reference)"
                w(f"| {x['target']} | {x['value']} | {verdict} |")
    w()
    w("Requests/s: median over rounds (lowest–highest); ⚠ n: wrk counted n errors; *: other "
      "processes used >= 0.2 CPUs meanwhile (median over rounds); req/CPU-s: requests per "
      "CPU-second of the server's process tree (CPUs it used).  RSS, PSS: summed over the "
      "server's process tree after the warm-up; RSS after load: after the measured routes.")
    for k, why in res["not_available"].items():
        w(f"- {k}: not measured: {why}")
    for k, errs in res["errors"].items():
        w(f"- {k}: {len(errs)} error(s); first: {errs[0][:400]}")


def chart(res, path):
    if path:
        from wiki_chart import write_svg
        write_svg(res, path)
        log(f"chart: {path}")


# --------------------------------------------------------------------------

def main():
    ncpu = cpus_usable()
    ap = argparse_parser(ncpu)
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            res = json.load(f)
        summarize(res)
        report(res)
        chart(res, args.chart)
        return
    if args.quick:
        args.rounds, args.duration, args.warmup, args.sample = 1, 1, 1, min(args.sample, 500)
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    kinds, corpora, routes = split(args.kinds), split(args.corpora), split(args.routes)
    for k in kinds:
        if k not in KINDS:
            ap.error(f"unknown kind {k!r}; the kinds are {', '.join(KINDS)}")
    for c in corpora:
        if c not in ("gcide", "synthetic"):
            ap.error(f"unknown corpus {c!r}: gcide or synthetic")
    for r in routes:
        if r not in ROUTES:
            ap.error(f"unknown route {r!r}: offsets or wiki")
    if "pyparallel" in kinds:
        kinds = ["pyparallel"] + [k for k in kinds if k != "pyparallel"]
    args.routes = routes
    args.peer_venv = os.path.abspath(args.peer_venv)
    args.cache_dir = os.path.expanduser(args.cache_dir)
    nofile = raise_nofile(4096)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)

    res = {"not_available": {}, "errors": {}, "runs": [], "commands": {}, "corpora": {}}
    machine, now = machine_facts(ROOT)
    peers, peer_py = peer_versions(args)
    need = [m for k in kinds for m in PEER_MODULES.get(k, []) if not peers.get(m)]
    if (need or not shutil.which("wrk")) and not args.no_setup:
        run_setup(args)
        peers, peer_py = peer_versions(args)
    if not shutil.which("wrk"):
        sys.exit("bench_wiki: wrk is not installed (bench/setup_http.sh; apt-get install wrk)")
    for k in list(kinds):
        gone = [m for m in PEER_MODULES.get(k, []) if not peers.get(m)]
        if gone:
            log(f"{k}: not measured: {', '.join(gone)} not importable in {args.peer_venv}")
            res["not_available"][k] = f"{', '.join(gone)} not in {args.peer_venv}"
            kinds.remove(k)
    if peer_py and peer_py != machine["python"]:
        log(f"note: the peers run CPython {peer_py}, pyparallel CPython {machine['python']}")
    try:
        wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1]
    except (OSError, IndexError):
        wrk_v = None
    res.update({
        "machine": machine, "date": now.isoformat(timespec="seconds"), "note": args.note,
        "versions": {"wrk": wrk_v, "peer_python": peer_py, **peers},
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "params": {"kinds": kinds, "corpora": corpora, "routes": routes, "workers": args.workers,
                   "conns": args.conns, "duration": args.duration, "warmup": args.warmup,
                   "rounds": args.rounds, "sample": args.sample, "seed": args.seed,
                   "offsets_limit": args.offsets_limit, "gthread_threads": args.gthread_threads,
                   "granian_blocking_threads": args.granian_blocking_threads,
                   "synthetic": args.synthetic, "cpus": ncpu, "backlog": args.backlog,
                   "rlimit_nofile": nofile,
                   "method": "bench_http all-cores: servers and wrk unpinned, wrk threads = CPUs"},
    })

    try:
        with tempfile.TemporaryDirectory(prefix="bench_wiki.") as tmpdir:
            with open(os.path.join(tmpdir, "rotate.lua"), "w") as f:
                f.write(WRK_ROTATE)
            for corpus in corpora:
                if corpus == "gcide":
                    from pyparallel import wiki
                    dump = wiki.default_dump(log=log)
                else:
                    dump = synthetic_dump(args.synthetic, os.path.join(args.cache_dir, "bench"))
                log(f"{corpus}: indexing {dump} (timed) ...")
                ix = index_facts(dump)
                info = ix["info"]
                log(f"  {info['titles']:,} titles, index {ix['index_bytes'] / MB:.1f} MB "
                    f"({ix['bytes_per_title']:.1f} B/title), built in {ix['build_s']:.2f} s, "
                    f"saved one loaded in {ix['load_s']:.2f} s")
                samples = sample_paths(dump, args.sample, args.offsets_limit, args.seed)
                files = {"script": os.path.join(tmpdir, "rotate.lua")}
                for route in ROUTES:
                    files[route] = os.path.join(tmpdir, f"{corpus}-{route}.txt")
                    with open(files[route], "w") as f:
                        f.write("".join(pth + "\n" for pth, _ in samples[route]))
                res["corpora"][corpus] = {
                    "dump": dump, "synthetic": corpus == "synthetic", "index": ix,
                    "samples": {r: len(samples[r]) for r in ROUTES},
                    "sample_paths": {r: [pth for pth, _ in samples[r][:5]] for r in ROUTES},
                    "samples_obj": samples, "files": files}
            open(BUSY_FLAG, "w").close()
            try:
                for corpus in corpora:
                    for rnd in range(args.rounds):
                        avail = [k for k in kinds if f"{corpus}/{k}" not in res["not_available"]]
                        order = avail[rnd % len(avail):] + avail[:rnd % len(avail)]
                        log(f"{corpus}, round {rnd + 1}/{args.rounds}: {', '.join(order)}")
                        for kind in order:
                            run_one(kind, corpus, rnd, args, tmpdir, res)
            finally:
                try:
                    os.unlink(BUSY_FLAG)
                except FileNotFoundError:
                    pass
    finally:
        stop_all()
    for c in res["corpora"].values():
        c.pop("samples_obj", None)
        c.pop("files", None)
    summarize(res)
    path = args.json_out
    if path is None:
        path = os.path.join(HERE, "results",
                            f"wiki-{machine['python']}-{now.strftime('%Y%m%d-%H%M%S')}.json")
    if path:
        save_json(res, path)
    print()
    report(res)
    chart(res, args.chart)


def argparse_parser(ncpu):
    import argparse
    ap = argparse.ArgumentParser(
        description="pyparallel's wiki server (one shared frozen index) vs gunicorn and granian "
                    "WSGI (an index per process), with wrk")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"servers ({','.join(KINDS)})")
    ap.add_argument("--corpora", default="gcide", help="gcide,synthetic (default gcide)")
    ap.add_argument("--synthetic", type=int, default=5_000_000,
                    help="titles of the synthetic corpus (5000000)")
    ap.add_argument("--cache-dir", default="~/.cache/pyparallel",
                    help="the synthetic export goes in DIR/bench/ (~/.cache/pyparallel)")
    ap.add_argument("--routes", default=",".join(ROUTES), help="offsets,wiki (both)")
    ap.add_argument("--workers", type=int, default=2, help="workers of every server (2)")
    ap.add_argument("--gthread-threads", type=int, default=4, help="gunicorn gthread --threads (4)")
    ap.add_argument("--granian-blocking-threads", type=int, default=None,
                    help="granian --blocking-threads (default: granian's own)")
    ap.add_argument("--conns", type=int, default=64, help="wrk connections (64)")
    ap.add_argument("--duration", type=int, default=5, help="seconds per route (5)")
    ap.add_argument("--warmup", type=int, default=2,
                    help="seconds of wrk per route after every start, before memory is read (2)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    ap.add_argument("--sample", type=int, default=4000, help="paths per route (4000)")
    ap.add_argument("--seed", type=int, default=1, help="sampling seed (1)")
    ap.add_argument("--offsets-limit", type=int, default=20, help="/offsets ?limit= (20)")
    ap.add_argument("--backlog", type=int, default=1024, help="peers' listen backlog (1024)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--start-timeout", type=float, default=180.0,
                    help="seconds a server may take to load its index(es) and answer (180)")
    ap.add_argument("--peer-venv", default=os.path.join(ROOT, ".venv-bench"))
    ap.add_argument("--no-setup", action="store_true", help="never run bench/setup_http.sh")
    ap.add_argument("--json-out", default=None,
                    help="default bench/results/wiki-<python>-<date>.json; '' for none")
    ap.add_argument("--report", default=None, metavar="JSON", help="print a saved run's tables")
    ap.add_argument("--chart", nargs="?", const=os.path.join(ROOT, "docs", "bench-wiki.svg"),
                    default=None, metavar="PATH", help="write an SVG (docs/bench-wiki.svg)")
    ap.add_argument("--note", default=None)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 s, 1 s warm-up")
    return ap


if __name__ == "__main__":
    main()
