"""What /proc says about this machine and its processes, shared by the
benchmark scripts."""

import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time


def descendants(root):
    """Pids of every descendant of root (children, grandchildren, ...)."""
    parent = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the comm field may hold spaces and parentheses: split after the last ')'
        fields = stat[stat.rindex(")") + 2:].split()
        parent[int(name)] = int(fields[1])
    found, todo = [], [root]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found.extend(kids)
        todo.extend(kids)
    return found


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, or "unknown"."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg=""):
    print(msg, file=sys.stderr, flush=True)


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    if not n:
        return None
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def parse_cpus(text):
    """"0-3,8" -> {0, 1, 2, 3, 8}"""
    cpus = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    if not cpus:
        raise ValueError(f"no CPUs in {text!r}")
    return cpus


def pinned(cpus):
    """A preexec_fn that pins the child (and what it starts) to cpus, or None."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def cpus_usable():
    return (os.process_cpu_count() if hasattr(os, "process_cpu_count")
            else len(os.sched_getaffinity(0)))


def read_str(path):
    try:
        with open(path) as f:
            return " ".join(f.read().split())
    except OSError:
        return None


def read_int(path):
    s = read_str(path)
    try:
        return int(s)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------
# /proc: process trees, their CPU time and memory, the whole machine's CPU.

def tree(root):
    """root and every descendant of it."""
    return [root] + descendants(root)


def proc_cpu(pid):
    """utime + stime of a process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_cpu(root):
    """CPU seconds (utime + stime) of root and all its descendants."""
    return sum(proc_cpu(p) for p in tree(root))


def tree_rss(root):
    """(summed VmRSS in bytes, number of processes) of root and its descendants."""
    pids = tree(root)
    return sum(proc_rss(p) for p in pids), len(pids)


def machine_busy():
    """(busy, steal) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = v[:7]
    steal = v[7] if len(v) > 7 else 0
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def fmt_rate(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


# --------------------------------------------------------------------------
# What is measured: the machine, the repository, the pyparallel module.

def git(root, *a):
    try:
        return subprocess.run(["git", "-C", root, *a], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def pyparallel_info(python=None):
    """What pyparallel this interpreter (or python) imports, without starting workers."""
    code = ("import json, importlib.util, pyparallel as p; print(json.dumps({"
            "'module': p._pyparallel.__file__, 'has_server': hasattr(p, 'server'), "
            "'has_http': importlib.util.find_spec('pyparallel.http') is not None, "
            "'cpu_count': p.cpu_count()}))")
    r = subprocess.run([python or sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tempfile.gettempdir(), timeout=60)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["import failed"])[-1]}
    info = json.loads(r.stdout)
    try:
        info["module_built"] = datetime.datetime.fromtimestamp(
            os.path.getmtime(info["module"])).astimezone().isoformat(timespec="seconds")
    except OSError:
        pass
    return info


def machine_facts(root):
    """(facts about this machine, the repository at root and its pyparallel, now)."""
    mem_total = None
    try:
        with open("/proc/meminfo") as f:
            mem_total = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    pp = pyparallel_info()
    pp["repo_commit"] = git(root, "rev-parse", "--short", "HEAD")
    pp["repo_src_modified"] = bool(git(root, "status", "--porcelain", "--", "src", "meson.build"))
    return {"host": socket.gethostname(), "cpu_model": cpu_model(), "cpus": cpus_usable(),
            "cpu_count": os.cpu_count(), "mem_total": mem_total, "kernel": platform.release(),
            "platform": platform.platform(), "python": platform.python_version(),
            "implementation": platform.python_implementation(), "executable": sys.executable,
            "pyparallel": pp,
            "somaxconn": read_int("/proc/sys/net/core/somaxconn"),
            "ip_local_port_range": read_str("/proc/sys/net/ipv4/ip_local_port_range"),
            "tcp_tw_reuse": read_int("/proc/sys/net/ipv4/tcp_tw_reuse")}, \
        datetime.datetime.now().astimezone()


# --------------------------------------------------------------------------
# Measuring: a load generator's run with the CPU it, the server and the rest
# of the machine used; memory sampled while something is held; the results.

def run_accounted(cmd, timeout, cpus, server_cpu):
    """Run cmd (pinned to cpus, if any) to its end.  Returns (the completed
    process, or None when it ran past timeout seconds; the accounting:
    wall_s, server_cpu_s (server_cpu() after minus before), client_cpu_s
    (cmd's own CPU time), other_cpus and steal_cpus (CPUs that everything
    else on the machine used, and that the hypervisor stole, meanwhile))."""
    ru0 = os.times()
    busy0, steal0 = machine_busy()
    s0 = server_cpu()
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           preexec_fn=pinned(cpus))
    except subprocess.TimeoutExpired:
        return None, {}
    wall = time.monotonic() - t0
    s1 = server_cpu()
    busy1, steal1 = machine_busy()
    ru1 = os.times()
    client = (ru1.children_user - ru0.children_user) + (ru1.children_system - ru0.children_system)
    server = s1 - s0
    return r, {"wall_s": round(wall, 3), "server_cpu_s": round(server, 3),
               "client_cpu_s": round(client, 3),
               "other_cpus": round(max(0.0, (busy1 - busy0) - server - client) / wall, 3),
               "steal_cpus": round((steal1 - steal0) / wall, 3)}


def sample_while(seconds, sample, every=0.25):
    """sample() every `every` seconds for `seconds` (at least once); the list of samples."""
    samples = []
    t_end = time.monotonic() + seconds
    while True:
        time.sleep(every)
        samples.append(sample())
        if time.monotonic() >= t_end:
            return samples


def save_json(res, path):
    """Write res to path atomically (through path.tmp), creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(res, f, indent=1)
    os.replace(path + ".tmp", path)
    log(f"results: {path}")
