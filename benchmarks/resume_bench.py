"""First token of resumed turns: the Python Agent SDK's query(resume=...) with its bundled CLI
against the same calls through prewarm-claude (resume spares), one conversation and 8 at once,
interleaved in one run. Run by benchmarks/resume.sh (release build).

Usage: python resume_bench.py MODEL_URL CONFIG_DIR PROJECT ROUNDS TURNS PAUSE_S
"""
import json
import os
import statistics
import sys
import time

import anyio
from claude_agent_sdk import AssistantMessage, ClaudeAgentOptions, ResultMessage, TextBlock, query

MODEL_URL, CONFIG_DIR, PROJECT = sys.argv[1], sys.argv[2], sys.argv[3]
ROUNDS, TURNS, PAUSE = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
ENV = {"ANTHROPIC_BASE_URL": MODEL_URL, "ANTHROPIC_API_KEY": "sk-fake", "CLAUDE_CONFIG_DIR": CONFIG_DIR}


async def one_query(cli_path, prompt, session=None):
    """(seconds to the first AssistantMessage, session id, the user turns the model saw)."""
    options = ClaudeAgentOptions(cwd=PROJECT, env=dict(ENV), cli_path=cli_path, resume=session)
    started = time.monotonic()
    first, session_id, turns = None, None, None
    async for message in query(prompt=prompt, options=options):
        if isinstance(message, AssistantMessage) and first is None:
            first = time.monotonic() - started
            text = "".join(block.text for block in message.content if isinstance(block, TextBlock))
            if "[user turns: " in text:
                turns = int(text.split("[user turns: ")[1].split("]")[0])
        elif isinstance(message, ResultMessage):
            session_id = message.session_id
    return first, session_id, turns


async def conversations(cli_path, size):
    """`size` conversations at once; the first token of each resumed turn."""
    samples, wrong = [], []

    async def one(index):
        _, session, _ = await one_query(cli_path, f"Conversation {index} begins.")
        for step in range(TURNS):
            await anyio.sleep(PAUSE)
            first, _, seen = await one_query(cli_path, f"Turn {step + 2}.", session)
            samples.append(first)
            if seen != step + 2:
                wrong.append((index, step + 2, seen))

    async with anyio.create_task_group() as group:
        for index in range(size):
            group.start_soon(one, index)
    return samples, wrong


def summary(values):
    values = sorted(v for v in values if v is not None)
    p90 = values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]
    return {"n": len(values), "p50": round(statistics.median(values), 3), "p90": round(p90, 3), "max": round(values[-1], 3)}


async def main():
    bundled = os.environ["PREWARM_BENCH_CLI"]
    drop_in = os.environ["PREWARM_BENCH_DROP_IN"]
    results = {"bundled": {1: [], 8: []}, "prewarm": {1: [], 8: []}}
    wrong = []
    for _ in range(ROUNDS):
        for size in (1, 8):
            for name, cli in (("bundled", bundled), ("prewarm", drop_in)):
                samples, mistakes = await conversations(cli, size)
                results[name][size] += samples
                wrong += mistakes
                await anyio.sleep(2)
    report = {name: {size: summary(values) for size, values in sizes.items()} for name, sizes in results.items()}
    for size in (1, 8):
        report[f"ratio_p50_{size}"] = round(report["bundled"][size]["p50"] / report["prewarm"][size]["p50"], 2)
    report["turns_with_wrong_context"] = wrong
    print(json.dumps(report, indent=1))


anyio.run(main)
