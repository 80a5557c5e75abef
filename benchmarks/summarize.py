#!/usr/bin/env python3
"""Prints `prewarm bench --json` reports as the Markdown tables of RESULTS.md.

    python3 benchmarks/summarize.py REPORT.json...
    python3 benchmarks/summarize.py --handoff REPORT.json   (warm first byte minus direct-warm)
"""
import json
import math
import sys


def ms(value):
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def percentile(values, q):
    """Nearest rank."""
    if not values:
        return None
    values = sorted(values)
    return values[max(0, math.ceil(q * len(values)) - 1)]


def table(path):
    report = json.load(open(path))
    print(f"`{path}`: {report['load']} ({report['host']}, {report['date']})\n")
    print("| target | turns | first token p50 | p90 | p99 | max | completion p50 | p99 | hit ratio | predicted | refused | broken |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in report["targets"]:
        ft, c, o = t["first_token_ms"], t["completion_ms"], t["outcomes"]
        predicted = t.get("predicted_hit_ratio")
        print(
            f"| {t['name']} | {t['turns']} | {ms(ft['p50'])} | {ms(ft['p90'])} | {ms(ft['p99'])} | {ms(ft['max'])} "
            f"| {ms(c['p50'])} | {ms(c['p99'])} | {100 * t['hit_ratio']:.1f}% "
            f"| {'-' if predicted is None else f'{100 * predicted:.1f}%'} "
            f"| {o.get('429', 0) + o.get('503', 0)} | {o.get('broken', 0)} |"
        )
        if t.get("daemon"):
            d = t["daemon"]
            print(f"|  | daemon: {d['cpu_seconds']:.2f} CPU s, RSS max {d['rss_max_bytes'] >> 20} MiB | | | | | | | | | | |")
    print()


def handoff(path):
    report = json.load(open(path))
    targets = {t["name"]: t for t in report["targets"]}
    pool = next(t for n, t in targets.items() if n.startswith("prewarm:"))
    direct = targets["direct-warm"]
    warm = [s["first_byte_ms"] for s in pool["samples"] if s.get("start") == "warm" and s.get("first_byte_ms") is not None]
    floor = [s["first_byte_ms"] for s in direct["samples"] if s.get("first_byte_ms") is not None]
    print(f"`{path}`: {report['load']} ({report['host']}, {report['date']})\n")
    print("| first byte | n | p50 | p99 |")
    print("|---|---:|---:|---:|")
    print(f"| direct-warm (initialised agent over pipes) | {len(floor)} | {ms(percentile(floor, .5))} | {ms(percentile(floor, .99))} |")
    print(f"| prewarm, warm turns | {len(warm)} | {ms(percentile(warm, .5))} | {ms(percentile(warm, .99))} |")
    print(f"| hand-off overhead (prewarm - direct) | | {ms(percentile(warm, .5) - percentile(floor, .5))} | {ms(percentile(warm, .99) - percentile(floor, .99))} |")
    print()


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--handoff":
        for path in args[1:]:
            handoff(path)
    else:
        for path in args:
            table(path)
