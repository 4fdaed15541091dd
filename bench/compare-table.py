#!/usr/bin/env python3
"""Markdown table of a bench/compare.sh run: medians over repetitions, ratios to pm.

    python3 bench/compare-table.py DIR

DIR holds SYSTEM.max-rate.N.json, SYSTEM.fixed-rate.N.json and SYSTEM.idle.json (pm-loadtest reports).
"""
import glob
import json
import os
import statistics
import sys

SYSTEMS = [
    ("pm", "pm-scheduler `--fsync always`", "yes: fsync before SubmitAck and ack reply"),
    ("redis-always", "Redis streams, `appendfsync always`", "yes: AOF fsync before the reply"),
    ("redis-everysec", "Redis streams, `appendfsync everysec`", "no: fsync once a second"),
    ("bean-f0", "beanstalkd `-b DIR -f 0`", "yes: binlog fsync before the reply"),
    ("bean-default", "beanstalkd `-b DIR` (`-f 50`)", "no: fsync at most every 50 ms"),
]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def runs(d, system, scenario):
    out = []
    for p in sorted(glob.glob(os.path.join(d, f"{system}.{scenario}.*.json"))):
        r = load(p)
        if r is not None:
            out.append(r)
    return out


def med(values):
    return statistics.median(values) if values else None


def fmt_rate(v):
    return "–" if v is None else f"{v / 1000:.1f} k"


def fmt_ms(v):
    return "–" if v is None else f"{v:.2f} ms"


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(64)
    d = sys.argv[1]
    rows = {}
    for key, _, _ in SYSTEMS:
        mx = runs(d, key, "max-rate")
        fx = runs(d, key, "fixed-rate")
        rates = [r["acked_per_s"] for r in mx]
        errors = sum(r["totals"]["submit_errors"] + r["totals"]["ack_errors"] for r in mx + fx)
        # Accepted but not acked when the drain ended: the consumers could not keep up with the producers.
        backlog = med([r["unacked_at_end"] for r in mx])
        idle = load(os.path.join(d, f"{key}.idle.json"))
        per_conn = None
        if idle and idle["report"].get("server_bytes_per_connection") is not None:
            per_conn = (idle["report"]["server_bytes_per_connection"], idle["report"]["opened"])
        rows[key] = {
            "rate": med(rates),
            "range": (min(rates), max(rates)) if rates else None,
            "n": len(rates),
            "p50": med([r["latency_ms"]["p50"] for r in fx]),
            "p99": med([r["latency_ms"]["p99"] for r in fx]),
            "p99_range": (min(r["latency_ms"]["p99"] for r in fx), max(r["latency_ms"]["p99"] for r in fx)) if fx else None,
            "offered": fx[0]["config"]["rate"] if fx else None,
            "errors": errors,
            "backlog": backlog,
            "idle": per_conn,
        }
    pm = rows["pm"]
    offered = pm["offered"] or 0
    print(f"| system | durable before reply | max-rate tasks/s (median [range], n) | pm ÷ system | "
          f"p50 at {offered / 1000:.0f} k/s | p99 at {offered / 1000:.0f} k/s [range] | "
          f"memory per idle connection | errors | max-rate backlog at end |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, name, durable in SYSTEMS:
        r = rows[key]
        rng = "" if r["range"] is None else f" [{fmt_rate(r['range'][0])}–{fmt_rate(r['range'][1])}]"
        ratio = "–"
        if r["rate"] and pm["rate"]:
            ratio = f"{pm['rate'] / r['rate']:.2f}×"
        p99r = "" if r["p99_range"] is None else f" [{r['p99_range'][0]:.2f}–{r['p99_range'][1]:.2f}]"
        idle = "–" if r["idle"] is None else f"{r['idle'][0]:.0f} B ({r['idle'][1]} conns)"
        backlog = "–" if r["backlog"] is None else f"{r['backlog']:.0f}"
        print(f"| {name} | {durable} | {fmt_rate(r['rate'])}{rng}, {r['n']} | {ratio} | {fmt_ms(r['p50'])} | "
              f"{fmt_ms(r['p99'])}{p99r} | {idle} | {r['errors']} | {backlog} |")


if __name__ == "__main__":
    main()
