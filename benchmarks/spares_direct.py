"""Eight claimed spares of the real CLI driven at once with no daemon: the floor of
`print.sh`'s 8-at-once `-p` runs (each spare claimed for a directory, then given one user
message, timed to its exit), alone or beside eight nice-10 boots of new spares (what a
pool's replacements cost a burst without `replace_after_ms`), and claimed before the burst
(what `claim_ahead` leaves on the runs' path).

    python3 benchmarks/spares_direct.py CLI MODEL_PORT [ROUNDS]

CLI: the bundled CLI (e.g. the SDK virtualenv's claude_agent_sdk/_bundled/claude);
MODEL_PORT: a running `prewarm-fake-model --port 0 --ttft-ms 50`. A one-off measurement
tool: it prints each round's median and slowest exit, in seconds.
"""
import json, os, statistics, subprocess, sys, tempfile, threading, time

cli, port = sys.argv[1], sys.argv[2]
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
work = tempfile.mkdtemp(prefix="prewarm-spares-direct.")
park, project, config = (os.path.join(work, name) for name in ("park", "project", "config"))
for directory in (park, project, config):
    os.makedirs(directory)
env = dict(PATH="/usr/bin:/bin", HOME=work, ANTHROPIC_BASE_URL=f"http://127.0.0.1:{port}", ANTHROPIC_API_KEY="sk-fake",
           CLAUDE_CONFIG_DIR=config, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", CLAUDE_CODE_SDK_READS_SESSION_STATE="1",
           CLAUDE_CODE_ENTRYPOINT="sdk-py")
spare = [cli, "--output-format", "stream-json", "--verbose", "--input-format", "stream-json", "--await-claim"]
claim = json.dumps({"type": "control_request", "request_id": "c1", "request": {"subtype": "claim_session", "cwd": project}}).encode() + b"\n"
user = json.dumps({"type": "user", "message": {"role": "user", "content": "Say hello."}, "parent_tool_use_id": None, "session_id": ""}).encode() + b"\n"


def spawn():
    # Its own process group at nice 10, as a pool's spare boots.
    return subprocess.Popen(["nice", "-n", "10"] + spare, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, cwd=park, start_new_session=True)


def burst(with_boots, ahead):
    spares = [spawn() for _ in range(8)]
    time.sleep(8)  # booted and settled (no event says when a parked CLI is done with its start-up work)
    if ahead:
        for process in spares:
            process.stdin.write(claim)
            process.stdin.flush()
        for process in spares:
            while b'"control_response"' not in process.stdout.readline():
                pass
        time.sleep(3)
    for process in spares:
        os.setpriority(os.PRIO_PGRP, process.pid, 0)  # the turn's priority, as the daemon gives it back
    start = time.monotonic()
    boots = [spawn() for _ in range(8)] if with_boots else []
    ends = [0.0] * 8

    def one(index):
        process = spares[index]
        process.stdin.write(user if ahead else claim + user)
        process.stdin.close()
        for _ in process.stdout:
            pass
        process.wait()
        ends[index] = time.monotonic() - start

    threads = [threading.Thread(target=one, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for process in boots:
        process.kill()
        process.wait()
    return statistics.median(ends), max(ends)


for _ in range(rounds):
    for label, with_boots, ahead in (("alone", False, False), ("beside 8 boots", True, False), ("claimed ahead", False, True)):
        median, slowest = burst(with_boots, ahead)
        print(f"{label}: median {median:.2f} s, slowest {slowest:.2f} s", flush=True)
