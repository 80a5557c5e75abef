#!/usr/bin/env python3
"""An upstream service's side of Prewarm: one Claude turn over the Unix socket, with the
Python standard library only.

    python3 examples/upstream.py "What is 2 + 2?" --cwd /srv/project [--pool claude] [--socket PATH]
        [--daemon-uid UID|USER]

The turn's session (working directory, permission mode...) travels with the request; a
parked spare is bound to it at hand-off. The answer streams back as the CLI's stream-json
lines; text deltas are printed as they come.

Nothing is sent before the daemon is known: once connected, the socket's peer (SO_PEERCRED)
must be our own uid, root, or the uid named by --daemon-uid or PREWARM_DAEMON_UID (a number
or a user name: the daemon's dedicated user, e.g. `prewarm`). Anyone else answering on the
socket's path is refused.
"""
import argparse
import http.client
import json
import os
import pwd
import socket
import struct
import sys


class UntrustedDaemon(Exception):
    """The socket is answered by a uid we do not trust; nothing was sent."""


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket, checking who answers before anything is sent."""

    def __init__(self, path, trusted_uids, timeout=600):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path
        self.trusted_uids = trusted_uids

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
            check_peer(sock, self.socket_path, self.trusted_uids)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def check_peer(sock, path, trusted_uids):
    """Raises UntrustedDaemon unless the process that accepted the connection runs as one of
    trusted_uids (read from the kernel: SO_PEERCRED, as the daemon reads its callers)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    if uid in trusted_uids:
        return
    trusted = ", ".join(f"{u} ({user_name(u)})" for u in sorted(trusted_uids))
    raise UntrustedDaemon(
        f"the socket {path} is answered by uid {uid} ({user_name(uid)}, pid {pid}), not by a uid "
        f"we trust ({trusted}); nothing was sent. If that is the daemon you mean (it runs as a "
        f"dedicated user), name it: PREWARM_DAEMON_UID={uid} or --daemon-uid {uid}. If not, "
        f"another user holds that path: point --socket (or PREWARM_SOCKET) at your daemon's socket."
    )


def user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "no such user"


def resolve_uid(value):
    """A uid from a number or a user name."""
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        raise ValueError(f"no user named {value!r} (give a user name or a uid)") from None


def trusted_uids(daemon_uid):
    """Our own uid and root, plus the daemon's dedicated user if one is named."""
    uids = {os.getuid(), 0}
    if daemon_uid:
        uids.add(resolve_uid(daemon_uid))
    return uids


def default_socket():
    if os.environ.get("PREWARM_SOCKET"):
        return os.environ["PREWARM_SOCKET"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "prewarm.sock")
    return f"/tmp/prewarm-{os.getuid()}/prewarm.sock"


def turn(socket_path, trusted, pool, prompt, session):
    """Yields (start kind, line) for each stdout line of the turn, the last being
    {"type": "prewarm_outcome", ...} (http.client cannot read trailers, so it is asked for)."""
    connection = UnixHTTPConnection(socket_path, trusted)
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
    parser.add_argument(
        "--daemon-uid",
        default=os.environ.get("PREWARM_DAEMON_UID"),
        help="the daemon's uid or user name, when it runs as a dedicated user "
        "(default: $PREWARM_DAEMON_UID; our own uid and root are always trusted)",
    )
    args = parser.parse_args()
    try:
        trusted = trusted_uids(args.daemon_uid)
    except ValueError as error:
        parser.error(f"--daemon-uid / PREWARM_DAEMON_UID: {error}")
    session = {"cwd": os.path.abspath(args.cwd)}
    if args.permission_mode:
        session["permission_mode"] = args.permission_mode
    outcome = None
    try:
        for start, line in turn(args.socket, trusted, args.pool, args.prompt, session):
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
    except UntrustedDaemon as error:
        print(f"prewarm: {error}", file=sys.stderr)
        return 77
    except RuntimeError as error:
        print(f"prewarm: {error}", file=sys.stderr)
        return 75
    except OSError as error:
        print(f"prewarm: {args.socket}: {error}", file=sys.stderr)
        return 69
    if not outcome or outcome.get("outcome") != "completed":
        print(f"prewarm: the turn did not complete: {outcome}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
