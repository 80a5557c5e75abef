# Shared by the benchmark scripts: a release build, and a pool configuration of the fake agent.
set -euo pipefail
cd "$(dirname "$0")/.."
# PREWARM_BIN: a directory with release builds of prewarm and prewarm-fake-agent (skips the build).
if [ -n "${PREWARM_BIN:-}" ]; then
    bin=$PREWARM_BIN
else
    swift build -c release --product prewarm >&2
    swift build -c release --product prewarm-fake-agent >&2
    bin=$(swift build -c release --show-bin-path)
fi
out=benchmarks/results
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# fake_pool FILE ARGS SPARES MAX_STARTING [EXTRA]: one pool "p" of the fake agent.
fake_pool() {
    cat > "$1" <<TOML
[[pool]]
name = "p"
command = "$bin/prewarm-fake-agent"
args = [$2]
spares = $3
max_starting = $4
$5
[pool.ready]
send = '{"type":"control_request","request_id":"i","request":{"subtype":"initialize","hooks":null}}'
expect = '"type":"control_response"'
timeout_s = 120
[pool.turn]
end = '"type":"result"'
TOML
}
