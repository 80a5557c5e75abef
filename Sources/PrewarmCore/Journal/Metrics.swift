import Foundation
import Prometheus
import Synchronization

/// The daemon's Prometheus metrics (`GET /metrics`), in swift-prometheus's registry.
///
/// Events (a turn's end, a start-up's readiness) move counters and histograms as they
/// happen; the gauges (processes per state, targets, memory) are read from the pools at
/// scrape time, so they are never stale. The families are made with help texts through the
/// registry's descriptors (the swift-metrics factory has no help text); the registry's
/// types are swift-metrics handlers, and `serve` bootstraps swift-metrics with a factory on
/// the same registry, so anything recorded through the swift-metrics API lands here too.
public final class BrokerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    /// Counts kept elsewhere (the state machines, the memory governor, the journal) as last
    /// seen, by series: their counters move by the difference at each scrape.
    private let seen = Mutex<[String: Int]>([:])
    /// The pools whose turn series are exported (at 0 until their first turn).
    private let exported = Mutex<Set<String>>([])

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
    }

    static let startupBuckets: [Duration] = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60].map(seconds)
    static let waitBuckets: [Duration] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30].map(seconds)
    static let firstByteBuckets: [Duration] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30].map(seconds)
    static let turnBuckets: [Duration] = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600].map(seconds)

    private static func seconds(_ value: Double) -> Duration { .milliseconds(Int64(value * 1000)) }

    /// A journal figure in milliseconds (with its fraction) as a duration.
    private static func duration(ms: Double) -> Duration { .microseconds(Int64((ms * 1000).rounded())) }

    private static func name(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "prewarm", metricName: name, unitName: unit, helpText: help)
    }

    // MARK: - Events

    private func turnsCounter(pool: String, start: String, outcome: String) -> Counter {
        registry.makeCounter(
            descriptor: Self.name("turns", "total", "Turns served, by pool, start kind (warm, waited, cold) and outcome."),
            labels: [("pool", pool), ("start", start), ("outcome", outcome)]
        )
    }

    private func rejectedCounter(pool: String, reason: String) -> Counter {
        registry.makeCounter(
            descriptor: Self.name("turns_rejected", "total", "Turns refused, by pool and reason (the error code)."),
            labels: [("pool", pool), ("reason", reason)]
        )
    }

    /// The reasons a turn is refused for once it has reached its pool.
    static let refusalReasons: [PrewarmError.Code] = [
        .noCapacity, .waitTimeout, .memoryExhausted, .rateLimited, .poolFailing, .draining, .startFailed, .claimRefused, .badJSON,
        .bodyTooLarge,
    ]

    /// The latency histograms of a pool's turns of one start kind.
    private func turnHistograms(pool: String, start: String) -> (wait: DurationHistogram, firstByte: DurationHistogram, duration: DurationHistogram) {
        let labels = [("pool", pool), ("start", start)]
        return (
            registry.makeDurationHistogram(
                descriptor: Self.name("turn_wait", "seconds", "From a turn's arrival to the hand-over of its process."),
                labels: labels, buckets: Self.waitBuckets
            ),
            registry.makeDurationHistogram(
                descriptor: Self.name("turn_first_byte", "seconds", "From a turn's arrival to the first byte of its output."),
                labels: labels, buckets: Self.firstByteBuckets
            ),
            registry.makeDurationHistogram(
                descriptor: Self.name("turn_duration", "seconds", "From a turn's arrival to its end."),
                labels: labels, buckets: Self.turnBuckets
            )
        )
    }

    /// A pool's turn series, made at 0 the first time its gauges are read: Prometheus takes
    /// the first sample of a series as its start, so a series first scraped at 1 would lose
    /// that turn from `rate()` and `increase()` (and the hit ratio of a pool whose first turn
    /// was cold would start at 100%).
    private func exportTurnSeries(pool: String) {
        guard exported.withLock({ $0.insert(pool).inserted }) else { return }
        for start in StartKind.allCases {
            for outcome in TurnOutcome.allCases { _ = turnsCounter(pool: pool, start: start.rawValue, outcome: outcome.rawValue) }
            _ = turnHistograms(pool: pool, start: start.rawValue)
        }
        for reason in Self.refusalReasons { _ = rejectedCounter(pool: pool, reason: reason.description) }
    }

    /// A turn ended or was refused.
    public func turn(_ record: TurnRecord) {
        guard let start = record.start else {
            rejectedCounter(pool: record.pool, reason: record.errorCode ?? "unknown").increment()
            return
        }
        turnsCounter(pool: record.pool, start: start, outcome: record.outcome).increment()
        let histograms = turnHistograms(pool: record.pool, start: start)
        histograms.wait.record(Self.duration(ms: record.waitMs))
        if let firstByte = record.firstByteMs { histograms.firstByte.record(Self.duration(ms: firstByte)) }
        histograms.duration.record(Self.duration(ms: record.durationMs))
    }

    /// A start-up reached readiness after `duration`.
    public func startupReady(pool: String, duration: Duration) {
        registry.makeDurationHistogram(
            descriptor: Self.name("startup", "seconds", "From a process's spawn to its readiness."),
            labels: [("pool", pool)], buckets: Self.startupBuckets
        ).record(duration)
    }

    // MARK: - Scrape

    /// The exposition text: the gauges read now from `pools` and `memory`, then everything.
    public func render(pools: [PoolStatus], memory: MemoryStatus, journal: Journal.Counts?, keeper: ProcessGroupKeeper.Status? = nil) -> [UInt8] {
        let figures = Dictionary(memory.pools.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for pool in pools {
            exportTurnSeries(pool: pool.name)
            for gauge in Self.poolGauges {
                guard let value = gauge.value(pool, figures[pool.name]) else { continue }
                self.gauge(gauge.name, gauge.unit, gauge.help, pool.name).set(value)
            }
            advance("startup_failures", "Start-ups that failed (exited, timed out, or could not be spawned).", to: pool.startFailures, pool: pool.name)
            advance("spares_recycled", "Idle spares replaced: max_idle_s, recycle, reload, a changed command file.", to: pool.recycled, pool: pool.name)
            advance("spares_shed", "Idle spares retired to free memory.", to: pool.shed, pool: pool.name)
            advance("resume_hits", "Resumed turns served by a resume spare of their session (also counted warm).", to: pool.resumeHits, pool: pool.name)
            advance("resume_misses", "Resumed turns no resume spare served (run cold; stale discards included).", to: pool.resumeMisses, pool: pool.name)
            advance("resume_stale", "Resume spares discarded because their session's transcript changed.", to: pool.resumeStale, pool: pool.name)
            advance("resume_evicted", "Resume spares retired to make room (memory, spares, max_resume_spares).", to: pool.resumeEvicted, pool: pool.name)
            advance("resume_expired", "Resume spares retired unused after resume_spare_ttl_s.", to: pool.resumeExpired, pool: pool.name)
            advance("claim_ahead_hits", "Turns served by a spare claimed ahead with their claim (claim_ahead).", to: pool.claimAheadHits, pool: pool.name)
            advance(
                "claim_ahead_discarded", "Spares claimed ahead discarded at a hand-off: another claim, or the files the CLI read changed.",
                to: pool.claimAheadDiscarded, pool: pool.name
            )
            advance("universal_hits", "Turns that would have started cold, served by a universal spare (--bg-spare).", to: pool.universalHits, pool: pool.name)
            for (via, count) in pool.runsVia.sorted(by: { $0.key < $1.key }) {
                advance("runs_via", "Drop-in runs by how prewarm-claude came to be run (sdk-install, path-install).", to: count, pool: pool.name, via: via)
            }
        }
        gauge("memory_limit", "bytes", "The memory limit the budget is derived from (cgroup, configured or host).")
            .set(Double(memory.limit))
        gauge("memory_usage", "bytes", "Memory in use, as read where the limit came from.").set(Double(memory.usage ?? 0))
        gauge("memory_budget", "bytes", "The limit less the reserve and the daemon's own RSS: what the pools may use.")
            .set(Double(memory.budget))
        gauge("memory_charged", "bytes", "The budget held by every pool's processes now.").set(Double(memory.charged))
        gauge("memory_under_pressure", "", "1 while usage is above the high watermark (start-ups stop, spares are shed).")
            .set(memory.pressure ? 1.0 : 0.0)
        advance("oom_kills", "OOM kills seen in the daemon's cgroup since the daemon started.", to: memory.oomKills)
        if let keeper {
            advance("keeper_restarts", "Keepers started again after the previous one died (each took over every live process group).", to: keeper.restarts)
        }
        if let journal {
            advance("journal_written_records", "Journal records written.", to: journal.written)
            advance("journal_dropped_records", "Journal records lost (the database unwritable or too slow).", to: journal.dropped)
        }
        return registry.emitToBuffer()
    }

    private func gauge(_ name: String, _ unit: String, _ help: String, _ pool: String? = nil) -> Gauge {
        registry.makeGauge(descriptor: Self.name(name, unit, help), labels: pool.map { [("pool", $0)] } ?? [])
    }

    /// A gauge of each pool, read at scrape time from its status and memory figures.
    private struct PoolGauge: Sendable {
        let name: String
        let unit: String
        let help: String
        let value: @Sendable (PoolStatus, MemoryStatus.PoolMemory?) -> Double?
    }

    private static let poolGauges: [PoolGauge] = [
        PoolGauge(name: "pool_idle", unit: "processes", help: "Idle spares, ready for a turn.") { pool, _ in Double(pool.idle) },
        PoolGauge(name: "pool_starting", unit: "processes", help: "Processes starting up.") { pool, _ in Double(pool.starting) },
        PoolGauge(name: "pool_busy", unit: "processes", help: "Processes serving a turn.") { pool, _ in Double(pool.busy) },
        PoolGauge(name: "pool_waiting", unit: "turns", help: "Turns waiting for a process.") { pool, _ in Double(pool.waiting) },
        PoolGauge(name: "pool_target", unit: "spares", help: "The configured spares target (or the size set at run time).") { pool, _ in
            Double(pool.targetSpares)
        },
        PoolGauge(name: "pool_effective", unit: "spares", help: "The spares kept now: the target, lowered to what fits in memory.") {
            pool, _ in Double(pool.effectiveSpares)
        },
        PoolGauge(name: "pool_max", unit: "processes", help: "Processes the pool may hold at once (max_processes, lowered to what fits).") {
            pool, _ in Double(pool.maxProcesses)
        },
        PoolGauge(name: "pool_busy", unit: "ratio", help: "Busy processes over max_processes: how close the pool is to its capacity.") {
            pool, _ in pool.maxProcesses > 0 ? Double(pool.busy) / Double(pool.maxProcesses) : 0
        },
        PoolGauge(name: "pool_failing", unit: "", help: "1 while the pool's start-ups keep failing.") { pool, _ in pool.failing ? 1 : 0 },
        PoolGauge(name: "pool_resume_held", unit: "processes", help: "Resume spares held for their sessions' next turns (not counted idle).") {
            pool, _ in Double(pool.resumeHeld)
        },
        PoolGauge(
            name: "pool_auto_target", unit: "spares",
            help: "An auto pool's target (spares = \"auto\"), before the memory budget lowers it to the effective spares."
        ) { pool, _ in pool.auto.map { Double($0.target) } },
        PoolGauge(
            name: "pool_auto_predicted_miss", unit: "ratio",
            help: "The share of turns an auto pool's last replay predicts will find no idle spare at its target."
        ) { pool, _ in pool.auto?.predictedMiss },
        PoolGauge(name: "pool_spare_memory", unit: "bytes", help: "What an idle spare of the pool costs (measured PSS, else configured).") {
            _, memory in memory.map { Double($0.spareBytes) }
        },
        PoolGauge(
            name: "pool_turn_peak_memory", unit: "bytes", help: "What a busy process of the pool costs at its peak (measured, else configured)."
        ) { _, memory in memory.map { Double($0.turnPeakBytes) } },
        PoolGauge(name: "pool_charged_memory", unit: "bytes", help: "The memory budget the pool's processes hold now.") { _, memory in
            memory.map { Double($0.charged) }
        },
    ]

    /// Moves a counter to a count kept elsewhere: by the difference since the last scrape
    /// (a smaller count means its source was made anew: counted from zero).
    private func advance(_ metric: String, _ help: String, to value: Int, pool: String? = nil, via: String? = nil) {
        let key = metric + (via.map { "\u{0}" + $0 } ?? "") + "\u{0}" + (pool ?? "")
        let labels = (pool.map { [("pool", $0)] } ?? []) + (via.map { [("via", $0)] } ?? [])
        let counter = registry.makeCounter(descriptor: Self.name(metric, "total", help), labels: labels)
        seen.withLock { seen in
            let delta = seen[key].map { value >= $0 ? value - $0 : value } ?? value
            seen[key] = value
            if delta > 0 { counter.increment(by: Int64(delta)) }
        }
    }

    /// A removed pool: its gauges leave /metrics (they would keep their last values), and
    /// its counts are forgotten (a pool of that name made later counts from zero).
    public func forget(pool: String) {
        for gauge in Self.poolGauges {
            registry.unregisterGauge(self.gauge(gauge.name, gauge.unit, gauge.help, pool))
        }
        seen.withLock { seen in
            for key in seen.keys where key.hasSuffix("\u{0}" + pool) { seen[key] = nil }
        }
        _ = exported.withLock { $0.remove(pool) }
    }
}
