"""prewarm-claude's own cost before its run reaches the daemon: from spawning it to the whole
`POST /v1/runs` head on a listening socket. A stand-in daemon (this process, the same uid)
answers its `GET /v1/runs/environment` as the daemon does, then takes the run's head and
answers nothing (prewarm-claude then runs the CLI it was given: /bin/true).

Usage: PREWARM_BENCH_DROP_IN=.build/release/prewarm-claude python3 dropin_overhead.py [SAMPLES]
(stdlib only; used by dropin_bench.py too)
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ENVIRONMENT = json.dumps({
    "names": ["HOME", "CLAUDE_CODE_OAUTH_TOKEN", "CLAUDE_CODE_SESSION_ACCESS_TOKEN", "CLAUDE_CODE_HOST_SESSION_ID", "NODE_EXTRA_CA_CERTS"],
    "prefixes": ["ANTHROPIC_", "CLAUDE_", "AWS_", "GOOGLE_", "VERTEX_", "AZURE_", "OTEL_", "DISABLE_", "ENABLE_", "MCP_"],
    "suffixes": ["_PROXY", "_proxy"],
}).encode()


def head(connection):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def drop_in_overhead(drop_in, env, samples=30):
    """(ms to the environment request, ms to the run's whole head) per sample."""
    path = tempfile.mktemp(prefix="prewarm-bench-", suffix=".sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(16)
    env = {"PATH": "/usr/bin:/bin", **env, "PREWARM_SOCKET": path, "PREWARM_CLAUDE_CLI": "/bin/true"}
    times = []
    for _ in range(samples):
        started = time.monotonic()
        child = subprocess.Popen([drop_in, "--output-format", "stream-json", "--verbose", "--input-format", "stream-json"], env=env, stdin=subprocess.PIPE)
        connection, _ = server.accept()
        asked = head(connection)
        asked_at = time.monotonic()
        assert asked.startswith(b"GET /v1/runs/environment"), asked[:80]
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(ENVIRONMENT) + ENVIRONMENT)
        connection.close()
        connection, _ = server.accept()
        run = head(connection)
        assert run.startswith(b"POST /v1/runs"), run[:80]
        times.append(((asked_at - started) * 1000, (time.monotonic() - started) * 1000))
        connection.close()  # no answer: it runs /bin/true instead
        child.wait()
    server.close()
    os.unlink(path)
    return times


def summary(values):
    values = sorted(values)
    return {"n": len(values), "p50": round(statistics.median(values), 3), "max": round(values[-1], 3)}


if __name__ == "__main__":
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    env = {"ANTHROPIC_API_KEY": "sk-fake", "CLAUDE_CONFIG_DIR": "/tmp/none", "HOME": "/tmp", "UNRELATED_SECRET": "x" * 4096}
    times = drop_in_overhead(os.environ["PREWARM_BENCH_DROP_IN"], env, samples)
    print(json.dumps({"environment_request_ms": summary([t[0] for t in times]), "run_request_ms": summary([t[1] for t in times])}, indent=1))
