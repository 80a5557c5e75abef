#!/usr/bin/env python3
"""The Claude Code CLI's internal `--bg-spare SOCKET` mode (a parked CLI claimed by one JSON line).

Run from the repository root, after `swift build -c release` (for prewarm-fake-model):
  python3 benchmarks/bgspare_probe.py all
Findings and figures: docs/claude-cli.md §8.

Stdlib only. Talks to a fake Anthropic API on loopback (prewarm-fake-model), never to the network.

Usage:
  bgspare_probe.py support [--cli PATH]          does this CLI support --bg-spare? (exit 0 yes, 3 no)
  bgspare_probe.py checks  [--cli PATH]          behavioural checks (pipes, initialize, resume, env, auth,
                                                 long path, parent death, signals, ...); JSON report
  bgspare_probe.py bench   [--cli PATH] [--rounds N] [--burst K] [--burst-rounds R] [--park S]
                                                 first-token latency of a resumed turn: cold / bg-spare /
                                                 resume-spare, N interleaved rounds, then K at once
  bgspare_probe.py all     (support + checks + bench)

Common options:
  --cli PATH         default: the CLI bundled with claude-agent-sdk in the SDK virtualenv
                     ($PREWARM_SDK_PYTHON, else ${XDG_CACHE_HOME:-~/.cache}/prewarm/venv-sdk/bin/python)
  --fake-model PATH  default: .build/release/prewarm-fake-model, else .build/debug/prewarm-fake-model
  --base-url URL     use an already running fake model instead
  --out FILE         also write the JSON report there (it always goes to stdout)

Every process this script starts is tracked by pid and killed (its process group) on exit.
"""
import argparse
import glob
import json
import os
import signal
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STREAM_ARGV = ["-p", "--output-format", "stream-json", "--verbose", "--input-format", "stream-json"]
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the terminating NUL (Linux)

_STARTED = []  # every Popen started here, for cleanup


def sdk_python():
    """The SDK virtualenv's Python, as .ci/run makes it."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.environ.get("PREWARM_SDK_PYTHON") or os.path.join(cache, "prewarm", "venv-sdk", "bin", "python")


def default_cli():
    """The CLI bundled with claude-agent-sdk in the SDK virtualenv; `claude` from PATH if there is none."""
    python = sdk_python()
    if os.path.exists(python):
        try:
            out = subprocess.run([python, "-c", "import claude_agent_sdk, os; print(os.path.join(os.path.dirname("
                                  "claude_agent_sdk.__file__), '_bundled', 'claude'))"],
                                 capture_output=True, text=True, timeout=60).stdout.strip()
            if out and os.path.exists(out):
                return out
        except (OSError, subprocess.SubprocessError):
            pass
        venv = os.path.dirname(os.path.dirname(python))
        hits = sorted(glob.glob(os.path.join(
            venv, "lib", "python3*", "site-packages", "claude_agent_sdk", "_bundled", "claude")))
        if hits:
            return hits[-1]
    return "claude"


def default_fake_model():
    """The release build's prewarm-fake-model, else the debug build's."""
    for config in ("release", "debug"):
        path = os.path.join(REPO, ".build", config, "prewarm-fake-model")
        if os.path.exists(path):
            return path
    return os.path.join(REPO, ".build", "release", "prewarm-fake-model")


def now():
    return time.monotonic()


def cleanup_all():
    for p in _STARTED:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # each child is its own group leader (start_new_session)
            except (ProcessLookupError, PermissionError):
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
        try:
            p.wait(5)
        except Exception:
            pass


def popen(args, **kw):
    kw.setdefault("start_new_session", True)
    p = subprocess.Popen(args, **kw)
    _STARTED.append(p)
    return p


# ----------------------------------------------------------------------------------------------
# A CLI process with line readers on stdout and stderr.

class Proc:
    def __init__(self, args, cwd, env, stdin=subprocess.PIPE):
        self.t0 = now()
        self.p = popen(args, cwd=cwd, env=env, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out = []  # (t, text)
        self.err = []
        self.cv = threading.Condition()
        self.eof = False
        self.threads = [threading.Thread(target=self._read, args=(self.p.stdout, self.out, True), daemon=True),
                        threading.Thread(target=self._read, args=(self.p.stderr, self.err, False), daemon=True)]
        for t in self.threads:
            t.start()

    @property
    def pid(self):
        return self.p.pid

    def _read(self, f, sink, is_out):
        for raw in f:
            with self.cv:
                sink.append((now(), raw.decode("utf-8", "replace").rstrip("\n")))
                self.cv.notify_all()
        with self.cv:
            if is_out:
                self.eof = True
            self.cv.notify_all()

    def send(self, obj):
        self.p.stdin.write((json.dumps(obj) + "\n").encode())
        self.p.stdin.flush()
        return now()

    def control(self, rid, body):
        return self.send({"type": "control_request", "request_id": rid, "request": body})

    def user(self, text, session_id=""):
        return self.send({"type": "user", "message": {"role": "user", "content": text},
                          "parent_tool_use_id": None, "session_id": session_id})

    def wait_for(self, pred, timeout=60, start=0):
        """First (t, msg) at or after index `start` of stdout whose JSON satisfies pred; None on timeout/EOF."""
        end = now() + timeout
        i = start
        with self.cv:
            while True:
                while i < len(self.out):
                    t, line = self.out[i]
                    i += 1
                    try:
                        m = json.loads(line)
                    except ValueError:
                        continue
                    if pred(m):
                        return t, m
                if self.eof or now() >= end:
                    return None
                self.cv.wait(min(0.5, max(0.0, end - now())))

    def wait_response(self, rid, timeout=60):
        return self.wait_for(lambda m: m.get("type") == "control_response"
                             and m.get("response", {}).get("request_id") == rid, timeout)

    def close(self, timeout=10):
        try:
            self.p.stdin.close()
        except Exception:
            pass
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.p.wait(5)
        except Exception:
            pass

    def stderr_text(self):
        with self.cv:
            return "\n".join(l for _, l in self.err)


def is_assistant(m):
    return m.get("type") == "assistant"


def is_result(m):
    return m.get("type") == "result"


def answer_text(m):
    try:
        return "".join(c.get("text", "") for c in m["message"]["content"] if c.get("type") == "text")
    except Exception:
        return ""


def user_turns(text):
    import re
    hits = re.findall(r"\[user turns: (\d+)\]", text)
    return int(hits[-1]) if hits else None


# ----------------------------------------------------------------------------------------------
# Environment: a private config dir, HOME, project dir; loopback fake model.

class Env:
    def __init__(self, cli, base_url, root=None):
        self.cli = cli
        self.base_url = base_url
        # Short root under /tmp so socket paths stay far below 108 bytes; 0700.
        self.root = root or tempfile.mkdtemp(prefix="bgs-", dir="/tmp")
        os.chmod(self.root, 0o700)
        self.cfg = os.path.join(self.root, "cfg")
        self.home = os.path.join(self.root, "home")
        self.proj = os.path.join(self.root, "proj")
        self.socks = os.path.join(self.root, "s")
        for d in (self.cfg, self.home, self.proj, self.socks):
            os.makedirs(d, exist_ok=True)
        os.chmod(self.socks, 0o700)
        self.proj = os.path.realpath(self.proj)

    def env(self, **extra):
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.home, "LANG": "C.UTF-8",
             "CLAUDE_CONFIG_DIR": self.cfg, "ANTHROPIC_BASE_URL": self.base_url, "ANTHROPIC_API_KEY": "sk-fake",
             "CLAUDE_CODE_ENTRYPOINT": "sdk-py", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
        e.update(extra)
        return {k: v for k, v in e.items() if v is not None}

    def sock_path(self):
        return os.path.join(self.socks, uuid.uuid4().hex[:8] + ".sock")

    # -- cold CLI ------------------------------------------------------------------------------
    def spawn_cold(self, extra_argv=(), env=None):
        return Proc([self.cli] + STREAM_ARGV + list(extra_argv), cwd=self.proj, env=env or self.env())

    # -- bg-spare --------------------------------------------------------------------------------
    def spawn_spare(self, sock, auth="default", env=None, cwd=None):
        """auth="default": a fresh random token; None: no CLAUDE_BG_CLAIM_AUTH at all."""
        if auth == "default":
            auth = uuid.uuid4().hex
        e = env or self.env()
        if auth is not None:
            e = dict(e, CLAUDE_BG_CLAIM_AUTH=auth)
        pr = Proc([self.cli, "--bg-spare", sock], cwd=cwd or self.root, env=e)
        pr.auth = auth
        pr.sock = sock
        return pr

    def claim_line(self, spare, argv, env=None, session_id=None, cwd=None, auth="spare"):
        line = {"cwd": cwd or self.proj, "env": env if env is not None else self.env(), "argv": list(argv),
                "auth": spare.auth if auth == "spare" else auth}
        if session_id is not None:
            line["sessionId"] = session_id
        return line


def wait_listening(sock, proc, timeout=10.0):
    """Seconds until `sock` is a listening Unix socket, or None if the process exits / timeout."""
    end = now() + timeout
    while now() < end:
        if proc.p.poll() is not None:
            return None
        try:
            if stat.S_ISSOCK(os.stat(sock).st_mode):
                return now() - proc.t0
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    return None


def send_claim(sock, line, wait_close=0.0, half_close=True):
    """Connect, write the line and a newline and, by default, half-close (as the CLI's own daemon does:
    socket.end()). Returns (t_sent, peer_closed): whether the spare closed the connection within
    wait_close seconds. Without half_close, the spare closes it only when it REJECTS the line (wrong or
    missing auth, bad JSON); with half_close it closes it in both cases (Node's allowHalfOpen=false)."""
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(sock)
    c.sendall((json.dumps(line) + "\n").encode())
    t = now()
    if half_close:
        c.shutdown(socket.SHUT_WR)
    peer_closed = None
    if wait_close > 0:
        c.settimeout(wait_close)
        try:
            peer_closed = c.recv(1) == b""
        except socket.timeout:
            peer_closed = False
        except OSError:
            peer_closed = True
    c.close()
    return t, peer_closed


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None


def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def wait_cpu_quiet(pid, quiet=0.3, timeout=15.0):
    """Seconds until the process's CPU time stops growing for `quiet` seconds (its loading is done)."""
    t0 = now()
    last = cpu_ticks(pid)
    still_since = now()
    while now() - t0 < timeout:
        time.sleep(0.05)
        c = cpu_ticks(pid)
        if c is None:
            return None
        if c != last:
            last, still_since = c, now()
        elif now() - still_since >= quiet:
            return still_since - t0
    return None


# ----------------------------------------------------------------------------------------------
# Fake model.

class FakeModel:
    def __init__(self, path, extra=()):
        self.p = popen([path, "--port", "0"] + list(extra), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        first = self.p.stdout.readline()
        self.port = json.loads(first)["port"]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=lambda: [None for _ in self.p.stdout], daemon=True).start()

    def stop(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)


# ----------------------------------------------------------------------------------------------
# (a) support

def check_support(cli, env_obj, timeout=10.0):
    """True when `cli --bg-spare SOCK` (with CLAUDE_BG_CLAIM_AUTH, in a 0700 dir) listens within timeout
    and is still alive; then it is retired with SIGTERM and must exit 0 and remove its socket."""
    sock = env_obj.sock_path()
    sp = env_obj.spawn_spare(sock)
    t = wait_listening(sock, sp, timeout)
    info = {"cli": cli, "listen_s": None if t is None else round(t, 3)}
    if t is None:
        info.update(supported=False, rc=sp.p.poll(), stderr=sp.stderr_text()[-500:])
        sp.kill()
        return info
    sp.p.send_signal(signal.SIGTERM)
    try:
        rc = sp.p.wait(5)
    except subprocess.TimeoutExpired:
        rc = None
    sp.kill()
    info.update(supported=True, sigterm_rc=rc, socket_removed=not os.path.exists(sock))
    return info


# ----------------------------------------------------------------------------------------------
# Sessions and turns.

def make_session(E, text="first turn"):
    """A normal (cold) stream-json turn. Returns the session id."""
    pr = E.spawn_cold()
    pr.user(text)
    r = pr.wait_for(is_result, 90)
    pr.close()
    if r is None:
        raise RuntimeError("first turn failed: " + pr.stderr_text()[-2000:])
    return r[1]["session_id"]


def run_turn(pr, t0, text, init=True, timeout=90):
    """From t0: optional initialize (waits for its reply, as the SDK does), then the user message;
    returns dict with init_s, first_s (first assistant line), result, turns."""
    res = {}
    if init:
        pr.control("init", {"subtype": "initialize", "hooks": None})
        r = pr.wait_response("init", timeout)
        if r is None:
            res["error"] = "no initialize reply; stderr: " + pr.stderr_text()[-800:]
            return res
        res["init_s"] = r[0] - t0
        res["init_ok"] = r[1]["response"].get("subtype") == "success"
    pr.user(text)
    a = pr.wait_for(is_assistant, timeout)
    if a is None:
        res["error"] = "no assistant line; stderr: " + pr.stderr_text()[-800:]
        return res
    res["first_s"] = a[0] - t0
    res["turns"] = user_turns(answer_text(a[1]))
    r = pr.wait_for(is_result, timeout)
    if r is not None:
        res["session_id"] = r[1].get("session_id")
        res["is_error"] = r[1].get("is_error")
    return res


# ----------------------------------------------------------------------------------------------
# (b) behavioural checks

ENV_DUMP_TRIGGER = "PREWARM_TOOL_USE"  # the fake model then asks for Bash `env` (see main(): --tool-input)


def _tool_output(pr, start=0, timeout=60):
    """The text of the first tool_result the CLI reports on stdout (a `user` line)."""
    def pred(m):
        if m.get("type") != "user":
            return False
        c = m.get("message", {}).get("content")
        return isinstance(c, list) and any(x.get("type") == "tool_result" for x in c)
    r = pr.wait_for(pred, timeout, start)
    if r is None:
        return None
    out = []
    for x in r[1]["message"]["content"]:
        if x.get("type") == "tool_result":
            c = x.get("content")
            if isinstance(c, list):
                out.extend(y.get("text", "") for y in c if isinstance(y, dict))
            elif isinstance(c, str):
                out.append(c)
    return "\n".join(out)


def parked_spare(E, auth="default", env=None, cwd=None, settle=0.3):
    sock = E.sock_path()
    sp = E.spawn_spare(sock, auth=auth, env=env, cwd=cwd)
    lt = wait_listening(sock, sp)
    if lt is None:
        raise RuntimeError("spare did not listen: " + sp.stderr_text()[-1000:])
    time.sleep(settle)
    sp.listen_s = lt
    return sp


def run_checks(E, S):
    """S: a session made by one normal turn. Returns a dict of findings."""
    C = {}
    resume_argv = STREAM_ARGV + ["--resume=" + S]
    turns_before = [1]  # user turns so far in S (mutable counter)

    def expect_turns():
        turns_before[0] += 1
        return turns_before[0]

    # 1. Parked: silent on stdout/stderr; listening time; socket and directory modes.
    sp = parked_spare(E, settle=0)
    quiet = wait_cpu_quiet(sp.pid, quiet=0.3, timeout=5)  # loading still going on after listen()?
    time.sleep(1.0)
    st = os.stat(sp.sock)
    C["parked"] = {"listen_s": round(sp.listen_s, 3), "stdout_lines_while_parked": len(sp.out),
                   "stderr_lines_while_parked": len(sp.err), "socket_mode": oct(stat.S_IMODE(st.st_mode)),
                   "socket_dir_mode": oct(stat.S_IMODE(os.stat(os.path.dirname(sp.sock)).st_mode)),
                   "cpu_busy_after_listen_s": None if quiet is None else round(quiet, 3),
                   "cpu_ticks_total": cpu_ticks(sp.pid), "rss_mb": rss_mb(sp.pid)}
    # 2. Claim with a resumed stream-json command line; the parked process's OWN pipes carry the protocol.
    #    No half-close here: an accepted line leaves the connection open and removes the socket path.
    c = socket.socket(socket.AF_UNIX)
    c.connect(sp.sock)
    c.sendall((json.dumps(E.claim_line(sp, resume_argv)) + "\n").encode())
    t = now()
    removed_s = None
    while now() - t < 2:
        if not os.path.exists(sp.sock):
            removed_s = now() - t
            break
        time.sleep(0.002)
    c.settimeout(0.5)
    try:
        closed = c.recv(1) == b""
    except socket.timeout:
        closed = False
    res = run_turn(sp, t, "second turn via bg-spare")
    exp = expect_turns()
    C["claim_resume"] = {
        "spare_closed_connection_after_good_claim_no_half_close": closed,
        "socket_removed_s_after_line": None if removed_s is None else round(removed_s, 4),
        "initialize_on_spare_stdin_ok": res.get("init_ok"),
        "init_s_after_line": round(res["init_s"], 3) if "init_s" in res else None,
        "first_token_s_after_line": round(res["first_s"], 3) if "first_s" in res else None,
        "answer_on_spare_stdout": "first_s" in res,
        "user_turns_seen": res.get("turns"), "user_turns_expected": exp,
        "resumed_session_id_same": res.get("session_id") == S,
        "error": res.get("error")}
    C["claim_resume"]["rc_after_stdin_eof"] = sp.close()
    c.close()
    # Same with the daemon's half-close (socket.end()): the spare then closes its end too.
    sp = parked_spare(E)
    t, closed = send_claim(sp.sock, E.claim_line(sp, STREAM_ARGV), wait_close=0.5)
    res = run_turn(sp, t, "fresh session via bg-spare")
    C["claim_fresh_session"] = {
        "spare_closed_connection_after_good_claim_with_half_close": closed,
        "init_s_after_line": round(res.get("init_s", -1), 3), "first_token_s_after_line": round(res.get("first_s", -1), 3),
        "user_turns_seen": res.get("turns"), "new_session": res.get("session_id") != S}
    sp.close()
    C["claim_resume"]["stderr"] = sp.stderr_text()[-500:]

    # 2b. The claim's sessionId (another uuid) does not override --resume=S.
    sp = parked_spare(E)
    t, _ = send_claim(sp.sock, E.claim_line(sp, resume_argv, session_id=str(uuid.uuid4())))
    res = run_turn(sp, t, "claim with a foreign sessionId")
    C["claim_sessionId_vs_resume"] = {"result_session_id_is_S": res.get("session_id") == S,
                                      "user_turns_seen": res.get("turns"), "user_turns_expected": expect_turns()}
    sp.close()
    # 2c. A resume spare (--resume=S spawned in advance): get_binary_version, its RSS.
    pr = E.spawn_cold(["--resume=" + S])
    pr.control("v", {"subtype": "get_binary_version"})
    r = pr.wait_response("v", 30)
    time.sleep(0.5)
    C["resume_spare"] = {"get_binary_version": r[1]["response"] if r else None,
                         "answered_s": round(r[0] - pr.t0, 3) if r else None, "rss_mb": rss_mb(pr.pid)}
    res = run_turn(pr, now(), "turn on a resume spare")
    C["resume_spare"].update(first_token_s=round(res.get("first_s", -1), 3), user_turns_seen=res.get("turns"),
                             user_turns_expected=expect_turns())
    pr.close()

    # 2d. Staleness: a turn is added to S (cold) while a bg-spare is parked and while a resume spare
    #     (already loaded S) waits. The bg-spare reads S at claim time; the resume spare does not.
    sp = parked_spare(E)
    rs = E.spawn_cold(["--resume=" + S])
    rs.control("v", {"subtype": "get_binary_version"})
    rs.wait_response("v", 30)
    time.sleep(0.3)
    cold = E.spawn_cold(["--resume=" + S])
    rcold = run_turn(cold, cold.t0, "turn added while the spares wait")
    cold.close()
    n_after_cold = expect_turns()
    t, _ = send_claim(sp.sock, E.claim_line(sp, resume_argv))
    rb = run_turn(sp, t, "bg-spare after the intervening turn")
    sp.close()
    n_bg = expect_turns()
    rr = run_turn(rs, now(), "resume spare after the intervening turns")
    rs.close()
    n_rs = expect_turns()
    C["staleness"] = {"cold_turn_seen": rcold.get("turns"), "cold_turn_expected": n_after_cold,
                      "bg_spare_turns_seen": rb.get("turns"), "bg_spare_turns_expected": n_bg,
                      "resume_spare_turns_seen": rr.get("turns"), "resume_spare_turns_if_fresh": n_rs,
                      "resume_spare_session_id": rr.get("session_id"), "S": S}
    # A stale resume spare's turn is appended to S's file with its parent = the leaf it had loaded: the
    # transcript forks, and later --resume=S follows the newest leaf, i.e. this branch. Re-sync.
    C["staleness"]["next_resume_follows_stale_branch"] = None
    if rr.get("turns") is not None:
        turns_before[0] = rr["turns"]
        nx = E.spawn_cold(["--resume=" + S])
        rn = run_turn(nx, nx.t0, "turn after the fork")
        nx.close()
        C["staleness"]["next_resume_turns_seen"] = rn.get("turns")
        C["staleness"]["next_resume_follows_stale_branch"] = rn.get("turns") == rr["turns"] + 1
        turns_before[0] = rn.get("turns") or turns_before[0] + 1

    # 3. Without initialize: the user message alone.
    sp = parked_spare(E)
    t, _ = send_claim(sp.sock, E.claim_line(sp, resume_argv))
    res = run_turn(sp, t, "turn without initialize", init=False)
    C["claim_no_initialize"] = {"first_token_s": round(res.get("first_s", -1), 3), "user_turns_seen": res.get("turns"),
                                "user_turns_expected": expect_turns(), "error": res.get("error")}
    sp.close()

    # 4. Wrong auth, then bad JSON (with auth on): rejected by closing the connection; the spare keeps
    #    listening; then the right line works.
    sp = parked_spare(E)
    _, closed_wrong = send_claim(sp.sock, E.claim_line(sp, resume_argv, auth="wrong"), wait_close=2)
    time.sleep(0.2)
    alive1, sock1 = sp.p.poll() is None, os.path.exists(sp.sock)
    _, closed_noauth = send_claim(sp.sock, {k: v for k, v in E.claim_line(sp, resume_argv).items() if k != "auth"},
                                  wait_close=2)
    c = socket.socket(socket.AF_UNIX)
    c.connect(sp.sock)
    c.sendall(b"{not json\n")
    c.settimeout(2)
    try:
        closed_badjson = c.recv(1) == b""
    except socket.timeout:
        closed_badjson = False
    c.close()
    time.sleep(0.2)
    alive2, sock2 = sp.p.poll() is None, os.path.exists(sp.sock)
    t, _ = send_claim(sp.sock, E.claim_line(sp, resume_argv))
    res = run_turn(sp, t, "turn after rejected claims")
    C["auth"] = {"wrong_auth_connection_closed": closed_wrong, "missing_auth_connection_closed": closed_noauth,
                 "bad_json_connection_closed": closed_badjson,
                 "alive_and_listening_after_wrong_auth": alive1 and sock1,
                 "alive_and_listening_after_bad_json": alive2 and sock2,
                 "good_claim_after_rejections_works": "first_s" in res,
                 "user_turns_seen": res.get("turns"), "user_turns_expected": expect_turns(),
                 "stderr": sp.stderr_text()[-300:]}
    sp.close()

    # 5. No CLAUDE_BG_CLAIM_AUTH: any line is taken (auth ignored); bad JSON kills it.
    sp = parked_spare(E, auth=None)
    t, closed = send_claim(sp.sock, dict(E.claim_line(sp, resume_argv, auth="anything")), wait_close=0.5)
    res = run_turn(sp, t, "turn, no auth gate")
    C["no_auth_gate"] = {"line_with_arbitrary_auth_accepted": "first_s" in res, "user_turns_seen": res.get("turns"),
                         "user_turns_expected": expect_turns()}
    sp.close()
    sp = parked_spare(E, auth=None)
    c = socket.socket(socket.AF_UNIX)
    c.connect(sp.sock)
    c.sendall(b"{not json\n")
    c.close()
    try:
        rc = sp.p.wait(5)
    except subprocess.TimeoutExpired:
        rc = None
    time.sleep(0.1)
    C["no_auth_gate"].update(bad_json_rc=rc, bad_json_stderr=sp.stderr_text()[-300:],
                             bad_json_socket_removed=not os.path.exists(sp.sock))
    sp.kill()

    # 6. Environment: variables the spare cannot apply; merge vs replace; credentials; what the
    #    programs it starts (Bash tool) see.
    spawn_env = E.env(PROBE_SPAWN_ONLY="from-spawn", PROBE_BOTH="spawn-value")
    sp = parked_spare(E, env=spawn_env)
    claim_env = E.env(PROBE_CLAIM_ONLY="from-claim", PROBE_BOTH="claim-value")
    claim_env.update({"BAD=NAME": "x", "PROBE_NUM": 5, "PROBE_NUL": "a\u0000b", "": "empty-name"})
    argv = resume_argv + ["--allowedTools", "Bash"]
    t, _ = send_claim(sp.sock, E.claim_line(sp, argv, env=claim_env))
    res = run_turn(sp, t, "dump env " + ENV_DUMP_TRIGGER)
    dump = _tool_output(sp) or ""
    fin = sp.wait_for(is_result, 60, start=0)
    res["turns"] = user_turns((fin[1].get("result") or "") if fin else "")
    envs = dict(l.split("=", 1) for l in dump.splitlines() if "=" in l)
    C["env"] = {"turn_ok": "first_s" in res, "user_turns_seen": res.get("turns"), "user_turns_expected": expect_turns(),
                "bash_env_dump_lines": len(dump.splitlines()),
                "spawn_only_var_seen_by_tools": envs.get("PROBE_SPAWN_ONLY"),
                "claim_only_var_seen_by_tools": envs.get("PROBE_CLAIM_ONLY"),
                "var_in_both_seen_as": envs.get("PROBE_BOTH"),
                "non_string_var_seen": envs.get("PROBE_NUM"), "nul_var_seen": envs.get("PROBE_NUL"),
                "CLAUDE_BG_CLAIM_AUTH_seen_by_tools": "CLAUDE_BG_CLAIM_AUTH" in envs,
                "stderr_without_debug_flag": sp.stderr_text()[-1500:]}
    sp.close()
    # Same, with --debug-to-stderr in the claimed argv: the warnings then reach stderr.
    sp = parked_spare(E)
    t, _ = send_claim(sp.sock, E.claim_line(sp, resume_argv + ["--debug-to-stderr"], env=claim_env))
    res = run_turn(sp, t, "bad env with debug")
    expect_turns()
    sp.close()
    C["env"]["stderr_lines_with_debug_to_stderr"] = [l for l in sp.stderr_text().splitlines()
                                                     if "bg-spare" in l or "not applied" in l][:12]
    # Claim env without ANTHROPIC_API_KEY (spawn env had it): is the spawn-time key still used?
    sp = parked_spare(E)
    t, _ = send_claim(sp.sock, E.claim_line(sp, resume_argv, env=E.env(ANTHROPIC_API_KEY=None)))
    res = run_turn(sp, t, "claim without api key", timeout=40)
    a = sp.wait_for(is_result, 30, start=0)
    C["env"]["claim_without_ANTHROPIC_API_KEY"] = {
        "first_s": res.get("first_s"), "answer": None, "result_is_error": a[1].get("is_error") if a else None,
        "result_text": (a[1].get("result") or "")[:200] if a else None}
    if res.get("turns"):
        expect_turns()
    sp.close()

    # 7. Socket path length.
    longdir = os.path.join(E.socks, "d" * 60)
    os.makedirs(longdir, mode=0o700, exist_ok=True)
    lens = {}
    for total in (107, 108, 120):
        name_len = total - len(longdir) - 1
        path = os.path.join(longdir, "x" * (name_len - 5) + ".sock")
        assert len(path.encode()) == total, (len(path), total)
        sp = E.spawn_spare(path)
        lt = wait_listening(path, sp, timeout=6)
        alive = sp.p.poll() is None
        entry = {"listening": lt is not None, "alive_after": alive, "rc": sp.p.poll(),
                 "stderr": sp.stderr_text()[-300:]}
        if alive:
            # Is it really listening at that path (or at a truncated one)?
            try:
                c = socket.socket(socket.AF_UNIX)
                c.connect(path)
                c.close()
                entry["connect_ok"] = True
            except OSError as e:
                entry["connect_ok"] = repr(e)
            entry["dir_listing"] = [n for n in os.listdir(longdir)]
            # The same socket reached through a short alias of its directory (/proc/self/fd/N/name).
            dfd = os.open(longdir, os.O_RDONLY)
            try:
                c = socket.socket(socket.AF_UNIX)
                c.connect(f"/proc/self/fd/{dfd}/{os.path.basename(path)}")
                c.close()
                entry["connect_via_dirfd_ok"] = True
            except OSError as e:
                entry["connect_via_dirfd_ok"] = repr(e)
            finally:
                os.close(dfd)
        sp.kill()
        for n in os.listdir(longdir):
            try:
                os.unlink(os.path.join(longdir, n))
            except OSError:
                pass
        lens[total] = entry
    C["socket_path_len"] = lens

    # 8. Directory mode is not enforced: a 0755 directory works too.
    d = os.path.join(E.root, "open")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    path = os.path.join(d, "a.sock")
    sp = E.spawn_spare(path)
    C["dir_0755_listens"] = wait_listening(path, sp, 6) is not None
    sp.kill()

    # 9. Signals while parked.
    sig = {}
    for name in ("SIGTERM", "SIGHUP", "SIGINT"):
        sp = parked_spare(E)
        t0 = now()
        sp.p.send_signal(getattr(signal, name))
        try:
            rc = sp.p.wait(5)
        except subprocess.TimeoutExpired:
            rc = None
        sig[name] = {"rc": rc, "exit_s": round(now() - t0, 3), "socket_removed": not os.path.exists(sp.sock)}
        sp.kill()
    sp = parked_spare(E)
    sp.p.send_signal(signal.SIGKILL)
    sp.p.wait(5)
    sig["SIGKILL"] = {"rc": sp.p.returncode, "socket_left_behind": os.path.exists(sp.sock)}
    try:
        os.unlink(sp.sock)
    except OSError:
        pass
    # SIGTERM right after spawn, before it listens (handlers not yet installed).
    sp = E.spawn_spare(E.sock_path())
    time.sleep(0.02)
    sp.p.send_signal(signal.SIGTERM)
    try:
        sig["SIGTERM_at_20ms"] = {"rc": sp.p.wait(5)}
    except subprocess.TimeoutExpired:
        sig["SIGTERM_at_20ms"] = {"rc": None}
    sp.kill()
    # SIGTERM after the claim (now an ordinary CLI waiting for input).
    sp = parked_spare(E)
    t, _ = send_claim(sp.sock, E.claim_line(sp, resume_argv))
    sp.control("init", {"subtype": "initialize", "hooks": None})
    sp.wait_response("init", 30)
    sp.p.send_signal(signal.SIGTERM)
    try:
        sig["SIGTERM_after_claim"] = {"rc": sp.p.wait(5)}
    except subprocess.TimeoutExpired:
        sig["SIGTERM_after_claim"] = {"rc": None}
    sp.kill()
    C["signals"] = sig

    # 10. stdin EOF while parked: does it notice?
    sp = parked_spare(E)
    sp.p.stdin.close()
    time.sleep(3)
    C["stdin_eof_while_parked"] = {"still_alive_after_3s": sp.p.poll() is None}
    # ...and the claim then: main reads EOF at once.
    t, _ = send_claim(sp.sock, E.claim_line(sp, resume_argv))
    try:
        C["stdin_eof_while_parked"]["rc_after_claim"] = sp.p.wait(15)
    except subprocess.TimeoutExpired:
        C["stdin_eof_while_parked"]["rc_after_claim"] = None
    sp.kill()

    # 11. Parent death while parked: the spare is started by an intermediate process that exits.
    sock = E.sock_path()
    code = ("import subprocess,sys,os\n"
            "p=subprocess.Popen([sys.argv[1],'--bg-spare',sys.argv[2]],cwd=sys.argv[3],"
            "stdin=subprocess.DEVNULL,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)\n"
            "print(p.pid,flush=True)\n"
            "import time; time.sleep(float(sys.argv[4]))\n")
    mid = popen([sys.executable, "-c", code, E.cli, sock, E.root, "1.5"], env=E.env(CLAUDE_BG_CLAIM_AUTH="x"),
                stdout=subprocess.PIPE)
    gpid = int(mid.stdout.readline())
    mid.wait(10)
    t_parent_gone = now()
    gone = None
    ppid_after = None
    while now() - t_parent_gone < 8:
        try:
            with open(f"/proc/{gpid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                gone = now() - t_parent_gone
                break
            ppid_after = int(fields[1])
        except FileNotFoundError:
            gone = now() - t_parent_gone
            break
        time.sleep(0.05)
    C["parent_death"] = {"exited_s_after_parent_exit": None if gone is None else round(gone, 2),
                         "ppid_after_reparent": ppid_after, "socket_removed": not os.path.exists(sock)}
    if gone is None:
        try:
            os.kill(gpid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # 12. A claim whose cwd does not exist.
    sp = parked_spare(E)
    t, _ = send_claim(sp.sock, E.claim_line(sp, resume_argv, cwd=os.path.join(E.root, "no-such-dir")))
    try:
        rc = sp.p.wait(15)
    except subprocess.TimeoutExpired:
        rc = None
    C["claim_bad_cwd"] = {"rc": rc, "stderr": sp.stderr_text()[-400:], "stdout": [l[:200] for _, l in sp.out][:3]}
    sp.kill()

    # 13. Claim CLAUDE_CONFIG_DIR different from the spawn's: where is the session looked up?
    other_cfg = os.path.join(E.root, "cfg2")
    os.makedirs(other_cfg, exist_ok=True)
    sp = parked_spare(E, env=E.env(CLAUDE_CONFIG_DIR=other_cfg))
    t, _ = send_claim(sp.sock, E.claim_line(sp, resume_argv))  # claim env: CLAUDE_CONFIG_DIR = E.cfg (has S)
    res = run_turn(sp, t, "config dir switched at claim", timeout=30)
    sp.close()
    C["config_dir_switch_at_claim"] = {"turn_ok": "first_s" in res, "user_turns_seen": res.get("turns"),
                                       "error": (res.get("error") or "")[:300],
                                       "files_in_spawn_cfg": sorted(os.listdir(other_cfg))}
    if res.get("turns"):
        expect_turns()
    return C


# ----------------------------------------------------------------------------------------------
# Benchmark: first token of a resumed turn, three ways.

MODES = ("cold", "bg_spare", "resume_spare")


def pct(values, q):
    v = sorted(values)
    if not v:
        return None
    k = max(0, min(len(v) - 1, int(round(q / 100.0 * len(v) + 0.5)) - 1))  # nearest rank
    return v[k]


def summarize(samples):
    out = {}
    for key in ("first_s", "init_s"):
        vals = [s[key] for s in samples if s.get(key) is not None]
        if vals:
            out[key] = {"n": len(vals), "p50": round(statistics.median(vals), 3), "p90": round(pct(vals, 90), 3),
                        "min": round(min(vals), 3), "max": round(max(vals), 3)}
    out["errors"] = [s.get("error")[:200] for s in samples if s.get("error")]
    out["wrong_turn_count"] = sum(1 for s in samples if s.get("turns") != s.get("expected_turns"))
    return out


class Prepared:
    """One resumed turn of `session`, made ready in advance according to `mode`."""

    def __init__(self, E, mode, session):
        self.E, self.mode, self.session = E, mode, session
        self.argv = STREAM_ARGV + ["--resume=" + session]
        self.pr = None
        self.ready_s = None
        if mode == "bg_spare":
            sock = E.sock_path()
            self.pr = E.spawn_spare(sock)
            self.ready_s = wait_listening(sock, self.pr)
        elif mode == "resume_spare":
            self.pr = E.spawn_cold(["--resume=" + session])
            self.pr.control("v", {"subtype": "get_binary_version"})
            r = self.pr.wait_response("v", 30)
            self.ready_s = None if r is None else r[0] - self.pr.t0
            self.version = None if r is None else r[1]["response"].get("response", {}).get("version")

    def go(self, text):
        """Measured part: from the moment a client's query would arrive."""
        if self.mode == "cold":
            self.pr = self.E.spawn_cold(["--resume=" + self.session])
            t0 = self.pr.t0
        elif self.mode == "bg_spare":
            if self.ready_s is None:
                return {"error": "spare not listening: " + self.pr.stderr_text()[-300:]}
            t0, _ = send_claim(self.pr.sock, self.E.claim_line(self.pr, self.argv))
        else:
            if self.ready_s is None:
                return {"error": "resume spare did not answer get_binary_version: " + self.pr.stderr_text()[-300:]}
            t0 = now()
        res = run_turn(self.pr, t0, text)
        self.pr.close()
        return res


def bench(E, rounds=8, burst=8, burst_rounds=2, park=1.0, log=print):
    report = {"sequential": {}, "burst": {}}
    # Sequential: one session per mode, resumed once per round; rounds interleave the modes, in a
    # rotating order; the in-advance work of all three modes happens before the measured part.
    sessions = {m: make_session(E, f"first turn ({m})") for m in MODES}
    turns = {m: 1 for m in MODES}
    samples = {m: [] for m in MODES}
    ready = {"bg_spare": [], "resume_spare": []}
    for r in range(rounds):
        prep = {m: Prepared(E, m, sessions[m]) for m in MODES}
        for m in ("bg_spare", "resume_spare"):
            if prep[m].ready_s is not None:
                ready[m].append(prep[m].ready_s)
        time.sleep(park)
        order = MODES[r % 3:] + MODES[:r % 3]
        for m in order:
            res = prep[m].go(f"round {r} {m}")
            turns[m] += 1
            res["expected_turns"] = turns[m]
            samples[m].append(res)
            time.sleep(0.2)
        log(f"round {r}: " + ", ".join(f"{m} {samples[m][-1].get('first_s', float('nan')):.3f}" for m in MODES))
    for m in MODES:
        report["sequential"][m] = summarize(samples[m])
    report["ready_s"] = {m: {"p50": round(statistics.median(v), 3), "max": round(max(v), 3)} for m, v in ready.items() if v}

    # Burst: `burst` sessions per mode, `burst` concurrent resumed turns.
    if burst > 0 and burst_rounds > 0:
        bsessions = {}
        for m in MODES:
            bsessions[m] = _parallel([lambda m=m, i=i: make_session(E, f"first turn ({m} {i})") for i in range(burst)], 2)
        bturns = {m: [1] * burst for m in MODES}
        bsamples = {m: [] for m in MODES}
        for r in range(burst_rounds):
            for m in (MODES[r % 3:] + MODES[:r % 3]):
                preps = _parallel([lambda m=m, s=s: Prepared(E, m, s) for s in bsessions[m]], burst)
                time.sleep(park + (1.0 if m != "cold" else 0))
                res = _parallel([lambda p=p, i=i: p.go(f"burst {r} {m} {i}") for i, p in enumerate(preps)], burst)
                for i, x in enumerate(res):
                    bturns[m][i] += 1
                    x["expected_turns"] = bturns[m][i]
                bsamples[m].extend(res)
                log(f"burst {r} {m}: p50 {statistics.median([x.get('first_s', 99) for x in res]):.3f}")
                time.sleep(0.5)
        for m in MODES:
            report["burst"][m] = summarize(bsamples[m])
        report["burst"]["size"] = burst
    return report


def _parallel(fns, width):
    out = [None] * len(fns)
    sem = threading.Semaphore(width)

    def run(i):
        with sem:
            try:
                out[i] = fns[i]()
            except Exception as e:  # noqa
                out[i] = {"error": repr(e)}

    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


# ----------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["support", "checks", "bench", "all"])
    ap.add_argument("--cli", help="the CLI to probe (default: the SDK virtualenv's bundled CLI)")
    ap.add_argument("--fake-model", help="prewarm-fake-model (default: .build/release, else .build/debug)")
    ap.add_argument("--base-url", help="use an already running fake model (checks' env dump needs its "
                                       "--tool-input to run `env`)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--burst", type=int, default=8)
    ap.add_argument("--burst-rounds", type=int, default=2)
    ap.add_argument("--park", type=float, default=1.0, help="seconds the in-advance processes idle before use")
    ap.add_argument("--timeout", type=float, default=10.0, help="support: seconds to wait for the socket")
    ap.add_argument("--out")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    a = ap.parse_args()
    a.cli = a.cli or default_cli()
    if not a.base_url:
        a.fake_model = a.fake_model or default_fake_model()
        if not os.path.exists(a.fake_model):
            ap.error(f"{a.fake_model} not found: run `swift build -c release`, or pass --fake-model or --base-url")

    fm = None
    E = None
    report = {"cli": a.cli, "nproc": os.cpu_count(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "loadavg_start": os.getloadavg()}
    try:
        try:
            report["cli_version"] = subprocess.run([a.cli, "-v"], capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception as e:  # noqa
            report["cli_version"] = repr(e)
        if a.base_url:
            url = a.base_url
        else:
            fm = FakeModel(a.fake_model, ["--tool-input", '{"command":"env","description":"Print the environment"}'])
            url = fm.url
        E = Env(a.cli, url)
        if a.cmd in ("support", "all"):
            report["support"] = check_support(a.cli, E, a.timeout)
            print(json.dumps(report["support"]), file=sys.stderr)
            if not report["support"]["supported"]:
                print(json.dumps(report, indent=1))
                return 3
        if a.cmd in ("checks", "all"):
            S = make_session(E)
            report["checks"] = run_checks(E, S)
            print("checks done", file=sys.stderr)
        if a.cmd in ("bench", "all"):
            report["bench"] = bench(E, a.rounds, a.burst, a.burst_rounds, a.park,
                                    log=lambda s: print(s, file=sys.stderr, flush=True))
        report["loadavg_end"] = os.getloadavg()
        text = json.dumps(report, indent=1)
        print(text)
        if a.out:
            with open(a.out, "w") as f:
                f.write(text + "\n")
        return 0
    finally:
        cleanup_all()
        if fm:
            fm.stop()
        if E and not a.keep:
            import shutil
            shutil.rmtree(E.root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
