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

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
    }

    static let startupBuckets: [Duration] = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60].map(seconds)
    static let waitBuckets: [Duration] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30].map(seconds)
    static let firstByteBuckets: [Duration] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30].map(seconds)
    static let turnBuckets: [Duration] = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600].map(seconds)

    private static func seconds(_ value: Double) -> Duration { .milliseconds(Int64(value * 1000)) }

    private static func name(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "prewarm", metricName: name, unitName: unit, helpText: help)
    }

    // MARK: - Events

    /// A turn ended or was refused.
    public func turn(_ record: TurnRecord) {
        guard let start = record.start else {
            registry.makeCounter(
                descriptor: Self.name("turns_rejected", "total", "Turns refused, by pool and reason (the error code)."),
                labels: [("pool", record.pool), ("reason", record.errorCode ?? "unknown")]
            ).increment()
            return
        }
        registry.makeCounter(
            descriptor: Self.name("turns", "total", "Turns served, by pool, start kind (warm, waited, cold) and outcome."),
            labels: [("pool", record.pool), ("start", start), ("outcome", record.outcome)]
        ).increment()
        let labels = [("pool", record.pool), ("start", start)]
        registry.makeDurationHistogram(
            descriptor: Self.name("turn_wait", "seconds", "From a turn's arrival to the hand-over of its process."),
            labels: labels, buckets: Self.waitBuckets
        ).record(.milliseconds(Int64(record.waitMs)))
        if let firstByte = record.firstByteMs {
            registry.makeDurationHistogram(
                descriptor: Self.name("turn_first_byte", "seconds", "From a turn's arrival to the first byte of its output."),
                labels: labels, buckets: Self.firstByteBuckets
            ).record(.microseconds(Int64(firstByte * 1000)))
        }
        registry.makeDurationHistogram(
            descriptor: Self.name("turn_duration", "seconds", "From a turn's arrival to its end."),
            labels: labels, buckets: Self.turnBuckets
        ).record(.microseconds(Int64(record.durationMs * 1000)))
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
    public func render(pools: [PoolStatus], memory: MemoryStatus, journal: Journal.Counts?) -> [UInt8] {
        for pool in pools { refresh(pool) }
        let byName = Dictionary(memory.pools.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for pool in pools {
            guard let figures = byName[pool.name] else { continue }
            gauge("pool_spare_memory", "bytes", "What an idle spare of the pool costs (measured PSS, else configured).", pool.name)
                .set(Double(figures.spareBytes))
            gauge("pool_turn_peak_memory", "bytes", "What a busy process of the pool costs at its peak (measured, else configured).", pool.name)
                .set(Double(figures.turnPeakBytes))
            gauge("pool_charged_memory", "bytes", "The memory budget the pool's processes hold now.", pool.name)
                .set(Double(figures.charged))
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
        if let journal {
            advance("journal_written_records", "Journal records written.", to: journal.written)
            advance("journal_dropped_records", "Journal records lost (the database unwritable or too slow).", to: journal.dropped)
        }
        return registry.emitToBuffer()
    }

    private func gauge(_ name: String, _ unit: String, _ help: String, _ pool: String? = nil) -> Gauge {
        registry.makeGauge(descriptor: Self.name(name, unit, help), labels: pool.map { [("pool", $0)] } ?? [])
    }

    private func refresh(_ pool: PoolStatus) {
        let name = pool.name
        gauge("pool_idle", "processes", "Idle spares, ready for a turn.", name).set(Double(pool.idle))
        gauge("pool_starting", "processes", "Processes starting up.", name).set(Double(pool.starting))
        gauge("pool_busy", "processes", "Processes serving a turn.", name).set(Double(pool.busy))
        gauge("pool_waiting", "turns", "Turns waiting for a process.", name).set(Double(pool.waiting))
        gauge("pool_target", "spares", "The configured spares target (or the size set at run time).", name)
            .set(Double(pool.targetSpares))
        gauge("pool_effective", "spares", "The spares kept now: the target, lowered to what fits in memory.", name)
            .set(Double(pool.effectiveSpares))
        gauge("pool_max", "processes", "Processes the pool may hold at once (max_processes, lowered to what fits).", name)
            .set(Double(pool.maxProcesses))
        gauge("pool_busy", "ratio", "Busy processes over max_processes: how close the pool is to its capacity.", name)
            .set(pool.maxProcesses > 0 ? Double(pool.busy) / Double(pool.maxProcesses) : 0)
        gauge("pool_failing", "", "1 while the pool's start-ups keep failing.", name).set(pool.failing ? 1.0 : 0.0)

        advance("startup_failures", "Start-ups that failed (exited, timed out, or could not be spawned).", to: pool.startFailures, pool: name)
        advance("spares_recycled", "Idle spares replaced: max_idle_s, recycle, reload, a changed command file.", to: pool.recycled, pool: name)
        advance("spares_shed", "Idle spares retired to free memory.", to: pool.shed, pool: name)
    }

    /// Moves a counter to a count kept elsewhere: by the difference since the last scrape
    /// (a smaller count means its source was made anew: counted from zero).
    private func advance(_ metric: String, _ help: String, to value: Int, pool: String? = nil) {
        let key = metric + "\u{0}" + (pool ?? "")
        let counter = registry.makeCounter(descriptor: Self.name(metric, "total", help), labels: pool.map { [("pool", $0)] } ?? [])
        seen.withLock { seen in
            let delta = seen[key].map { value >= $0 ? value - $0 : value } ?? value
            seen[key] = value
            if delta > 0 { counter.increment(by: Int64(delta)) }
        }
    }

    /// Forgets a removed pool's counts (a pool of that name made later counts from zero).
    public func forget(pool: String) {
        seen.withLock { seen in
            for key in seen.keys where key.hasSuffix("\u{0}" + pool) { seen[key] = nil }
        }
    }
}
