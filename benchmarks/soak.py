#!/usr/bin/env python3
"""Soak: a daemon under a mix of well-behaved, disconnecting and malformed clients for a long
run, its RSS, open file descriptors and CPU per turn after warm-up against at the end.

    python3 benchmarks/soak.py --bin DIR [--duration 1800] [--json FILE] [--rate 4]

DIR holds `prewarm` and `prewarm-fake-agent`. A daemon is started on a socket of its own with
a configuration of its own (pool "p": the fake agent, enough spares; pool "w": one spare with
a slow start-up, for turns that wait), then these clients run at once until the duration is
over, every socket operation with a deadline:

- fresh: plain turns, one connection each (trailers, or the `Prewarm-Outcome-Line` line);
- keepalive: plain turns one after another on one HTTP/1.1 connection (chunked body and
  trailers read to the end, the connection kept);
- twoway: `Upgrade: prewarm-stream`, a user line, the write side half-closed, read to EOF;
- disconnect: a client gone mid-body, right after the response head, just after a 101, or
  while its turn waits for a spare (pool "w", its spare just taken; then a turn that must
  still be served);
- malformed: a corpus of bad requests, each sent on a connection of its own; the client
  waits a few seconds at most for an answer and for the daemon to close, then closes.
  Before the load, each is also sent alone, and the error-level log lines it caused noted.

The daemon process is sampled every few seconds (VmRSS, entries of /proc/PID/fd, utime +
stime, threads; turns from /metrics). Reported: the figures after warm-up (a window at 10%
of the run) and at the end (the run's last 5%), the ratio end/warm-up, CPU per turn, turns
by outcome as the daemon counts them and as the clients saw them, malformed requests
answered within 1 s or not, the daemon's error-level log lines, and whether any process of
the daemon's (the keeper, the pools' process groups, found by pid and by a marker in their
environment) is left after it stopped (SIGTERM); whatever is left is reported, then killed.
Standard library only; exit status 0 when the run completed, whatever it measured.
"""
import argparse
import collections
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
USER_LINE = (
    json.dumps(
        {"type": "user", "message": {"role": "user", "content": "soak"}, "parent_tool_use_id": None, "session_id": "default"},
        separators=(",", ":"),
    )
    + "\n"
).encode()
TURN_DEADLINE_S = 30.0  # a whole turn, including a wait for a spare (wait_timeout_ms 10000)
MALFORMED_WAIT_S = 3.0  # how long a malformed client waits for an answer and a close
ANSWER_WITHIN_S = 1.0   # the bound for malformed requests


# ---------------------------------------------------------------------------------------
# HTTP/1.1 over the Unix socket, by hand, every operation against a deadline


class Closed(Exception):
    """The daemon closed the connection."""


class Conn:
    def __init__(self, path, deadline):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.buf = bytearray()
        self.eof = False
        try:
            self._timeout(deadline)
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise

    def _timeout(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline passed")
        self.sock.settimeout(remaining)

    def send(self, data, deadline):
        self._timeout(deadline)
        self.sock.sendall(data)

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def fill(self, deadline):
        """Reads what is there (at least one byte); Closed at end of stream."""
        if self.eof:
            raise Closed()
        self._timeout(deadline)
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            raise Closed()
        self.buf += data
        return len(data)

    def read_until(self, marker, deadline, limit=1 << 20):
        while True:
            index = self.buf.find(marker)
            if index >= 0:
                out = bytes(self.buf[: index + len(marker)])
                del self.buf[: index + len(marker)]
                return out
            if len(self.buf) > limit:
                raise ValueError(f"no {marker!r} within {limit} bytes")
            self.fill(deadline)

    def read_exact(self, count, deadline):
        while len(self.buf) < count:
            self.fill(deadline)
        out = bytes(self.buf[:count])
        del self.buf[:count]
        return out

    def read_to_eof(self, deadline, limit=64 << 20):
        try:
            while len(self.buf) <= limit:
                self.fill(deadline)
        except Closed:
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def read_head(self, deadline):
        """(status, {lowercased name: value}) of a response head."""
        raw = self.read_until(b"\r\n\r\n", deadline, limit=256 << 10).decode("latin-1")
        lines = raw.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ValueError(f"bad status line {lines[0][:80]!r}")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        return int(parts[1]), headers

    def read_body(self, headers, deadline, on_chunk=None):
        """The body of a response whose head was read, and its trailers (chunked)."""
        trailers = {}
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = bytearray()
            while True:
                size_line = self.read_until(b"\r\n", deadline, limit=4096)
                size = int(size_line.split(b";")[0].strip() or b"x", 16)
                if size == 0:
                    while True:
                        line = self.read_until(b"\r\n", deadline, limit=64 << 10)
                        if line == b"\r\n":
                            return bytes(body), trailers
                        name, _, value = line.decode("latin-1").partition(":")
                        trailers[name.strip().lower()] = value.strip()
                chunk = self.read_exact(size, deadline)
                if self.read_exact(2, deadline) != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
                body += chunk
                if on_chunk and on_chunk(chunk):
                    return bytes(body), None  # the caller stops reading here
        if "content-length" in headers:
            return self.read_exact(int(headers["content-length"]), deadline), trailers
        return self.read_to_eof(deadline), trailers


def turn_request(pool, outcome_line=False, connection=None, extra=""):
    head = (
        f"POST /v1/pools/{pool}/turns HTTP/1.1\r\nHost: prewarm\r\nContent-Type: application/x-ndjson\r\n"
        f"Content-Length: {len(USER_LINE)}\r\n"
    )
    if outcome_line:
        head += "Prewarm-Outcome-Line: 1\r\n"
    if connection:
        head += f"Connection: {connection}\r\n"
    return (head + extra + "\r\n").encode() + USER_LINE


def upgrade_request(pool):
    return (
        f"POST /v1/pools/{pool}/turns HTTP/1.1\r\nHost: prewarm\r\nConnection: Upgrade\r\n"
        "Upgrade: prewarm-stream\r\nPrewarm-Outcome-Line: 1\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def error_code(body):
    try:
        return json.loads(body)["error"]["code"]
    except Exception:
        return "?"


def failure_name(error):
    if isinstance(error, socket.timeout):
        return "client_timeout"
    if isinstance(error, Closed):
        return "closed_by_daemon"
    if isinstance(error, (ConnectionResetError, BrokenPipeError)):
        return "reset"
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, FileNotFoundError):
        return "no_socket"
    if isinstance(error, ValueError):
        return "bad_response"
    return type(error).__name__


def check_lines(body, headers, stats):
    """Every line JSON; the result line's pid is the Prewarm-Pid and its process served one
    turn only (a process never serves two). Returns the prewarm_outcome line's outcome."""
    outcome = None
    for raw in body.split(b"\n"):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            stats.count("checks", "line_not_json")
            continue
        kind = line.get("type")
        if kind == "result":
            stats.count("checks", "result_lines")
            if str(line.get("pid")) != headers.get("prewarm-pid"):
                stats.count("checks", "result_pid_mismatch")
            if line.get("turns_served") != 1:
                stats.count("checks", "process_served_twice")
        elif kind == "prewarm_outcome":
            outcome = line.get("outcome")
    return outcome


# ---------------------------------------------------------------------------------------
# Shared counters


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.defaultdict(collections.Counter)
        self.durations = collections.defaultdict(list)
        self.turns = 0  # turns the clients sent (every request for a turn)
        self.malformed = []

    def count(self, group, key, n=1):
        with self.lock:
            self.counts[group][key] += n

    def maximum(self, group, key, value):
        with self.lock:
            self.counts[group][key] = max(self.counts[group][key], value)

    def outcome(self, kind, outcome, duration=None):
        with self.lock:
            self.counts[kind][outcome] += 1
            self.turns += 1
            if duration is not None and outcome == "completed":
                self.durations[kind].append(duration)

    def add_malformed(self, record):
        with self.lock:
            self.malformed.append(record)


# ---------------------------------------------------------------------------------------
# The clients


class Soak:
    def __init__(self, args, socket_path):
        self.args = args
        self.path = socket_path
        self.stats = Stats()
        self.stop = threading.Event()
        self.end_at = None

    def running(self):
        return not self.stop.is_set() and time.monotonic() < self.end_at

    def paced(self, interval, step, rng):
        """Runs step() every `interval` s (jittered) until the end; never catches up in bursts."""
        next_at = time.monotonic() + rng.uniform(0, interval)
        while self.running():
            delay = next_at - time.monotonic()
            if delay > 0 and self.stop.wait(min(delay, self.end_at - time.monotonic())):
                break
            if not self.running():
                break
            try:
                step()
            except Exception as error:  # a client's bug must not end the soak
                self.stats.count("client_errors", f"{type(error).__name__}: {error}"[:160])
            next_at = max(next_at + interval * rng.uniform(0.8, 1.2), time.monotonic())

    # -- plain turns

    def plain_turn(self, conn, pool, outcome_line, deadline, kind):
        """One turn on an open connection, its response read to the end. True when the
        connection may be used again."""
        started = time.monotonic()
        conn.send(turn_request(pool, outcome_line=outcome_line), deadline)
        status, headers = conn.read_head(deadline)
        body, trailers = conn.read_body(headers, deadline)
        if status != 200:
            self.stats.outcome(kind, f"http_{status}_{error_code(body)}")
            return headers.get("connection", "").lower() != "close"
        line_outcome = check_lines(body, headers, self.stats)
        outcome = line_outcome if outcome_line else trailers.get("prewarm-outcome")
        self.stats.outcome(kind, outcome or "no_outcome", time.monotonic() - started)
        self.stats.count("start_kinds", headers.get("prewarm-start", "?"))
        return headers.get("connection", "").lower() != "close"

    def fresh_worker(self, interval, rng):
        flip = [False]

        def step():
            flip[0] = not flip[0]
            deadline = time.monotonic() + TURN_DEADLINE_S
            conn = None
            try:
                conn = Conn(self.path, deadline)
                self.plain_turn(conn, "p", flip[0], deadline, "fresh")
            except Exception as error:
                self.stats.outcome("fresh", failure_name(error))
            finally:
                if conn:
                    conn.close()

        self.paced(interval, step, rng)

    def keepalive_worker(self, interval, rng):
        state = {"conn": None, "turns": 0}

        def step():
            deadline = time.monotonic() + TURN_DEADLINE_S
            try:
                if state["conn"] is None:
                    state["conn"] = Conn(self.path, deadline)
                    state["turns"] = 0
                    self.stats.count("keepalive_connections", "opened")
                reusable = self.plain_turn(state["conn"], "p", False, deadline, "keepalive")
                state["turns"] += 1
                self.stats.maximum("keepalive_connections", "most_turns_on_one", state["turns"])
                if not reusable:
                    self.stats.count("keepalive_connections", "closed_by_daemon_header")
                    state["conn"].close()
                    state["conn"] = None
            except Exception as error:
                self.stats.outcome("keepalive", failure_name(error))
                if state["conn"]:
                    state["conn"].close()
                state["conn"] = None

        try:
            self.paced(interval, step, rng)
        finally:
            if state["conn"]:
                state["conn"].close()

    # -- two-way turns

    def twoway_worker(self, interval, rng):
        def step():
            started = time.monotonic()
            deadline = started + TURN_DEADLINE_S
            conn = None
            try:
                conn = Conn(self.path, deadline)
                conn.send(upgrade_request("p"), deadline)
                status, headers = conn.read_head(deadline)
                if status != 101:
                    body, _ = conn.read_body(headers, deadline)
                    self.stats.outcome("twoway", f"http_{status}_{error_code(body)}")
                    return
                conn.send(USER_LINE, deadline)
                conn.shutdown_write()  # closes the process's stdin; the turn goes on
                body = conn.read_to_eof(deadline)
                if not conn.eof:
                    raise socket.timeout("no end of stream")
                outcome = check_lines(body, headers, self.stats)
                self.stats.outcome("twoway", outcome or "no_outcome", time.monotonic() - started)
                self.stats.count("start_kinds", headers.get("prewarm-start", "?"))
            except Exception as error:
                self.stats.outcome("twoway", failure_name(error))
            finally:
                if conn:
                    conn.close()

        self.paced(interval, step, rng)

    # -- clients that go away at the worst moments

    def disconnect_worker(self, interval, rng):
        moments = ["mid_body", "after_head", "after_101", "while_waiting"]
        turn = [0]

        def step():
            moment = moments[turn[0] % len(moments)]
            turn[0] += 1
            getattr(self, "gone_" + moment)(rng)

        self.paced(interval, step, rng)

    def gone_mid_body(self, rng):
        deadline = time.monotonic() + TURN_DEADLINE_S
        conn = None
        try:
            conn = Conn(self.path, deadline)
            conn.send(turn_request("p"), deadline)
            status, headers = conn.read_head(deadline)
            if status != 200:
                body, _ = conn.read_body(headers, deadline)
                self.stats.outcome("gone_mid_body", f"http_{status}_{error_code(body)}")
                return
            _, trailers = conn.read_body(headers, deadline, on_chunk=lambda chunk: True)
            self.stats.outcome("gone_mid_body", "gone" if trailers is None else "ended_before_gone")
        except Exception as error:
            self.stats.outcome("gone_mid_body", failure_name(error))
        finally:
            if conn:
                conn.close()

    def gone_after_head(self, rng):
        deadline = time.monotonic() + TURN_DEADLINE_S
        conn = None
        try:
            conn = Conn(self.path, deadline)
            conn.send(turn_request("p", outcome_line=True), deadline)
            status, _ = conn.read_head(deadline)
            self.stats.outcome("gone_after_head", "gone" if status == 200 else f"http_{status}")
        except Exception as error:
            self.stats.outcome("gone_after_head", failure_name(error))
        finally:
            if conn:
                conn.close()

    def gone_after_101(self, rng):
        deadline = time.monotonic() + TURN_DEADLINE_S
        conn = None
        try:
            conn = Conn(self.path, deadline)
            conn.send(upgrade_request("p"), deadline)
            status, _ = conn.read_head(deadline)
            if status == 101:
                conn.send(USER_LINE, deadline)
            self.stats.outcome("gone_after_101", "gone" if status == 101 else f"http_{status}")
        except Exception as error:
            self.stats.outcome("gone_after_101", failure_name(error))
        finally:
            if conn:
                conn.close()

    def gone_while_waiting(self, rng):
        """Pool "w" has one spare with a slow start-up: a first turn takes it, a second one
        waits for its replacement and goes away after 0.1-0.8 s, a third must then be served."""
        deadline = time.monotonic() + TURN_DEADLINE_S
        conn = None
        try:
            conn = Conn(self.path, deadline)
            self.plain_turn(conn, "w", True, deadline, "waiting_pool")
        except Exception as error:
            self.stats.outcome("waiting_pool", failure_name(error))
        finally:
            if conn:
                conn.close()
        conn = None
        try:
            conn = Conn(self.path, deadline)
            conn.send(turn_request("w"), deadline)
            patience = rng.uniform(0.1, 0.8)
            try:
                conn.fill(min(deadline, time.monotonic() + patience))
                self.stats.outcome("gone_while_waiting", "answered_before_leaving")
            except socket.timeout:
                self.stats.outcome("gone_while_waiting", "gone")
        except Exception as error:
            self.stats.outcome("gone_while_waiting", failure_name(error))
        finally:
            if conn:
                conn.close()
        conn = None
        try:
            conn = Conn(self.path, deadline)
            self.plain_turn(conn, "w", False, deadline, "waiting_pool")
        except Exception as error:
            self.stats.outcome("waiting_pool", failure_name(error))
        finally:
            if conn:
                conn.close()

    # -- malformed requests

    def malformed_corpus(self, rng):
        turns = "/v1/pools/p/turns"
        return [
            ("garbage_request_line", b"GARBAGE\r\n\r\n", False),
            ("http_9_9", b"GET /healthz HTTP/9.9\r\nHost: prewarm\r\n\r\n", False),
            ("huge_uri_100k", b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: prewarm\r\n\r\n", False),
            ("huge_header_1m", b"GET /healthz HTTP/1.1\r\nHost: prewarm\r\nX-Big: " + b"b" * (1 << 20) + b"\r\n\r\n", False),
            ("headers_20000", b"GET /healthz HTTP/1.1\r\nHost: prewarm\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(20000)) + b"\r\n", False),
            (
                "content_length_and_chunked",
                f"POST {turns} HTTP/1.1\r\nHost: prewarm\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                + b"5\r\nhello\r\n0\r\n\r\n",
                False,
            ),
            ("bad_chunk_size", f"POST {turns} HTTP/1.1\r\nHost: prewarm\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + b"zz\r\nhello\r\n0\r\n\r\n", False),
            ("huge_chunk_size", f"POST {turns} HTTP/1.1\r\nHost: prewarm\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + b"FFFFFFFFFFFFFFFF\r\nhello", False),
            ("random_bytes", rng.randbytes(512), False),
            ("body_cut_by_half_close", f"POST {turns} HTTP/1.1\r\nHost: prewarm\r\nContent-Length: 1000\r\n\r\n".encode() + b'{"type":', True),
        ]

    def malformed_worker(self, interval, rng):
        index = [0]

        def step():
            corpus = self.malformed_corpus(rng)
            name, data, half_close = corpus[index[0] % len(corpus)]
            index[0] += 1
            self.stats.add_malformed(self.malformed_one(name, data, half_close))

        self.paced(interval, step, rng)

    def malformed_one(self, name, data, half_close, keep_answer=False):
        """Sends the bytes, waits MALFORMED_WAIT_S at most for an answer and for the daemon to
        close, then closes."""
        record = {"case": name, "at": time.strftime("%H:%M:%S"), "sent": "all", "answer_s": None, "status": None,
                  "closed_s": None, "error": None}
        started = time.monotonic()
        deadline = started + MALFORMED_WAIT_S
        conn = None
        try:
            conn = Conn(self.path, deadline)
            try:
                conn.send(data, deadline)
                if half_close:
                    conn.shutdown_write()
            except socket.timeout:
                record["sent"] = "blocked"  # the daemon stopped reading
            except (BrokenPipeError, ConnectionResetError):
                record["sent"] = "reset"  # it closed while we were sending (answered, perhaps)
            while time.monotonic() < deadline:
                try:
                    conn.fill(deadline)
                except Closed:
                    record["closed_s"] = round(time.monotonic() - started, 3)
                    break
                except ConnectionResetError:
                    record["closed_s"] = round(time.monotonic() - started, 3)
                    record["error"] = "reset"
                    break
                if record["answer_s"] is None:
                    record["answer_s"] = round(time.monotonic() - started, 3)
                if record["status"] is None and b"\r\n" in conn.buf:
                    first = bytes(conn.buf.split(b"\r\n", 1)[0])
                    parts = first.split(b" ")
                    record["status"] = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else first[:40].decode("latin-1")
            if record["status"] is None and conn.buf:
                record["status"] = bytes(conn.buf[:40]).decode("latin-1")
            if keep_answer:
                record["answer"] = bytes(conn.buf[:400]).decode("latin-1")
        except socket.timeout:
            pass
        except Exception as error:
            record["error"] = failure_name(error)
        finally:
            if conn:
                conn.close()
        return record


# ---------------------------------------------------------------------------------------
# The daemon: configuration, start, sampling, stop, what is left


def write_config(path, args, work, marker):
    agent = os.path.join(args.bin, "prewarm-fake-agent")
    p_args = ", ".join(json.dumps(a) for a in args.agent_args.split())
    w_args = ", ".join(json.dumps(a) for a in args.wait_agent_args.split())
    ready = (
        "[pool.ready]\n"
        "send = '{\"type\":\"control_request\",\"request_id\":\"i\",\"request\":{\"subtype\":\"initialize\",\"hooks\":null}}'\n"
        "expect = '\"type\":\"control_response\"'\n"
        "timeout_s = 120\n"
        "[pool.turn]\n"
        "end = '\"type\":\"result\"'\n"
    )
    text = (
        f"drain_timeout_s = 10\n\n[journal]\npath = {json.dumps(os.path.join(work, 'journal.sqlite'))}\n\n"
        f"[[pool]]\nname = \"p\"\ncommand = {json.dumps(agent)}\nargs = [{p_args}]\nenv = {{ PREWARM_SOAK = \"{marker}\" }}\n"
        f"spares = {args.spares}\nmax_starting = {args.max_starting}\nmax_processes = {args.spares + 12}\n"
        f"when_empty = \"wait\"\nwait_timeout_ms = 10000\nturn_timeout_s = 60\n{ready}\n"
        f"[[pool]]\nname = \"w\"\ncommand = {json.dumps(agent)}\nargs = [{w_args}]\nenv = {{ PREWARM_SOAK = \"{marker}\" }}\n"
        f"spares = 1\nmax_starting = 1\nwhen_empty = \"wait\"\nwait_timeout_ms = 10000\nturn_timeout_s = 60\n{ready}"
    )
    with open(path, "w") as file:
        file.write(text)
    return text


def http_get(path, target, timeout=3.0):
    deadline = time.monotonic() + timeout
    conn = Conn(path, deadline)
    try:
        conn.send(f"GET {target} HTTP/1.1\r\nHost: prewarm\r\nConnection: close\r\n\r\n".encode(), deadline)
        status, headers = conn.read_head(deadline)
        body, _ = conn.read_body(headers, deadline)
        return status, body
    finally:
        conn.close()


METRIC = re.compile(r'^(prewarm_turns_total|prewarm_turns_rejected_total)\{([^}]*)\}\s+([0-9.eE+]+)')


def daemon_turns(path):
    """Turns by start and outcome, and refusals by reason, from /metrics."""
    status, body = http_get(path, "/metrics")
    if status != 200:
        return None
    turns = collections.Counter()
    rejected = collections.Counter()
    for line in body.decode("utf-8", "replace").splitlines():
        match = METRIC.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        value = int(float(match.group(3)))
        if match.group(1) == "prewarm_turns_total":
            turns[f"{labels.get('pool')}/{labels.get('outcome')}"] += value
        else:
            rejected[f"{labels.get('pool')}/{labels.get('reason')}"] += value
    return {"turns": dict(turns), "rejected": dict(rejected), "total": sum(turns.values())}


def proc_stat(pid):
    """(state, ppid, pgrp, utime+stime in s, starttime) from /proc/PID/stat, or None."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            text = file.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2]), (int(fields[11]) + int(fields[12])) / CLK_TCK, int(fields[19])


def proc_sample(pid):
    stat = proc_stat(pid)
    if stat is None or stat[0] == "Z":
        return None
    rss_kib = threads = None
    try:
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                if line.startswith("VmRSS:"):
                    rss_kib = int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    return {"rss_kib": rss_kib, "fds": fds, "cpu_s": round(stat[3], 2), "threads": threads}


class Processes:
    """Every process of the daemon's seen during the run: its children (the keeper) and the
    members of its pools' process groups (by pid and start time, so a reused pid is not
    mistaken for one)."""

    def __init__(self, daemon_pid, marker):
        self.daemon = daemon_pid
        self.marker = f"\0PREWARM_SOAK={marker}\0".encode()
        self.seen = {}
        self.groups = set()

    def add(self, pid):
        stat = proc_stat(pid)
        if stat and stat[0] != "Z":
            self.seen[pid] = stat[4]
            if stat[2] == pid:
                self.groups.add(pid)

    def scan(self, pool_pids=()):
        for pid in pool_pids:
            self.add(pid)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            if pid == self.daemon:
                continue
            stat = proc_stat(pid)
            if stat and (stat[1] == self.daemon or stat[2] in self.groups):
                self.add(pid)

    def alive(self):
        left = []
        for pid, start in self.seen.items():
            stat = proc_stat(pid)
            if stat and stat[4] == start and stat[0] != "Z":
                left.append(pid)
        # Processes never seen (started after the last scan): the run's marker, or a known group.
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in self.seen or int(entry) == self.daemon:
                continue
            stat = proc_stat(int(entry))
            if not stat or stat[0] == "Z":
                continue
            if stat[2] in self.groups:
                left.append(int(entry))
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as file:
                    if self.marker in b"\0" + file.read():
                        left.append(int(entry))
            except OSError:
                pass
        return sorted(set(left))


def describe(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    except OSError:
        return "?"


LOG_LEVEL = re.compile(r"^\S+ (trace|debug|info|notice|warning|error|critical) ")
LOG_TAIL = re.compile(r"^\S+ \S+ prewarm: ")


def error_lines(log_path):
    counts = collections.Counter()
    first = {}
    try:
        with open(log_path, errors="replace") as file:
            for line in file:
                match = LOG_LEVEL.match(line)
                if match and match.group(1) in ("error", "critical"):
                    # The message without its timestamp and metadata, to count alike lines.
                    key = re.sub(r"^\S+ ", "", line.strip())
                    key = re.sub(r"=\S+", "=…", key)[:200]
                    counts[key] += 1
                    first.setdefault(key, line.strip()[:500])
    except OSError:
        pass
    return {"total": sum(counts.values()), "lines": [{"count": n, "first": first[k]} for k, n in counts.most_common(20)]}


def corpus_pass(soak, log_path, seed):
    """Each malformed request alone, before the load: its answer, and the daemon's error-level
    log lines it caused (the log read from where it was before the request)."""
    records = []
    for name, data, half_close in soak.malformed_corpus(random.Random(seed)):
        if soak.stop.is_set():
            break
        offset = os.path.getsize(log_path)
        record = soak.malformed_one(name, data, half_close, keep_answer=True)
        time.sleep(0.3)
        with open(log_path, "rb") as file:
            file.seek(offset)
            new = file.read().decode("utf-8", "replace")
        record["error_lines"] = [
            line[:300] for line in new.splitlines() if (m := LOG_LEVEL.match(line)) and m.group(1) in ("error", "critical")
        ]
        records.append(record)
    return records


# ---------------------------------------------------------------------------------------
# Summaries


def window_mean(samples, start, end):
    """The mean of the samples with start <= t <= end (the nearest one if none)."""
    inside = [s for s in samples if start <= s["t"] <= end and s.get("rss_kib") is not None]
    if not inside:
        usable = [s for s in samples if s.get("rss_kib") is not None]
        if not usable:
            return None
        inside = [min(usable, key=lambda s: abs(s["t"] - start))]
    out = {"t_from": inside[0]["t"], "t_to": inside[-1]["t"], "samples": len(inside)}
    for key in ("rss_kib", "fds", "threads"):
        values = [s[key] for s in inside if s.get(key) is not None]
        out[key] = round(sum(values) / len(values), 1) if values else None
    # CPU and turns are cumulative: the window's last sample.
    out["cpu_s"] = inside[-1]["cpu_s"]
    out["turns"] = inside[-1]["turns"]
    return out


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def malformed_summary(records):
    cases = collections.OrderedDict()
    for r in records:
        c = cases.setdefault(r["case"], collections.Counter())
        c["sent"] += 1
        answered = r["answer_s"] is not None and r["answer_s"] <= ANSWER_WITHIN_S
        closed = r["closed_s"] is not None and r["closed_s"] <= ANSWER_WITHIN_S
        c["answered_1s"] += answered
        c["closed_1s"] += closed
        c["answered_and_closed_1s"] += answered and closed
        c["answered_later"] += r["answer_s"] is not None and not answered
        c["never_answered"] += r["answer_s"] is None
        c["left_open"] += r["closed_s"] is None
        if r["sent"] != "all":
            c["send_" + r["sent"]] += 1
        c[f"status_{r['status']}"] += 1
    total = collections.Counter()
    for c in cases.values():
        for key in ("sent", "answered_1s", "closed_1s", "answered_and_closed_1s", "answered_later", "never_answered", "left_open"):
            total[key] += c[key]
    return {"cases": {k: dict(v) for k, v in cases.items()}, "total": dict(total)}


def mib(kib):
    return None if kib is None else round(kib / 1024, 1)


def print_report(result):
    s = result["summary"]
    w, e, q = s["warmup"], s["end"], s.get("quiet")
    print()
    print(f"soak: {result['duration_s']:.0f} s of load, {s['turns_daemon']} turns (daemon's count), "
          f"{s['turns_per_s']:.2f}/s; {result['clients']['requests_sent']} turn requests sent by the clients")
    if w and e:
        def row(name, a, b, ratio=None, after=None):
            cells = f"{name:<22}{str(a):>12}{str(b):>12}"
            cells += f"{ratio:>12}" if ratio is not None else f"{'':>12}"
            cells += f"{str(after):>14}" if after is not None else ""
            print(cells)

        print(f"{'':<22}{'warm-up':>12}{'end':>12}{'end/warm-up':>12}{'after quiet':>14}")
        row("window (s)", f"{w['t_from']:.0f}-{w['t_to']:.0f}", f"{e['t_from']:.0f}-{e['t_to']:.0f}", "", f"{q['t']:.0f}" if q else "-")
        row("turns so far", w["turns"], e["turns"])
        row("RSS (MiB)", mib(w["rss_kib"]), mib(e["rss_kib"]), f"{s['rss_ratio']:.3f}", mib(q["rss_kib"]) if q else "-")
        row("open fds", w["fds"], e["fds"], f"{s['fds_ratio']:.3f}", q["fds"] if q else "-")
        row("threads", w["threads"], e["threads"], "", q["threads"] if q else "-")
        row("CPU (s)", w["cpu_s"], e["cpu_s"])
        row("CPU per turn (ms)", s["cpu_ms_per_turn_warmup"], s["cpu_ms_per_turn_after_warmup"])
        print("(CPU per turn: from the load's start to the warm-up window, and from there to the end)")
        print(f"RSS growth after warm-up: {s['rss_growth_bytes_per_turn']} bytes/turn; fds {s['fds_growth']:+}; "
              f"peak RSS {mib(s['peak_rss_kib'])} MiB, peak fds {s['peak_fds']}")
        goal = "met" if s["within_10pct"] else "NOT met"
        if result["interrupted"] or result["daemon"]["stop"].get("exited_early"):
            goal += " (but the run did not complete: " + ("interrupted" if result["interrupted"] else "the daemon exited") + ")"
        print(f"goal (RSS and fds at the end within 10% of warm-up): {goal}")
    print(f"turns by outcome (daemon): {s['daemon_outcomes']}")
    if s["daemon_rejected"]:
        print(f"refused (daemon): {s['daemon_rejected']}")
    print("clients:")
    for kind, counts in result["clients"]["by_kind"].items():
        extra = ""
        lat = result["clients"]["completed_s"].get(kind)
        if lat:
            extra = f"   completed p50 {lat['p50'] * 1000:.0f} ms, p99 {lat['p99'] * 1000:.0f} ms"
        print(f"  {kind:<20}{dict(counts)}{extra}")
    for group in ("checks", "start_kinds", "keepalive_connections", "client_errors"):
        if result["clients"].get(group):
            print(f"  {group:<20}{result['clients'][group]}")
    m = result["malformed"]
    t = m["total"]
    if t.get("sent"):
        print(f"malformed: {t['sent']} sent; answered within 1 s {t['answered_1s']}, answered and closed within 1 s "
              f"{t['answered_and_closed_1s']}, answered later {t['answered_later']}, never answered {t['never_answered']} "
              f"(in {MALFORMED_WAIT_S:.0f} s), left open by the daemon {t['left_open']}")
        for case, c in m["cases"].items():
            statuses = {k[7:]: v for k, v in c.items() if k.startswith("status_")}
            print(f"  {case:<28}{c['sent']:>4} sent  {c['answered_1s']:>4} answered ≤1 s  {c['closed_1s']:>4} closed ≤1 s  "
                  f"status {statuses}" + (f"  send blocked {c['send_blocked']}" if c.get("send_blocked") else ""))
    if result.get("corpus_pass"):
        print("malformed, one at a time before the load (status, answer, close, error-level log lines caused):")
        for r in result["corpus_pass"]:
            answer = f"{r['answer_s'] * 1000:.0f} ms" if r["answer_s"] is not None else f"none in {MALFORMED_WAIT_S:.0f} s"
            closed = f"{r['closed_s'] * 1000:.0f} ms" if r["closed_s"] is not None else "left open"
            print(f"  {r['case']:<28}{str(r['status']):>6}  answer {answer:<12} closed {closed:<10} "
                  f"errors logged {len(r['error_lines'])}" + (f": {LOG_TAIL.sub('', r['error_lines'][0])[:120]}" if r["error_lines"] else ""))
    print(f"daemon error-level log lines: {result['daemon']['error_lines']['total']}")
    for line in result["daemon"]["error_lines"]["lines"][:8]:
        print(f"  {line['count']} x {line['first'][:230]}")
    d = result["daemon"]
    print(f"daemon stopped: {d['stop']}; processes seen {d['processes_seen']}, left after it: {len(d['left_after_stop'])}")
    for left in d["left_after_stop"]:
        print(f"  left: {left}")


# ---------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True, help="directory with prewarm and prewarm-fake-agent")
    parser.add_argument("--duration", type=float, default=float(os.environ.get("DURATION", 1800)), help="seconds of load (DURATION)")
    parser.add_argument("--rate", type=float, default=4.0, help="turns per second over the turn clients (paced)")
    parser.add_argument("--malformed-every", type=float, default=1.5, help="seconds between malformed requests")
    parser.add_argument("--spares", type=int, default=6)
    parser.add_argument("--max-starting", type=int, default=2)
    parser.add_argument("--agent-args", default="--init-ms 200 --ttft-ms 20 --tokens 5 --token-ms 5 --fork-child")
    parser.add_argument("--wait-agent-args", default="--init-sleep-ms 1500 --ttft-ms 20 --tokens 5")
    parser.add_argument("--sample-every", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.10, help="the warm-up window starts at this fraction of the run")
    parser.add_argument("--window", type=float, default=0.05, help="the warm-up and end windows, as a fraction of the run")
    parser.add_argument("--work", help="a directory for the configuration, socket and journal (default: a temporary one)")
    parser.add_argument("--log", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "soak.log"),
                        help="where to keep the daemon's log (default: benchmarks/out/soak.log)")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "soak.json"))
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--no-corpus-pass", dest="corpus_pass", action="store_false",
                        help="skip sending each malformed request alone before the load")
    args = parser.parse_args()

    own_work = args.work is None
    work = args.work or tempfile.mkdtemp(prefix="soak-")
    socket_path = os.path.join(work, "prewarm.sock")
    config_path = os.path.join(work, "soak.toml")
    log_path = args.log
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    # Every process of this run carries it in its environment (the daemon, its keeper, the
    # pools' processes and theirs), so what outlives the daemon is found even if never seen.
    marker = f"{os.getpid()}-{time.time_ns()}"
    config_text = write_config(config_path, args, work, marker)
    interrupted = []

    def on_signal(number, _frame):
        interrupted.append(signal.Signals(number).name)
        soak.stop.set()

    soak = Soak(args, socket_path)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    log = open(log_path, "wb")
    daemon = subprocess.Popen(
        [os.path.join(args.bin, "prewarm"), "serve", "--config", config_path, "--socket", socket_path],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env=dict(os.environ, PREWARM_SOAK=marker),
    )
    procs = Processes(daemon.pid, marker)
    print(f"soak: daemon pid {daemon.pid} on {socket_path}, log {log_path}; {args.duration:.0f} s of load", flush=True)
    result = {
        "benchmark": "soak",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()},
        "binaries": os.path.abspath(args.bin),
        "config": config_text,
        "options": {k: v for k, v in vars(args).items() if k not in ("work",)},
    }

    samples = []
    stop_info = {}
    threads = []
    load_started = None
    try:
        # Ready: every pool's spares idle.
        ready_by = time.monotonic() + 120
        ready = False
        while time.monotonic() < ready_by and not soak.stop.is_set() and daemon.poll() is None:
            try:
                status, body = http_get(socket_path, "/v1/pools")
                pools = json.loads(body)["pools"] if status == 200 else []
                procs.scan([pid for pool in pools for pid in pool.get("pids", [])])
                if pools and all(pool["idle"] >= pool["target_spares"] for pool in pools):
                    ready = True
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.25)
        if not ready:
            raise RuntimeError(f"the daemon did not become ready (exit status {daemon.poll()}); see {log_path}")
        base = proc_sample(daemon.pid)
        print(f"soak: ready; daemon RSS {mib(base['rss_kib'])} MiB, {base['fds']} fds", flush=True)
        if args.corpus_pass:
            result["corpus_pass"] = corpus_pass(soak, log_path, args.seed)

        # The clients.
        rng = random.Random(args.seed)
        turn_workers = [
            ("fresh-1", soak.fresh_worker), ("fresh-2", soak.fresh_worker), ("keepalive", soak.keepalive_worker),
            ("twoway", soak.twoway_worker), ("disconnect", soak.disconnect_worker),
        ]
        interval = len(turn_workers) / args.rate
        load_started = time.monotonic()
        soak.end_at = load_started + args.duration
        for name, target in turn_workers:
            threads.append(threading.Thread(target=target, args=(interval, random.Random(rng.random())), name=name, daemon=True))
        threads.append(threading.Thread(
            target=soak.malformed_worker, args=(args.malformed_every, random.Random(rng.random())), name="malformed", daemon=True))
        for thread in threads:
            thread.start()

        # Sampling until the end of the load.
        next_sample = load_started
        last_print = load_started
        while not soak.stop.is_set() and time.monotonic() < soak.end_at:
            now = time.monotonic()
            if now >= next_sample:
                sample = take_sample(daemon, socket_path, procs, soak, now - load_started)
                samples.append(sample)
                if sample.get("gone"):
                    print("soak: the daemon is gone; stopping the load", flush=True)
                    soak.stop.set()
                    break
                if now - last_print >= max(30.0, args.duration / 20):
                    last_print = now
                    print(f"  t={sample['t']:.0f}s turns {sample['turns']} RSS {mib(sample['rss_kib'])} MiB "
                          f"fds {sample['fds']} CPU {sample['cpu_s']} s", flush=True)
                next_sample += args.sample_every
            soak.stop.wait(max(0.0, min(next_sample, soak.end_at) - time.monotonic()))
        load_ended = time.monotonic()
        if not soak.stop.is_set():
            samples.append(take_sample(daemon, socket_path, procs, soak, load_ended - load_started))
        soak.stop.set()
        for thread in threads:
            thread.join(TURN_DEADLINE_S + 5)
        stuck = [thread.name for thread in threads if thread.is_alive()]

        # Quiet: every client gone for a few seconds.
        quiet = None
        if daemon.poll() is None and not interrupted:
            time.sleep(5)
            quiet = take_sample(daemon, socket_path, procs, soak, time.monotonic() - load_started)
        final_turns = None
        try:
            final_turns = daemon_turns(socket_path)
        except Exception:
            pass
    except Exception as error:
        print(f"soak: {error}", file=sys.stderr)
        stop_info["error"] = str(error)
        load_ended = time.monotonic()
        quiet = None
        final_turns = None
        stuck = []
    finally:
        soak.stop.set()
        stop_info.update(stop_daemon(daemon, procs))
        log.close()

    load_s = (load_ended - load_started) if load_started else 0.0
    result["duration_s"] = round(load_s, 1)
    result["interrupted"] = interrupted or None
    result["samples"] = samples
    result["summary"] = summarize(samples, quiet, final_turns, args, load_s)
    with soak.stats.lock:
        result["clients"] = {
            "requests_sent": soak.stats.turns,
            "by_kind": {k: dict(v) for k, v in soak.stats.counts.items()
                        if k not in ("checks", "start_kinds", "keepalive_connections", "client_errors")},
            "completed_s": {
                k: {"n": len(v), "p50": percentile(v, 0.5), "p99": percentile(v, 0.99), "max": max(v)}
                for k, v in soak.stats.durations.items() if v
            },
            "checks": dict(soak.stats.counts.get("checks", {})),
            "start_kinds": dict(soak.stats.counts.get("start_kinds", {})),
            "keepalive_connections": dict(soak.stats.counts.get("keepalive_connections", {})),
            "client_errors": dict(soak.stats.counts.get("client_errors", {})),
            "stuck_threads": stuck,
        }
        result["malformed"] = malformed_summary(soak.stats.malformed)
        result["malformed"]["records"] = soak.stats.malformed
    result["daemon"] = {
        "pid": daemon.pid,
        "log": os.path.abspath(log_path),
        "error_lines": error_lines(log_path),
        "stop": stop_info,
        "processes_seen": len(procs.seen),
        "left_after_stop": stop_info.pop("left", []),
    }
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as file:
            json.dump(result, file, indent=1)
            file.write("\n")
    if samples:
        print_report(result)
    if args.json:
        print(f"soak: JSON in {args.json}")
    if own_work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if stop_info.get("error") or not samples else 0


def take_sample(daemon, socket_path, procs, soak, t):
    sample = {"t": round(t, 1)}
    figures = proc_sample(daemon.pid) if daemon.poll() is None else None
    if figures is None:
        sample["gone"] = True
        sample.update({"rss_kib": None, "fds": None, "cpu_s": None, "threads": None, "turns": None})
        return sample
    sample.update(figures)
    sample["client_requests"] = soak.stats.turns
    try:
        status, body = http_get(socket_path, "/v1/pools", timeout=2.0)
        pools = json.loads(body)["pools"] if status == 200 else []
        procs.scan([pid for pool in pools for pid in pool.get("pids", [])])
        sample["pools"] = {p["name"]: {k: p[k] for k in ("idle", "starting", "busy", "waiting", "served")} for p in pools}
    except Exception as error:
        sample["pools_error"] = failure_name(error)
        procs.scan()
    try:
        sample["turns"] = daemon_turns(socket_path)["total"]
    except Exception as error:
        sample["metrics_error"] = failure_name(error)
        sample["turns"] = None
    return sample


def stop_daemon(daemon, procs):
    """SIGTERM, the drain, then what is left of its processes."""
    info = {}
    if daemon.poll() is None:
        try:
            procs.scan()
        except OSError:
            pass
        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        try:
            info["exit_status"] = daemon.wait(timeout=40)
            info["stop_s"] = round(time.monotonic() - started, 2)
        except subprocess.TimeoutExpired:
            daemon.kill()
            info["exit_status"] = daemon.wait()
            info["killed"] = "no exit within 40 s of SIGTERM: SIGKILL"
    else:
        info["exit_status"] = daemon.returncode
        info["exited_early"] = True
    # The keeper kills what is left once the daemon's pipe closes: give it a moment.
    left = procs.alive()
    by = time.monotonic() + 5
    while left and time.monotonic() < by:
        time.sleep(0.25)
        left = procs.alive()
    info["left"] = [f"{pid} {describe(pid)}" for pid in left]
    for pid in left:  # the soak leaves nothing behind, whatever the daemon did
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return info


def summarize(samples, quiet, final_turns, args, load_s):
    usable = [s for s in samples if s.get("rss_kib") is not None]
    # Turns: the daemon's count, else the clients' (when /metrics did not answer).
    for s in usable:
        if s.get("turns") is None:
            s["turns_estimated"] = True
            s["turns"] = s.get("client_requests")
    warm = window_mean(usable, args.warmup * load_s, (args.warmup + args.window) * load_s)
    end = window_mean(usable, (1 - args.window) * load_s, load_s)
    out = {"warmup": warm, "end": end, "quiet": quiet}
    total = (final_turns or {}).get("total") or (usable[-1]["turns"] if usable else 0) or 0
    out["turns_daemon"] = total
    out["turns_per_s"] = total / load_s if load_s else 0
    out["daemon_outcomes"] = (final_turns or {}).get("turns", {})
    out["daemon_rejected"] = (final_turns or {}).get("rejected", {})
    out["peak_rss_kib"] = max((s["rss_kib"] for s in usable), default=None)
    out["peak_fds"] = max((s["fds"] for s in usable), default=None)
    if warm and end:
        out["rss_ratio"] = end["rss_kib"] / warm["rss_kib"]
        out["fds_ratio"] = end["fds"] / warm["fds"]
        out["within_10pct"] = abs(out["rss_ratio"] - 1) <= 0.10 and abs(out["fds_ratio"] - 1) <= 0.10
        turns_between = (end["turns"] or 0) - (warm["turns"] or 0)
        first = usable[0]
        turns_warm = (warm["turns"] or 0) - (first["turns"] or 0)
        out["cpu_ms_per_turn_warmup"] = round(1000 * (warm["cpu_s"] - first["cpu_s"]) / turns_warm, 2) if turns_warm > 0 else None
        out["cpu_ms_per_turn_after_warmup"] = (
            round(1000 * (end["cpu_s"] - warm["cpu_s"]) / turns_between, 2) if turns_between > 0 else None
        )
        out["rss_growth_bytes_per_turn"] = round(1024 * (end["rss_kib"] - warm["rss_kib"]) / turns_between) if turns_between > 0 else None
        out["fds_growth"] = round(end["fds"] - warm["fds"], 1)
    return out


if __name__ == "__main__":
    sys.exit(main())
