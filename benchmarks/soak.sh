#!/usr/bin/env bash
# Soak: a daemon of its own (the fake agent, --init-ms 200 --ttft-ms 20 --tokens 5, 6 spares)
# under a mix of clients for DURATION seconds (default 1800): plain turns on fresh
# connections and on one keep-alive connection, two-way turns (half-closed input), clients
# that go away mid-body, after the head, after the 101 or while waiting for a spare, and
# malformed requests (garbage, HTTP/9.9, huge URI and headers, conflicting framing, bad chunk
# sizes, random bytes, a body cut short by a half-close). The daemon's RSS, open fds and CPU
# per turn after warm-up (at 10% of the run) against at the end, turns by outcome, malformed
# requests answered within 1 s, its error-level log lines, and what is left of its processes
# after SIGTERM. Options of benchmarks/soak.py may follow (--rate, --spares, --json...).
#
#   bash benchmarks/soak.sh [SECONDS] [OPTIONS]     (or DURATION=SECONDS)
#       results in benchmarks/results/soak.json, the daemon's log in benchmarks/out/soak.log
source "$(dirname "$0")/common.sh"
duration=${DURATION:-1800}
if [[ "${1:-}" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    duration=$1
    shift
fi
# In the background so that SIGINT/SIGTERM reach it as SIGTERM: it stops its daemon and
# writes what it measured so far.
python3 benchmarks/soak.py --bin "$bin" --duration "$duration" --json "$out/soak.json" "$@" &
soak=$!
trap 'kill -TERM "$soak" 2>/dev/null' INT TERM
set +e
wait "$soak"
status=$?
while kill -0 "$soak" 2>/dev/null; do
    wait "$soak"
    status=$?
done
exit "$status"
