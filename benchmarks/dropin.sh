#!/usr/bin/env bash
# The Python SDK's query() first token: its bundled CLI vs prewarm-claude, 1 and 8 at once.
#   bash benchmarks/dropin.sh [ROUNDS] [claimed|unclaimed]
# (release build; the SDK's virtualenv from .ci/run). `claimed`: spares parked and bound to each
# run by a claim (any directory); `unclaimed`: spares started in the run's directory with its
# session, no claim to pay for (what a service with one working directory can have).
rounds="${1:-5}"
mode="${2:-claimed}"
source "$(dirname "$0")/sdk_common.sh" dropin
if [ "$mode" = unclaimed ]; then
    sdk_pool 8 'claim = false' "$(printf '[pool.session]\ncwd = "%s"\nsystem_prompt = ""' "$work/project")"
else
    sdk_pool 8
fi
start_daemon
run_bench dropin_bench.py "http://127.0.0.1:$port" "$work/config" "$work/project" "$work/p.sock" "$rounds"
"$bin/prewarm" status --socket "$work/p.sock" | head -3
