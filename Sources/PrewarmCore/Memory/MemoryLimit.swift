/// The memory the daemon may use, and where that figure came from.
public struct MemoryLimit: Sendable, Equatable, Codable {
    public var bytes: Int
    /// A human-readable origin: the cgroup file, the configuration key, or /proc/meminfo.
    public var source: String
    public var kind: Kind

    public enum Kind: String, Sendable, Codable {
        /// The cgroup's memory.max / memory.high / memory.limit_in_bytes.
        case cgroup
        /// `[memory] limit_mib`.
        case configured
        /// /proc/meminfo MemTotal: other tenants share it, so the budget is also bounded by
        /// MemAvailable.
        case host
        /// Nothing could be read.
        case assumed
    }

    public init(bytes: Int, source: String, kind: Kind) {
        self.bytes = bytes
        self.source = source
        self.kind = kind
    }

    public var fromHost: Bool { kind == .host }

    /// The lowest of the cgroup's limit, `limit_mib` and the host's MemTotal.
    public static func resolve(config: MemoryConfig, cgroup: CgroupMemory?, host: HostMemory?) -> MemoryLimit {
        var candidates: [MemoryLimit] = []
        if let cgroup, let limit = cgroup.limit {
            let source = "cgroup \(cgroup.version.rawValue) " + (cgroup.limitSource ?? cgroup.directory)
            candidates.append(MemoryLimit(bytes: Int(clamping: limit), source: source, kind: .cgroup))
        }
        if let limit = config.limit {
            candidates.append(MemoryLimit(bytes: limit, source: "[memory] limit_mib in the configuration", kind: .configured))
        }
        if let host {
            candidates.append(MemoryLimit(bytes: Int(clamping: host.total), source: "/proc/meminfo MemTotal (no cgroup limit)", kind: .host))
        }
        // No figure at all (no /proc): a conservative 1 GiB, said so.
        return candidates.min { $0.bytes < $1.bytes }
            ?? MemoryLimit(bytes: 1 << 30, source: "unknown (no cgroup, no /proc/meminfo): 1 GiB assumed; set [memory] limit_mib", kind: .assumed)
    }
}

/// The sizing a configuration leads to, as `prewarm size` prints it and the README explains
/// it: the budget, and per pool what fits. Computed by the pools' own state machine.
public struct MemoryPlan: Sendable, Codable, Equatable {
    public struct PoolPlan: Sendable, Codable, Equatable {
        public var name: String
        /// `spares` as configured: an upper bound.
        public var spares: Int
        /// The pool's `max_processes`; nil where none is set on a pool that serves runs
        /// (memory alone limits it).
        public var configuredMaxProcesses: Int?
        public var spareBytes: Int
        public var turnPeakBytes: Int
        public var measured: Bool
        /// How many processes of this pool fit, all busy, next to the other pools' spares.
        public var maxProcesses: Int
        /// How many idle spares fit (leaving room for one to become a turn).
        public var effectiveSpares: Int

        enum CodingKeys: String, CodingKey {
            case name, spares
            case configuredMaxProcesses = "configured_max_processes"
            case spareBytes = "spare_bytes"
            case turnPeakBytes = "turn_peak_bytes"
            case measured
            case maxProcesses = "max_processes"
            case effectiveSpares = "effective_spares"
        }
    }

    public var limit: Int
    public var limitSource: String
    public var reserve: Int
    public var daemonRSS: Int
    public var daemonRSSSource: String
    public var budget: Int
    public var enforce: Bool
    public var cpus: Int
    public var pools: [PoolPlan]

    enum CodingKeys: String, CodingKey {
        case limit
        case limitSource = "limit_source"
        case reserve
        case daemonRSS = "daemon_rss"
        case daemonRSSSource = "daemon_rss_source"
        case budget, enforce, cpus, pools
    }

    /// What a daemon holds (RSS): its log reported 29 MiB at start and /v1/memory 42-44 MiB
    /// after turns, with the demo pool on Linux x86_64 (debug build); the benchmarks' release
    /// daemon held 36-40 MiB. `prewarm size` uses it when the daemon is not running.
    public static let daemonEstimate = 40 << 20

    /// `budget = limit - reserve - daemon RSS`; then, pool by pool in the configuration's
    /// order, the spares that fit next to the earlier pools' spares, and the processes that
    /// fit next to all the other pools' spares.
    public static func derive(
        pools: [(config: PoolConfig, costs: MemoryCosts, measured: Bool)],
        limit: MemoryLimit,
        memory: MemoryConfig,
        daemonRSS: Int,
        daemonRSSSource: String,
        cpus: Int
    ) -> MemoryPlan {
        let budget = max(0, limit.bytes - memory.reserve - daemonRSS)
        var sparesHeld: [Int] = []
        for (index, pool) in pools.enumerated() {
            var machine = PoolStateMachine(settings: withCosts(pool.config, pool.costs))
            machine.room = budget - sparesHeld[..<index].reduce(0, +)
            sparesHeld.append(machine.effectiveSpares * pool.costs.spare)
        }
        let plans = pools.enumerated().map { index, pool in
            var machine = PoolStateMachine(settings: withCosts(pool.config, pool.costs))
            let others = sparesHeld.enumerated().filter { $0.offset != index }.reduce(0) { $0 + $1.element }
            machine.room = budget - sparesHeld[..<index].reduce(0, +)
            let spares = machine.effectiveSpares
            machine.room = budget - others
            return PoolPlan(
                name: pool.config.name,
                spares: pool.config.spares,
                configuredMaxProcesses: pool.config.maxProcesses >= PoolConfig.unlimitedProcesses ? nil : pool.config.maxProcesses,
                spareBytes: pool.costs.spare,
                turnPeakBytes: pool.costs.turn,
                measured: pool.measured,
                maxProcesses: machine.memoryMaxProcesses,
                effectiveSpares: spares
            )
        }
        return MemoryPlan(
            limit: limit.bytes,
            limitSource: limit.source,
            reserve: memory.reserve,
            daemonRSS: daemonRSS,
            daemonRSSSource: daemonRSSSource,
            budget: budget,
            enforce: memory.enforce,
            cpus: cpus,
            pools: plans
        )
    }

    private static func withCosts(_ config: PoolConfig, _ costs: MemoryCosts) -> PoolStateMachine.Settings {
        var settings = config.machineSettings
        settings.costs = costs
        return settings
    }
}
