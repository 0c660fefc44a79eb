"""Search the Python standard library's own source code on every core.

The main interpreter reads every .py file of the standard library, builds an
inverted index (word -> postings) and freezes it: one copy, immutable and
immortal.  Thousands of ranked queries then run on all cores; every worker
reads the same index by pointer -- no copies, no pickling of the index, no
reference-count traffic.  The same queries also run on one core, so the
speed-up is measured, and the two result sets are checked to be identical.

    scripts/run                    # the defaults
    scripts/run --queries 20000    # more work
    scripts/run --workers 1        # see it on one core
"""

import argparse
import math
import os
import random
import re
import sysconfig
import time

import pyparallel

WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")


def build_index(root, limit):
    """(paths, {word: ((doc, count), ...)}, {word: idf}) from .py files."""
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "test", "tests", "__pycache__"))
        paths.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    paths = paths[:limit]
    postings = {}
    for doc, path in enumerate(paths):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        counts = {}
        for w in WORD.findall(text):
            w = w.lower()
            counts[w] = counts.get(w, 0) + 1
        for w, c in counts.items():
            postings.setdefault(w, []).append((doc, c))
    n = len(paths)
    idf = {w: math.log(n / len(p)) for w, p in postings.items()}
    return [os.path.relpath(p, root) for p in paths], postings, idf


def search(index, query, top=3):
    """Rank documents containing every word of query by tf-idf."""
    postings, idf = index["postings"], index["idf"]
    scores = None
    for w in query:
        plist = postings.get(w)
        if plist is None:
            return ()
        weight = idf[w]
        hits = {doc: (1.0 + math.log(c)) * weight for doc, c in plist}
        if scores is None:
            scores = hits
        else:
            scores = {d: s + hits[d] for d, s in scores.items() if d in hits}
        if not scores:
            return ()
    best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return tuple((doc, round(score, 6)) for doc, score in best)


def search_many(index, queries):
    """One task: a batch of queries against the shared index."""
    return [search(index, q) for q in queries]


def make_queries(index, count, seed=1234):
    rng = random.Random(seed)
    common = sorted(w for w, p in index["postings"].items() if 20 <= len(p))
    return [tuple(rng.sample(common, rng.choice((1, 2, 2, 3)))) for _ in range(count)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=sysconfig.get_paths()["stdlib"],
                    help="directory of .py files to index (default: the stdlib)")
    ap.add_argument("--files", type=int, default=5000, help="index at most this many files")
    ap.add_argument("--queries", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=pyparallel.cpu_count())
    ap.add_argument("--batch", type=int, default=100, help="queries per task")
    args = ap.parse_args()

    t0 = time.perf_counter()
    paths, postings, idf = build_index(args.root, args.files)
    t1 = time.perf_counter()
    index = pyparallel.freeze({"paths": paths, "postings": postings, "idf": idf})
    t2 = time.perf_counter()
    del postings, idf
    nwords = len(index["postings"])
    nposts = sum(len(p) for p in index["postings"].values())
    print(f"indexed {len(paths)} files under {args.root}: {nwords} words, "
          f"{nposts} postings ({t1 - t0:.2f} s); frozen in {t2 - t1:.2f} s")

    queries = make_queries(index, args.queries)
    batches = [queries[i:i + args.batch] for i in range(0, len(queries), args.batch)]

    t = time.perf_counter()
    serial = [r for b in batches for r in search_many(index, b)]
    one_core = time.perf_counter() - t
    print(f"1 core  (main interpreter): {len(queries)} queries in {one_core:.2f} s")

    pyparallel.configure(workers=args.workers)
    with pyparallel.Executor(args.workers) as ex:
        ex.submit(len, ()).result()          # start the workers
        ex._get_pool().wait_ready()
        t = time.perf_counter()
        futures = [ex.submit(search_many, index, b) for b in batches]
        parallel = [r for f in futures for r in f.result()]
        many = time.perf_counter() - t
    print(f"{args.workers} workers (own-GIL interpreters): {len(queries)} queries "
          f"in {many:.2f} s -> {one_core / many:.2f}x faster than 1 core "
          f"({one_core / many / args.workers:.0%} of linear)")
    if parallel != serial:
        raise SystemExit("results differ between 1 core and the workers!")
    print("results identical on 1 core and on the workers")

    for q, res in list(zip(queries, serial))[:3]:
        hits = ", ".join(f"{index['paths'][doc]} ({score:.1f})" for doc, score in res) or "no match"
        print(f"  {' '.join(q)!r}: {hits}")


if __name__ == "__main__":
    main()
