"""Hand-off benchmark: first-byte latency of warm and cold turns through Prewarm, against an
already-initialised fake agent driven directly over a pipe (the floor).

Run through benchmarks/handoff.sh, which builds the release binaries first.
Standard library only.
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1]
TURNS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
FAKE = os.path.join(BIN, "prewarm-fake-agent")
PREWARM = os.path.join(BIN, "prewarm")
INIT = '{"type":"control_request","request_id":"i","request":{"subtype":"initialize","hooks":null}}\n'
USER = '{"type":"user","message":{"role":"user","content":"hi"},"parent_tool_use_id":null,"session_id":"default"}\n'


def pct(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100 * len(values) + 0.5)) - 1))
    return values[k]


def direct_first_bytes(n):
    """Spawn initialised agents in batches, then time user line -> first stdout byte."""
    out = []
    while len(out) < n:
        batch = [subprocess.Popen([FAKE, "--init-sleep-ms", "300"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
                 for _ in range(min(10, n - len(out)))]
        for p in batch:
            p.stdin.write(INIT.encode())
            p.stdout.readline()  # the control_response: initialised
        for p in batch:
            t0 = time.perf_counter()
            p.stdin.write(USER.encode())
            p.stdout.read(1)
            out.append((time.perf_counter() - t0) * 1000)
            p.stdin.close()
            p.wait()
    return out


def request(sock_path, method, path, body=b""):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    return s


def turn_first_byte(sock_path, pool):
    """Time from sending the request to the first byte of the turn's body; returns (ms, start kind)."""
    t0 = time.perf_counter()
    s = request(sock_path, "POST", f"/v1/pools/{pool}/turns", USER.encode())
    buf = b""
    first = None
    while True:
        data = s.recv(65536)
        if not data:
            break
        buf += data
        if first is None and b"\r\n\r\n" in buf:
            head, rest = buf.split(b"\r\n\r\n", 1)
            if b"\r\n" in rest and len(rest.split(b"\r\n", 1)[1]) > 0:
                first = (time.perf_counter() - t0) * 1000
    s.close()
    kind = "?"
    for line in buf.split(b"\r\n"):
        if line.lower().startswith(b"prewarm-start:"):
            kind = line.split(b":", 1)[1].strip().decode()
    return first, kind


def status(sock_path, pool):
    s = request(sock_path, "GET", f"/v1/pools/{pool}")
    buf = b""
    while True:
        data = s.recv(65536)
        if not data:
            break
        buf += data
    s.close()
    return json.loads(buf.split(b"\r\n\r\n", 1)[1])


def main():
    tmp = tempfile.mkdtemp(prefix="prewarm-bench-")
    sock_path = os.path.join(tmp, "prewarm.sock")
    ready = ('[pool.ready]\nsend = \'' + INIT.strip() + '\'\nexpect = \'"type":"control_response"\'\n'
             '[pool.turn]\nend = \'"type":"result"\'\n')
    config = (
        f'[[pool]]\nname = "warm"\ncommand = "{FAKE}"\nargs = ["--init-ms", "1000"]\nspares = 4\nmax_starting = 2\n' + ready +
        f'[[pool]]\nname = "cold"\ncommand = "{FAKE}"\nargs = ["--init-ms", "1000"]\nspares = 0\nwhen_empty = "start"\n' + ready
    )
    path = os.path.join(tmp, "bench.toml")
    open(path, "w").write(config)
    daemon = subprocess.Popen([PREWARM, "serve", "--config", path, "--socket", sock_path, "--log-level", "warning"])
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if status(sock_path, "warm")["idle"] == 4:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        warm = []
        while len(warm) < TURNS:
            while status(sock_path, "warm")["idle"] < 1:
                time.sleep(0.01)
            ms, kind = turn_first_byte(sock_path, "warm")
            if kind == "warm":
                warm.append(ms)
        cold = [turn_first_byte(sock_path, "cold")[0] for _ in range(min(TURNS, 20))]
    finally:
        daemon.terminate()
        daemon.wait()
    direct = direct_first_bytes(TURNS)

    rows = [("direct (initialised agent over a pipe)", direct), ("prewarm warm", warm), ("prewarm cold (--init-ms 1000)", cold)]
    print(f"{'first byte, ms':40} {'n':>5} {'p50':>9} {'p99':>9}")
    for name, values in rows:
        print(f"{name:40} {len(values):5d} {pct(values, 50):9.2f} {pct(values, 99):9.2f}")
    print(f"{'broker overhead (warm - direct)':40} {'':5} {pct(warm, 50) - pct(direct, 50):9.2f} {pct(warm, 99) - pct(direct, 99):9.2f}")


main()
