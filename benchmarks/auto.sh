#!/usr/bin/env bash
# An auto pool (spares = "auto", the defaults: target_miss 0.01, auto_window_s 300,
# auto_every_s 5, auto_hold_s 60) against pools fixed for the peak and for the mean, in one
# run, all three at once under the same seeded Poisson schedule with a step: 1/s for 2 min,
# 6/s for 2 min, 1/s for 2 min. Fake agent with a 1 s start-up that does not burn CPU
# (--init-sleep-ms 1000) and turns of about 0.5 s (first token after 100 ms, then 4 tokens
# 100 ms apart); max_starting 12, so refills keep up. The fixed sizes are the M/G/inf sizes
# for a 1% miss with a 1.03 s start-up (1 s plus the fake agent's own): 14 for 6/s, 8 for
# the mean rate 8/3/s. About 7 minutes.
#
#   bash benchmarks/auto.sh [SEED]   results in benchmarks/results/auto-step.{json,svg}
#   (PHASES=1:20,6:20,1:20 for a short trial of the script)
source "$(dirname "$0")/common.sh"
seed=${1:-15}
agent='"--init-sleep-ms", "1000", "--ttft-ms", "100", "--tokens", "4", "--token-ms", "100"'
ready='[pool.ready]
send = '"'"'{"type":"control_request","request_id":"i","request":{"subtype":"initialize","hooks":null}}'"'"'
expect = '"'"'"type":"control_response"'"'"'
timeout_s = 120
[pool.turn]
end = '"'"'"type":"result"'"'"''
pool() { # NAME SPARES
    printf '[[pool]]\nname = "%s"\ncommand = "%s"\nargs = [%s]\nspares = %s\nmax_starting = 12\nmax_processes = 64\nwait_timeout_ms = 30000\n%s\n\n' \
        "$1" "$bin/prewarm-fake-agent" "$agent" "$2" "$ready"
}
{
    printf '[journal]\npath = "%s"\n\n' "$work/journal.sqlite"
    pool auto '"auto"'
    pool peak 14
    pool mean 8
} > "$work/pools.toml"
"$bin/prewarm" bench --config "$work/pools.toml" --pool auto --pool peak --pool mean --together \
    --phases "${PHASES:-1:120,6:120,1:120}" --seed "$seed" --json "$out/auto-step.json" --svg "$out/auto-step.svg"
python3 benchmarks/auto.py "$out/auto-step.json" "$work/journal.sqlite"
