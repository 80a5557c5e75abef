# Shared by the Python SDK benchmarks (dropin.sh, resume.sh, print.sh): a release build, the SDK's
# virtualenv (.ci/run makes it) and its bundled CLI, a work directory, the fake model on
# loopback ($port), sdk_pool to write $work/prewarm.toml, start_daemon to serve it on
# $work/p.sock, and run_bench to run a Python script with the SDK beside it.
#   source "$(dirname "$0")/sdk_common.sh" NAME
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release >/dev/null
bin="$(swift build -c release --show-bin-path)"
python="${PREWARM_SDK_PYTHON:-${XDG_CACHE_HOME:-$HOME/.cache}/prewarm/venv-sdk/bin/python}"
cli="$("$python" -c 'import claude_agent_sdk,os;print(os.path.join(os.path.dirname(claude_agent_sdk.__file__),"_bundled","claude"))')"
work="$(mktemp -d "/tmp/prewarm-$1-bench.XXXXXX")"
mkdir -p "$work/config" "$work/project"
"$bin/prewarm-fake-model" --port 0 --ttft-ms 50 > "$work/model.out" &
model=$!
trap 'kill $model ${daemon:-} 2>/dev/null || true' EXIT
while [ ! -s "$work/model.out" ]; do sleep 0.1; done
port="$(python3 -c 'import json,sys;print(json.loads(open(sys.argv[1]).readline())["port"])' "$work/model.out")"

# Serves $work/prewarm.toml; returns once every pool has a spare.
start_daemon() {
    XDG_STATE_HOME="$work/state" "$bin/prewarm" serve --config "$work/prewarm.toml" --socket "$work/p.sock" 2> "$work/daemon.log" &
    daemon=$!
    until "$bin/prewarm" status --ready --socket "$work/p.sock" 2>/dev/null; do sleep 0.5; done
}

# sdk_pool SPARES [POOL_KEYS] [TABLES]: one claude pool "sdk" with the SDK's own flags, its
# spares not initialized, the model's address; more keys of the pool, then more tables.
sdk_pool() {
    cat > "$work/prewarm.toml" <<TOML
[journal]
enabled = false
[[pool]]
name = "sdk"
kind = "claude"
command = "$cli"
spares = $1
initialize = false
base_args = ["--output-format", "stream-json", "--verbose", "--input-format", "stream-json"]
config_dir = "$work/config"
env = { ANTHROPIC_BASE_URL = "http://127.0.0.1:$port", ANTHROPIC_API_KEY = "sk-fake", CLAUDE_CODE_SDK_READS_SESSION_STATE = "1" }
${2:-}
[pool.ready]
timeout_s = 120
${3:-}
TOML
}

# run_bench SCRIPT ARGS...: the script with the SDK's Python, in the project directory, with
# nothing of this shell's environment but what the SDK and prewarm-claude need.
run_bench() {
    local script="$PWD/benchmarks/$1"
    shift
    (cd "$work/project" && env -i PATH=/usr/bin:/bin HOME="$work" PREWARM_SOCKET="$work/p.sock" PREWARM_CLAUDE_CLI="$cli" \
        PREWARM_BENCH_DROP_IN="$bin/prewarm-claude" PREWARM_BENCH_CLI="$cli" "$python" "$script" "$@")
}
