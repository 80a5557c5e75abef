#!/usr/bin/env bash
# Open-loop Poisson arrivals at 50%, 90% and 110% of what the pool can refill, the measured
# hit ratio beside the state machine's prediction for the same seeded schedule.
# Fake agent with --init-sleep-ms 1000 (start-up time does not depend on CPU contention),
# 4 spares, max_starting 2: the pool refills at most 2 per ~1.03 s, about 1.94 per second.
# 400 arrivals per rate; about 15 minutes.
#
#   bash benchmarks/open-loop.sh [ARRIVALS]   results in benchmarks/results/open-loop-PCT.{json,svg}
source "$(dirname "$0")/common.sh"
arrivals=${1:-400}
fake_pool "$work/pool.toml" '"--init-sleep-ms", "1000", "--ttft-ms", "50", "--tokens", "5", "--token-ms", "10"' 4 2 'wait_timeout_ms = 30000
max_processes = 40'
capacity=1.94
for pct in 50 90 110; do
    rate=$(python3 -c "print(round($capacity * $pct / 100, 3))")
    duration=$(python3 -c "print(round($arrivals / $rate))")
    "$bin/prewarm" bench --config "$work/pool.toml" --pool p --rate "$rate" --duration "$duration" --seed "$pct" \
        --json "$out/open-loop-$pct.json" --svg "$out/open-loop-$pct.svg"
done
python3 benchmarks/summarize.py "$out"/open-loop-{50,90,110}.json
