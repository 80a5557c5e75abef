"""First token of the Python Agent SDK's query(): its bundled CLI against the same call through
prewarm-claude, in one run, one query at a time and bursts of 8; plus prewarm-claude's own
cost before its first byte reaches the daemon. Run by benchmarks/dropin.sh (release build).

Usage: python dropin_bench.py MODEL_URL CONFIG_DIR PROJECT SOCKET ROUNDS
"""
import json
import os
import statistics
import sys
import time

import anyio
from claude_agent_sdk import AssistantMessage, ClaudeAgentOptions, query
from dropin_overhead import drop_in_overhead

MODEL_URL, CONFIG_DIR, PROJECT, SOCKET, ROUNDS = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
DROP_IN = os.environ["PREWARM_BENCH_DROP_IN"]
ENV = {"ANTHROPIC_BASE_URL": MODEL_URL, "ANTHROPIC_API_KEY": "sk-fake", "CLAUDE_CONFIG_DIR": CONFIG_DIR}


async def first_token(cli_path):
    """Seconds from query() to its first AssistantMessage (the fake model's answer)."""
    options = ClaudeAgentOptions(cwd=PROJECT, env=dict(ENV), cli_path=cli_path)
    started = time.monotonic()
    first = None
    async for message in query(prompt="Say hello.", options=options):
        if first is None and isinstance(message, AssistantMessage):
            first = time.monotonic() - started
    return first


async def burst(cli_path, size):
    results = [None] * size

    async def one(index):
        results[index] = await first_token(cli_path)

    async with anyio.create_task_group() as group:
        for index in range(size):
            group.start_soon(one, index)
    return results


def summary(values):
    values = sorted(v for v in values if v is not None)
    return {"n": len(values), "p50": round(statistics.median(values), 3), "max": round(values[-1], 3)}


async def main():
    bundled = os.environ["PREWARM_BENCH_CLI"]
    results = {"bundled": {1: [], 8: []}, "prewarm": {1: [], 8: []}}
    for _ in range(ROUNDS):
        for size in (1, 8):
            for name, cli in (("bundled", bundled), ("prewarm", DROP_IN)):
                values = await burst(cli, size)
                results[name][size] += values
                # The pool refills between rounds (8 spares).
                await anyio.sleep(3 if name == "prewarm" else 0.5)
    report = {name: {size: summary(values) for size, values in sizes.items()} for name, sizes in results.items()}
    for size in (1, 8):
        report[f"ratio_p50_{size}"] = round(report["bundled"][size]["p50"] / report["prewarm"][size]["p50"], 2)
    # Spawn to the run's whole request (after its GET /v1/runs/environment), in ms.
    report["drop_in_ms"] = summary([run for _, run in drop_in_overhead(DROP_IN, ENV)])
    print(json.dumps(report, indent=1))


anyio.run(main)
