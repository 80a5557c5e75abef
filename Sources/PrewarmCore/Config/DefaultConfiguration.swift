/// The built-in configuration, used when `serve` finds no `config/prewarm.toml`.
///
/// It must stay byte-for-byte equal to `config/prewarm.toml`; a test checks it.
public enum DefaultConfiguration {
    public static let toml = #"""
# Prewarm's default configuration: one pool, "demo", of the fake agent that ships with
# Prewarm. `prewarm serve` reads this file when run from the repository root, and the same
# settings are built in, so `prewarm serve` anywhere serves the demo pool.
# Every key and its default is listed in README.md ("Configuration").

drain_timeout_s = 30
# A connection idle between requests (or stuck in one) is closed after this; a turn in
# progress never is. 0: never.
idle_timeout_s = 60
# Prometheus over TCP (serves /metrics only); /metrics is always on the socket too.
# metrics_listen = "127.0.0.1:9464"

[memory]
# The pools are sized from the memory limit of the daemon's cgroup (or the host's memory):
# budget = limit - reserve_mib - the daemon's own RSS. Every process is charged against it.
reserve_mib = 256
# Above 90% of the limit, start-ups stop and idle spares are shed, until usage is below 80%.
high_watermark = 0.9
low_watermark = 0.8
enforce = true

[journal]
# Every turn and start-up, for `prewarm stats` and `prewarm advise`.
# Default path: $XDG_STATE_HOME/prewarm/journal.sqlite (root: /var/lib/prewarm/journal.sqlite).
enabled = true
max_age_days = 30
max_rows = 1000000

[[pool]]
name = "demo"
# A bare command is looked up next to the `prewarm` executable, then on PATH.
command = "prewarm-fake-agent"
# Half a second of CPU-bound start-up, then answers of 5 tokens, 50 ms to the first.
args = ["--init-ms", "500", "--ttft-ms", "50", "--tokens", "5", "--token-ms", "10"]
spares = 2
# max_starting defaults to half the CPUs (at least 1): concurrent start-ups slow each other.
# Spares boot at a lower CPU priority than the turns beside them (nice +10 by default; 0 for
# the same) and get the daemon's back when a turn takes one; needs CAP_SYS_NICE.
# spare_nice = 10
# Starting estimates of one process's memory (idle spare, and peak during a turn) until
# measured; the fake agent is small.
spare_mib = 32
turn_mib = 48
when_empty = "wait"
wait_timeout_ms = 10000
turn_timeout_s = 600
# Turns per minute per caller uid (429 rate_limited beyond); none by default.
# max_turns_per_minute = 600

[pool.ready]
# The stream-json initialize handshake, as the Claude Agent SDKs send it.
send = '{"type":"control_request","request_id":"prewarm-init","request":{"subtype":"initialize","hooks":null}}'
expect = '"type":"control_response"'
timeout_s = 30

[pool.turn]
# The turn's last line is the one carrying this substring.
end = '"type":"result"'

"""#
}
