#!/usr/bin/env bash
# First-token latency with the real Claude Code CLI (2.1.327, from the PyPI wheel
# claude-agent-sdk 0.2.184) against prewarm-fake-model answering in 50 ms: spawning the CLI
# per turn as the SDKs do, Prewarm with warm spares unclaimed and claimed (pools of 8), and
# two floors with no daemon: an initialised CLI driven over pipes right after its handshake
# (direct-warm) and 8 initialised CLIs kept over pipes and replaced as used, max_starting at
# a time (direct-pool: idles as long as the spares do), at 1, 4 and 8 concurrent turns
# (bursts far enough apart that the pools are full when a burst comes). About 40 minutes.
#
#   bash benchmarks/claude.sh      results in benchmarks/results/claude-N.{json,svg}
source "$(dirname "$0")/common.sh"
cache=${XDG_CACHE_HOME:-$HOME/.cache}/prewarm
cli=$cache/claude-agent-sdk-0.2.184/claude
if [ ! -x "$cli" ]; then
    mkdir -p "$cache"
    ls "$cache"/claude_agent_sdk-0.2.184-*.whl >/dev/null 2>&1 || python3 -m pip download --no-deps --quiet claude-agent-sdk==0.2.184 -d "$cache"
    python3 - "$cache" "$cli" <<'PY'
import glob, os, sys, zipfile
cache, target = sys.argv[1], sys.argv[2]
os.makedirs(os.path.dirname(target), exist_ok=True)
with zipfile.ZipFile(glob.glob(os.path.join(cache, "claude_agent_sdk-0.2.184-*.whl"))[0]) as z:
    with z.open("claude_agent_sdk/_bundled/claude") as src, open(target, "wb") as dst:
        dst.write(src.read())
os.chmod(target, 0o755)
PY
fi
swift build -c release --product prewarm-fake-model >&2
"$(swift build -c release --show-bin-path)/prewarm-fake-model" --port 0 --ttft-ms 50 > "$work/model.out" &
model=$!
trap 'kill $model; rm -rf "$work"' EXIT
until [ -s "$work/model.out" ]; do sleep 0.1; done
port=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['port'])" "$work/model.out")
mkdir -p "$work/project"
for kind in claimed unclaimed; do
    claim=$([ $kind = claimed ] && echo true || echo false)
    cat >> "$work/claude.toml" <<TOML
[[pool]]
name = "$kind"
kind = "claude"
command = "$cli"
claim = $claim
spares = 8
max_processes = 24
spare_nice = ${SPARE_NICE:-10}
when_empty = "start"
env = { ANTHROPIC_BASE_URL = "http://127.0.0.1:$port", ANTHROPIC_API_KEY = "sk-fake" }
# Readiness: the claude kind's initialize handshake, with a longer timeout.
[pool.ready]
timeout_s = 120
[pool.session]
cwd = "$work/project"

TOML
done
# Bursts of 1: 10 of them, 15 s apart; of 4: 4, 20 s apart; of 8: 3, a minute apart; each
# target gets the same quiet before its first burst (--settle), once its pools are full.
specs=("1 15 10" "4 20 4" "8 60 3")
# SPARE_NICE=0: replacements boot at the turns' priority. BURSTS="8 60 3": only these
# (size, seconds apart, count; several separated by ";").
[ -n "${BURSTS:-}" ] && IFS=";" read -ra specs <<< "$BURSTS"
results=()
for spec in "${specs[@]}"; do
    set -- $spec
    results+=("$out/claude-$1.json")
    "$bin/prewarm" bench --config "$work/claude.toml" --pool unclaimed --pool claimed --baseline spawn --baseline direct-warm --baseline direct-pool \
        --burst "$1" --every "$2" --settle "$2" --bursts "$3" --json "$out/claude-$1.json" --svg "$out/claude-$1.svg"
done
python3 benchmarks/summarize.py "${results[@]}"
