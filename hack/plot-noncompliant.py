#!/usr/bin/env python3
"""Plot gomemlimit_injector_noncompliant_pods from an end-to-end run as an SVG.

    E2E_METRICS_OUT=/tmp/escaped.csv cargo test --test e2e -- escaped
    hack/plot-noncompliant.py /tmp/escaped.csv > docs/background-audit.svg

The CSV is what tests/e2e/escaped.rs writes: `seconds,namespace,noncompliant_pods` rows
sampled from the webhook's /metrics every 250 ms (the largest count of any replica per
namespace, as the alerts aggregate it), and `seconds,#mark,what` rows for named moments.
The namespaces are stacked, as the dashboard's "Non-compliant pods by namespace" panel
stacks them. Standard library only.
"""

import csv
import sys
from collections import defaultdict
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 760, 330
LEFT, RIGHT, TOP, BOTTOM = 56, 170, 52, 46
COLORS = ["#e0663d", "#3d7fe0", "#38a169", "#a15ed8", "#d69e2e"]


def main(path):
    series = defaultdict(list)
    marks = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            t = float(row["seconds"])
            if row["namespace"] == "#mark":
                marks.append((t, row["noncompliant_pods"]))
            else:
                series[row["namespace"]].append((t, float(row["noncompliant_pods"])))
    if not series:
        sys.exit(f"{path}: no samples")
    namespaces = sorted(series)
    times = sorted({t for points in series.values() for t, _ in points})
    value = {ns: dict(points) for ns, points in series.items()}
    t_max = max(times[-1], max((t for t, _ in marks), default=0)) + 0.5
    totals = [sum(value[ns].get(t, 0) for ns in namespaces) for t in times]
    y_max = max(1, max(totals))
    y_top = y_max + 1

    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM

    def x(t):
        return LEFT + plot_w * t / t_max

    def y(v):
        return TOP + plot_h * (1 - v / y_top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text x="{LEFT}" y="22" font-size="15" font-weight="bold">'
        "gomemlimit_injector_noncompliant_pods, by namespace (end-to-end run)</text>",
        f'<text x="{LEFT}" y="40" fill="#555">pods admitted unmutated while the webhook was down; '
        "then the webhook back as 2 replicas, one scan a second</text>",
    ]
    # Grid and axes.
    for v in range(0, int(y_top) + 1):
        out.append(f'<line x1="{LEFT}" y1="{y(v):.1f}" x2="{LEFT + plot_w}" y2="{y(v):.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{LEFT - 8}" y="{y(v) + 4:.1f}" text-anchor="end" fill="#555">{v}</text>')
    step = 2 if t_max <= 20 else 5
    for s in range(0, int(t_max) + 1, step):
        out.append(f'<text x="{x(s):.1f}" y="{TOP + plot_h + 18}" text-anchor="middle" fill="#555">{s}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle" fill="#555">'
               "seconds after the webhook came back</text>")
    out.append(f'<text transform="translate(16,{TOP + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle" '
               'fill="#555">pods</text>')
    # Stacked step areas, bottom namespace first.
    base = [0.0] * len(times)
    for i, ns in enumerate(namespaces):
        top = [b + value[ns].get(t, 0) for b, t in zip(base, times)]
        upper, lower = [], []
        for j, t in enumerate(times):
            t_next = times[j + 1] if j + 1 < len(times) else t
            upper += [(x(t), y(top[j])), (x(t_next), y(top[j]))]
            lower += [(x(t), y(base[j])), (x(t_next), y(base[j]))]
        points = upper + lower[::-1]
        color = COLORS[i % len(COLORS)]
        out.append('<polygon fill="{}" fill-opacity="0.55" stroke="{}" stroke-width="1.5" points="{}"/>'.format(
            color, color, " ".join(f"{px:.1f},{py:.1f}" for px, py in points)))
        ly = TOP + 16 + 20 * i
        out.append(f'<rect x="{LEFT + plot_w + 16}" y="{ly - 10}" width="12" height="12" fill="{color}" fill-opacity="0.7"/>')
        out.append(f'<text x="{LEFT + plot_w + 34}" y="{ly}">{escape(ns)}</text>')
        base = top
    # Named moments.
    for k, (t, what) in enumerate(marks):
        out.append(f'<line x1="{x(t):.1f}" y1="{TOP}" x2="{x(t):.1f}" y2="{TOP + plot_h}" '
                   'stroke="#333" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{x(t) + 4:.1f}" y="{TOP + 12 + 14 * (k % 2)}" fill="#333" font-size="11">'
                   f"{escape(what)}</text>")
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>')
    out.append("</svg>")
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
