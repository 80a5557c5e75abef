#!/usr/bin/env bash
# Resumed turns' first token: the Python SDK's query(resume=...) with its bundled CLI against the
# same calls through prewarm-claude with resume spares, one conversation and 8 at once.
#   bash benchmarks/resume.sh [ROUNDS] [TURNS] [PAUSE_S] [resume|universal]
# (release build; the SDK's virtualenv from .ci/run). Each conversation is a fresh query, then
# TURNS resumed ones, each sent PAUSE_S seconds after the last one ended (a user reading the
# answer); only the resumed ones are measured. `resume`: resume spares; `universal`: none, but
# 8 universal spares (--bg-spare) for the resumed turns, which all start cold.
rounds="${1:-3}"
turns="${2:-3}"
pause="${3:-5}"
mode="${4:-resume}"
source "$(dirname "$0")/sdk_common.sh" resume
if [ "$mode" = universal ]; then
    sdk_pool 2 "$(printf 'max_processes = 32\nuniversal_spares = 8')"
else
    sdk_pool 2 "$(printf 'max_processes = 32\nresume_spares = true\nmax_resume_spares = 8')"
fi
start_daemon
run_bench resume_bench.py "http://127.0.0.1:$port" "$work/config" "$work/project" "$rounds" "$turns" "$pause"
curl -s --unix-socket "$work/p.sock" http://localhost/v1/pools/sdk | python3 -c 'import json,sys;p=json.load(sys.stdin);print({k:p[k] for k in ("served","warm","waited","cold","resume_hits","resume_misses","resume_stale","resume_evicted","resume_expired","universal","universal_hits")})'
