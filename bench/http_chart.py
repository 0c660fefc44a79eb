"""http_chart.py -- the SVG chart of a bench_http.py run (docs/bench-http.svg).

One panel per set-up (per core, all cores); in each, a group of bars per
measurement (shape and connections), one bar per server: the median
requests per second over rounds, its label the ratio to nginx in that
group.  Drawn from the JSON a run saved:

    .venv/bin/python bench/http_chart.py bench/results/http-....json docs/bench-http.svg
    .venv/bin/python bench/bench_http.py --report bench/results/http-....json --chart   # the same
"""

import json
import sys

COLORS = {"pyparallel": "#1f77b4", "pyparallel-wsgi": "#6baed6", "pyparallel-threads": "#9ecae1",
          "granian-rsgi": "#ff7f0e", "granian-wsgi": "#fdae6b", "uvicorn": "#2ca02c",
          "gunicorn": "#98df8a", "go": "#9467bd", "nginx": "#7f7f7f"}


def _esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _rate(v):
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.0f}k"


def bar(s, x, y, height, width, label, color, text):
    """Appends to the SVG lines s one bar of a panel: its label right-aligned
    before x, the bar from x, and text after it (bench_wiki's chart too)."""
    s.append(f'<text x="{x - 6}" y="{y + height - 2}" text-anchor="end" '
             f'font-size="10">{_esc(label)}</text>')
    s.append(f'<rect x="{x}" y="{y}" width="{max(width, 0.5):.1f}" height="{height - 2}" '
             f'fill="{color}"/>')
    s.append(f'<text x="{x + width + 4:.1f}" y="{y + height - 2}" font-size="10">'
             f'{_esc(text)}</text>')


def _ncpu(m):
    c = m.get("cpus")
    return len(c) if isinstance(c, (list, tuple)) else c


def write_svg(res, path, labels=None, test_label=str):
    p = res["params"]
    labels = labels or {}
    kinds = [k for k in p["kinds"] if k not in res.get("not_available", {})]
    setups = [s for s in p["setups"] if res["summary"].get(s)]
    tests = p["tests"]
    BAR, GAP, LW, CW, T = 11, 14, 220, 430, 60
    group_h = len(kinds) * BAR + GAP + 16
    panel_h = len(tests) * group_h + 30
    W = LW + CW + 90
    H = T + len(setups) * panel_h + 20 + 16 * ((len(kinds) + 2) // 3)
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
         f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">HTTP servers, '
         f'TechEmpower shapes: requests per second (median of {p["rounds"]} rounds; '
         f'label: ÷ nginx)</text>',
         f'<text x="{W / 2}" y="40" text-anchor="middle" fill="#555">'
         f'{_esc(res["machine"].get("cpu_model", ""))}, {_ncpu(res["machine"])} CPUs; '
         f'wrk, {p["duration"]} s per measurement</text>']
    y = T
    for setup in setups:
        summ = res["summary"][setup]
        top = max((summ.get(t, {}).get(k, {}).get("rps_median", 0) for t in tests for k in kinds),
                  default=1) or 1
        s.append(f'<text x="10" y="{y + 12}" font-size="13" font-weight="bold">'
                 f'{"Per core (1 worker, pinned)" if setup == "per-core" else "All cores"}</text>')
        y += 24
        for t in tests:
            row = summ.get(t, {})
            ceiling = row.get("nginx", {}).get("rps_median")
            s.append(f'<text x="10" y="{y + 10}" fill="#333">{_esc(test_label(t))}</text>')
            y += 14
            for k in kinds:
                v = row.get(k, {}).get("rps_median")
                if v is None:
                    y += BAR
                    continue
                w = CW * v / top
                ratio = f"  {v / ceiling:.2f}×" if ceiling else ""
                bar(s, LW, y, BAR, w, labels.get(k, k), COLORS.get(k, "#999"),
                    f"{_rate(v)}{ratio}")
                y += BAR
            y += GAP
        y += 6
    s.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(s) + "\n")


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        res = json.load(f)
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    import bench_http
    write_svg(res, argv[2], bench_http.LABELS, bench_http.test_label)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
