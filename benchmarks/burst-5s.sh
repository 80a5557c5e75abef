#!/usr/bin/env bash
# The seeds' 5 s case: a CLI that takes 5 s of CPU to start (fake agent --init-ms 5000), a
# pool of 8 spares, bursts of 1, 4 and 8 turns a minute apart (3 bursts each), against
# spawning the CLI per turn as the SDKs do. About 15 minutes.
#
#   bash benchmarks/burst-5s.sh            results in benchmarks/results/burst-5s-N.{json,svg}
source "$(dirname "$0")/common.sh"
fake_pool "$work/pool.toml" '"--init-ms", "5000", "--ttft-ms", "20", "--tokens", "5", "--token-ms", "10"' 8 1 'wait_timeout_ms = 60000'
for n in 1 4 8; do
    "$bin/prewarm" bench --config "$work/pool.toml" --pool p --baseline spawn \
        --burst "$n" --every 60 --bursts 3 \
        --json "$out/burst-5s-$n.json" --svg "$out/burst-5s-$n.svg"
done
python3 benchmarks/summarize.py "$out"/burst-5s-{1,4,8}.json
