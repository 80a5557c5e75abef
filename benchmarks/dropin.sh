#!/usr/bin/env bash
# The Python SDK's query() first token: its bundled CLI vs prewarm-claude, 1 and 8 at once.
#   bash benchmarks/dropin.sh [ROUNDS] [claimed|unclaimed]
# (release build; the SDK's virtualenv from .ci/run). `claimed`: spares parked and bound to each
# run by a claim (any directory); `unclaimed`: spares started in the run's directory with its
# session, no claim to pay for (what a service with one working directory can have).
rounds="${1:-5}"
mode="${2:-claimed}"
source "$(dirname "$0")/sdk_common.sh" dropin
cat > "$work/prewarm.toml" <<TOML
[journal]
enabled = false
[[pool]]
name = "sdk"
kind = "claude"
command = "$cli"
spares = 8
initialize = false
base_args = ["--output-format", "stream-json", "--verbose", "--input-format", "stream-json"]
config_dir = "$work/config"
$( [ "$mode" = unclaimed ] && printf 'claim = false\n' )
env = { ANTHROPIC_BASE_URL = "http://127.0.0.1:$port", ANTHROPIC_API_KEY = "sk-fake", CLAUDE_CODE_SDK_READS_SESSION_STATE = "1" }
[pool.ready]
timeout_s = 120
$( [ "$mode" = unclaimed ] && printf '[pool.session]\ncwd = "%s"\nsystem_prompt = ""\n' "$work/project" )
TOML
start_daemon
cd "$work/project"
env -i PATH=/usr/bin:/bin HOME="$work" PREWARM_SOCKET="$work/p.sock" PREWARM_CLAUDE_CLI="$cli" \
    PREWARM_BENCH_DROP_IN="$bin/prewarm-claude" PREWARM_BENCH_CLI="$cli" \
    "$python" "$OLDPWD/benchmarks/dropin_bench.py" "http://127.0.0.1:$port" "$work/config" "$work/project" "$work/p.sock" "$rounds"
"$bin/prewarm" status --socket "$work/p.sock" | head -3
