#!/usr/bin/env bash
# Resumed turns' first token: the Python SDK's query(resume=...) with its bundled CLI against the
# same calls through prewarm-claude with resume spares, one conversation and 8 at once.
#   bash benchmarks/resume.sh [ROUNDS] [TURNS] [PAUSE_S]
# (release build; the SDK's virtualenv from .ci/run). Each conversation is a fresh query, then
# TURNS resumed ones, each sent PAUSE_S seconds after the last one ended (a user reading the
# answer); only the resumed ones are measured.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
turns="${2:-3}"
pause="${3:-5}"
swift build -c release >/dev/null
bin="$(swift build -c release --show-bin-path)"
python="${PREWARM_SDK_PYTHON:-${XDG_CACHE_HOME:-$HOME/.cache}/prewarm/venv-sdk/bin/python}"
cli="$("$python" -c 'import claude_agent_sdk,os;print(os.path.join(os.path.dirname(claude_agent_sdk.__file__),"_bundled","claude"))')"
work="$(mktemp -d /tmp/prewarm-resume-bench.XXXXXX)"
mkdir -p "$work/config" "$work/project"
"$bin/prewarm-fake-model" --port 0 --ttft-ms 50 > "$work/model.out" &
model=$!
trap 'kill $model ${daemon:-} 2>/dev/null || true' EXIT
while [ ! -s "$work/model.out" ]; do sleep 0.1; done
port="$(python3 -c 'import json,sys;print(json.loads(open(sys.argv[1]).readline())["port"])' "$work/model.out")"
cat > "$work/prewarm.toml" <<TOML
[journal]
enabled = false
[[pool]]
name = "sdk"
kind = "claude"
command = "$cli"
spares = 2
max_processes = 32
initialize = false
base_args = ["--output-format", "stream-json", "--verbose", "--input-format", "stream-json"]
config_dir = "$work/config"
resume_spares = true
max_resume_spares = 8
env = { ANTHROPIC_BASE_URL = "http://127.0.0.1:$port", ANTHROPIC_API_KEY = "sk-fake", CLAUDE_CODE_SDK_READS_SESSION_STATE = "1" }
[pool.ready]
timeout_s = 120
TOML
XDG_STATE_HOME="$work/state" "$bin/prewarm" serve --config "$work/prewarm.toml" --socket "$work/p.sock" 2> "$work/daemon.log" &
daemon=$!
until "$bin/prewarm" status --ready --socket "$work/p.sock" 2>/dev/null; do sleep 0.5; done
cd "$work/project"
env -i PATH=/usr/bin:/bin HOME="$work" PREWARM_SOCKET="$work/p.sock" PREWARM_CLAUDE_CLI="$cli" \
    PREWARM_BENCH_DROP_IN="$bin/prewarm-claude" PREWARM_BENCH_CLI="$cli" \
    "$python" "$OLDPWD/benchmarks/resume_bench.py" "http://127.0.0.1:$port" "$work/config" "$work/project" "$rounds" "$turns" "$pause"
curl -s --unix-socket "$work/p.sock" http://localhost/v1/pools/sdk | python3 -c 'import json,sys;p=json.load(sys.stdin);print({k:p[k] for k in ("served","warm","waited","cold","resume_hits","resume_misses","resume_stale","resume_evicted","resume_expired")})'
