"""bench_wiki_build.py -- how fast pyparallel.wiki indexes a dump.

    .venv/bin/python bench/bench_wiki_build.py [--dump PATH] [--rounds 3] [--workers N]

Measures, in one run:

* the plain-XML build on one core (the C scanner and the sort): MB/s of
  uncompressed XML, from the page cache (the file is read once first);
* a multistream .bz2 of the same dump (made once by this script, Wikipedia's
  form: 100 pages a stream) indexed by main alone and by N workers
  decompressing batches of streams: seconds and the speed-up.

Default dump: the GCIDE export (pyparallel.wiki.default_dump()).  Prints a
table and writes bench/results/wiki-build-<python>.json.
"""

import argparse
import bz2
import json
import os
import platform
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import pyparallel                       # noqa: E402
from pyparallel import wiki             # noqa: E402
from pyparallel import _pyparallel as _pp   # noqa: E402


def compress_part(part):
    return bz2.compress(part, 9)


def make_multistream(xml, out, pages_per_stream=100):
    """Wikipedia's multistream form: the head, then streams of 100 pages,
    then the tail, each its own bz2 stream (compressed by the workers)."""
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(xml):
        return out
    data = open(xml, "rb").read()
    starts = [m.start() for m in re.finditer(rb"  <page>", data)]
    cuts = [0] + starts[::pages_per_stream] + [data.rindex(b"</mediawiki>"), len(data)]
    parts = [data[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]
    with open(out + ".tmp", "wb") as f:
        for blob in pyparallel.map(compress_part, parts):
            f.write(blob)
    os.replace(out + ".tmp", out)
    return out


def quiet():
    return wiki.Progress("", 0, enabled=False, stream=open(os.devnull, "w"))


def timed(fn):
    t0 = time.perf_counter()
    image = fn()
    secs = time.perf_counter() - t0
    _pp.wiki_close(image)
    return secs


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dump", help="a MediaWiki XML export (default: GCIDE)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=pyparallel.cpu_count())
    p.add_argument("--out", default=None)
    args = p.parse_args()
    pyparallel.configure(workers=args.workers)
    xml = args.dump or wiki.default_dump()
    size = os.path.getsize(xml)
    with open(xml, "rb") as f:                 # into the page cache
        while f.read(1 << 24):
            pass
    plain = [timed(lambda: wiki.build_index(xml, progress=quiet(), parallel=False))
             for _ in range(args.rounds)]
    cache = os.path.join(os.path.expanduser("~/.cache/pyparallel/bench"))
    os.makedirs(cache, exist_ok=True)
    ms = make_multistream(xml, os.path.join(cache, os.path.basename(xml) + "-multistream.xml.bz2"))
    seq, par = [], []
    for _ in range(args.rounds):
        seq.append(timed(lambda: wiki.build_index(ms, progress=quiet(), parallel=False)))
        par.append(timed(lambda: wiki.build_index(ms, progress=quiet(), parallel=True)))
    best = min(plain)
    res = {
        "python": platform.python_version(), "machine": platform.machine(),
        "cpus": pyparallel.cpu_count(), "workers": args.workers,
        "dump": os.path.basename(xml), "dump_bytes": size,
        "bz2_bytes": os.path.getsize(ms),
        "plain_s": plain, "plain_MBps": size / best / 1e6,
        "bz2_main_s": seq, "bz2_workers_s": par,
        "bz2_speedup": min(seq) / min(par),
    }
    print(f"dump {res['dump']}: {size / 1e6:.1f} MB of XML, multistream .bz2 "
          f"{res['bz2_bytes'] / 1e6:.1f} MB; {args.workers} workers, {res['cpus']} CPUs")
    print(f"  plain XML, one core        best {best:.3f} s  = {res['plain_MBps']:,.0f} MB/s "
          f"(rounds: {', '.join(f'{x:.3f}' for x in plain)})")
    print(f"  .bz2, main alone           best {min(seq):.2f} s "
          f"({size / min(seq) / 1e6:.0f} MB/s of XML)")
    print(f"  .bz2, {args.workers} workers decompress  best {min(par):.2f} s "
          f"({size / min(par) / 1e6:.0f} MB/s of XML): {res['bz2_speedup']:.2f}x main alone")
    out = args.out or os.path.join(HERE, "results", f"wiki-build-{res['python']}.json")
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"  -> {os.path.relpath(out)}")


if __name__ == "__main__":
    main()
