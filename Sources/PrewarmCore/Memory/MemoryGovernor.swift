import Logging
import Synchronization

/// The daemon's memory budget at run time: one ledger for every pool, the pressure
/// watermarks, and the sampler that measures the processes.
///
/// Every pool event runs inside `transact`, which holds the ledger's lock while the pool's
/// state machine decides (with the room the other pools leave it) and records the pool's
/// new charge before the lock is released: the check and the charge are one step, so a
/// burst spread over several pools cannot overshoot. The lock order is ledger, then pool.
public final class MemoryGovernor: Sendable {
    public let config: MemoryConfig
    public let limit: MemoryLimit
    public let cgroup: CgroupMemory?
    private let root: SystemRoot
    private let logger: Logger
    private let ledger: Mutex<Ledger>
    private let attached = Mutex<[Pool]>([])

    /// How often usage, pressure and the processes are sampled.
    public static let sampleInterval: Duration = .milliseconds(250)

    struct Ledger {
        var budget: Int
        /// What each pool is charged, by the pool's identity (`Pool.serial`), never by its
        /// name: a pool removed with busy runs and one made again under its name are two.
        var charges: [UInt64: Int] = [:]
        /// What each pool would give up for another's turn (its idle spares...).
        var sheddable: [UInt64: Int] = [:]
        var pressure = false
        var usage: Int?
        var peak: Int?
        var daemonRSS: Int
        var oomKillsAtStart: UInt64?
        var oomKills: UInt64 = 0
        var pressureSomeAvg10: Double?
        var pressureEpisodes = 0
    }

    public init(config: MemoryConfig, root: SystemRoot = .host, logger: Logger) {
        self.config = config
        self.root = root
        self.logger = logger
        let cgroup = Cgroup.memory(root: root)
        self.cgroup = cgroup
        self.limit = MemoryLimit.resolve(config: config, cgroup: cgroup, host: Cgroup.host(root: root))
        let rss = ProcessMemory.selfRSS(root: root).map { Int(clamping: $0) } ?? MemoryPlan.daemonEstimate
        let budget = max(0, limit.bytes - config.reserve - rss)
        self.ledger = Mutex(Ledger(budget: budget, daemonRSS: rss))
        logger.info(
            "memory budget",
            metadata: [
                "memory.limit_mib": "\(limit.bytes >> 20)", "memory.limit_source": "\(limit.source)",
                "memory.reserve_mib": "\(config.reserve >> 20)", "memory.daemon_rss_mib": "\(rss >> 20)",
                "memory.budget_mib": "\(budget >> 20)", "memory.enforce": "\(config.enforce)",
            ]
        )
    }

    /// Runs `body` with the room this pool has (nil when not enforcing), whether the cgroup
    /// is under pressure, and what the other pools would shed for it; `body` returns its
    /// result, the pool's charge after it and what of that it would shed.
    func transact<R>(
        pool: UInt64, _ body: (_ room: Int?, _ pressure: Bool, _ reclaimable: Int) -> (R, charged: Int, sheddable: Int)
    ) -> R {
        ledger.withLock { ledger in
            let room: Int? =
                config.enforce
                ? ledger.budget - ledger.charges.reduce(0) { $0 + ($1.key == pool ? 0 : $1.value) }
                : nil
            let reclaimable = ledger.sheddable.reduce(0) { $0 + ($1.key == pool ? 0 : $1.value) }
            let (result, charged, sheddable) = body(room, config.enforce && ledger.pressure, reclaimable)
            ledger.charges[pool] = charged
            ledger.sheddable[pool] = sheddable
            return result
        }
    }

    /// The budget and what every pool is charged now, for an error's figures.
    var figures: (budget: Int, charged: Int) {
        ledger.withLock { ($0.budget, $0.charges.values.reduce(0, +)) }
    }

    /// The pools it governs (they hold the governor, so they are attached after creation).
    func attach(_ pools: [Pool]) {
        attached.withLock { $0 = pools }
    }

    var pools: [Pool] { attached.withLock { $0 } }

    /// Forgets a pool once it is gone (removed by a reload, or a fingerprint pool removed),
    /// its processes all ended.
    func remove(pool: UInt64) {
        ledger.withLock { ledger in
            ledger.charges[pool] = nil
            ledger.sheddable[pool] = nil
        }
    }

    // MARK: - Sampling

    /// Samples until cancelled: usage and pressure, the daemon's RSS (and so the budget),
    /// and the pools' processes. Under pressure, sheds one idle spare per sample.
    public func run() async {
        while !Task.isCancelled {
            sample(pools: pools)
            try? await Task.sleep(for: Self.sampleInterval)
        }
    }

    func sample(pools: [Pool]) {
        let cgroupSample = cgroup.flatMap { Cgroup.sample($0, root: root) }
        let host = limit.fromHost ? Cgroup.host(root: root) : nil
        let rss = ProcessMemory.selfRSS(root: root).map { Int(clamping: $0) }
        let groups = ProcessMemory.processGroups(root: root)
        // Usage against the limit, from the same place as the limit: the cgroup's usage for
        // a cgroup limit (less inactive file cache, as the kernel counts for reclaim), the
        // host's for MemTotal, and our own (the daemon and its processes) for `limit_mib`.
        let ownUsage = limit.kind == .configured || limit.kind == .assumed
        let own = pools.reduce(0) { $0 + $1.sampleMemory(groups: groups, root: root, all: ownUsage) }
        let usage: Int? =
            switch limit.kind {
            case .cgroup: cgroupSample.map { Int(clamping: $0.workingSet) }
            case .host: host.map { Int(clamping: $0.total) - Int(clamping: $0.available) }
            case .configured, .assumed: own + (rss ?? 0)
            }

        let (pressureChanged, pressure, newKills) = ledger.withLock { ledger in
            if let rss { ledger.daemonRSS = rss }
            var budget = limit.bytes - config.reserve - ledger.daemonRSS
            if limit.fromHost, let host {
                // Other tenants share the host: what is available, plus what we hold.
                let held = ledger.charges.values.reduce(0, +)
                budget = min(budget, Int(clamping: host.available) + held - config.reserve)
            }
            ledger.budget = max(0, budget)
            ledger.usage = usage
            ledger.peak = cgroupSample?.peak.map { Int(clamping: $0) }
            ledger.pressureSomeAvg10 = cgroupSample?.pressureSomeAvg10
            var newKills: UInt64 = 0
            if let kills = cgroupSample?.oomKills {
                let start = ledger.oomKillsAtStart ?? kills
                ledger.oomKillsAtStart = start
                let seen = kills >= start ? kills - start : 0
                newKills = seen > ledger.oomKills ? seen - ledger.oomKills : 0
                ledger.oomKills = seen
            }
            let was = ledger.pressure
            if let usage {
                let fraction = Double(usage) / Double(max(1, limit.bytes))
                if fraction >= config.highWatermark {
                    ledger.pressure = true
                } else if fraction < config.lowWatermark {
                    ledger.pressure = false
                }
            }
            if ledger.pressure && !was { ledger.pressureEpisodes += 1 }
            return (was != ledger.pressure, ledger.pressure, newKills)
        }
        if newKills > 0 {
            logger.error("the kernel OOM-killed processes in the daemon's cgroup", metadata: ["memory.oom_kills_new": "\(newKills)"])
        }
        if pressureChanged {
            logger.warning(
                pressure ? "memory pressure: start-ups stop, idle spares are shed" : "memory pressure over: start-ups resume",
                metadata: ["memory.usage_mib": "\((usage ?? 0) >> 20)", "memory.limit_mib": "\(limit.bytes >> 20)"]
            )
        }

        if pressure && config.enforce {
            // A resume spare goes first (the pool holding the most gives one up), else the
            // pool with the most idle spares gives one up.
            if let pool = pools.max(by: { $0.resumeHeldCount < $1.resumeHeldCount }), pool.resumeHeldCount > 0 {
                _ = pool.shedResumeSpares(upTo: 1)
            } else if let pool = pools.max(by: { $0.idleCount < $1.idleCount }), pool.idleCount > 0 {
                _ = pool.shedIdle(upTo: 1)
            }
        }
        // The pools see the new budget and pressure (outside the ledger's lock): start-ups
        // held back by memory resume, spares over the room are shed.
        if config.enforce {
            for pool in pools { pool.memoryChanged() }
        }
    }

    /// A pool could not fit a turn: the other pools shed idle spares to make room for it
    /// (busy turns come first, whatever their pool).
    func requestRoom(_ bytes: Int, for requester: UInt64) {
        guard config.enforce else { return }
        var freed = 0
        // Every pool's resume spares before any pool's idle spares.
        for pool in pools where pool.serial != requester {
            guard freed < bytes else { break }
            freed += pool.shedResumeSpares(upTo: bytes - freed)
        }
        for pool in pools where pool.serial != requester {
            guard freed < bytes else { break }
            freed += pool.shedIdle(upTo: bytes - freed)
        }
    }

    // MARK: - Status

    public func status() -> MemoryStatus {
        let ledger = ledger.withLock { $0 }
        return MemoryStatus(
            limit: limit.bytes,
            limitSource: limit.source,
            cgroup: cgroup.map { "\($0.version.rawValue) \($0.directory)" },
            usage: ledger.usage,
            peak: ledger.peak,
            reserve: config.reserve,
            daemonRSS: ledger.daemonRSS,
            budget: ledger.budget,
            charged: ledger.charges.values.reduce(0, +),
            pressure: config.enforce && ledger.pressure,
            pressureEpisodes: ledger.pressureEpisodes,
            pressureSomeAvg10: ledger.pressureSomeAvg10,
            highWatermark: config.highWatermark,
            lowWatermark: config.lowWatermark,
            enforce: config.enforce,
            oomKills: Int(ledger.oomKills),
            pools: pools.map { $0.memoryStatus() }
        )
    }
}

/// `GET /v1/memory`: every size in bytes.
public struct MemoryStatus: Sendable, Codable, Equatable {
    public struct PoolMemory: Sendable, Codable, Equatable {
        public var name: String
        public var spareBytes: Int
        public var turnPeakBytes: Int
        /// Both estimates come from measurements (else from `spare_mib`/`turn_mib`).
        public var measured: Bool
        public var spareMeasured: Bool
        public var turnMeasured: Bool
        /// What the pool's processes are charged now.
        public var charged: Int
        /// How many of its processes fit now, all busy, next to the other pools.
        public var maxProcesses: Int
        public var spares: Int
        public var effectiveSpares: Int
        public var shed: Int

        enum CodingKeys: String, CodingKey {
            case name
            case spareBytes = "spare_bytes"
            case turnPeakBytes = "turn_peak_bytes"
            case measured
            case spareMeasured = "spare_measured"
            case turnMeasured = "turn_measured"
            case charged
            case maxProcesses = "max_processes"
            case spares
            case effectiveSpares = "effective_spares"
            case shed
        }
    }

    public var limit: Int
    public var limitSource: String
    public var cgroup: String?
    /// The cgroup's usage less its inactive file cache (what the kernel cannot reclaim
    /// easily), or the host's MemTotal - MemAvailable.
    public var usage: Int?
    public var peak: Int?
    public var reserve: Int
    public var daemonRSS: Int
    public var budget: Int
    public var charged: Int
    public var pressure: Bool
    public var pressureEpisodes: Int
    public var pressureSomeAvg10: Double?
    public var highWatermark: Double
    public var lowWatermark: Double
    public var enforce: Bool
    /// OOM kills in the cgroup since the daemon started.
    public var oomKills: Int
    public var pools: [PoolMemory]

    enum CodingKeys: String, CodingKey {
        case limit
        case limitSource = "limit_source"
        case cgroup, usage, peak, reserve
        case daemonRSS = "daemon_rss"
        case budget, charged, pressure
        case pressureEpisodes = "pressure_episodes"
        case pressureSomeAvg10 = "psi_some_avg10"
        case highWatermark = "high_watermark"
        case lowWatermark = "low_watermark"
        case enforce
        case oomKills = "oom_kills"
        case pools
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(limit, forKey: .limit)
        try c.encode(limitSource, forKey: .limitSource)
        try c.encode(cgroup, forKey: .cgroup)  // null, not absent
        try c.encode(usage, forKey: .usage)
        try c.encode(peak, forKey: .peak)
        try c.encode(reserve, forKey: .reserve)
        try c.encode(daemonRSS, forKey: .daemonRSS)
        try c.encode(budget, forKey: .budget)
        try c.encode(charged, forKey: .charged)
        try c.encode(pressure, forKey: .pressure)
        try c.encode(pressureEpisodes, forKey: .pressureEpisodes)
        try c.encode(pressureSomeAvg10, forKey: .pressureSomeAvg10)
        try c.encode(highWatermark, forKey: .highWatermark)
        try c.encode(lowWatermark, forKey: .lowWatermark)
        try c.encode(enforce, forKey: .enforce)
        try c.encode(oomKills, forKey: .oomKills)
        try c.encode(pools, forKey: .pools)
    }
}
