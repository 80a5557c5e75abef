#!/usr/bin/env bash
# Spares booting below the turns' CPU priority (spare_nice) against booting beside them at the
# same priority, on a machine whose cores a burst fills: fake agents whose start-up is 500 ms
# of CPU and whose turns do 150 ms of CPU before the first token, two pools of 8 spares
# (max_starting 2) that differ only in spare_nice (10 and 0), bursts of 8 every 10 s; run
# twice, the pools' order swapped, since the machine's speed drifts. Needs CAP_SYS_NICE (the
# daemon gives a spare its priority back when a turn takes it); without it both pools boot at
# the same priority. About 6 minutes.
#
#   bash benchmarks/priority.sh         results in benchmarks/results/priority-{1,2}.{json,svg}
source "$(dirname "$0")/common.sh"
args='"--init-cpu-ms", "500", "--ttft-cpu-ms", "150", "--tokens", "5", "--token-ms", "5"'
fake_pool "$work/a.toml" "$args" 8 2 'spare_nice = 10'
fake_pool "$work/b.toml" "$args" 8 2 'spare_nice = 0'
{ sed 's/name = "p"/name = "nice10"/' "$work/a.toml"; echo; sed 's/name = "p"/name = "nice0"/' "$work/b.toml"; } > "$work/pools.toml"
run=1
for order in "--pool nice10 --pool nice0" "--pool nice0 --pool nice10"; do
    "$bin/prewarm" bench --config "$work/pools.toml" $order \
        --burst 8 --every 10 --settle 10 --bursts 6 --json "$out/priority-$run.json" --svg "$out/priority-$run.svg"
    run=$((run + 1))
done
python3 benchmarks/summarize.py "$out"/priority-{1,2}.json
