#!/usr/bin/env python3
"""An upstream service's side of Prewarm: one Claude turn over the Unix socket, with the
Python standard library only.

    python3 examples/upstream.py "What is 2 + 2?" --cwd /srv/project [--pool claude] [--socket PATH]

The turn's session (working directory, permission mode...) travels with the request; a
parked spare is bound to it at hand-off. The answer streams back as the CLI's stream-json
lines; text deltas are printed as they come.
"""
import argparse
import http.client
import json
import os
import socket
import sys


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket."""

    def __init__(self, path, timeout=600):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def default_socket():
    if os.environ.get("PREWARM_SOCKET"):
        return os.environ["PREWARM_SOCKET"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "prewarm.sock")
    return f"/tmp/prewarm-{os.getuid()}.sock"


def turn(socket_path, pool, prompt, session):
    """Yields (start kind, line) for each stdout line of the turn, the last being
    {"type": "prewarm_outcome", ...} (http.client cannot read trailers, so it is asked for)."""
    connection = UnixHTTPConnection(socket_path)
    body = json.dumps({"prompt": prompt, "session": session})
    connection.request(
        "POST",
        f"/v1/pools/{pool}/turns",
        body=body,
        headers={"Content-Type": "application/json", "Prewarm-Outcome-Line": "1"},
    )
    response = connection.getresponse()
    if response.status != 200:
        error = json.loads(response.read() or b'{"error":{}}').get("error", {})
        retry = response.getheader("Retry-After")
        raise RuntimeError(
            f"HTTP {response.status} {error.get('code')}: {error.get('message')}"
            + (f" (reason: {error['reason']})" if error.get("reason") else "")
            + (f" (retry after {retry} s)" if retry else "")
        )
    start = response.getheader("Prewarm-Start")
    for raw in response:
        if raw.strip():
            yield start, json.loads(raw)
    connection.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt")
    parser.add_argument("--cwd", default=os.getcwd(), help="the session's working directory")
    parser.add_argument("--permission-mode", default=None)
    parser.add_argument("--pool", default="claude")
    parser.add_argument("--socket", default=default_socket())
    args = parser.parse_args()
    session = {"cwd": os.path.abspath(args.cwd)}
    if args.permission_mode:
        session["permission_mode"] = args.permission_mode
    outcome = None
    try:
        for start, line in turn(args.socket, args.pool, args.prompt, session):
            kind = line.get("type")
            if kind == "system" and line.get("subtype") == "init":
                print(f"[{start} start, cwd {line.get('cwd')}]", file=sys.stderr)
            elif kind == "stream_event":
                delta = line.get("event", {}).get("delta", {})
                if delta.get("type") == "text_delta":
                    print(delta["text"], end="", flush=True)
            elif kind == "result":
                print()
            elif kind == "prewarm_outcome":
                outcome = line
    except RuntimeError as error:
        print(f"prewarm: {error}", file=sys.stderr)
        return 75
    if not outcome or outcome.get("outcome") != "completed":
        print(f"prewarm: the turn did not complete: {outcome}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
