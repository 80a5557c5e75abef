/// Where the daemon's events go: the Prometheus metrics, and the journal when it is on.
public final class Telemetry: Sendable {
    public let metrics: BrokerMetrics
    public let journal: Journal?

    public init(metrics: BrokerMetrics = BrokerMetrics(), journal: Journal?) {
        self.metrics = metrics
        self.journal = journal
    }

    /// A turn ended, or was refused.
    public func turn(_ record: TurnRecord) {
        metrics.turn(record)
        journal?.record(record)
    }

    func startupReady(pool: String, duration: Duration) {
        metrics.startupReady(pool: pool, duration: duration)
    }

    /// A process is gone: its whole life, for the journal.
    func processEnded(_ record: StartupRecord) {
        journal?.record(record)
    }

    /// An auto pool's target changed (the metrics read it from the pool's status).
    func sizingChanged(_ record: SizingRecord) {
        journal?.record(record)
    }
}
