#!/usr/bin/env bash
# First-byte latency of warm and cold turns of the fake agent (--init-ms 1000), and the
# broker's own overhead: Prewarm's warm first byte minus the first byte of an
# already-initialised fake agent driven directly over a pipe.
#
#   bash benchmarks/handoff.sh [TURNS]      (release build; prints a table)
set -euo pipefail
cd "$(dirname "$0")/.."
turns=${1:-200}
swift build -c release --product prewarm >/dev/null
swift build -c release --product prewarm-fake-agent >/dev/null
bin=$(swift build -c release --show-bin-path)
exec python3 benchmarks/handoff.py "$bin" "$turns"
