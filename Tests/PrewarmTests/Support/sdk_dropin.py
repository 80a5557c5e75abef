"""The official Python Agent SDK (claude-agent-sdk from PyPI) driving prewarm-claude.

Run by SDKDropInTests with the SDK's virtualenv: `python sdk_dropin.py SCENARIO`, with
PREWARM_TEST_* variables (the model's address, the config dir, the project directory,
prewarm-claude's path). Prints one JSON line per query: what the SDK's user code saw.
"""
import json
import os
import sys
import time

import anyio
from claude_agent_sdk import (
    AgentDefinition,
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    HookMatcher,
    PermissionResultAllow,
    ResultMessage,
    SystemMessage,
    TextBlock,
    create_sdk_mcp_server,
    query,
    tool,
)

DROP_IN = os.environ["PREWARM_TEST_DROP_IN"]
PROJECT = os.environ["PREWARM_TEST_PROJECT"]
SESSION_ENV = {
    "ANTHROPIC_BASE_URL": os.environ["PREWARM_TEST_MODEL_URL"],
    "ANTHROPIC_API_KEY": "sk-fake",
    "CLAUDE_CONFIG_DIR": os.environ["PREWARM_TEST_CONFIG_DIR"],
}
# A claimable variable of the caller's (a host session id), when the test gives one.
if os.environ.get("PREWARM_TEST_HOST_SESSION"):
    SESSION_ENV["CLAUDE_CODE_HOST_SESSION_ID"] = os.environ["PREWARM_TEST_HOST_SESSION"]


def options(**extra):
    return ClaudeAgentOptions(cli_path=DROP_IN, cwd=PROJECT, env=dict(SESSION_ENV), **extra)


async def run(prompt, opts, streaming=False):
    """One query; what user code saw of it."""
    seen = {"texts": [], "models": [], "system": [], "session_id": None, "is_error": None, "result": None}
    started = time.monotonic()

    async def prompts():
        yield {"type": "user", "message": {"role": "user", "content": prompt}, "parent_tool_use_id": None, "session_id": ""}

    try:
        async for message in query(prompt=prompts() if streaming else prompt, options=opts):
            if isinstance(message, AssistantMessage):
                seen.setdefault("first_token_s", time.monotonic() - started)
                seen["models"].append(message.model)
                seen["texts"] += [block.text for block in message.content if isinstance(block, TextBlock)]
            elif isinstance(message, SystemMessage):
                seen["system"].append(message.subtype)
                if message.subtype == "init":
                    seen["agents"] = message.data.get("agents")
            elif isinstance(message, ResultMessage):
                seen["session_id"] = message.session_id
                seen["is_error"] = message.is_error
                seen["result"] = message.result
    except Exception as error:  # the test asserts on it
        seen["error"] = f"{type(error).__name__}: {error}"
    return seen


def emit(**fields):
    print(json.dumps(fields), flush=True)


async def plain(count):
    """Plain queries a second apart."""
    for index in range(count):
        if index:
            await anyio.sleep(1)
        emit(**await run(f"Say hello {index}.", options()))


async def tools():
    """A tool call the model asks for: can_use_tool and a PreToolUse hook both see it."""
    asked, hooked = [], []

    async def can_use_tool(name, tool_input, context):
        asked.append(name)
        return PermissionResultAllow()

    async def pre_tool_use(hook_input, tool_use_id, context):
        hooked.append(hook_input.get("tool_name"))
        return {}

    opts = options(can_use_tool=can_use_tool, hooks={"PreToolUse": [HookMatcher(matcher="Bash", hooks=[pre_tool_use])]})
    seen = await run("PREWARM_TOOL_USE please", opts, streaming=True)
    emit(**seen, asked=asked, hooked=hooked)


async def mcp(count):
    """An in-process SDK MCP tool, called when the model asks for it; queries a second apart
    (the second is served warm: the SDK server reaches the spare in its claim)."""
    for index in range(count):
        if index:
            await anyio.sleep(1)
        calls = []

        @tool("add", "Adds two numbers", {"a": int, "b": int})
        async def add(args):
            calls.append(args)
            return {"content": [{"type": "text", "text": str(args["a"] + args["b"])}]}

        server = create_sdk_mcp_server(name="calc", version="1.0.0", tools=[add])
        opts = options(mcp_servers={"calc": server}, allowed_tools=["mcp__calc__add"])
        seen = await run("PREWARM_MCP_TOOL add them", opts)
        emit(**seen, calls=calls)


async def resume():
    """A fresh query, then one resuming it: the second sees the first."""
    first = await run("Remember this.", options())
    emit(**first)
    await anyio.sleep(0.5)
    emit(**await run("What did I say?", options(resume=first["session_id"])))


async def agents():
    """An agent defined in code: a one-time field of the SDK's initialize (a repeated
    initialize does not apply it), so the CLI lists it only if the spare's first initialize
    was the SDK's."""
    reviewer = AgentDefinition(description="Reviews code", prompt="You review code.", tools=["Read"])
    emit(**await run("Hello.", options(agents={"prewarm-reviewer": reviewer})))


async def model(name):
    emit(**await run("Which model?", options(model=name)))


async def external_mcp(count):
    """Another --mcp-config (an external server): cold, then warm from its fingerprint pool."""
    servers = {"ext": {"type": "stdio", "command": "/bin/false", "args": []}}
    for index in range(count):
        if index:
            await anyio.sleep(1)
        emit(**await run(f"Hello {index}.", options(mcp_servers=servers)))


async def turn(prompt, session=None):
    """One query of a conversation: a fresh one, or one resuming `session` (the test waits
    between them for what it checks)."""
    opts = options(resume=session) if session else options()
    emit(**await run(prompt, opts))


async def conversations(count, turns):
    """`count` conversations at once, each a fresh query then `turns` resumed ones, each
    resumed query sent once its session's last one has ended and `pause` seconds passed."""
    pause = float(os.environ.get("PREWARM_TEST_PAUSE", "2"))

    async def one(index):
        first = await run(f"Conversation {index} begins.", options())
        emit(conversation=index, **first)
        for step in range(turns):
            await anyio.sleep(pause)
            emit(conversation=index, **await run(f"Conversation {index}, turn {step + 2}.", options(resume=first["session_id"])))

    async with anyio.create_task_group() as group:
        for index in range(count):
            group.start_soon(one, index)


async def session(index, queries):
    """A long-lived ClaudeSDKClient (a web agent server keeps one per user session): one
    process for `queries` queries, each answered in full before the next."""
    seen = []
    try:
        async with ClaudeSDKClient(options=options()) as client:
            for step in range(queries):
                one = {"texts": [], "session_id": None, "is_error": None}
                await client.query(f"Session {index}, query {step + 1}.")
                async for message in client.receive_response():
                    if isinstance(message, AssistantMessage):
                        one["texts"] += [block.text for block in message.content if isinstance(block, TextBlock)]
                    elif isinstance(message, ResultMessage):
                        one["session_id"] = message.session_id
                        one["is_error"] = message.is_error
                seen.append(one)
    except Exception as error:  # the test asserts on it
        seen.append({"error": f"{type(error).__name__}: {error}"})
    return seen


async def crowd(sessions, callers, queries):
    """`sessions` ClaudeSDKClient sessions and `callers` query() callers at once, `queries`
    queries each; one line per query."""

    async def one_session(index):
        for step, seen in enumerate(await session(index, queries)):
            emit(kind="session", index=index, step=step, **seen)

    async def one_caller(index):
        for step in range(queries):
            emit(kind="query", index=index, step=step, **await run(f"Caller {index}, query {step + 1}.", options()))

    async with anyio.create_task_group() as group:
        for index in range(sessions):
            group.start_soon(one_session, index)
        for index in range(callers):
            group.start_soon(one_caller, index)


async def long_prompt(size, count):
    """Queries a second apart with a system prompt of `size` bytes (on the command line)."""
    prompt = ("You are a careful assistant. " * (size // 29 + 1))[:size]
    for index in range(count):
        if index:
            await anyio.sleep(1)
        emit(**await run(f"Long prompt {index}.", options(system_prompt=prompt)))


SCENARIOS = {
    "crowd": lambda: crowd(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])),
    "long-prompt": lambda: long_prompt(int(sys.argv[2]), int(sys.argv[3])),
    "plain": lambda: plain(int(sys.argv[2]) if len(sys.argv) > 2 else 3),
    "tools": tools,
    "mcp": lambda: mcp(2),
    "resume": resume,
    "model": lambda: model(sys.argv[2]),
    "agents": agents,
    "external-mcp": lambda: external_mcp(2),
    "turn": lambda: turn(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None),
    "conversations": lambda: conversations(int(sys.argv[2]), int(sys.argv[3])),
}

if __name__ == "__main__":
    anyio.run(SCENARIOS[sys.argv[1]])
