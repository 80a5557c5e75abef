/// One pool's figures, as `GET /v1/pools/{name}` returns them.
public struct PoolStatus: Sendable, Codable, Equatable {
    public struct Percentiles: Sendable, Codable, Equatable {
        public var p50: Int?
        public var p99: Int?
    }

    public var name: String
    public var idle: Int
    public var starting: Int
    public var busy: Int
    public var waiting: Int
    /// `spares` as configured (or as last set by PATCH); an auto pool's floor: `min_spares`,
    /// or the size PATCHed.
    public var targetSpares: Int
    /// What the daemon aims for: an auto pool's target, lowered to what fits.
    public var effectiveSpares: Int
    public var maxProcesses: Int
    public var served: Int
    public var warm: Int
    public var waited: Int
    public var cold: Int
    public var rejected: Int
    public var startFailures: Int
    public var recycled: Int
    /// Idle spares retired to make room (for turns, or under memory pressure).
    public var shed: Int
    /// Start-up to readiness, in milliseconds.
    public var spawnMs: Percentiles
    public var failing: Bool
    public var lastError: String?
    /// The pids of the pool's processes, whatever their state.
    public var pids: [Int]
    /// `command` or `claude`.
    public var kind: String = "command"
    /// Claude pools: `on` (spares parked with --await-claim, claimed per turn), `off`, or
    /// `unsupported` (the CLI does not know --await-claim). nil for other pools.
    public var claim: String?
    /// How much lower than the daemon's the CPU priority of its booting spares is (nice);
    /// 0 when `spare_nice` is 0 or the daemon cannot raise a priority back (CAP_SYS_NICE).
    public var spareNice: Int = 0
    /// A fingerprint pool (made for drop-in runs): the options and environment variable
    /// names that distinguish it, never their values. nil for configured pools.
    public var fingerprint: [String]?
    /// A fingerprint pool: the configured pool nearest to its runs and the names that
    /// differed (what to give that pool, e.g. in `pass_env`, for such runs to be its own).
    public var differsFrom: NearestPool?
    /// A fingerprint pool taken out of routing: it goes when its last run ends. nil for
    /// configured pools.
    public var closing: Bool?
    /// `fixed`, or `auto` (`spares = "auto"`: the pool sizes itself).
    public var sizing: String = "fixed"
    /// An auto pool's controller; nil for a fixed pool.
    public var auto: AutoSizing?
    /// Resume spares (`resume_spares`) held now, starting or ready; not counted in `idle`,
    /// `starting` or `effective_spares`.
    public var resumeHeld = 0
    /// Those of them ready.
    public var resumeReady = 0
    /// Resumed turns a resume spare served (also counted in `warm`), and those none served
    /// (run cold; `resume_stale` included).
    public var resumeHits = 0
    public var resumeMisses = 0
    /// Resume spares discarded at hand-off because their session's transcript had changed.
    public var resumeStale = 0
    /// Resume spares retired to make room (memory, the pool's spares, `max_resume_spares`).
    public var resumeEvicted = 0
    /// Resume spares retired unused after `resume_spare_ttl_s`.
    public var resumeExpired = 0
    /// Claude pools: `on` (`universal_spares` kept), `off`, or `unsupported` (the CLI has no
    /// `--bg-spare`, or it refused a claim); nil for other pools.
    public var universal: String?
    /// Universal spares parked now (not counted in `idle`).
    public var universalIdle = 0
    /// Turns that would have started cold, served by a universal spare (still counted `cold`).
    public var universalHits = 0
    /// Drop-in runs admitted, by how prewarm-claude came to be run in the CLI's place:
    /// `sdk-install` (an SDK's bundled CLI replaced by `prewarm sdk install`), `path-install`
    /// (`claude` in a PATH directory); runs naming prewarm-claude itself are not counted here.
    public var runsVia: [String: Int] = [:]
    /// `claim_ahead` pools: idle spares claimed ahead now (counted in `idle`); turns a spare
    /// claimed ahead served; spares claimed ahead discarded at a hand-off (another claim, or
    /// what the CLI read at the claim changed since).
    public var claimedAhead = 0
    public var claimAheadHits = 0
    public var claimAheadDiscarded = 0

    /// An auto pool's target and why.
    public struct AutoSizing: Sendable, Codable, Equatable {
        /// The spares it aims for before the memory budget lowers it to `effective_spares`.
        public var target: Int
        /// The most it may keep now: `max_spares`, `max_processes` or the memory budget.
        public var maxSpares: Int
        public var targetMiss: Double
        /// The miss the last replay predicted at the size it chose; nil before the first.
        public var predictedMiss: Double?
        /// Why the target is what it is (the last change, or the last replay).
        public var reason: String

        public init(target: Int, maxSpares: Int, targetMiss: Double, predictedMiss: Double?, reason: String) {
            self.target = target
            self.maxSpares = maxSpares
            self.targetMiss = targetMiss
            self.predictedMiss = predictedMiss
            self.reason = reason
        }

        enum CodingKeys: String, CodingKey {
            case target, reason
            case maxSpares = "max_spares"
            case targetMiss = "target_miss"
            case predictedMiss = "predicted_miss"
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(target, forKey: .target)
            try container.encode(maxSpares, forKey: .maxSpares)
            try container.encode(targetMiss, forKey: .targetMiss)
            try container.encode(predictedMiss, forKey: .predictedMiss)  // null before the first replay
            try container.encode(reason, forKey: .reason)
        }
    }

    /// Ready for systemd's READY=1 and `prewarm status --ready`: an idle spare, or failing
    /// (a broken pool must not hold the service back forever), or no spares to keep.
    public var ready: Bool { idle > 0 || failing || effectiveSpares == 0 }

    enum CodingKeys: String, CodingKey {
        case name, idle, starting, busy, waiting
        case targetSpares = "target_spares"
        case effectiveSpares = "effective_spares"
        case maxProcesses = "max_processes"
        case served, warm, waited, cold, rejected
        case startFailures = "start_failures"
        case recycled, shed
        case spawnMs = "spawn_ms"
        case failing
        case lastError = "last_error"
        case pids, kind, claim
        case spareNice = "spare_nice"
        case fingerprint
        case differsFrom = "differs_from"
        case closing
        case sizing, auto
        case resumeHeld = "resume_held"
        case resumeReady = "resume_ready"
        case resumeHits = "resume_hits"
        case resumeMisses = "resume_misses"
        case resumeStale = "resume_stale"
        case resumeEvicted = "resume_evicted"
        case resumeExpired = "resume_expired"
        case universal
        case universalIdle = "universal_idle"
        case universalHits = "universal_hits"
        case runsVia = "runs_via"
        case claimedAhead = "claimed_ahead"
        case claimAheadHits = "claim_ahead_hits"
        case claimAheadDiscarded = "claim_ahead_discarded"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try container.encode(idle, forKey: .idle)
        try container.encode(starting, forKey: .starting)
        try container.encode(busy, forKey: .busy)
        try container.encode(waiting, forKey: .waiting)
        try container.encode(targetSpares, forKey: .targetSpares)
        try container.encode(effectiveSpares, forKey: .effectiveSpares)
        try container.encode(maxProcesses, forKey: .maxProcesses)
        try container.encode(served, forKey: .served)
        try container.encode(warm, forKey: .warm)
        try container.encode(waited, forKey: .waited)
        try container.encode(cold, forKey: .cold)
        try container.encode(rejected, forKey: .rejected)
        try container.encode(startFailures, forKey: .startFailures)
        try container.encode(recycled, forKey: .recycled)
        try container.encode(shed, forKey: .shed)
        try container.encode(spawnMs, forKey: .spawnMs)
        try container.encode(failing, forKey: .failing)
        try container.encode(lastError, forKey: .lastError)  // null when none, not absent
        try container.encode(pids, forKey: .pids)
        try container.encode(kind, forKey: .kind)
        try container.encode(claim, forKey: .claim)
        try container.encode(spareNice, forKey: .spareNice)
        try container.encodeIfPresent(fingerprint, forKey: .fingerprint)
        try container.encodeIfPresent(differsFrom, forKey: .differsFrom)
        try container.encodeIfPresent(closing, forKey: .closing)
        try container.encode(sizing, forKey: .sizing)
        try container.encode(auto, forKey: .auto)  // null for a fixed pool
        try container.encode(resumeHeld, forKey: .resumeHeld)
        try container.encode(resumeReady, forKey: .resumeReady)
        try container.encode(resumeHits, forKey: .resumeHits)
        try container.encode(resumeMisses, forKey: .resumeMisses)
        try container.encode(resumeStale, forKey: .resumeStale)
        try container.encode(resumeEvicted, forKey: .resumeEvicted)
        try container.encode(resumeExpired, forKey: .resumeExpired)
        try container.encode(universal, forKey: .universal)
        try container.encode(universalIdle, forKey: .universalIdle)
        try container.encode(universalHits, forKey: .universalHits)
        try container.encode(runsVia, forKey: .runsVia)
        try container.encode(claimedAhead, forKey: .claimedAhead)
        try container.encode(claimAheadHits, forKey: .claimAheadHits)
        try container.encode(claimAheadDiscarded, forKey: .claimAheadDiscarded)
    }
}
