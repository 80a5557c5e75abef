# Shared by the Python SDK benchmarks (dropin.sh, resume.sh): a release build, the SDK's
# virtualenv (.ci/run makes it) and its bundled CLI, a work directory, the fake model on
# loopback ($port), and start_daemon to serve $work/prewarm.toml on $work/p.sock.
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
