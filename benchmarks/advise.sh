#!/usr/bin/env bash
# `prewarm advise` checked by replay: a seeded Poisson trace through an undersized pool fills
# the journal; `advise` recommends spares for a 1% and a 10% miss target; the same trace is
# replayed against pools of those sizes and the measured miss rates are printed beside the
# predictions. Fake agents with --init-sleep-ms 250 (start-ups that do not depend on CPU
# contention), max_starting 32. Default: 20 turns/s for 60 s (about 1200 turns); about 5 min.
#
#   bash benchmarks/advise.sh [RATE] [DURATION]   results in benchmarks/results/advise-*.json
source "$(dirname "$0")/common.sh"
rate=${1:-20}
duration=${2:-60}
seed=42
agent='"--init-sleep-ms", "250", "--ttft-ms", "20", "--tokens", "3", "--token-ms", "5"'

# config SPARES: the pool with that many spares, the journal in the work directory. Start-ups
# at one priority (spare_nice = 0): see README, "Advice".
config() {
    fake_pool "$work/pool.toml" "$agent" "$1" 32 'max_processes = 200
wait_timeout_ms = 30000
spare_nice = 0'
    { printf '[journal]\npath = "%s"\n\n' "$work/journal.sqlite"; cat "$work/pool.toml"; } > "$work/spares-$1.toml"
    echo "$work/spares-$1.toml"
}

replay() { # NAME SPARES
    "$bin/prewarm" bench --config "$(config "$2")" --pool p --rate "$rate" --duration "$duration" --seed "$seed" \
        --json "$out/advise-$1.json" >&2
}

replay undersized 2
for miss in 0.1 0.01; do
    "$bin/prewarm" advise --config "$work/spares-2.toml" --miss "$miss" --json > "$work/advice-$miss.json"
    "$bin/prewarm" advise --config "$work/spares-2.toml" --miss "$miss" >&2
done
cp "$work/advice-0.1.json" "$out/advise-advice-10pct.json"
cp "$work/advice-0.01.json" "$out/advise-advice-1pct.json"
n10=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['pools'][0]['recommended_spares'])" "$work/advice-0.1.json")
n1=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['pools'][0]['recommended_spares'])" "$work/advice-0.01.json")
replay "10pct-n$n10" "$n10"
replay "1pct-n$n1" "$n1"

python3 - "$out" "$n10" "$n1" <<'PY'
import json, math, sys
out, n10, n1 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
first = json.load(open(f"{out}/advise-undersized.json"))["targets"][0]
print(f"undersized (2 spares): {first['turns']} turns, hit {first['hit_ratio']:.3f}")
for target, n, name in [(0.1, n10, f"10pct-n{n10}"), (0.01, n1, f"1pct-n{n1}")]:
    advice = json.load(open(f"{out}/advise-advice-{'10pct' if target == 0.1 else '1pct'}.json"))["pools"][0]
    predicted = next(c for c in advice["candidates"] if c["spares"] == n)
    run = json.load(open(f"{out}/advise-{name}.json"))["targets"][0]
    miss = 1 - run["hit_ratio"]
    se = math.sqrt(target * (1 - target) / run["turns"])
    verdict = "meets" if miss <= target + 3 * se else "MISSES"
    print(f"target {target:.0%}: advised N = {n}, predicted miss {predicted['miss_ratio']:.4f} "
          f"(M/G/inf {predicted['closed_form_miss']:.4f}), measured {miss:.4f} over {run['turns']} turns "
          f"-> {verdict} the target (+3 SE = {target + 3 * se:.4f})")
PY
