import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// All the pools of one daemon, as one `Service`: it runs them, applies reloaded
/// configurations, watches the pools' command files, and on graceful shutdown drains them
/// (no new turns, busy turns finish within `drain_timeout_s`, then everything is killed)
/// before it returns.
public final class Broker: Service, Sendable {
    /// The memory budget every pool is charged against.
    public let memory: MemoryGovernor
    /// Metrics and the journal.
    public let telemetry: Telemetry
    /// Which uid's turns made each session: callers of another uid resume only their own.
    public let sessionOwners = SessionOwners()
    let keeper: ProcessGroupKeeper?
    let environment: [String: String]
    let logger: Logger
    private let isDraining = Atomic<Bool>(false)
    let state: Mutex<State>
    /// Pools made by a reload or for drop-in runs, for `run()` to run.
    let added: AsyncStream<Pool>.Continuation
    private let additions: AsyncStream<Pool>
    /// Reloads one at a time.
    private let reloading = Mutex(false)

    struct State {
        var configuration: Configuration
        /// The pools of the configuration.
        var pools: [String: Pool]
        /// Pools made for drop-in runs, by their fingerprint's SHA-256 (`Broker+Runs`): the key
        /// runs are routed by; a pool's name is only shown.
        var fingerprints: [String: FingerprintPool] = [:]
        /// Fingerprint pools taken out of routing, until their last run ends.
        var closing: [Pool] = []
        /// When fingerprint pools started their spares, in the last minute
        /// (`max_new_pools_per_minute`).
        var promotions: [ContinuousClock.Instant] = []

        func fingerprintPool(named name: String) -> Pool? {
            fingerprints.values.first { $0.pool.name == name }?.pool ?? closing.first { $0.name == name }
        }
    }

    /// How often the pools' command files are checked for a change.
    static let commandCheckInterval: Duration = .seconds(2)

    public init(
        configuration: Configuration,
        keeper: ProcessGroupKeeper?,
        environment: [String: String],
        systemRoot: SystemRoot = .host,
        metrics: BrokerMetrics = BrokerMetrics(),
        logger: Logger
    ) {
        self.logger = logger
        self.keeper = keeper
        self.environment = environment
        let memory = MemoryGovernor(config: configuration.memory, root: systemRoot, logger: logger)
        self.memory = memory
        self.telemetry = Telemetry(metrics: metrics, journal: configuration.journal.enabled ? Journal(config: configuration.journal, logger: logger) : nil)
        var pools: [String: Pool] = [:]
        for config in configuration.pools {
            pools[config.name] = Pool(
                config: config, keeper: keeper, governor: memory, telemetry: telemetry, environment: environment, logger: logger
            )
        }
        self.state = Mutex(State(configuration: configuration, pools: pools))
        (additions, added) = AsyncStream.makeStream(of: Pool.self)
        memory.attach(configuration.pools.compactMap { pools[$0.name] })
    }

    /// The configuration in force (the last one loaded).
    public var configuration: Configuration { state.withLock { $0.configuration } }

    public var draining: Bool { isDraining.load(ordering: .relaxed) }

    /// The keeper's pid and restarts; nil when the daemon runs without one.
    public var keeperStatus: ProcessGroupKeeper.Status? { keeper?.status }

    public func pool(named name: String) -> Pool? { state.withLock { $0.pools[name] ?? $0.fingerprintPool(named: name) } }

    /// The pools in configuration order, then the fingerprint pools by name.
    public var allPools: [Pool] {
        state.withLock { state in
            state.configuration.pools.compactMap { state.pools[$0.name] }
                + (state.fingerprints.values.map(\.pool) + state.closing).sorted { $0.name < $1.name }
        }
    }

    /// Ready as systemd and `prewarm status --ready` mean it: every pool has an idle spare,
    /// or is failing (so a broken pool does not hold the service back forever), or keeps none.
    public var ready: Bool {
        allPools.allSatisfy { $0.status().ready }
    }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            for pool in allPools {
                group.addTask { await pool.run() }
            }
            let sampler = Task { await self.memory.run() }
            let journal = Task { await self.telemetry.journal?.run() }
            let watcher = Task { await self.watchCommandFiles() }
            let sweeper = Task { await self.removeIdleFingerprintPools() }
            group.addTask {
                try? await gracefulShutdown()
                await self.drain()
                self.added.finish()
                sampler.cancel()
                watcher.cancel()
                sweeper.cancel()
                self.telemetry.journal?.stop()
                await journal.value
            }
            // Pools added by reloads, until the drain.
            for await pool in additions {
                group.addTask { await pool.run() }
            }
        }
    }

    /// Drains every pool; returns when every process is gone.
    public func drain() async {
        guard !isDraining.exchange(true, ordering: .relaxed) else { return }
        let timeout = configuration.drainTimeout
        logger.info("draining", metadata: ["drain.timeout_s": "\(timeout.components.seconds)"])
        await withDiscardingTaskGroup { group in
            for pool in allPools {
                group.addTask { await self.retire(pool, timeout: timeout) }
            }
        }
        logger.info("drained")
    }

    /// Drains one pool: its busy turns get `timeout`, then are killed; then its `run()` ends.
    func retire(_ pool: Pool, timeout: Duration) async {
        pool.drain()
        if !(await pool.waitUntilEmpty(timeout: timeout)) {
            logger.warning("drain timeout: killing the turns still running", metadata: ["pool.name": "\(pool.name)"])
            pool.retireAll()
            _ = await pool.waitUntilEmpty(timeout: .seconds(10))
        }
        pool.stopLaunching()
    }

    // MARK: - Reload

    /// What a reload did, pool by pool, and what it could not apply without a restart.
    public struct ReloadReport: Sendable, Equatable {
        public var added: [String] = []
        public var removed: [String] = []
        public var changed: [String] = []
        /// Pools whose size set at run time went back to the file's: (pool, from, to).
        public var sizesRestored: [String] = []
        /// Top-level settings that changed but take a restart.
        public var needsRestart: [String] = []
    }

    /// Applies `new`: pools added, removed (drained: busy turns finish) or changed (new
    /// settings, spares recycled); unchanged pools only lose a size set at run time. The
    /// socket, its permissions, the memory settings, the journal and `metrics_listen` take a
    /// restart: they are reported, not applied.
    public func reload(_ new: Configuration) async -> ReloadReport {
        var report = ReloadReport()
        guard !draining else { return report }
        let old = configuration
        if old.socket != new.socket { report.needsRestart.append("socket") }
        if old.socketGroup != new.socketGroup { report.needsRestart.append("socket_group") }
        if old.allowedUIDs != new.allowedUIDs { report.needsRestart.append("allowed_uids") }
        if old.maxConnectionsPerUID != new.maxConnectionsPerUID { report.needsRestart.append("max_connections_per_uid") }
        if old.strictModes != new.strictModes { report.needsRestart.append("strict_modes") }
        if old.idleTimeout != new.idleTimeout { report.needsRestart.append("idle_timeout_s") }
        if old.memory != new.memory { report.needsRestart.append("memory") }
        if old.journal != new.journal { report.needsRestart.append("journal") }
        if old.metricsListen != new.metricsListen { report.needsRestart.append("metrics_listen") }

        var kept = new
        kept.memory = old.memory
        kept.journal = old.journal
        kept.metricsListen = old.metricsListen
        kept.socket = old.socket
        kept.socketGroup = old.socketGroup
        kept.allowedUIDs = old.allowedUIDs

        let newNames = Set(new.pools.map(\.name))
        var removed: [Pool] = []
        var made: [Pool] = []
        state.withLock { state in
            for (name, pool) in state.pools where !newNames.contains(name) {
                removed.append(pool)
                state.pools[name] = nil
            }
            for config in new.pools where state.pools[config.name] == nil {
                let pool = Pool(
                    config: config, keeper: keeper, governor: memory, telemetry: telemetry, environment: environment, logger: logger
                )
                state.pools[config.name] = pool
                made.append(pool)
            }
            state.configuration = kept
        }
        memory.attach(allPools)
        for pool in made {
            added.yield(pool)
            report.added.append(pool.name)
        }
        for pool in removed.sorted(by: { $0.name < $1.name }) {
            report.removed.append(pool.name)
            telemetry.metrics.forget(pool: pool.name)
            let timeout = old.drainTimeout
            Task { await self.retire(pool, timeout: timeout) }
        }
        for config in new.pools where !made.contains(where: { $0.name == config.name }) {
            guard let pool = pool(named: config.name) else { continue }
            switch await pool.reload(config) {
            case .unchanged: break
            case .sizeRestored(let from, let to): report.sizesRestored.append("\(config.name) (\(from) -> \(to))")
            case .changed: report.changed.append(config.name)
            }
        }
        return report
    }

    /// Checks every pool's command file now and then; a changed file (a CLI upgrade)
    /// recycles the pool's idle spares, so the next turns run the new version.
    private func watchCommandFiles() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: Self.commandCheckInterval)
            guard !draining else { return }
            for pool in allPools {
                if let reason = pool.followInstalledCLI() {
                    pool.recycle(reason: reason)
                } else if pool.commandFileChanged() {
                    pool.recycle(reason: "the command file changed: \(pool.config.executable)")
                }
            }
        }
    }
}
