"""wiki_chart.py -- the SVG chart of a bench_wiki.py run (docs/bench-wiki.svg).

One panel per corpus; in each, a group of bars per route (/offsets,
/wiki: the median requests per second over rounds, labelled with the ratio
pyparallel ÷ that server) and a group for memory (RSS and PSS summed over
the server's process tree after warm-up).  Drawn from the JSON(s) a run
saved; several JSON files (one per corpus, say) are drawn into one chart:

    .venv/bin/python bench/wiki_chart.py docs/bench-wiki.svg bench/results/wiki-....json [more.json]
    .venv/bin/python bench/bench_wiki.py --report bench/results/wiki-....json --chart   # one file
"""

import json
import sys

from http_chart import _esc, bar     # bench/ is on sys.path (the script's own folder)

COLORS = {"pyparallel": "#1f77b4", "gunicorn-sync": "#98df8a", "gunicorn-gthread": "#2ca02c",
          "granian-wsgi": "#fdae6b"}
LABELS = {"pyparallel": "pyparallel wiki", "gunicorn-sync": "gunicorn sync",
          "gunicorn-gthread": "gunicorn gthread", "granian-wsgi": "granian WSGI"}
MB = 1 << 20


def _rate(v):
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v < 1e4 else f"{v / 1e3:.0f}k"


def _panels(results):
    """[(res, corpus)] in order."""
    out = []
    for res in results:
        for corpus in res["summary"]:
            out.append((res, corpus))
    return out


def write_svg(results, path):
    if isinstance(results, dict):
        results = [results]
    panels = _panels(results)
    kinds = []
    for res in results:
        kinds += [k for k in res["params"]["kinds"] if k not in kinds]
    BAR, GAP, LW, CW, T = 12, 12, 200, 400, 76
    nroutes = max(len(r["params"]["routes"]) for r in results)
    group_h = len(kinds) * BAR + GAP + 16
    panel_h = (nroutes + 2) * group_h + 30
    W = LW + CW + 260
    H = T + len(panels) * panel_h + 10
    first = results[0]
    p = first["params"]
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
         f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">Wiki server, '
         f'{p["workers"]} workers each: requests per second (median of {p["rounds"]} rounds) '
         f'and memory</text>',
         f'<text x="{W / 2}" y="40" text-anchor="middle" fill="#555">label: pyparallel ÷ that '
         f'server (median of the per-round ratios); MB = 2^20 bytes</text>',
         f'<text x="{W / 2}" y="56" text-anchor="middle" fill="#555">'
         f'{_esc(first["machine"].get("cpu_model", ""))}, {first["machine"].get("cpus")} CPUs; '
         f'wrk {p["conns"]} connections, {p["duration"]} s per route; '
         f'/offsets ?limit={p["offsets_limit"]}</text>']
    y = T
    for res, corpus in panels:
        summ = res["summary"][corpus]
        info = res["corpora"][corpus]["index"]["info"]
        title = ("GCIDE" if corpus == "gcide" else "SYNTHETIC") + \
            f", {info['titles']:,} titles, index {res['corpora'][corpus]['index']['index_bytes'] / MB:.0f} MB"
        s.append(f'<text x="10" y="{y + 12}" font-size="13" font-weight="bold">{_esc(title)}</text>')
        y += 24
        groups = [(r, "rps") for r in res["params"]["routes"]] + [("rss", "mem"), ("pss", "mem")]
        top_rps = max((summ[k]["routes"].get(r, {}).get("rps_median", 0)
                       for k in summ for r in res["params"]["routes"]), default=1) or 1
        top_mem = max((summ[k]["rss"] for k in summ), default=1) or 1
        for g, what in groups:
            lab = {"offsets": "GET /offsets/<prefix> (req/s)", "wiki": "GET /wiki/<title> (req/s)",
                   "rss": "RSS, whole process tree (MB)", "pss": "PSS, whole process tree (MB)"}[g]
            s.append(f'<text x="10" y="{y + 10}" fill="#333">{_esc(lab)}</text>')
            y += 14
            mine = summ.get("pyparallel", {})
            for k in kinds:
                d = summ.get(k)
                v = None
                if d:
                    v = d["routes"].get(g, {}).get("rps_median") if what == "rps" else d.get(g)
                if v is None:
                    y += BAR
                    continue
                if what == "rps":
                    w = CW * v / top_rps
                    # the median of the within-round ratios, as in the tables
                    r = res.get("ratios", {}).get(corpus, {}).get(f"{g}:pyparallel/{k}")
                    text = _rate(v) + (f"  {r['ratio']:.2f}×" if r and k != "pyparallel" else "")
                else:
                    w = CW * v / top_mem
                    ref = mine.get(g)
                    text = f"{v / MB:.0f} MB" + (f"  {ref / v:.2f}×" if ref and k != "pyparallel" else "")
                    if k == "pyparallel" and g == "rss":
                        n = res["params"]["workers"]
                        ib = d.get("index_bytes") or 0
                        text += f"  (bound 1.2 × index + {n} × 20 MB = {(1.2 * ib + n * 20 * MB) / MB:.0f} MB)"
                bar(s, LW, y, BAR, w, LABELS.get(k, k), COLORS.get(k, "#999"), text)
                y += BAR
            y += GAP
        y += 6
    s.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(s) + "\n")


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    results = []
    for p in argv[2:]:
        with open(p) as f:
            results.append(json.load(f))
    write_svg(results, argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
