#!/usr/bin/env bash
# What `prewarm sdk install` gives an application that never sets cli_path: the test
# application (Tests/PrewarmTests/Support/sdk_app.py: FastAPI under uvicorn, one query() per
# request, no cli_path) timed per request, 1 and 8 at once, with and without the install,
# alternating in one run.
#   bash benchmarks/adoption.sh [ROUNDS]
# Release build; the application's virtualenv from .ci/run (a private copy is installed into);
# the fake model on loopback (first token after 50 ms). The daemon serves the application's
# runs from a pool of 8 spares of the SDK's CLI (command = its claude.real, as `prewarm sdk
# install` advises); it keeps running while the bundled CLI is measured, untouched by it.
set -euo pipefail
rounds="${1:-3}"
cd "$(dirname "$0")/.."
swift build -c release >/dev/null
bin="$(swift build -c release --show-bin-path)"
app_venv="${PREWARM_APP_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/prewarm/venv-app}"
work="$(mktemp -d /tmp/prewarm-adoption-bench.XXXXXX)"
cp -al "$app_venv" "$work/venv"
python="$work/venv/bin/python"
bundled="$("$python" -c 'import claude_agent_sdk,os;print(os.path.join(os.path.dirname(claude_agent_sdk.__file__),"_bundled"))')"
support="$PWD/Tests/PrewarmTests/Support"
mkdir -p "$work/config" "$work/project"

"$bin/prewarm-fake-model" --port 0 --ttft-ms 50 > "$work/model.out" &
model=$!
trap 'kill $model ${daemon:-} ${app:-} 2>/dev/null || true' EXIT
while [ ! -s "$work/model.out" ]; do sleep 0.1; done
port="$(python3 -c 'import json,sys;print(json.loads(open(sys.argv[1]).readline())["port"])' "$work/model.out")"

sdk() { "$bin/prewarm" sdk "$@" --python "$python" --drop-in "$bin/prewarm-claude" >/dev/null; }
sdk install

cat > "$work/prewarm.toml" <<TOML
[journal]
enabled = false
[[pool]]
name = "sdk"
kind = "claude"
command = "$bundled/claude.real"
spares = 8
initialize = false
base_args = ["--output-format", "stream-json", "--verbose", "--input-format", "stream-json"]
config_dir = "$work/config"
env = { ANTHROPIC_BASE_URL = "http://127.0.0.1:$port", ANTHROPIC_API_KEY = "sk-fake", CLAUDE_CODE_SDK_READS_SESSION_STATE = "1" }
[pool.ready]
timeout_s = 120
TOML
XDG_STATE_HOME="$work/state" "$bin/prewarm" serve --config "$work/prewarm.toml" --socket "$work/p.sock" 2> "$work/daemon.log" &
daemon=$!
# Every spare idle (the pool full again after a burst).
full() {
    until "$bin/prewarm" status --json --socket "$work/p.sock" 2>/dev/null \
        | python3 -c 'import json,sys
try: p = json.load(sys.stdin)["pools"][0]
except ValueError: sys.exit(1)
sys.exit(0 if p["idle"] >= 8 and p["starting"] == 0 else 1)'; do
        sleep 0.5
    done
}
full

(cd "$work/project" && exec env -i PATH=/usr/bin:/bin HOME="$work" PYTHONDONTWRITEBYTECODE=1 PREWARM_SOCKET="$work/p.sock" APP_PROJECT="$work/project" \
    ANTHROPIC_BASE_URL="http://127.0.0.1:$port" ANTHROPIC_API_KEY=sk-fake CLAUDE_CONFIG_DIR="$work/config" \
    "$python" -m uvicorn sdk_app:app --app-dir "$support" --uds "$work/app.sock" --no-access-log 2> "$work/app.log") &
app=$!
until grep -q "Application startup complete" "$work/app.log" 2>/dev/null; do sleep 0.2; done

# measure MODE AT_ONCE COUNT: COUNT requests, AT_ONCE at a time; one JSON line each.
measure() {
    "$python" "$support/sdk_app_client.py" "$work/app.sock" /query "$3" "$2" \
        | python3 -c 'import json,sys
for line in sys.stdin:
    r = json.loads(line); r.update(mode=sys.argv[1], at_once=int(sys.argv[2])); print(json.dumps(r))' "$1" "$2" >> "$work/samples.jsonl"
}

for round in $(seq "$rounds"); do
    for mode in with without; do
        if [ "$mode" = with ]; then sdk install; else sdk uninstall; fi
        measure "$mode" 1 5
        full
        for burst in 1 2; do
            measure "$mode" 8 8
            full
        done
    done
    echo "round $round done" >&2
done
sdk uninstall

"$bin/prewarm" status --socket "$work/p.sock" | head -3
python3 - "$work/samples.jsonl" <<'PY'
import json, statistics, sys
samples = [json.loads(line) for line in open(sys.argv[1])]
bad = [s for s in samples if s.get("status") != 200 or s.get("result") != "Hello word1 word2 word3 word4 [user turns: 1]"]
print(f"requests: {len(samples)}, not answered whole: {len(bad)}")
def q(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]
print("| at once | without install p50 | with install p50 | ratio | without p90 | with p90 | requests each |")
print("|---|---|---|---|---|---|---|")
for at_once in (1, 8):
    times = {m: [s["seconds"] for s in samples if s["mode"] == m and s["at_once"] == at_once] for m in ("without", "with")}
    w, o = statistics.median(times["with"]), statistics.median(times["without"])
    print(f"| {at_once} | {o:.3f} s | {w:.3f} s | **{o / w:.2f}x** | {q(times['without'], 0.9):.3f} s | {q(times['with'], 0.9):.3f} s | {len(times['with'])} |")
PY
echo "samples: $work/samples.jsonl"
