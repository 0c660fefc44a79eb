#!/usr/bin/env python3
"""bench_work.py -- pyparallel against its peers, side by side in one run.

Three measurements, each run for every runner in the same invocation:

1. Speed-up of CPU-bound pure-Python tasks over a shared dataset: a
   1,000,000-entry dict (str -> small tuple) plus a tuple of its keys.  Each
   task walks a slice of the keys doing dict look-ups, arithmetic and a small
   string hash (about --task-ms milliseconds of work, calibrated on this
   machine).  8*N tasks per round, so the work is the same for every worker
   count.  Runners:
     serial       the main interpreter, one core, plain dict (the baseline)
     serial-frz   the main interpreter, one core, the frozen dict
     pyparallel   pyparallel.Executor(n), frozen data passed by pointer
     threads      concurrent.futures.ThreadPoolExecutor(n), plain dict
     fork         ProcessPoolExecutor(n), fork: dict inherited from the parent
     spawn        ProcessPoolExecutor(n), spawn: dict sent by the initializer
                  (set-up time reported on its own, not in the task time)
     interp       concurrent.futures.InterpreterPoolExecutor(n), Python >= 3.14
2. Round trip of a trivial task: submit(noop, i).result(), one at a time.
3. Total memory (RSS and PSS of the process and all its children) after the
   pool has run the CPU tasks, in a fresh child process per runner, next to
   the size of the shared data alone.

The runners take turns, round by round, so drifting load from outside falls
on all of them alike; and a round (or a block of round trips) during which
other processes used >= --noise CPUs (from /proc/stat, minus this process
tree's own CPU time) is thrown away and run again, up to --retries times.
Results still noisy after that are marked with '*'.

Every timed figure is the median of --reps runs.  A speed-up is the median,
over a runner's rounds, of (the serial round nearest in time / that round):
this machine's speed may drift, and neighbouring rounds share the drift.
The ratio of the plain medians is kept in the JSON too.  A table goes to stdout,
JSON to bench/results/work-<host>-<python>.json and a chart of speed-up
against workers to docs/bench-work.svg.

    .venv/bin/python bench/bench_work.py            # full run (~1-2 min on 2 cores when idle)
    .venv/bin/python bench/bench_work.py --quick    # smoke run (~10 s)
    .venv/bin/python bench/bench_work.py --max-workers 16 --workers 1,2,4,8,16
    .venv/bin/python bench/bench_work.py --chart-only bench/results/work-*-3.13*.json

Workers (pyparallel's and multiprocessing spawn's) re-import this file as
__mp_main__, so everything heavy lives under `if __name__ == "__main__":`.
InterpreterPoolExecutor's interpreters import it by name instead (bench_work),
which is why pyparallel is imported only where it is used.
"""

import os
import sys
import time

from sysinfo import cpu_model, descendants  # bench/: the script's own folder is on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))

# --------------------------------------------------------------------------
# The work.  Top-level functions, so every kind of worker can find them.

_DATA = None        # (dict, keys) for process and interpreter pools
_KEYS = None


def make_data(n):
    """A dict of n str keys -> (int, int) and the tuple of its keys."""
    data = {}
    for i in range(n):
        key = f"k{(i * 2654435761) & 0xFFFFFFFF:08x}-{i}"
        data[key] = (i, (i * 7919) % 100003)
    return data, tuple(data)


def make_slices(nkeys, per_task, ntasks):
    """ntasks (lo, hi) ranges of per_task keys, spread over the keys."""
    step = max(1, (nkeys - per_task) // ntasks)
    return [((t * step) % (nkeys - per_task), (t * step) % (nkeys - per_task) + per_task)
            for t in range(ntasks)]


def crunch(data, keys, lo, hi):
    """The CPU-bound task: look-ups, arithmetic and a string hash per key."""
    acc = 0
    for i in range(lo, hi):
        k = keys[i]
        a, b = data[k]
        h = 5381
        for ch in k[-5:]:
            h = (h * 33 + ord(ch)) & 0xFFFFFFFF
        acc = (acc + a * b + h) % 1000000007
    return acc


def crunch_global(lo, hi):
    """crunch() over the dataset a process worker inherited or was sent."""
    return crunch(_DATA, _KEYS, lo, hi)


def set_data(data, keys):
    """ProcessPoolExecutor(spawn) / InterpreterPoolExecutor initializer."""
    global _DATA, _KEYS
    _DATA, _KEYS = data, keys


def noop(x):
    return x


def ready(delay):
    """Warm-up task: holds a worker for a moment, says which process ran it."""
    time.sleep(delay)
    return os.getpid(), _DATA is not None


# --------------------------------------------------------------------------
# Memory, from /proc.

def proc_mem(pid):
    """{'rss', 'pss', 'private_dirty'} in bytes for one process, or None."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss"] = int(line.split()[1]) * 1024
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name == "Pss":
                    out["pss"] = int(rest.split()[0]) * 1024
                elif name == "Private_Dirty":
                    out["private_dirty"] = int(rest.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return out


def total_mem():
    """Memory of this process and all its descendants."""
    me = proc_mem(os.getpid())
    kids = [m for m in (proc_mem(p) for p in descendants(os.getpid())) if m]
    return {
        "main_rss": me["rss"], "main_pss": me["pss"],
        "children": len(kids),
        "children_rss": sum(k["rss"] for k in kids),
        "children_pss": sum(k["pss"] for k in kids),
        "children_private_dirty": sum(k["private_dirty"] for k in kids),
        "total_rss": me["rss"] + sum(k["rss"] for k in kids),
        "total_pss": me["pss"] + sum(k["pss"] for k in kids),
    }


# --------------------------------------------------------------------------
# Runners: each is a context manager giving (submit, task_fn, data_args).

def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


class Runner:
    """A pool of n workers of one kind, started and warmed up on enter.

    .setup_s: seconds from creating the pool to every worker being ready
    (for spawn that includes pickling the dataset to every child)."""

    def __init__(self, kind, n, ds=None):
        self.kind, self.n, self.ds = kind, n, ds    # ds: the Dataset or None
        self.ex = None
        self.setup_s = None

    def __enter__(self):
        import concurrent.futures as cf
        import multiprocessing as mp
        kind, n, ds = self.kind, self.n, self.ds
        mod = sys.modules[__name__]     # where the workers find the functions
        t0 = time.perf_counter()
        if kind == "pyparallel":
            import pyparallel
            self.ex = pyparallel.Executor(max_workers=n)
            self.ex.submit(noop, 0).result()
            self.ex._get_pool().wait_ready()
            self.fn, self.args = crunch, ((ds.fdata, ds.fkeys) if ds else ())
        elif kind == "threads":
            self.ex = cf.ThreadPoolExecutor(max_workers=n)
            self.fn, self.args = crunch, ((ds.data, ds.keys) if ds else ())
        elif kind in ("fork", "spawn"):
            ctx = mp.get_context(kind)
            kw = {}
            if kind == "fork":
                set_data(*((ds.data, ds.keys) if ds else (None, None)))
            elif ds is not None:
                kw = {"initializer": set_data, "initargs": (ds.data, ds.keys)}
            self.ex = cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx, **kw)
            self.fn, self.args = crunch_global, ()
        elif kind == "interp":
            # Python 3.14 pickles the task functions by reference; a fresh
            # interpreter has no __main__.crunch_global and no bench/ on
            # sys.path, so the initializer (builtins.exec, which pickles)
            # puts bench/ on sys.path, imports this file as bench_work and
            # hands it the dataset, pickled to every interpreter like spawn.
            import importlib
            if HERE not in sys.path:
                sys.path.insert(0, HERE)
            mod = importlib.import_module("bench_work")
            code = (f"import sys\nsys.path.insert(0, {HERE!r})\nimport bench_work\n"
                    f"bench_work.set_data(data, keys)\n")
            env = {"data": ds.data if ds else None, "keys": ds.keys if ds else None}
            self.ex = cf.InterpreterPoolExecutor(max_workers=n, initializer=exec,
                                                 initargs=(code, env))
            self.fn, self.args = mod.crunch_global, ()
        else:
            raise ValueError(kind)
        if kind != "pyparallel":
            # Hold every worker busy at once until n distinct workers answered.
            for _ in range(20):
                got = [f.result() for f in [self.ex.submit(mod.ready, 0.05) for _ in range(n)]]
                if kind == "threads" or len({pid for pid, _ in got}) == n:
                    break
        self.noop = mod.noop
        self.setup_s = time.perf_counter() - t0
        return self

    def submit(self, fn, *args):
        return self.ex.submit(fn, *args)

    def __exit__(self, *exc):
        self.ex.shutdown(wait=True)
        if self.kind == "fork":
            set_data(None, None)


class Dataset:
    def __init__(self, nkeys):
        import pyparallel
        self.data, self.keys = make_data(nkeys)
        t = time.perf_counter()
        self.fdata = pyparallel.freeze(self.data)
        self.fkeys = pyparallel.freeze(self.keys)
        self.freeze_s = time.perf_counter() - t


class Load:
    """CPU time other processes used while a measurement ran, in cores.

    busy CPU time of the whole machine (/proc/stat) minus the CPU time of
    this process and its waited-for children (os.times), over wall time.
    This machine may be shared: a figure well above 0 marks a noisy result."""

    def __enter__(self):
        self.t, self.busy, self.own = time.perf_counter(), _busy(), _own()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t
        self.foreign = max(0.0, (_busy() - self.busy) - (_own() - self.own)) / wall


def _busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def _own():
    """CPU seconds of this process, its finished children and its live
    descendants (pool workers that have not been waited for yet)."""
    t = os.times()
    live = 0
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        live += int(fields[11]) + int(fields[12])     # utime, stime
    return (t.user + t.system + t.children_user + t.children_system
            + live / os.sysconf("SC_CLK_TCK"))


def run_round(submit, fn, args, slices):
    futs = [submit(fn, *args, lo, hi) for lo, hi in slices]
    return [f.result() for f in futs]


NOISE = 0.1          # CPUs used by other processes that make a measurement noisy
RETRIES = 10         # how often a noisy measurement is taken again


def quietly(measure):
    """Run measure() until other processes used < NOISE CPUs meanwhile (at
    most 1 + RETRIES times); returns (its result, foreign load, retries)."""
    for tries in range(RETRIES + 1):
        with Load() as load:
            got = measure()
        if load.foreign < NOISE:
            break
    return got, load.foreign, tries


def time_round(submit, fn, args, slices, expect):
    """(start, seconds) of one round of tasks, checked against the serial
    result."""
    t = time.perf_counter()
    got = run_round(submit, fn, args, slices)
    dt = time.perf_counter() - t
    if got != expect:
        raise AssertionError(f"{fn.__name__} gave wrong results")
    return t, dt


def paired_speedup(base_rounds, rounds):
    """Median over rounds of (the baseline round nearest in time / the round).

    This machine's speed drifts (other tenants of the host); a ratio of two
    rounds run seconds apart cancels most of that drift, a ratio of medians
    taken minutes apart does not."""
    mids = [(t + dt / 2, dt) for t, dt in base_rounds]
    ratios = []
    for t, dt in rounds:
        _, bdt = min(mids, key=lambda m: abs(m[0] - (t + dt / 2)))
        ratios.append(bdt / dt)
    return median(ratios), ratios


def noisy(load, retries=0):
    """A warning when a measurement kept despite the retries was noisy."""
    out = f"  ({retries} noisy runs discarded)" if retries else ""
    if load >= NOISE:
        out += f"  ! other processes used up to {load:.2f} CPUs"
    return out


def serial_submit(fn, *args):
    class Done:
        def __init__(self, v):
            self.v = v

        def result(self):
            return self.v
    return Done(fn(*args))


# --------------------------------------------------------------------------
# The three benchmarks.

# Pools are started in this order: the fork pool before any thread exists
# in this process (forking a multi-threaded process is unsafe), and the
# timed rounds then take turns among all runners, so that load from outside
# (this machine may be shared) falls on every runner alike.
START_ORDER = ("fork", "spawn", "interp", "threads", "pyparallel")


def open_runners(kinds, n, ds, log):
    import contextlib
    stack = contextlib.ExitStack()
    opened, errors = {}, {}
    for kind in sorted(kinds, key=START_ORDER.index):
        try:
            opened[kind] = stack.enter_context(Runner(kind, n, ds))
        except Exception as exc:           # report, keep going
            errors[kind] = f"{type(exc).__name__}: {exc}"
            log(f"  {kind:<11} n={n:<3} ERROR starting: {errors[kind]}")
    return stack, opened, errors


def bench_cpu(args, ds, slices, counts, runners, log):
    """Rounds of tasks for every runner at every worker count, taking turns.
    The serial baselines join the rotations too (all of them up to 4
    workers, else one in len(counts), so about --reps rounds in all), so
    they meet the same outside load as the pools; their median over all
    their rounds is the base."""
    out = {"slices": len(slices), "keys_per_task": slices[0][1] - slices[0][0],
           "worker_counts": counts, "serial": {}, "runners": {k: {} for k in runners}}
    expect = run_round(serial_submit, crunch, (ds.data, ds.keys), slices)
    serial = {"serial": (ds.data, ds.keys), "serial-frz": (ds.fdata, ds.fkeys)}
    stimes = {k: [] for k in serial}
    sloads = {k: [] for k in serial}
    sretries = {k: 0 for k in serial}
    pooled = {}
    # The baselines join every rotation on small machines; on big ones (where
    # one serial round is long) one rotation in len(counts).
    every = 1 if max(counts) <= 4 else len(counts)
    for gi, n in enumerate(counts):
        stack, opened, errors = open_runners(runners, n, ds, log)
        with stack:
            for kind, err in errors.items():
                out["runners"][kind][str(n)] = {"error": err}
            times = {k: [] for k in opened}
            loads = {k: [] for k in opened}
            retries = {k: 0 for k in opened}
            for rep in range(args.reps):
                order = list(opened)
                if (gi + rep) % every == 0:
                    order = list(serial) + order
                for kind in order[rep % len(order):] + order[:rep % len(order)]:
                    if kind in serial:
                        t, load, tries = quietly(lambda: time_round(
                            serial_submit, crunch, serial[kind], slices, expect))
                        stimes[kind].append(t)     # (start, seconds)
                        sloads[kind].append(load)
                        sretries[kind] += tries
                        continue
                    if kind in errors:
                        continue
                    r = opened[kind]
                    try:
                        t, load, tries = quietly(lambda: time_round(r.submit, r.fn, r.args,
                                                                    slices, expect))
                    except Exception as exc:
                        errors[kind] = f"{type(exc).__name__}: {exc}"
                        out["runners"][kind][str(n)] = {"error": errors[kind]}
                        log(f"  {kind:<11} n={n:<3} ERROR {errors[kind]}")
                        continue
                    times[kind].append(t)
                    loads[kind].append(load)
                    retries[kind] += tries
        if stimes["serial"]:
            log(f"  n={n}: serial so far {median([d for _, d in stimes['serial']]):.3f} s")
        for kind in runners:
            if kind not in opened or kind in errors:
                continue
            m, load = median([d for _, d in times[kind]]), max(loads[kind])
            setup = opened[kind].setup_s
            pooled[kind, n] = (times[kind], m, load, setup, retries[kind])
            log(f"  {kind:<11} n={n:<3}  {m:8.3f} s  (set-up {setup:.2f} s)"
                + noisy(load, retries[kind]))
    for name in serial:
        ts = [d for _, d in stimes[name]]
        m, load = median(ts), max(sloads[name])
        out["serial"][name] = {"times": ts, "starts": [t for t, _ in stimes[name]],
                               "median_s": m, "foreign_load": load,
                               "noisy_retries": sretries[name]}
        log(f"  {name:<11} 1 core   {m:8.3f} s  (task {m / len(slices) * 1e3:.1f} ms, "
            f"{len(ts)} rounds, {min(ts):.3f}-{max(ts):.3f} s)" + noisy(load, sretries[name]))
    base = out["serial"]["serial"]["median_s"]
    for (kind, n), (rounds, m, load, setup, tries) in pooled.items():
        sp, ratios = paired_speedup(stimes["serial"], rounds)
        spf, _ = paired_speedup(stimes["serial-frz"], rounds)
        out["runners"][kind][str(n)] = {
            "times": [d for _, d in rounds], "starts": [t for t, _ in rounds], "median_s": m,
            "speedup": sp, "efficiency": sp / n, "paired_ratios": ratios,
            "speedup_vs_serial_frozen": spf, "speedup_of_medians": base / m,
            # One round with giving the workers the data counted in: the
            # pool's set-up (an interpreter or spawn pool unpickles the data
            # in every worker), and for pyparallel the one freeze().
            "speedup_with_setup": base / (m + setup + (ds.freeze_s if kind == "pyparallel" else 0)),
            "setup_s": setup, "foreign_load": load, "noisy_retries": tries}
        log(f"  {kind:<11} n={n:<3}  speed-up {sp:5.2f}x  efficiency {sp / n:4.2f}  "
            f"(vs the frozen-dict serial {spf:4.2f}x; ratio of medians {base / m:4.2f}x)")
    return out


def bench_roundtrip(args, n, runners, log):
    out = {}
    clock = time.perf_counter_ns
    stack, opened, errors = open_runners(runners, n, None, log)
    with stack:
        for kind, err in errors.items():
            out[kind] = {"error": err}
        meds = {k: [] for k in opened}
        p90s = {k: [] for k in opened}
        loads = {k: [] for k in opened}
        retries = {k: 0 for k in opened}
        for kind, r in opened.items():
            for i in range(args.rt_warmup):
                r.ex.submit(r.noop, i).result()
        order = list(opened)
        for rep in range(args.rt_reps):
            for kind in order[rep % len(order):] + order[:rep % len(order)]:
                ex, noop = opened[kind].ex, opened[kind].noop

                def block():
                    lat = [0] * args.rt_calls
                    for i in range(args.rt_calls):
                        t = clock()
                        ex.submit(noop, i).result()
                        lat[i] = clock() - t
                    return lat
                lat, load, tries = quietly(block)
                meds[kind].append(median(lat) / 1e3)
                p90s[kind].append(quantile(lat, 0.9) / 1e3)
                loads[kind].append(load)
                retries[kind] += tries
    for kind in runners:
        if kind not in opened:
            continue
        load = max(loads[kind])
        out[kind] = {"median_us": median(meds[kind]), "p90_us": median(p90s[kind]),
                     "rep_medians_us": meds[kind], "rep_p90s_us": p90s[kind],
                     "calls": args.rt_calls, "foreign_load": load,
                     "noisy_retries": retries[kind]}
        log(f"  {kind:<11} median {out[kind]['median_us']:8.1f} us   "
            f"p90 {out[kind]['p90_us']:8.1f} us" + noisy(load, retries[kind]))
    return out


def memory_child(kind, n, nkeys, keys_per_task, ntasks):
    """Runs in a fresh process: build the data, run the pool, measure."""
    import gc
    mem = lambda: proc_mem(os.getpid())["rss"]      # noqa: E731
    rss0 = mem()
    data, keys = make_data(nkeys)
    rss_built = mem()
    rec = {"kind": kind, "workers": n, "rss_interpreter": rss0,
           "plain_data": rss_built - rss0}
    if kind == "pyparallel":
        import pyparallel
        fdata, fkeys = pyparallel.freeze(data), pyparallel.freeze(keys)
        rec["rss_after_freeze"] = mem() - rss0
        del data, keys
        gc.collect()
        data, keys = fdata, fkeys
    # The shared data alone: what building (and freezing) it left resident.
    rec["data"] = mem() - rss0
    before = proc_mem(os.getpid())
    rec["main_before_pool"], rec["main_before_pool_pss"] = before["rss"], before["pss"]
    slices = make_slices(len(keys), keys_per_task, ntasks)
    ds = type("DS", (), {})()
    ds.data = ds.fdata = data
    ds.keys = ds.fkeys = keys
    with Runner(kind, n, ds) as r:
        for _ in range(2):
            run_round(r.submit, r.fn, r.args, slices)
        rec.update(total_mem())
    rec["total_minus_data"] = rec["total_rss"] - rec["data"]
    rec["per_worker_rss"] = (rec["total_rss"] - rec["main_before_pool"]) / n
    rec["per_worker_pss"] = (rec["total_pss"] - rec["main_before_pool_pss"]) / n
    return rec


def bench_memory(args, n, nkeys, keys_per_task, ntasks, runners, log):
    import json
    import subprocess
    out = {}
    for kind in runners:
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", kind,
               "--max-workers", str(n), "--keys", str(nkeys),
               "--memory-child-task", f"{keys_per_task},{ntasks}"]
        p = subprocess.run(cmd, capture_output=True, text=True)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("MEMORY ")]
        if p.returncode != 0 or not line:
            out[kind] = {"error": f"exit {p.returncode}: {p.stderr.strip()[-500:]}"}
            log(f"  {kind:<11} ERROR (exit {p.returncode}): {p.stderr.strip()[-300:]}")
            continue
        rec = out[kind] = json.loads(line[0][len("MEMORY "):])
        MB = 1 << 20
        log(f"  {kind:<11} data {rec['data'] / MB:6.0f} MB  total RSS {rec['total_rss'] / MB:6.0f} MB"
            f"  PSS {rec['total_pss'] / MB:6.0f} MB  per worker RSS {rec['per_worker_rss'] / MB:6.1f} MB"
            f"  PSS {rec['per_worker_pss'] / MB:6.1f} MB  ({rec['children']} child procs, "
            f"{rec['children_private_dirty'] / MB:.0f} MB private dirty)")
    return out


# --------------------------------------------------------------------------
# Report: table and chart.

COLORS = {"pyparallel": "#d62728", "threads": "#1f77b4", "fork": "#2ca02c",
          "spawn": "#9467bd", "interp": "#ff7f0e"}
LABELS = {"pyparallel": "pyparallel.Executor", "threads": "ThreadPoolExecutor",
          "fork": "ProcessPoolExecutor (fork)", "spawn": "ProcessPoolExecutor (spawn)",
          "interp": "InterpreterPoolExecutor"}


def write_svg(results, path):
    """Speed-up against workers, one line per runner: the median over the
    given runs (results files), whiskers from the lowest to the highest."""
    if isinstance(results, dict):
        results = [results]
    res = results[0]
    counts = sorted({n for r in results for n in r["cpu"]["worker_counts"]})
    pts = {}                                # kind -> {n: [speed-up per run]}
    for r in results:
        for kind, rr in r["cpu"]["runners"].items():
            for n, v in rr.items():
                if "speedup" in v:
                    pts.setdefault(kind, {}).setdefault(int(n), []).append(v["speedup"])
    xmax = max(counts)
    ymax = max([xmax] + [x for d in pts.values() for xs in d.values() for x in xs])
    ymax = max(1, int(ymax + 0.999))
    W, H, L, R, T, B = 760, 480, 60, 240, 50, 70
    pw, ph = W - L - R, H - T - B

    def X(v):
        return L + v / xmax * pw

    def Y(v):
        return T + ph - v / ymax * ph

    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
         f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>']
    m = res["machine"]
    pys = sorted({r["machine"]["python"] for r in results})
    title = (f"Speed-up vs 1-core serial: pure-Python tasks over a shared {res['params']['keys']:,}-key "
             f"dict (CPython {', '.join(pys)}, {m['cpus']} CPUs)")
    s.append(f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="13">{title}</text>')
    if len(results) > 1:
        s.append(f'<text x="{L + pw / 2}" y="{H - 12}" text-anchor="middle" fill="#555">'
                 f'points: median of {len(results)} runs; whiskers: lowest to highest run</text>')
    # grid and axes
    ystep = 0.25 if ymax <= 2 else 0.5 if ymax <= 4 else max(1, ymax // 8)
    for i in range(int(ymax / ystep) + 1):
        v = i * ystep
        s.append(f'<line x1="{L}" y1="{Y(v):.1f}" x2="{L + pw}" y2="{Y(v):.1f}" stroke="#ddd"/>')
        s.append(f'<text x="{L - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    for v in counts:
        s.append(f'<line x1="{X(v):.1f}" y1="{T}" x2="{X(v):.1f}" y2="{T + ph}" stroke="#eee"/>')
        s.append(f'<text x="{X(v):.1f}" y="{T + ph + 16}" text-anchor="middle">{v}</text>')
    s.append(f'<line x1="{L}" y1="{T + ph}" x2="{L + pw}" y2="{T + ph}" stroke="black"/>')
    s.append(f'<line x1="{L}" y1="{T}" x2="{L}" y2="{T + ph}" stroke="black"/>')
    s.append(f'<text x="{L + pw / 2}" y="{T + ph + 34}" text-anchor="middle">workers</text>')
    s.append(f'<text x="16" y="{T + ph / 2}" text-anchor="middle" '
             f'transform="rotate(-90 16 {T + ph / 2})">speed-up vs 1-core serial</text>')
    if m["cpus"] < xmax:
        s.append(f'<line x1="{X(m["cpus"]):.1f}" y1="{T}" x2="{X(m["cpus"]):.1f}" y2="{T + ph}" '
                 f'stroke="#999" stroke-dasharray="1 3"/>')
        s.append(f'<text x="{X(m["cpus"]) + 4:.1f}" y="{T + 12}" fill="#777">{m["cpus"]} CPUs</text>')
    # ideal and target
    s.append(f'<line x1="{X(0):.1f}" y1="{Y(0):.1f}" x2="{X(xmax):.1f}" y2="{Y(xmax):.1f}" '
             f'stroke="#888" stroke-dasharray="6 4"/>')
    s.append(f'<line x1="{X(0):.1f}" y1="{Y(0):.1f}" x2="{X(xmax):.1f}" y2="{Y(0.95 * xmax):.1f}" '
             f'stroke="#bbb" stroke-dasharray="2 3"/>')
    legend = [("ideal (N)", "#888", "6 4"), ("target (0.95 N)", "#bbb", "2 3")]
    kinds = list(pts)
    for ki, kind in enumerate(kinds):
        line = sorted((n, median(xs), min(xs), max(xs)) for n, xs in pts[kind].items())
        c = COLORS.get(kind, "black")
        dx = (ki - (len(kinds) - 1) / 2) * 4          # keep whiskers apart
        s.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="'
                 + " ".join(f"{X(n) + dx:.1f},{Y(v):.1f}" for n, v, _, _ in line) + '"/>')
        for n, v, lo, hi in line:
            if hi > lo:
                s.append(f'<line x1="{X(n) + dx:.1f}" y1="{Y(lo):.1f}" x2="{X(n) + dx:.1f}" '
                         f'y2="{Y(hi):.1f}" stroke="{c}" stroke-width="1.5"/>')
            s.append(f'<circle cx="{X(n) + dx:.1f}" cy="{Y(v):.1f}" r="3.5" fill="{c}">'
                     f'<title>{LABELS.get(kind, kind)} n={n}: {v:.2f}x '
                     f'({lo:.2f}-{hi:.2f})</title></circle>')
        legend.append((LABELS.get(kind, kind), c, None))
    for i, (label, c, dash) in enumerate(legend):
        y = T + 10 + i * 20
        d = f' stroke-dasharray="{dash}"' if dash else ' stroke-width="2"'
        s.append(f'<line x1="{L + pw + 15}" y1="{y}" x2="{L + pw + 40}" y2="{y}" stroke="{c}"{d}/>')
        s.append(f'<text x="{L + pw + 46}" y="{y + 4}">{label}</text>')
    s.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(s) + "\n")


def check_targets(res):
    """The issue's targets, as measured: a list of (what, measured, ok)."""
    out = []
    cpu, rt, mem = res.get("cpu"), res.get("roundtrip"), res.get("memory")
    if cpu and "pyparallel" in cpu["runners"]:
        # Against the faster of the two serial baselines (plain or frozen dict).
        for n, v in cpu["runners"]["pyparallel"].items():
            if "speedup" in v:
                sp = min(v["speedup"], v["speedup_vs_serial_frozen"])
                out.append((f"speed-up with {n} workers >= {0.95 * int(n):.2f}x",
                            f"{sp:.2f}x (vs serial over the plain dict {v['speedup']:.2f}x, "
                            f"over the frozen dict {v['speedup_vs_serial_frozen']:.2f}x)",
                            sp >= 0.95 * int(n)))
    pp = rt and rt.get("pyparallel", {}).get("median_us")
    if pp:
        out.append(("round trip median <= 10 us", f"{pp:.1f} us", pp <= 10))
        tpe = rt.get("threads", {}).get("median_us")
        if tpe:
            out.append(("round trip <= ThreadPoolExecutor's",
                        f"pyparallel/TPE = {pp / tpe:.2f} ({pp:.1f} vs {tpe:.1f} us)", pp <= tpe))
        for k in ("fork", "spawn"):
            ppe = rt.get(k, {}).get("median_us")
            if ppe:
                out.append((f"round trip >= 15x better than ProcessPoolExecutor ({k})",
                            f"PPE/pyparallel = {ppe / pp:.1f}x", ppe / pp >= 15))
    # Against the stdlib's own interpreter pool (Python 3.14+).
    ip = cpu and cpu["runners"].get("interp", {})
    pc = cpu and cpu["runners"].get("pyparallel", {})
    for n, v in (ip or {}).items():
        if "speedup_with_setup" in v and "speedup_with_setup" in pc.get(n, {}):
            r = pc[n]["speedup_with_setup"] / v["speedup_with_setup"]
            out.append((f"speed-up with set-up >= 1.5x InterpreterPoolExecutor's ({n} workers)",
                        f"{r:.2f}x ({pc[n]['speedup_with_setup']:.2f}x vs "
                        f"{v['speedup_with_setup']:.2f}x; without set-up "
                        f"{pc[n]['speedup']:.2f}x vs {v['speedup']:.2f}x)", r >= 1.5))
    ipr = rt and rt.get("interp", {}).get("median_us")
    if pp and ipr:
        out.append(("round trip >= 20x better than InterpreterPoolExecutor",
                    f"IPE/pyparallel = {ipr / pp:.1f}x ({ipr:.1f} vs {pp:.1f} us)", ipr / pp >= 20))
    vi, vp = mem and mem.get("interp"), mem and mem.get("pyparallel")
    if vi and vp and "error" not in vi and "error" not in vp:
        r = vp["total_rss"] / vi["total_rss"]
        out.append((f"memory <= 0.6x InterpreterPoolExecutor's ({vp['workers']} workers)",
                    f"{r:.2f}x ({vp['total_rss'] >> 20} vs {vi['total_rss'] >> 20} MB RSS)", r <= 0.6))
    v = mem and mem.get("pyparallel")
    if v and "error" not in v:
        n, MB = v["workers"], 1 << 20
        for label, data in (("frozen data as built", v["data"]), ("plain dict", v["plain_data"])):
            limit = v["rss_interpreter"] + data + n * 20 * MB
            out.append((f"memory <= interpreter + one copy of the data ({label}, "
                        f"{data / MB:.0f} MB) + {n} x 20 MB = {limit / MB:.0f} MB",
                        f"{v['total_rss'] / MB:.0f} MB RSS", v["total_rss"] <= limit))
    return out


def print_summary(res, log):
    MB = 1 << 20
    cpu, rt, mem = res.get("cpu"), res.get("roundtrip"), res.get("memory")
    flag = lambda v: "*" if v.get("foreign_load", 0) >= res["params"]["noise"] else " "  # noqa: E731
    log("")
    log("=" * 78)
    m = res["machine"]
    b = m.get("pyparallel", {})
    log(f"CPython {m['python']} on {m['cpu_model']} ({m['cpus']} CPUs), {res['date']}")
    log(f"pyparallel: {b.get('module')} (built {b.get('module_built', '?')}); this repository is at "
        f"{b.get('repo_commit', '?')}{' + uncommitted changes' if b.get('repo_src_modified') else ''}")
    if res.get("note"):
        log(f"note: {res['note']}")
    log(f"(* = other processes used >= {res['params']['noise']} CPU during a kept run of that "
        f"measurement, even after {res['params']['retries']} retries)")
    if cpu:
        serial = cpu["serial"]["serial"]["median_s"]
        frz = cpu["serial"]["serial-frz"]["median_s"]
        st = cpu["serial"]["serial"]["times"]
        log(f"\n1. CPU-bound tasks: {cpu['slices']} tasks x {cpu['keys_per_task']} keys; "
            f"serial {serial:.3f} s{flag(cpu['serial']['serial'])}(its {len(st)} rounds: "
            f"{min(st):.3f}-{max(st):.3f} s); serial over the frozen dict: {frz / serial:.2f}x")
        head = f"  {'runner':<11}" + "".join(f"{'n=' + str(n):>15}" for n in cpu["worker_counts"])
        log(head + "     (speed-up vs serial / efficiency = speed-up / n)")
        for kind, r in cpu["runners"].items():
            cells = []
            for n in cpu["worker_counts"]:
                v = r.get(str(n), {})
                cells.append(f"{v['speedup']:6.2f}x/{v['efficiency']:4.2f}{flag(v)}"
                             if "speedup" in v else "error ")
            log(f"  {kind:<11}" + "".join(f"{c:>15}" for c in cells))
        for kind in res.get("not_available", {}):
            log(f"  {kind:<11} {res['not_available'][kind]}")
        pp = cpu["runners"].get("pyparallel", {})
        cells = [f"{pp[str(n)]['speedup_vs_serial_frozen']:6.2f}x" if "speedup" in pp.get(str(n), {})
                 else "" for n in cpu["worker_counts"]]
        log(f"  {'(pyparallel':<11}" + "".join(f"{c:>15}" for c in cells)
            + "     vs serial over the frozen dict)")
        log("  one round with giving the workers the data counted in (pool set-up; pyparallel: its freeze too):")
        for kind, r in cpu["runners"].items():
            cells = [f"{r[str(n)]['speedup_with_setup']:6.2f}x" if "speedup_with_setup" in r.get(str(n), {})
                     else "" for n in cpu["worker_counts"]]
            log(f"  {kind:<11}" + "".join(f"{c:>15}" for c in cells))
    if rt:
        log(f"\n2. Round trip, submit(noop).result(), {res['params']['roundtrip_workers']} workers")
        pp = rt.get("pyparallel", {}).get("median_us")
        for kind, v in rt.items():
            if "median_us" not in v:
                log(f"  {kind:<11} error: {v.get('error')}")
                continue
            rel = f"   {v['median_us'] / pp:6.2f}x pyparallel's" if pp else ""
            log(f"  {kind:<11} median {v['median_us']:8.1f} us  p90 {v['p90_us']:8.1f} us{flag(v)}{rel}")
    if mem:
        log(f"\n3. Memory after the CPU tasks, {res['params']['memory_workers']} workers (MB; "
            f"/wkr = (total - main before the pool) / workers)")
        log(f"  {'runner':<11}{'data':>8}{'tot RSS':>9}{'tot PSS':>9}{'RSS-data':>9}"
            f"{'/wkr RSS':>9}{'/wkr PSS':>9}{'procs':>6}")
        for kind, v in mem.items():
            if "error" in v:
                log(f"  {kind:<11} error: {v['error'][:200]}")
                continue
            log(f"  {kind:<11}{v['data'] / MB:8.0f}{v['total_rss'] / MB:9.0f}{v['total_pss'] / MB:9.0f}"
                f"{v['total_minus_data'] / MB:9.0f}{v['per_worker_rss'] / MB:9.1f}"
                f"{v['per_worker_pss'] / MB:9.1f}{v['children'] + 1:6d}")
        v = mem.get("pyparallel", {})
        if "plain_data" in v:
            log(f"  (pyparallel's data: the plain dict was {v['plain_data'] / MB:.0f} MB; after "
                f"freeze {v['rss_after_freeze'] / MB:.0f} MB; after dropping the plain dict "
                f"{v['data'] / MB:.0f} MB)")
    targets = check_targets(res)
    if targets:
        log("\nTargets (issues 2 and 8):")
        for what, got, ok in targets:
            log(f"  [{'met ' if ok else 'MISS'}] {what}: {got}")
    log("=" * 78)


def machine_info():
    import datetime
    import platform
    import socket
    model = cpu_model()
    cpus = (os.process_cpu_count() if hasattr(os, "process_cpu_count")
            else len(os.sched_getaffinity(0)))
    import pyparallel
    build = {"module": pyparallel._pyparallel.__file__}
    try:
        import subprocess
        src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        git = lambda *a: subprocess.run(["git", "-C", src, *a], capture_output=True,  # noqa: E731
                                        text=True, timeout=10).stdout.strip()
        # The repository this script lives in; the module may come from elsewhere.
        build["repo_commit"] = git("rev-parse", "--short", "HEAD")
        build["repo_src_modified"] = bool(git("status", "--porcelain", "--", "src", "meson.build"))
        build["module_built"] = datetime.datetime.fromtimestamp(
            os.path.getmtime(build["module"])).astimezone().isoformat(timespec="seconds")
    except Exception:
        pass
    return {"host": socket.gethostname(), "pyparallel": build, "cpu_model": model, "cpus": cpus,
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform()}, datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def main():
    global NOISE, RETRIES
    import argparse
    import json
    import shlex
    ap = argparse.ArgumentParser(description="pyparallel vs threads, processes and interpreters")
    ap.add_argument("--max-workers", type=int, default=None,
                    help="N: the most workers (default: the CPUs this process may use)")
    ap.add_argument("--workers", default=None,
                    help="worker counts to try, e.g. 1,2,4,8,16 (default: 1..N, "
                         "or powers of two and N when N > 8)")
    ap.add_argument("--keys", type=int, default=1_000_000, help="entries in the dataset")
    ap.add_argument("--task-ms", type=float, default=30.0, help="target duration of one task")
    ap.add_argument("--tasks-per-worker", type=int, default=8, help="tasks per round = this x N")
    ap.add_argument("--reps", type=int, default=9, help="timed rounds per configuration")
    ap.add_argument("--rt-calls", type=int, default=5000, help="round-trip calls per rep")
    ap.add_argument("--rt-warmup", type=int, default=500)
    ap.add_argument("--rt-reps", type=int, default=3)
    ap.add_argument("--only", default="cpu,roundtrip,memory", help="which benchmarks")
    ap.add_argument("--runners", default="pyparallel,threads,fork,spawn,interp")
    ap.add_argument("--noise", type=float, default=NOISE,
                    help="a run during which other processes used this many CPUs "
                         "is noisy and is taken again (default %(default)s)")
    ap.add_argument("--retries", type=int, default=RETRIES,
                    help="how often a noisy run is taken again (default %(default)s)")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="S",
                    help="first wait up to S seconds for 5 quiet seconds (other "
                         "processes using < --noise CPUs)")
    ap.add_argument("--note", default="", help="free text saved with the results "
                    "(e.g. which pyparallel build was measured)")
    ap.add_argument("--quick", action="store_true", help="small data, few reps: a smoke run")
    ap.add_argument("--json", default=None, help="where the JSON goes ('' for nowhere)")
    ap.add_argument("--svg", default=None, help="where the chart goes ('' for nowhere)")
    ap.add_argument("--chart-only", metavar="JSON", nargs="+",
                    help="only draw the chart, from these results files (several runs: "
                         "median and range)")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    ap.add_argument("--memory-child-task", help=argparse.SUPPRESS)
    args = ap.parse_args()
    root = os.path.dirname(HERE)
    N = args.max_workers or machine_info()[0]["cpus"]

    if args.memory_child:
        kpt, ntasks = map(int, args.memory_child_task.split(","))
        rec = memory_child(args.memory_child, N, args.keys, kpt, ntasks)
        print("MEMORY " + json.dumps(rec), flush=True)
        return
    if args.chart_only:
        results = []
        for name in args.chart_only:
            with open(name) as f:
                results.append(json.load(f))
        path = args.svg or os.path.join(root, "docs", "bench-work.svg")
        write_svg(results, path)
        print(f"chart: {path}")
        return

    if args.quick:
        args.keys = min(args.keys, 200_000)
        args.reps, args.rt_calls, args.rt_warmup, args.rt_reps = 2, 500, 100, 1
        args.task_ms = min(args.task_ms, 10.0)
    if args.workers:
        counts = sorted({int(x) for x in args.workers.split(",")})
    elif N <= 8:
        counts = list(range(1, N + 1))
    else:
        counts = sorted({1 << i for i in range(N.bit_length()) if 1 << i <= N} | {N})
    N = max(counts + [N])
    only = set(args.only.split(","))
    wanted = args.runners.split(",")
    runners, not_available = [], {}
    for kind in wanted:
        if kind == "interp" and not (sys.version_info >= (3, 14) and
                                     hasattr(__import__("concurrent.futures").futures,
                                             "InterpreterPoolExecutor")):
            not_available[kind] = "n/a (needs 3.14)"
            continue
        runners.append(kind)

    def log(msg):
        print(msg, flush=True)

    NOISE, RETRIES = args.noise, args.retries
    if args.wait_idle:
        deadline = time.perf_counter() + args.wait_idle
        while True:
            with Load() as load:
                time.sleep(5)
            if load.foreign < NOISE or time.perf_counter() > deadline:
                log(f"other processes used {load.foreign:.2f} CPUs over the last 5 s; starting")
                break
    info, date = machine_info()
    res = {"machine": info, "date": date, "note": args.note,
           "command": shlex.join([sys.executable] + sys.argv),
           "params": {"keys": args.keys, "task_ms": args.task_ms, "reps": args.reps,
                      "tasks_per_worker": args.tasks_per_worker, "max_workers": N,
                      "roundtrip_workers": N, "memory_workers": N,
                      "rt_calls": args.rt_calls, "rt_warmup": args.rt_warmup,
                      "rt_reps": args.rt_reps, "quick": args.quick,
                      "noise": NOISE, "retries": RETRIES},
           "not_available": not_available}
    log(f"CPython {info['python']}, {info['cpus']} CPUs ({info['cpu_model']}), N={N}, counts={counts}")
    for kind, why in not_available.items():
        log(f"{LABELS[kind]}: {why}")
    t_all = time.perf_counter()

    ntasks = args.tasks_per_worker * N
    kpt = None
    if "cpu" in only or "memory" in only:
        t = time.perf_counter()
        ds = Dataset(args.keys)
        log(f"dataset: {args.keys:,} keys built in {time.perf_counter() - t - ds.freeze_s:.2f} s, "
            f"frozen in {ds.freeze_s:.2f} s")
        # Calibrate keys per task so one task takes about --task-ms here.
        probe = min(20000, len(ds.keys) // 2)
        best = min(_timed(crunch, ds.data, ds.keys, 0, probe) for _ in range(3))
        kpt = max(100, min(len(ds.keys) // 2, int(probe * args.task_ms / 1e3 / best)))
        slices = make_slices(len(ds.keys), kpt, ntasks)
        res["params"]["keys_per_task"] = kpt
        res["dataset"] = {"freeze_s": ds.freeze_s}
    if "cpu" in only:
        log(f"\n1. CPU-bound: {ntasks} tasks x {kpt} keys, {args.reps} reps, median")
        res["cpu"] = bench_cpu(args, ds, slices, counts, runners, log)
    if "roundtrip" in only:
        log(f"\n2. Round trip: {args.rt_reps} x {args.rt_calls} calls after {args.rt_warmup} warm-up, {N} workers")
        res["roundtrip"] = bench_roundtrip(args, N, runners, log)
    if "memory" in only:
        del ds     # the children build their own
        log(f"\n3. Memory: fresh process per runner, {N} workers")
        res["memory"] = bench_memory(args, N, args.keys, kpt, ntasks,
                                     [k for k in runners], log)
    res["elapsed_s"] = time.perf_counter() - t_all
    res["targets"] = [{"target": w, "measured": g, "met": ok} for w, g, ok in check_targets(res)]
    print_summary(res, log)

    # A smoke run's file ends in .tmp, which git ignores.
    host = info["host"] or "local"
    name = (f"work-quick-{host}-{info['python']}.json.tmp" if args.quick
            else f"work-{host}-{info['python']}.json")
    json_path = args.json if args.json is not None else os.path.join(HERE, "results", name)
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w") as f:
            json.dump(res, f, indent=1)
        log(f"JSON: {json_path}")
    svg_path = args.svg if args.svg is not None else (
        "" if args.quick else os.path.join(root, "docs", "bench-work.svg"))
    if svg_path and "cpu" in res:
        write_svg(res, svg_path)
        log(f"chart: {svg_path}")
    log(f"total {res['elapsed_s']:.0f} s")


def _timed(fn, *args):
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
