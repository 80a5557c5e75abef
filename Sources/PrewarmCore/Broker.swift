import Logging
import ServiceLifecycle
import Synchronization

/// All the pools of one daemon, as one `Service`: it runs them, and on graceful shutdown
/// drains them (no new turns, busy turns finish within `drain_timeout_s`, then everything is
/// killed) before it returns.
public final class Broker: Service, Sendable {
    public let configuration: Configuration
    private let pools: [String: Pool]
    /// The memory budget every pool is charged against.
    public let memory: MemoryGovernor
    private let logger: Logger
    private let isDraining = Atomic<Bool>(false)

    public init(
        configuration: Configuration,
        keeper: ProcessGroupKeeper?,
        environment: [String: String],
        systemRoot: SystemRoot = .host,
        logger: Logger
    ) {
        self.configuration = configuration
        self.logger = logger
        let memory = MemoryGovernor(config: configuration.memory, root: systemRoot, logger: logger)
        self.memory = memory
        var pools: [String: Pool] = [:]
        for config in configuration.pools {
            pools[config.name] = Pool(config: config, keeper: keeper, governor: memory, environment: environment, logger: logger)
        }
        self.pools = pools
        memory.attach(configuration.pools.compactMap { pools[$0.name] })
    }

    public var draining: Bool { isDraining.load(ordering: .relaxed) }

    public func pool(named name: String) -> Pool? { pools[name] }

    /// The pools in configuration order.
    public var allPools: [Pool] { configuration.pools.compactMap { pools[$0.name] } }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            for pool in allPools {
                group.addTask { await pool.run() }
            }
            let sampler = Task { await self.memory.run() }
            group.addTask {
                try? await gracefulShutdown()
                await self.drain()
                sampler.cancel()
            }
        }
    }

    /// Drains every pool; returns when every process is gone.
    public func drain() async {
        guard !isDraining.exchange(true, ordering: .relaxed) else { return }
        logger.info("draining", metadata: ["drain.timeout_s": "\(configuration.drainTimeout.components.seconds)"])
        for pool in allPools { pool.drain() }
        await withDiscardingTaskGroup { group in
            for pool in allPools {
                group.addTask {
                    if !(await pool.waitUntilEmpty(timeout: self.configuration.drainTimeout)) {
                        self.logger.warning("drain timeout: killing the turns still running", metadata: ["pool.name": "\(pool.name)"])
                        pool.retireAll()
                        _ = await pool.waitUntilEmpty(timeout: .seconds(10))
                    }
                    pool.stopLaunching()
                }
            }
        }
        logger.info("drained")
    }
}
