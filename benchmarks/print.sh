#!/usr/bin/env bash
# `claude -p` as the PHP SDKs, API wrappers and scripts run it: time to the last byte of
# `-p "..." --output-format json` (and to the first byte of `--output-format stream-json
# --verbose`), the bundled CLI alone against prewarm-claude served by the shipped
# configuration's claimed spares (config/claude-sdk.toml's pool, 8 spares), 1 and 8 at once,
# alternating in one run, plus the Laravel SDK's shape with `--resume`.
#   bash benchmarks/print.sh [ROUNDS]
# Release build; the Python SDK's virtualenv from .ci/run for its bundled CLI; the fake model
# on loopback (first token after 50 ms).
rounds="${1:-3}"
source "$(dirname "$0")/sdk_common.sh" print

# The shipped configuration, with this CLI, 8 spares and the model's address passed on.
# (the `sdk` pool's spares only: a fingerprint pool keeps 2).
sed -e "s|^command = \"claude\"|command = \"$cli\"\nconfig_dir = \"$work/config\"|" -e '0,/^spares = 2$/s//spares = 8/' \
    config/claude-sdk.toml > "$work/prewarm.toml"
printf '[journal]\nenabled = false\n' >> "$work/prewarm.toml"
env -i PATH=/usr/bin:/bin HOME="$work" XDG_STATE_HOME="$work/state" ANTHROPIC_BASE_URL="http://127.0.0.1:$port" ANTHROPIC_API_KEY=sk-fake \
    "$bin/prewarm" serve --config "$work/prewarm.toml" --socket "$work/p.sock" 2> "$work/daemon.log" &
daemon=$!
# Every pool full and nothing starting (its spares and resume spares), then 2 s: no boot of a
# run before runs beside the runs measured next.
full() {
    until "$bin/prewarm" status --json --socket "$work/p.sock" 2>/dev/null \
        | python3 -c 'import json,sys
try: pools = json.load(sys.stdin)["pools"]
except ValueError: sys.exit(1)
sys.exit(0 if pools[0]["idle"] >= 8 and all(p["idle"] >= p["effective_spares"] and p["starting"] == 0 and p["resume_held"] == p["resume_ready"] for p in pools) else 1)'; do
        sleep 0.5
    done
    # A CLI goes on with its own start-up work for a moment after it answers (JIT, plugins):
    # the runs measured next find spares as a pool idle between bursts has them.
    sleep 2
}
# The Laravel shape is a conversation: its next turn comes when a person has read the answer
# and typed the next message, seconds later. Waits (up to 30 s) until the session's resume
# spare is ready, and records how long that took after the run ended.
resumed() {
    local start=$SECONDS
    until "$bin/prewarm" status --json --socket "$work/p.sock" 2>/dev/null \
        | python3 -c 'import json,sys
try: pools = json.load(sys.stdin)["pools"]
except ValueError: sys.exit(1)
sys.exit(0 if sum(p["resume_ready"] for p in pools) >= 1 else 1)'; do
        [ $((SECONDS - start)) -ge 30 ] && break
        sleep 0.2
    done
    echo "$((SECONDS - start))" >> "$work/resume_wait_s"
    full
}
full

# The callers' environment: the model, its key, the config directory (the pool's).
export_env=(env -i PATH=/usr/bin:/bin HOME="$work" ANTHROPIC_BASE_URL="http://127.0.0.1:$port" ANTHROPIC_API_KEY=sk-fake
    CLAUDE_CONFIG_DIR="$work/config" PREWARM_SOCKET="$work/p.sock" PREWARM_CLAUDE_CLI="$cli")

# measure MODE SHAPE AT_ONCE: AT_ONCE runs at once; one JSON line each (first and last byte).
measure() {
    local exe="$cli"
    [ "$1" = prewarm ] && exe="$bin/prewarm-claude"
    local session="$session_cli"
    [ "$1" = prewarm ] && session="$session_prewarm"
    (cd "$work/project" && "${export_env[@]}" python3 - "$exe" "$2" "$3" "$1" "$session" <<'PY'
import json, subprocess, sys, threading, time
exe, shape, at_once, mode, session = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
argv = {
    "json": [exe, "-p", "Say hello.", "--output-format", "json"],
    "stream": [exe, "-p", "Say hello.", "--output-format", "stream-json", "--verbose"],
    "laravel": [exe, "--output-format", "stream-json", "--verbose", "--max-turns", "3", "--resume", session, "--print", "Go on."],
}[shape]
results = [None] * at_once
def one(i):
    start = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = None
    chunks = []
    while True:
        b = p.stdout.read1(65536)
        if not b: break
        if first is None: first = time.monotonic() - start
        chunks.append(b)
    p.wait()
    out = b"".join(chunks)
    ok = p.returncode == 0 and b'"type":"result"' in out
    results[i] = {"first": first, "last": time.monotonic() - start, "ok": ok}
threads = [threading.Thread(target=one, args=(i,)) for i in range(at_once)]
for t in threads: t.start()
for t in threads: t.join()
for r in results:
    r.update(mode=mode, shape=shape, at_once=at_once)
    print(json.dumps(r))
PY
    ) >> "$work/samples.jsonl"
}

# A session for each mode's Laravel runs to resume (one resumed by the CLI alone would make
# the other's resume spare stale: its transcript changed).
new_session() {
    (cd "$work/project" && "${export_env[@]}" "$cli" -p "Remember this." --output-format json | python3 -c 'import json,sys;print(json.load(sys.stdin)["session_id"])')
}
session_cli="$(new_session)"
session_prewarm="$(new_session)"

for round in $(seq "$rounds"); do
    for mode in cli prewarm; do
        for shape in json stream; do
            for i in 1 2 3; do measure "$mode" "$shape" 1; full; done
        done
        for i in 1 2 3; do
            measure "$mode" laravel 1
            if [ "$mode" = prewarm ]; then resumed; else full; fi
        done
        measure "$mode" json 8; full
        measure "$mode" stream 8; full
    done
    echo "round $round done" >&2
done

"$bin/prewarm" status --socket "$work/p.sock" | head -4
"$bin/prewarm" status --json --socket "$work/p.sock" | python3 -c 'import json,sys
for p in json.load(sys.stdin)["pools"]: print("{}: claim_ahead_hits {}, claim_ahead_discarded {}".format(p["name"], p["claim_ahead_hits"], p["claim_ahead_discarded"]))'
python3 - "$work/samples.jsonl" <<'PY'
import json, statistics, sys
samples = [json.loads(line) for line in open(sys.argv[1])]
bad = [s for s in samples if not s["ok"]]
print(f"runs: {len(samples)}, not answered whole: {len(bad)}")
print("| shape | at once | measured | CLI alone p50 | prewarm-claude p50 | ratio | runs each |")
print("|---|---|---|---|---|---|---|")
for shape, at_once, key in (("json", 1, "last"), ("json", 8, "last"), ("stream", 1, "first"), ("stream", 8, "first"), ("laravel", 1, "last")):
    t = {m: [s[key] for s in samples if s["mode"] == m and s["shape"] == shape and s["at_once"] == at_once and s[key] is not None] for m in ("cli", "prewarm")}
    if not t["cli"] or not t["prewarm"]: continue
    c, p = statistics.median(t["cli"]), statistics.median(t["prewarm"])
    print(f"| {shape} | {at_once} | {key} byte | {c:.3f} s | {p:.3f} s | **{c / p:.2f}x** | {len(t['prewarm'])} |")
PY
echo "the Laravel shape's resume spare was ready, after each prewarm-claude run ended, within (s): $(tr '\n' ' ' < "$work/resume_wait_s")"
echo "samples: $work/samples.jsonl"
