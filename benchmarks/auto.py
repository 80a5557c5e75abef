#!/usr/bin/env python3
"""Per phase, for each pool of a `prewarm bench --phases ... --together` run: turns, measured
miss rate (turns not served warm) and its predictions, idle spare-seconds, and how long after
each step the pool took to reach its new size. Prints the Markdown tables of RESULTS.md.

    python3 benchmarks/auto.py REPORT.json [JOURNAL.sqlite]

A phase's steady part starts SETTLE seconds (default 30) after its step: the turns of the
transition are counted in the whole phase, not in the steady part. The miss goal is checked
on each steady part: at most target_miss + 3 standard errors of a binomial share of its turns.
"""
import json
import math
import os
import sqlite3
import sys

TARGET_MISS = float(os.environ.get("TARGET_MISS", "0.01"))
SETTLE = float(os.environ.get("SETTLE", "30"))


def phases_of(load):
    """[(start, end, rate)] from the load's description ('... at R/s for S s, then ...')."""
    parts = load.split("at ", 1)[1].split(" (seed")[0].split(", then ")
    bounds, start = [], 0.0
    for part in parts:
        rate, seconds = part.split("/s for ")
        seconds = float(seconds.rstrip(" s"))
        bounds.append((start, start + seconds, float(rate)))
        start += seconds
    return bounds


def missed(sample):
    return not (sample.get("start") == "warm" and sample["outcome"] == "completed")


def idle_seconds(timeline, start, end):
    """Idle spares integrated over [start, end) from the 250 ms samples (each held until the next)."""
    total = 0.0
    for here, after in zip(timeline, timeline[1:]):
        a, b = max(start, here["at"]), min(end, after["at"])
        if b > a:
            total += here["idle"] * (b - a)
    return total


def settle_time(timeline, step, end, key):
    """Seconds from `step` until `key` first comes within 1 of its median over the last 60 s of
    the phase (the size it settled at), and that size."""
    late = sorted(s[key] for s in timeline if end - 60 <= s["at"] < end)
    if not late:
        return None, None
    size = late[len(late) // 2]
    for s in timeline:
        if s["at"] >= step and abs(s[key] - size) <= 1:
            return s["at"] - step, size
    return None, size


def main():
    report = json.load(open(sys.argv[1]))
    bounds = phases_of(report["load"])
    print(f"`{sys.argv[1]}`: {report['load']} ({report['host']}, {report['date']})\n")
    print(f"Steady part: from {SETTLE:.0f} s after the phase's start. Allowed miss: {TARGET_MISS:.0%} + 3 standard errors.\n")
    print("| pool | phase | turns | miss (whole phase) | steady turns | steady miss | allowed | predicted (replay of the schedule) | predicted (the pool's own, mean) | idle spare-s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    totals = {}
    for target in report["targets"]:
        name = target["name"].removeprefix("prewarm:")
        samples, timeline = target["samples"], target["timeline"]
        predicted = target.get("predicted_phase_miss") or [None] * len(bounds)
        totals[name] = idle_seconds(timeline, 0, bounds[-1][1])
        for index, (start, end, rate) in enumerate(bounds):
            phase = [s for s in samples if start <= s["at"] < end]
            steady = [s for s in phase if s["at"] >= start + SETTLE]
            if not phase or not steady:
                continue
            miss = sum(map(missed, phase)) / len(phase)
            steady_miss = sum(map(missed, steady)) / len(steady)
            allowed = TARGET_MISS + 3 * math.sqrt(TARGET_MISS * (1 - TARGET_MISS) / len(steady))
            own = [s["predicted_miss"] for s in timeline if start + SETTLE <= s["at"] < end and s.get("predicted_miss") is not None]
            own_text = f"{100 * sum(own) / len(own):.2f}%" if own else "-"
            verdict = "" if steady_miss <= allowed else " (over)"
            print(
                f"| {name} | {index + 1}: {rate:g}/s | {len(phase)} | {100 * miss:.2f}% | {len(steady)} | {100 * steady_miss:.2f}%{verdict} "
                f"| {100 * allowed:.2f}% | {'-' if predicted[index] is None else f'{100 * predicted[index]:.2f}%'} | {own_text} "
                f"| {idle_seconds(timeline, start, end):.0f} |"
            )
    print()
    print("| pool | idle spare-seconds, whole run | against the pool sized for the peak |")
    print("|---|---:|---:|")
    peak = totals.get("peak")
    for name, total in totals.items():
        against = f"{100 * (1 - total / peak):.0f}% fewer" if peak and name != "peak" else "-"
        print(f"| {name} | {total:.0f} | {against} |")
    print()
    print("| pool | step | size before | size after | first change | target within 1 of the new size | idle spares within 1 of it |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for target in report["targets"]:
        name = target["name"].removeprefix("prewarm:")
        timeline = target["timeline"]
        if len({s["effective_spares"] for s in timeline}) == 1:
            continue  # a fixed size: nothing to follow
        for index in range(1, len(bounds)):
            step, end = bounds[index][0], bounds[index][1]
            before = sorted(s["effective_spares"] for s in timeline if step - 30 <= s["at"] < step)
            old = before[len(before) // 2] if before else None
            took, size = settle_time(timeline, step, end, "effective_spares")
            first = next((s["at"] - step for s in timeline if s["at"] >= step and s["effective_spares"] != old), None)
            # At a step down the idle spares show the memory given back; at a step up they
            # trail the target by the start-ups under way, whatever the pool does.
            idle_took = None
            if size is not None and old is not None and size < old:
                idle_took = next((s["at"] - step for s in timeline if s["at"] >= step and s["idle"] <= size + 1), None)
            def seconds(value):
                return "-" if value is None else f"{value:.1f} s"
            print(
                f"| {name} | {index}: {bounds[index - 1][2]:g}/s to {bounds[index][2]:g}/s | {old} | {size} "
                f"| {seconds(first)} | {seconds(took)} | {seconds(idle_took)} |"
            )
    if len(sys.argv) > 2 and os.path.exists(sys.argv[2]):
        db = sqlite3.connect(f"file:{sys.argv[2]}?mode=ro", uri=True)
        rows = db.execute("SELECT cause, COUNT(*) FROM sizing GROUP BY cause ORDER BY cause").fetchall()
        print()
        print("Journaled changes of the auto pool's target: " + ", ".join(f"{count} by {cause}" for cause, count in rows) + ".")


main()
