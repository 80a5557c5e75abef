#!/usr/bin/env bash
# The hand-off overhead: Prewarm's warm first byte against an already-initialised fake agent
# driven directly over pipes (--baseline direct-warm), Poisson arrivals at 5/s for 60 s into a
# pool that refills at up to 10/s (--init-sleep-ms 200, 4 spares, max_starting 2).
#
#   bash benchmarks/handoff.sh [SECONDS]     results in benchmarks/results/handoff.{json,svg}
source "$(dirname "$0")/common.sh"
seconds=${1:-60}
fake_pool "$work/pool.toml" '"--init-sleep-ms", "200", "--ttft-ms", "20", "--tokens", "5", "--token-ms", "5"' 4 2 ''
"$bin/prewarm" bench --config "$work/pool.toml" --pool p --baseline direct-warm --rate 5 --duration "$seconds" \
    --json "$out/handoff.json" --svg "$out/handoff.svg"
python3 benchmarks/summarize.py --handoff "$out/handoff.json"
