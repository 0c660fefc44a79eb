#!/usr/bin/env python3
"""bench_io.py -- pyparallel's echo server against its peers, side by side in one run.

Server kinds (bench/echo_peers.py starts each in a process of its own):
  pyparallel       pyparallel.server(..., Echo): data_received is Python, run by
                   the worker interpreters (--workers, default pyparallel's own)
  pyparallel-c     the same engine echoing in C (_native="echo"): no Python per
                   read.  The ceiling for the Python-callback server.
  uvloop-1proc     asyncio + uvloop, one process
  uvloop-per-core  asyncio + uvloop, --procs processes (default: one per CPU)
                   with SO_REUSEPORT listeners on one port

Measurements, made by bench/echo_load.c (a C epoll load generator, built here
with cc into a temporary directory):
  rr-N      echo round trips per second over N connections (--conns, default
            1 and 50), each doing ping-pong of a --size byte message
  connect   new connections per second: --connect-slots connections at a time,
            each connect, send --size bytes, read the echo, close (RST)
  idle      --idle-conns (10,000) connections opened, each echoing once, then
            held: the server's RSS increase / connections = bytes per
            connection (for --idle-kinds; RSS summed over the server's
            processes)

Every round starts each kind's server afresh and runs every rr and connect
measurement on it; the kinds take turns, in an order that rotates from round
to round (--rounds), so drifting load from outside falls on all of them alike.
A ratio (pyparallel / a peer) is the median over rounds of the ratio within a
round.  The load generator runs on the same CPUs as the server (--threads
client threads, default 1) unless --server-cpus / --loadgen-cpus pin them
apart: its CPU use and the server's are recorded for every measurement, with
the CPU that other processes used meanwhile (from /proc/stat); a measurement
during which others used >= --noise CPUs is marked '*' (and re-run up to
--retries times).  The server's CPU time per operation ("µs CPU") is the
fairer comparison when the load generator, not the server, is the limit.

Output: markdown tables on stdout, JSON in bench/results/io-<python>-<date>.json
(or --json-out), and with --chart an SVG bar chart (docs/bench-io.svg unless
a path is given).

    .venv/bin/python bench/bench_io.py                  # ~3 min on 2 cores
    .venv/bin/python bench/bench_io.py --quick          # smoke run, ~30 s
    .venv/bin/python bench/bench_io.py --rounds 5 --seconds 5 --chart
    .venv/bin/python bench/bench_io.py --kinds uvloop-1proc,uvloop-per-core --no-idle
    .venv/bin/python bench/bench_io.py --workers 8 --procs 8 --server-cpus 0-7 \
                                       --loadgen-cpus 8-15 --threads 8      # 16 cores
    .venv/bin/python bench/bench_io.py --report bench/results/io-3.13.0-....json --chart
"""

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

# bench/: the script's own folder is on sys.path
from sysinfo import (cpus_usable, fmt_rate, log, machine_facts, median, parse_cpus, pinned,
                     proc_cpu, proc_rss, run_accounted, sample_while, save_json, tree)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEERS = os.path.join(HERE, "echo_peers.py")
LOADGEN_SRC = os.path.join(HERE, "echo_load.c")

KINDS = ["pyparallel", "pyparallel-c", "uvloop-1proc", "uvloop-per-core",
         "pyparallel-shared", "pyparallel-uring"]
# Variants of the pyparallel server (not in the default run): one shared
# accept queue instead of a SO_REUSEPORT listener per worker, and the
# io_uring poller instead of epoll.
PP_KINDS = ("pyparallel", "pyparallel-c", "pyparallel-shared", "pyparallel-uring")
DEFAULT_KINDS = ["pyparallel", "pyparallel-c", "uvloop-1proc", "uvloop-per-core"]
LABELS = {"pyparallel": "pyparallel (Python callback)",
          "pyparallel-c": "pyparallel engine, C echo (ceiling)",
          "pyparallel-shared": "pyparallel, one shared accept queue",
          "pyparallel-uring": "pyparallel, io_uring poller",
          "uvloop-1proc": "asyncio+uvloop, 1 process",
          "uvloop-per-core": "asyncio+uvloop, 1 process per core"}
SHORT = {"pyparallel": "pyparallel", "pyparallel-c": "C ceiling",
         "pyparallel-shared": "shared accept", "pyparallel-uring": "io_uring",
         "uvloop-1proc": "uvloop 1 proc", "uvloop-per-core": "uvloop per core"}
BAR = {"pyparallel": "pyparallel", "pyparallel-c": "C",
       "pyparallel-shared": "shared", "pyparallel-uring": "uring",
       "uvloop-1proc": "uv ×1", "uvloop-per-core": "uv ×N"}
COLORS = {"pyparallel": "#d62728", "pyparallel-c": "#7f7f7f",
          "pyparallel-shared": "#ff9896", "pyparallel-uring": "#9467bd",
          "uvloop-1proc": "#1f77b4", "uvloop-per-core": "#2ca02c"}
# pyparallel / peer: the targets, for the rr (echo) measurements
TARGETS = {"pyparallel-c": 0.60, "uvloop-1proc": 3.0, "uvloop-per-core": 1.0}

# --------------------------------------------------------------------------
# Set-up: uvloop, the load generator, machine facts.

def ensure_uvloop():
    """Import uvloop, installing it into this interpreter's environment if
    missing.  Returns None, or why the uvloop kinds cannot run."""
    try:
        import uvloop  # noqa: F401
        return None
    except ImportError:
        pass
    log("uvloop is missing: python -m pip install uvloop")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "uvloop"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return "pip install uvloop failed: " + (r.stderr or r.stdout).strip()[-300:]
    import importlib
    importlib.invalidate_caches()
    try:
        import uvloop  # noqa: F401,F811
        return None
    except ImportError as e:
        return f"uvloop installed but does not import: {e}"


def build_loadgen(tmpdir):
    exe = os.path.join(tmpdir, "echo_load")
    cc = os.environ.get("CC", "cc")
    cmd = [cc, "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-pthread",
           "-o", exe, LOADGEN_SRC]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bench_io: building the load generator failed:\n{' '.join(cmd)}\n{r.stderr}")
    return exe


def machine_info():
    machine, now = machine_facts(ROOT)
    try:
        import uvloop
        machine["uvloop"] = uvloop.__version__
    except ImportError:
        machine["uvloop"] = None
    return machine, now


# --------------------------------------------------------------------------
# /proc: the kernel's TCP sockets.

def sockstat():
    """TCP sockets in use and the kernel's TCP memory (pages) from /proc/net/sockstat."""
    out = {}
    try:
        with open("/proc/net/sockstat") as f:
            for line in f:
                if line.startswith("TCP:"):
                    parts = line.split()[1:]
                    d = dict(zip(parts[::2], parts[1::2]))
                    out = {"tcp_inuse": int(d.get("inuse", 0)), "tcp_tw": int(d.get("tw", 0)),
                           "tcp_mem_pages": int(d.get("mem", 0))}
    except OSError:
        pass
    return out


# --------------------------------------------------------------------------
# Servers.

class ServerError(Exception):
    pass


class Server:
    """One echo server (a process tree), started by echo_peers.py."""

    def __init__(self, kind, args, tmpdir):
        self.kind = kind
        cmd = [sys.executable, PEERS]
        env = dict(os.environ)
        if kind in PP_KINDS:
            cmd.append("pyparallel-c" if kind == "pyparallel-c" else "pyparallel")
            if kind == "pyparallel-shared":
                cmd.append("--shared-accept")
            if kind == "pyparallel-uring":
                env["PYPARALLEL_LOOP"] = "io_uring"
            if args.workers:
                cmd += ["--workers", str(args.workers)]
        elif kind == "uvloop-1proc":
            cmd += ["uvloop", "--procs", "1"]
        elif kind == "uvloop-per-core":
            cmd += ["uvloop", "--procs", str(args.procs)]
        else:
            raise ValueError(kind)
        if args.unix:
            self.unix = os.path.join(tmpdir, f"{kind}.sock")
            cmd += ["--unix", self.unix]
        else:
            self.unix = None
            cmd += ["--host", args.host, "--port", "0"]
        self.cmd = cmd
        self.errpath = os.path.join(tmpdir, f"{kind}.stderr")
        self.err = open(self.errpath, "w+")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.err, text=True, env=env,
                                     start_new_session=True, cwd=tempfile.gettempdir(),
                                     preexec_fn=pinned(args.server_cpus))
        self.port = None
        deadline = time.monotonic() + args.start_timeout
        line = ""
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                line = self.proc.stdout.readline()
                break
            if self.proc.poll() is not None:
                break
        if not line.startswith("READY"):
            self.stop()
            raise ServerError(f"{kind} did not start"
                              f"{'' if self.proc.returncode is None else f' (exit {self.proc.returncode})'}"
                              f": {self.stderr_tail()}")
        self.port = line.split()[1]

    def target(self):
        return ["--unix", self.unix] if self.unix else ["--port", self.port]

    def pids(self):
        return tree(self.proc.pid)

    def cpu(self):
        return sum(proc_cpu(p) for p in self.pids())

    def rss(self):
        pids = self.pids()
        return sum(proc_rss(p) for p in pids), len(pids)

    def alive(self):
        return self.proc.poll() is None

    def stderr_tail(self, n=600):
        try:
            with open(self.errpath) as f:
                s = f.read()
        except OSError:
            return ""
        s = " | ".join(x for x in s.strip().splitlines() if not x.startswith("STATS "))
        return s[-n:] or "(no stderr)"

    def stats(self):
        """The STATS line the pyparallel servers print at exit."""
        try:
            with open(self.errpath) as f:
                for line in f:
                    if line.startswith("STATS "):
                        return json.loads(line[6:])
        except (OSError, ValueError):
            pass
        return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                log(f"  {self.kind}: no exit 15 s after SIGTERM; killing its process group")
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.err.close()
        return self.proc.returncode


# --------------------------------------------------------------------------
# Measurements.

def run_loadgen(exe, mode, server, extra, timeout, cpus=None):
    """Run echo_load once; returns its JSON with the CPU accounting added."""
    cmd = [exe, mode, *server.target(), *extra]
    r, acct = run_accounted(cmd, timeout, cpus, server.cpu)
    if r is None:
        return {"error": f"load generator timed out after {timeout} s"}
    lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
    try:
        out = json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"error": f"load generator: exit {r.returncode}: {r.stderr.strip()[-300:]}"}
    server_cpu = acct["server_cpu_s"]
    out["wall_s"] = acct["wall_s"]
    out["server_cpu_s"] = server_cpu
    out["loadgen_cpu_s"] = acct["client_cpu_s"]
    out["other_cpus"] = acct["other_cpus"]
    out["steal_cpus"] = acct["steal_cpus"]
    ops = out.get("total")
    if ops:
        # the server's CPU per operation, over the whole run (warm-up included)
        out["server_us_per_op"] = round(server_cpu / ops * 1e6, 3)
    if out.get("errors"):
        out["warning"] = f"{out['errors']} errors"
    return out


def measure(exe, mode, server, extra, args):
    timeout = args.seconds + args.warmup + 60
    best = None
    for attempt in range(args.retries + 1):
        out = run_loadgen(exe, mode, server, extra, timeout, args.loadgen_cpus)
        out["attempts"] = attempt + 1
        if "error" in out:
            return out
        out["noisy"] = out["other_cpus"] >= args.noise
        if best is None or out["other_cpus"] < best["other_cpus"]:
            best = out
        if not out["noisy"]:
            break
        log(f"    noisy (others used {out['other_cpus']:.2f} CPUs){'; again' if attempt < args.retries else ''}")
    return best


def tests_of(args):
    return [f"rr-{n}" for n in args.conns] + ["connect"]


def run_round(exe, kinds, args, rnd, tmpdir, res):
    common = ["--size", str(args.size), "--seconds", str(args.seconds),
              "--warmup", str(args.warmup), "--threads", str(args.threads)]
    for kind in kinds:
        if kind in res["not_available"]:
            continue
        try:
            srv = Server(kind, args, tmpdir)
        except ServerError as e:
            log(f"  {kind}: {e}")
            res["errors"].setdefault(kind, []).append(f"round {rnd + 1}: {e}")
            if "has no server()" in str(e) or "_native" in str(e) or "unexpected keyword" in str(e):
                res["not_available"][kind] = str(e)[:400]
            continue
        try:
            for test in tests_of(args):
                if test.startswith("rr-"):
                    mode, extra = "rr", ["--conns", test[3:]]
                else:
                    mode, extra = "connect", ["--conns", str(args.connect_slots)]
                out = measure(exe, mode, srv, extra + common, args)
                out.update(round=rnd, kind=kind, test=test)
                res["runs"].append(out)
                if "error" in out:
                    log(f"  {kind:<16} {test:<8} error: {out['error']}")
                    res["errors"].setdefault(kind, []).append(f"round {rnd + 1} {test}: {out['error']}")
                else:
                    rate = out.get("rps", out.get("cps"))
                    log(f"  {kind:<16} {test:<8} {rate:>11,.0f}/s  server {out['server_cpu_s'] / out['wall_s']:.2f} "
                        f"CPU, {out.get('server_us_per_op', 0):.1f} us/op; loadgen "
                        f"{out['loadgen_cpu_s'] / out['wall_s']:.2f} CPU; others "
                        f"{out['other_cpus']:.2f}{'*' if out['noisy'] else ''}"
                        f"{'  ' + out['warning'] if out.get('warning') else ''}")
                if not srv.alive():
                    raise ServerError(f"{kind} died: {srv.stderr_tail()}")
        except ServerError as e:
            log(f"  {e}")
            res["errors"].setdefault(kind, []).append(f"round {rnd + 1}: {e}")
        finally:
            rc = srv.stop()
            st = srv.stats()
            if st:
                res.setdefault("server_stats", {}).setdefault(kind, []).append(st)
            if rc not in (0, None):
                msg = f"round {rnd + 1}: {kind} exited with {rc} after SIGTERM: {srv.stderr_tail()}"
                res["errors"].setdefault(kind, []).append(msg)
                log(f"  {msg}")


def measure_idle(exe, kind, args, tmpdir):
    """Bytes of server RSS per idle connection."""
    srv = Server(kind, args, tmpdir)
    try:
        # Touch every worker / process first, so that start-up allocations are
        # in the baseline, not in the per-connection figure.
        warm = run_loadgen(exe, "rr", srv, ["--conns", str(4 * max(args.procs, args.workers or 1)),
                                            "--seconds", "0.5", "--warmup", "0"], 60,
                           args.loadgen_cpus)
        if "error" in warm:
            return {"error": "warm-up: " + warm["error"]}
        time.sleep(0.5)
        base, nprocs = srv.rss()
        sock0 = sockstat()
        cmd = [exe, "idle", *srv.target(), "--conns", str(args.idle_conns), "--size", str(args.size),
               "--hold", str(args.idle_hold + 120), "--wait-stdin"]
        lg = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, preexec_fn=pinned(args.loadgen_cpus))
        holding = None
        try:
            line = lg.stdout.readline()
            holding = json.loads(line) if line.startswith("{") else None
            if not holding or holding.get("event") != "holding":
                lg.kill()
                _, err = lg.communicate()
                return {"error": f"idle load generator: {line.strip()} {err.strip()[-300:]}"}
            # Sample while holding; keep the highest (the server may still be settling).
            samples = sample_while(args.idle_hold, lambda: srv.rss()[0])
            sock1 = sockstat()
            held = max(samples)
        finally:
            if lg.poll() is None:
                try:
                    lg.stdin.write("\n")
                    lg.stdin.flush()
                except BrokenPipeError:
                    pass
            out, err = lg.communicate(timeout=120)
        final = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
        time.sleep(0.5)
        after, _ = srv.rss()
        conns = holding["conns"]
        res = {"conns": conns, "requested": args.idle_conns, "processes": nprocs,
               "rss_before": base, "rss_held": held, "rss_after_close": after,
               "rss_samples": samples,
               "bytes_per_conn": round((held - base) / conns, 1) if conns else None,
               "setup_s": holding.get("setup_s"), "dropped": final.get("dropped"),
               "errors": final.get("errors"), "loadgen": final,
               "kernel_tcp_mem_pages_delta": (sock1.get("tcp_mem_pages", 0)
                                              - sock0.get("tcp_mem_pages", 0)) if sock0 else None,
               "note": "RSS of the server's processes (user-space memory); kernel socket "
                       "buffers are not in it"}
        if not srv.alive():
            res["error"] = f"{kind} died: {srv.stderr_tail()}"
        return res
    finally:
        srv.stop()


# --------------------------------------------------------------------------
# Summaries.

def summarize(res):
    """Per kind and test: medians over rounds; per test: paired ratios."""
    by = {}                                     # kind -> test -> [run]
    for r in res["runs"]:
        if "error" not in r:
            by.setdefault(r["kind"], {}).setdefault(r["test"], []).append(r)
    summary = {}
    for kind, tests in by.items():
        for test, runs in tests.items():
            rates = [r.get("rps", r.get("cps")) for r in runs]
            summary.setdefault(kind, {})[test] = {
                "rate_median": median(rates), "rate_min": min(rates), "rate_max": max(rates),
                "rates": rates, "rounds": [r["round"] for r in runs],
                "server_us_per_op": median([r["server_us_per_op"] for r in runs if "server_us_per_op" in r]),
                "server_cpus": median([r["server_cpu_s"] / r["wall_s"] for r in runs]),
                "loadgen_cpus": median([r["loadgen_cpu_s"] / r["wall_s"] for r in runs]),
                "lat_p50_us": median([r["lat_us"]["p50"] for r in runs]),
                "lat_p99_us": median([r["lat_us"]["p99"] for r in runs]),
                "errors": sum(r.get("errors", 0) for r in runs),
                "noisy": sum(1 for r in runs if r.get("noisy")),
            }
    ratios = {}
    for test in res["params"]["tests"]:
        mine = {r["round"]: r for r in by.get("pyparallel", {}).get(test, [])}
        for peer in ("pyparallel-c", "uvloop-1proc", "uvloop-per-core",
                     "pyparallel-shared", "pyparallel-uring"):
            theirs = {r["round"]: r for r in by.get(peer, {}).get(test, [])}
            rounds = sorted(set(mine) & set(theirs))
            if not rounds:
                continue
            rate = lambda r: r.get("rps", r.get("cps"))  # noqa: E731
            per = [rate(mine[i]) / rate(theirs[i]) for i in rounds if rate(theirs[i])]
            eff = [theirs[i]["server_us_per_op"] / mine[i]["server_us_per_op"] for i in rounds
                   if mine[i].get("server_us_per_op") and theirs[i].get("server_us_per_op")]
            ratios.setdefault(test, {})[peer] = {
                "ratio": median(per), "per_round": per,
                "ratio_of_medians": (median([rate(mine[i]) for i in rounds])
                                     / median([rate(theirs[i]) for i in rounds])),
                "cpu_efficiency": median(eff),
                "target": TARGETS.get(peer) if test.startswith("rr-") else None,
            }
    res["summary"] = summary
    res["ratios"] = ratios


def test_label(test):
    if test.startswith("rr-"):
        n = int(test[3:])
        return f"echo round trips/s, {n} conn{'s' if n != 1 else ''}"
    return "new connections/s, connect + echo + close"


def report(res, out=sys.stdout):
    p, m = res["params"], res["machine"]
    pp = m.get("pyparallel", {})
    w = lambda s="": print(s, file=out)  # noqa: E731
    w(f"CPython {m['python']}, {m['cpu_model']}, {m['cpus']} CPUs, Linux {m['kernel']}, "
      f"uvloop {m.get('uvloop')}, {res['date']}")
    w(f"pyparallel: repository at {pp.get('repo_commit', '?')}"
      f"{' + uncommitted changes in src/' if pp.get('repo_src_modified') else ''}; module "
      f"{pp.get('module', pp.get('error', '?'))} (built {pp.get('module_built', '?')})")
    w(f"{p['rounds']} round(s) of {p['seconds']} s per measurement (+{p['warmup']} s warm-up); "
      f"{p['size']}-byte messages; load generator: {p['threads']} thread(s)"
      f"{'' if p.get('server_cpus') and p.get('loadgen_cpus') else ' on the same CPUs as the server'}; "
      f"pyparallel workers: {p['workers'] or 'default (' + str(p.get('workers_effective', pp.get('cpu_count', '?'))) + ')'}; "
      f"uvloop per core: {p['procs']} processes; {'unix socket' if p['unix'] else 'TCP ' + p['host']}"
      + (f"; server pinned to CPUs {p['server_cpus']}" if p.get("server_cpus") else "")
      + (f"; load generator pinned to CPUs {p['loadgen_cpus']}" if p.get("loadgen_cpus") else ""))
    if res.get("note"):
        w(f"note: {res['note']}")
    w()
    tests = p["tests"]
    kinds = [k for k in p["kinds"] if k in res["summary"]]
    if kinds:
        w("Rates: median over rounds (lowest-highest); server CPU per operation; "
          "p50 latency. '*': other processes used >= "
          f"{p['noise']} CPUs during a round.")
        w()
        w("| server | " + " | ".join(test_label(t) for t in tests) + " |")
        w("|---|" + "---|" * len(tests))
        for kind in kinds:
            cells = []
            for t in tests:
                s = res["summary"][kind].get(t)
                if not s:
                    cells.append("error")
                    continue
                c = (f"**{fmt_rate(s['rate_median'])}** ({fmt_rate(s['rate_min'])}-"
                     f"{fmt_rate(s['rate_max'])}) · {s['server_us_per_op']:.1f} µs CPU · "
                     f"p50 {s['lat_p50_us']:.0f} µs")
                if s["errors"]:
                    c += f" · {s['errors']} errors"
                if s["noisy"]:
                    c += " *"
                cells.append(c)
            w(f"| {LABELS[kind]} | " + " | ".join(cells) + " |")
        w()
        w("| CPUs used (server / load generator) | " + " | ".join(test_label(t) for t in tests) + " |")
        w("|---|" + "---|" * len(tests))
        for kind in kinds:
            cells = []
            for t in tests:
                s = res["summary"][kind].get(t)
                cells.append(f"{s['server_cpus']:.2f} / {s['loadgen_cpus']:.2f}" if s else "-")
            w(f"| {LABELS[kind]} | " + " | ".join(cells) + " |")
        w()
    if res["ratios"]:
        peers = [p for p in ("pyparallel-c", "uvloop-1proc", "uvloop-per-core",
                             "pyparallel-shared", "pyparallel-uring")
                 if any(p in r for r in res["ratios"].values())]
        w("pyparallel ÷ peer, median over rounds of the ratio within a round (rate), and of the "
          "server CPU per operation (peer's ÷ pyparallel's: > 1 = pyparallel uses less CPU). "
          "Targets for echo round trips: ≥ 0.60 of the C ceiling, ≥ 3 × uvloop 1 process, "
          "≥ 1 × uvloop per core.")
        w()
        w("| measurement | " + " | ".join(f"÷ {SHORT[x]} (rate)" for x in peers)
          + " | " + " | ".join(f"÷ {SHORT[x]} (CPU/op)" for x in peers) + " |")
        w("|---|" + "---|" * (2 * len(peers)))
        for t in tests:
            r = res["ratios"].get(t, {})
            cells = []
            for x in peers:
                v = r.get(x)
                if not v or v["ratio"] is None:
                    cells.append("-")
                    continue
                mark = ""
                if v["target"] is not None:
                    mark = " ✓" if v["ratio"] >= v["target"] else f" ✗ (target {v['target']:g})"
                cells.append(f"{v['ratio']:.2f}{mark}")
            for x in peers:
                v = r.get(x)
                cells.append(f"{v['cpu_efficiency']:.2f}" if v and v.get("cpu_efficiency") else "-")
            w(f"| {test_label(t)} | " + " | ".join(cells) + " |")
        w()
    if res.get("idle"):
        w(f"Idle connections: {p['idle_conns']:,} opened, one echo each, then held; "
          "server RSS (all its processes) before and while holding.")
        w()
        w("| server | connections held | RSS before | RSS holding | per connection | RSS after close |")
        w("|---|---|---|---|---|---|")
        MB = 1 << 20
        for kind, v in res["idle"].items():
            if "rss_held" not in v:
                w(f"| {LABELS.get(kind, kind)} | error: {v.get('error', '?')[:200]} | | | | |")
                continue
            w(f"| {LABELS.get(kind, kind)} | {v['conns']:,}{' (' + str(v['dropped']) + ' dropped)' if v.get('dropped') else ''} "
              f"| {v['rss_before'] / MB:.1f} MB | {v['rss_held'] / MB:.1f} MB "
              f"| {v['bytes_per_conn']:,.0f} B | {v['rss_after_close'] / MB:.1f} MB |")
        w()
    wanted = set(p["kinds"]) | set(p.get("idle_kinds", []))
    for kind, why in res.get("not_available", {}).items():
        if kind in wanted:
            w(f"{kind}: not measured: {why}")
    for kind, stats in res.get("server_stats", {}).items():
        bad = sum(st.get("callback_errors", 0) or 0 for st in stats)
        if bad:
            w(f"{kind}: {bad} callback error(s) counted by the server (Server.stats())")
    other = {k: v for k, v in res.get("errors", {}).items() if k not in res.get("not_available", {})}
    for kind, errs in other.items():
        e = errs[0] if len(errs[0]) <= 300 else errs[0][:60] + " ... " + errs[0][-240:]
        w(f"{kind}: {len(errs)} error(s); first: {e}")


# --------------------------------------------------------------------------
# Chart: hand-written SVG, one panel per measurement, one bar per server.

def nice_ceiling(v):
    """A round axis maximum >= v, and its tick step (1, 2, 2.5 or 5 x 10^k)."""
    import math
    if v <= 0:
        return 1.0, 0.25
    raw = v / 5
    e = 10 ** math.floor(math.log10(raw))
    step = next(m * e for m in (1, 2, 2.5, 5, 10) if m * e >= raw)
    return math.ceil(v / step - 1e-9) * step, step


def write_svg(res, path):
    p, m = res["params"], res["machine"]
    panels = []
    for t in p["tests"]:
        bars = []
        for kind in p["kinds"]:
            s = res["summary"].get(kind, {}).get(t)
            if s:
                bars.append((kind, s["rate_median"], s["rate_min"], s["rate_max"]))
        if bars:
            panels.append((test_label(t), bars, fmt_rate))
    idle_res = res.get("idle", {})
    idle = [(k, idle_res[k]["bytes_per_conn"], None, None) for k in KINDS
            if idle_res.get(k, {}).get("bytes_per_conn") is not None]
    if idle:
        conns = max(idle_res[k]["conns"] for k, _, _, _ in idle)
        panels.append((f"server RSS per idle connection, bytes ({conns:,} held)", idle,
                       lambda v: f"{v:,.0f}"))
    if not panels:
        log("chart: nothing to draw")
        return
    PW, PH, GAP, L, T, B = 230, 260, 60, 50, 86, 95
    W = L + len(panels) * PW + (len(panels) - 1) * GAP + 20
    H = T + PH + B
    esc = lambda s: s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")  # noqa: E731
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         f'font-family="sans-serif" font-size="11">', f'<rect width="{W}" height="{H}" fill="white"/>']
    s.append(f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">Echo servers: '
             f'pyparallel vs asyncio+uvloop, {p["size"]}-byte messages</text>')
    if p.get("server_cpus") and p.get("loadgen_cpus"):
        where = (f"server on {len(p['server_cpus'])} CPU{'s' if len(p['server_cpus']) != 1 else ''}, "
                 f"load generator on {len(p['loadgen_cpus'])}")
    else:
        where = f"{m['cpus']} CPUs shared with the load generator"
    sub = (f"CPython {m['python']}, {m['cpu_model']}, {'Unix socket' if p['unix'] else 'TCP loopback'}, "
           f"{where} ({p['threads']} thread{'s' if p['threads'] != 1 else ''}); bars: median of "
           f"{p['rounds']} round{'s' if p['rounds'] != 1 else ''}, whiskers: lowest to highest")
    s.append(f'<text x="{W / 2}" y="40" text-anchor="middle" fill="#555">{esc(sub)}</text>')
    for i, (title, bars, fmt) in enumerate(panels):
        x0 = L + i * (PW + GAP)
        top, step = nice_ceiling(max(b[3] if b[3] is not None else b[1] for b in bars))
        Y = lambda v: T + PH - v / top * PH  # noqa: E731
        head, _, tail = title.partition(", ")
        s.append(f'<text x="{x0 + PW / 2}" y="{T - 26}" text-anchor="middle" font-weight="bold">'
                 f'{esc(head)}</text>')
        s.append(f'<text x="{x0 + PW / 2}" y="{T - 12}" text-anchor="middle">{esc(tail)}</text>')
        k = 0
        while k * step <= top * (1 + 1e-9):
            v = k * step
            s.append(f'<line x1="{x0}" y1="{Y(v):.1f}" x2="{x0 + PW}" y2="{Y(v):.1f}" stroke="#e5e5e5"/>')
            s.append(f'<text x="{x0 - 4}" y="{Y(v) + 4:.1f}" text-anchor="end" fill="#555">'
                     f'{esc(fmt(v)) if v else "0"}</text>')
            k += 1
        s.append(f'<line x1="{x0}" y1="{T + PH}" x2="{x0 + PW}" y2="{T + PH}" stroke="black"/>')
        slot = PW / len(bars)
        bw = slot * 0.62
        for j, (kind, v, lo, hi) in enumerate(bars):
            bx = x0 + j * slot + (slot - bw) / 2
            c = COLORS.get(kind, "black")
            s.append(f'<rect x="{bx:.1f}" y="{Y(v):.1f}" width="{bw:.1f}" height="{T + PH - Y(v):.1f}" '
                     f'fill="{c}"><title>{esc(LABELS.get(kind, kind))}: {esc(fmt(v))}</title></rect>')
            if lo is not None and hi is not None and hi > lo:
                cx = bx + bw / 2
                s.append(f'<line x1="{cx:.1f}" y1="{Y(lo):.1f}" x2="{cx:.1f}" y2="{Y(hi):.1f}" '
                         f'stroke="black"/>')
                for yy in (Y(lo), Y(hi)):
                    s.append(f'<line x1="{cx - 4:.1f}" y1="{yy:.1f}" x2="{cx + 4:.1f}" y2="{yy:.1f}" '
                             f'stroke="black"/>')
            ytxt = min(Y(v), Y(hi) if hi is not None else Y(v)) - 4
            s.append(f'<text x="{bx + bw / 2:.1f}" y="{ytxt:.1f}" text-anchor="middle">{esc(fmt(v))}</text>')
            s.append(f'<text x="{bx + bw / 2:.1f}" y="{T + PH + 14}" text-anchor="middle" '
                     f'fill="#333" font-size="10">{esc(BAR.get(kind, kind))}</text>')
    # legend
    ly = T + PH + 40
    lx = L
    for kind in p["kinds"]:
        label = LABELS.get(kind, kind)
        if kind == "uvloop-per-core":
            label = f"asyncio+uvloop, {p['procs']} processes (1 per core)"
        if kind == "pyparallel" and p.get("workers"):
            label += f", {p['workers']} workers"
        s.append(f'<rect x="{lx}" y="{ly - 9}" width="12" height="12" fill="{COLORS.get(kind, "black")}"/>')
        s.append(f'<text x="{lx + 17}" y="{ly + 1}">{esc(label)}</text>')
        lx += 17 + 6 * len(label) + 30
        if lx > W - 200:
            lx, ly = L, ly + 18
    r = res.get("ratios", {})
    rr_tests = [t for t in p["tests"] if t.startswith("rr-") and t in r]
    if rr_tests:
        t = rr_tests[-1]
        parts = [f"{SHORT[x]} {r[t][x]['ratio']:.2f}x" for x in ("pyparallel-c", "uvloop-1proc", "uvloop-per-core")
                 if x in r[t] and r[t][x]["ratio"] is not None]
        if parts:
            s.append(f'<text x="{L}" y="{H - 12}" fill="#333">pyparallel ÷ peer ({esc(test_label(t))}): '
                     f'{esc(", ".join(parts))}</text>')
    s.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(s) + "\n")


# --------------------------------------------------------------------------

def main():
    import argparse
    import shlex
    ap = argparse.ArgumentParser(
        description="pyparallel's echo server vs asyncio+uvloop: round trips, connections, "
                    "idle memory", formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default=",".join(DEFAULT_KINDS),
                    help=f"servers to measure, comma-separated (default: {','.join(DEFAULT_KINDS)}; "
                         f"also: pyparallel-shared, pyparallel-uring)")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per measurement (3)")
    ap.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds before each (0.5)")
    ap.add_argument("--conns", default="1,50", help="rr connection counts, comma-separated (1,50)")
    ap.add_argument("--connect-slots", type=int, default=16,
                    help="connect: connections in progress at once, per load generator thread (16)")
    ap.add_argument("--size", type=int, default=64, help="message bytes (64)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; kinds take turns (3)")
    ap.add_argument("--threads", type=int, default=1, help="load generator threads (1)")
    ap.add_argument("--workers", type=int, default=None,
                    help="pyparallel workers: pyparallel.configure(workers=N) in the server "
                         "(default: pyparallel's default, the CPUs it may use)")
    ap.add_argument("--procs", type=int, default=None,
                    help="uvloop-per-core processes (default: the CPUs this process may use)")
    ap.add_argument("--server-cpus", default=None, metavar="LIST",
                    help="pin the servers to these CPUs, e.g. 0-7 (pyparallel's default worker "
                         "count and --procs follow); default: no pinning")
    ap.add_argument("--loadgen-cpus", default=None, metavar="LIST",
                    help="pin the load generator to these CPUs, e.g. 8-15; default: no pinning")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--unix", action="store_true", help="Unix stream sockets instead of TCP")
    ap.add_argument("--idle-conns", type=int, default=10000, help="idle connections (10000)")
    ap.add_argument("--idle-hold", type=float, default=2.0,
                    help="seconds the idle connections are held while RSS is sampled (2)")
    ap.add_argument("--idle-kinds", default="pyparallel,uvloop-1proc",
                    help="servers whose idle memory is measured (pyparallel,uvloop-1proc)")
    ap.add_argument("--no-idle", action="store_true", help="skip the idle-connection measurement")
    ap.add_argument("--noise", type=float, default=0.2,
                    help="CPUs used by other processes that mark a measurement noisy (0.2)")
    ap.add_argument("--retries", type=int, default=0, help="re-runs of a noisy measurement (0)")
    ap.add_argument("--start-timeout", type=float, default=60.0,
                    help="seconds a server may take to print READY (60)")
    ap.add_argument("--json-out", default=None,
                    help="where the JSON goes (default bench/results/io-<python>-<date>.json; '' for nowhere)")
    ap.add_argument("--chart", nargs="?", const=os.path.join(ROOT, "docs", "bench-io.svg"), default=None,
                    metavar="PATH", help="write an SVG bar chart (default path docs/bench-io.svg)")
    ap.add_argument("--report", default=None, metavar="JSON",
                    help="measure nothing: print the tables (and --chart) of a saved run")
    ap.add_argument("--note", default=None, help="a note kept in the JSON")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 round of 1 s, 2,000 idle connections")
    args = ap.parse_args()

    if args.report:
        with open(args.report) as f:
            res = json.load(f)
        report(res)
        if args.chart:
            write_svg(res, args.chart)
            log(f"chart: {args.chart}")
        return

    if args.quick:
        args.seconds, args.warmup, args.rounds = 1.0, 0.3, 1
        args.idle_conns, args.idle_hold = min(args.idle_conns, 2000), 1.0
    args.conns = [int(x) for x in args.conns.split(",") if x.strip()]
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    idle_kinds = [] if args.no_idle else [k.strip() for k in args.idle_kinds.split(",") if k.strip()]
    for k in kinds + idle_kinds:
        if k not in KINDS:
            ap.error(f"unknown kind {k!r}; the kinds are {', '.join(KINDS)}")
    try:
        args.server_cpus = parse_cpus(args.server_cpus) if args.server_cpus else None
        args.loadgen_cpus = parse_cpus(args.loadgen_cpus) if args.loadgen_cpus else None
    except ValueError as e:
        ap.error(str(e))
    for name in ("workers", "procs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1")
    if args.threads < 1 or args.rounds < 1 or args.seconds <= 0:
        ap.error("--threads and --rounds must be >= 1, --seconds > 0")
    if args.procs is None:
        args.procs = len(args.server_cpus) if args.server_cpus else cpus_usable()

    res = {"not_available": {}, "errors": {}, "runs": []}
    if any(k.startswith("uvloop") for k in kinds + idle_kinds):
        why = ensure_uvloop()
        if why:
            log(why)
            for k in KINDS:
                if k.startswith("uvloop"):
                    res["not_available"][k] = why
    machine, now = machine_info()
    if "error" in machine["pyparallel"] or not machine["pyparallel"].get("has_server"):
        why = machine["pyparallel"].get("error") or "this pyparallel has no server() (parallel I/O not built in)"
        for k in PP_KINDS:
            res["not_available"][k] = why
    res.update({
        "machine": machine, "date": now.isoformat(timespec="seconds"), "note": args.note,
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "params": {"kinds": kinds, "tests": tests_of(args), "seconds": args.seconds,
                   "warmup": args.warmup, "conns": args.conns, "connect_slots": args.connect_slots,
                   "size": args.size, "rounds": args.rounds, "threads": args.threads,
                   "workers": args.workers,
                   "workers_effective": args.workers or (len(args.server_cpus) if args.server_cpus
                                                         else machine["pyparallel"].get("cpu_count")),
                   "procs": args.procs, "host": args.host,
                   "unix": args.unix, "idle_conns": args.idle_conns, "idle_hold": args.idle_hold,
                   "idle_kinds": idle_kinds, "noise": args.noise, "retries": args.retries,
                   "connect_close": "rst",
                   "server_cpus": sorted(args.server_cpus) if args.server_cpus else None,
                   "loadgen_cpus": sorted(args.loadgen_cpus) if args.loadgen_cpus else None,
                   "env": {k: v for k, v in os.environ.items() if k.startswith("PYPARALLEL")}},
    })
    log(f"CPython {machine['python']}, {machine['cpu_model']}, {machine['cpus']} CPUs; "
        f"pyparallel {machine['pyparallel'].get('repo_commit', '?')}; uvloop {machine['uvloop']}")
    for k, why in res["not_available"].items():
        if k in kinds or k in idle_kinds:
            log(f"{k}: not measured: {why}")

    with tempfile.TemporaryDirectory(prefix="bench_io.") as tmpdir:
        exe = build_loadgen(tmpdir)
        for rnd in range(args.rounds):
            avail = [k for k in kinds if k not in res["not_available"]]
            if not avail:
                log("no server kind can run")
                break
            order = avail[rnd % len(avail):] + avail[:rnd % len(avail)]
            log(f"round {rnd + 1}/{args.rounds}: {', '.join(order)}")
            run_round(exe, order, args, rnd, tmpdir, res)
        if idle_kinds:
            res["idle"] = {}
            for kind in idle_kinds:
                if kind in res["not_available"]:
                    continue
                log(f"idle: {kind}, {args.idle_conns:,} connections")
                try:
                    v = measure_idle(exe, kind, args, tmpdir)
                except ServerError as e:
                    v = {"error": str(e)}
                res["idle"][kind] = v
                if "bytes_per_conn" in v:
                    log(f"  {v['conns']:,} held: RSS {v['rss_before'] / 2**20:.1f} -> "
                        f"{v['rss_held'] / 2**20:.1f} MB = {v['bytes_per_conn']:,.0f} B/conn"
                        f" (after close {v['rss_after_close'] / 2**20:.1f} MB)")
                else:
                    log(f"  error: {v.get('error')}")

    summarize(res)
    path = args.json_out
    if path is None:
        path = os.path.join(HERE, "results",
                            f"io-{machine['python']}-{now.strftime('%Y%m%d-%H%M%S')}.json")
    if path:
        save_json(res, path)
    print()
    report(res)
    if args.chart:
        write_svg(res, args.chart)
        log(f"chart: {args.chart}")


if __name__ == "__main__":
    main()
