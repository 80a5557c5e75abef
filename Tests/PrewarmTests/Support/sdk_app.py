"""A FastAPI application written the way public SDK servers are: ClaudeSDKClient and query()
with no cli_path, so the SDK runs its own bundled CLI. Nothing in it knows of Prewarm.

Run with uvicorn in a virtualenv holding claude-agent-sdk, fastapi and uvicorn:
    python -m uvicorn sdk_app:app --app-dir DIR --uds APP.sock
The model's address, credentials and CLAUDE_CONFIG_DIR come from the environment, as an
operator sets them; APP_PROJECT is the agent's working directory.
"""
import os

from claude_agent_sdk import AssistantMessage, ClaudeAgentOptions, ClaudeSDKClient, ResultMessage, TextBlock, query
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

app = FastAPI()


class Ask(BaseModel):
    prompt: str


def options():
    return ClaudeAgentOptions(cwd=os.environ.get("APP_PROJECT") or os.getcwd())


async def collect(messages):
    """What the application answers: the assistant's text, the result, the session."""
    answer = {"texts": [], "result": None, "session_id": None, "is_error": None}
    async for message in messages:
        if isinstance(message, AssistantMessage):
            answer["texts"] += [block.text for block in message.content if isinstance(block, TextBlock)]
        elif isinstance(message, ResultMessage):
            answer["result"] = message.result
            answer["session_id"] = message.session_id
            answer["is_error"] = message.is_error
    return answer


def failed(error):
    return JSONResponse({"error": f"{type(error).__name__}: {error}"}, status_code=500)


@app.post("/query")
async def ask_query(ask: Ask):
    """One query() per request."""
    try:
        return await collect(query(prompt=ask.prompt, options=options()))
    except Exception as error:
        return failed(error)


@app.post("/client")
async def ask_client(ask: Ask):
    """A ClaudeSDKClient per request (a session per request, as per-user servers open one)."""
    try:
        async with ClaudeSDKClient(options=options()) as client:
            await client.query(ask.prompt)
            return await collect(client.receive_response())
    except Exception as error:
        return failed(error)
