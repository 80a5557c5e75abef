import Foundation

/// `prewarm stats`: a pool's traffic and latencies, from the journal.
public struct PoolStats: Sendable, Codable, Equatable {
    public var pool: String
    /// Turns that arrived (served or refused).
    public var turns: Int
    public var served: Int
    public var warm: Int
    public var waited: Int
    public var cold: Int
    /// Share of served turns that got an idle spare.
    public var hitRatio: Double?
    /// Refused turns, by error code.
    public var rejections: [String: Int]
    /// Arrivals per second, as every rate here: the arrivals in a minute (any 60 s) / 60,
    /// averaged over every minute that holds an arrival, that is arrivals / (the span from
    /// the first to the last + 60 s).
    public var meanRatePerSecond: Double?
    /// The same rate in the busiest of those minutes: never below their average, the mean.
    public var peakRatePerSecond: Double?
    public var startups: Int
    public var startupFailures: Int
    public var startupMs: Percentiles
    public var waitMs: Percentiles
    public var firstByteMs: Percentiles
    public var durationMs: Percentiles
    public var first: Date?
    public var last: Date?
    /// Resumed turns by how they were served (`hit`, `miss`, `stale`); nil when there were none.
    public var resumed: [String: Int]?

    public struct Percentiles: Sendable, Codable, Equatable {
        public var p50: Double?
        public var p99: Double?
    }

    enum CodingKeys: String, CodingKey {
        case pool, turns, served, warm, waited, cold, rejections, startups, first, last, resumed
        case hitRatio = "hit_ratio"
        case meanRatePerSecond = "mean_rate_per_s"
        case peakRatePerSecond = "peak_rate_per_s"
        case startupFailures = "startup_failures"
        case startupMs = "startup_ms"
        case waitMs = "wait_ms"
        case firstByteMs = "first_byte_ms"
        case durationMs = "duration_ms"
    }

    /// The figures of one pool's journal rows (`turns` and `startups` of that pool).
    public init(pool: String, turns: [TurnRecord], startups: [StartupRecord]) {
        self.pool = pool
        self.turns = turns.count
        let served = turns.filter { !$0.rejected }
        self.served = served.count
        warm = served.count { $0.start == StartKind.warm.rawValue }
        waited = served.count { $0.start == StartKind.waited.rawValue }
        cold = served.count { $0.start == StartKind.cold.rawValue }
        hitRatio = served.isEmpty ? nil : Double(warm) / Double(served.count)
        rejections = turns.filter(\.rejected).reduce(into: [:]) { $0[$1.errorCode ?? "unknown", default: 0] += 1 }
        let times = turns.map(\.time.timeIntervalSince1970).sorted()
        first = turns.first.map(\.time)
        last = turns.last.map(\.time)
        if let start = times.first, let end = times.last {
            // A minute starting anywhere from a minute before the first arrival to the last
            // holds arrivals: each arrival is in a minute's worth of them.
            meanRatePerSecond = Double(times.count) / (end - start + Self.rateWindow)
            peakRatePerSecond = Double(Self.busiest(times, window: Self.rateWindow).count) / Self.rateWindow
        }
        self.startups = startups.count
        let ready = startups.compactMap(\.readyMs)
        startupFailures = startups.count { $0.readyMs == nil && $0.exitReason.hasPrefix("start failed") }
        startupMs = Self.percentiles(ready)
        waitMs = Self.percentiles(served.map(\.waitMs))
        firstByteMs = Self.percentiles(served.compactMap(\.firstByteMs))
        durationMs = Self.percentiles(served.map(\.durationMs))
        let resumes = served.compactMap(\.resume).reduce(into: [String: Int]()) { $0[$1, default: 0] += 1 }
        resumed = resumes.isEmpty ? nil : resumes
    }

    /// The window of every arrival rate: a minute.
    public static let rateWindow: Double = 60

    /// How `stats` takes its rates, for its header.
    public static let rateDefinition =
        "MEAN/S and PEAK/S: turns in a minute / 60, averaged over every minute (any 60 s) holding a turn of the pool "
        + "(turns / (first to last + 60 s)), and in the busiest of them"

    static func percentiles(_ values: [Double]) -> Percentiles {
        let sorted = values.sorted()
        return Percentiles(p50: percentile(sorted, 50), p99: percentile(sorted, 99))
    }

    /// Nearest rank on sorted values.
    static func percentile(_ sorted: [Double], _ p: Double) -> Double? {
        guard !sorted.isEmpty else { return nil }
        let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
        return sorted[min(sorted.count, max(1, rank)) - 1]
    }

    /// The `window` seconds with the most arrivals (times ascending): its index range.
    static func busiest(_ times: [Double], window: Double) -> Range<Int> {
        var best = 0..<min(1, times.count)
        var start = 0
        for end in times.indices {
            while times[end] - times[start] >= window { start += 1 }
            if end + 1 - start > best.count { best = start..<(end + 1) }
        }
        return best
    }
}

/// `prewarm advise`: how many spares a pool needs for its traffic, replayed through its own
/// state machine.
public struct Advice: Sendable, Codable, Equatable {
    public var pool: String
    public var windowStart: Date
    public var windowEnd: Date
    /// Arrivals in the busiest window.
    public var arrivals: Int
    public var ratePerSecond: Double
    /// Start-up durations replayed (the journal's, of the same period).
    public var startups: Int
    public var startupMsP50: Double
    public var meanStartupSeconds: Double
    public var targetMiss: Double
    public var currentSpares: Int
    public var recommendedSpares: Int
    /// The most spares the memory budget holds, if known.
    public var memoryMaxSpares: Int?
    /// The target cannot be met within the memory budget: the recommendation is the cap.
    public var cappedByMemory: Bool
    public var spareBytes: Int
    /// N-1, N and N+1.
    public var candidates: [Candidate]
    /// Resumed turns and their sessions' gaps, when the journal has any.
    public var resume: ResumeAdvice?

    public struct Candidate: Sendable, Codable, Equatable {
        public var spares: Int
        /// Share of the window's arrivals served warm in the replay.
        public var hitRatio: Double
        public var missRatio: Double
        /// The M/G/∞ reference: P[Poisson(λR) ≥ N], start-ups never limited.
        public var closedFormMiss: Double
        /// What the spares hold at rest.
        public var memoryBytes: Int
        /// Over the memory budget.
        public var overBudget: Bool

        enum CodingKeys: String, CodingKey {
            case spares
            case hitRatio = "hit_ratio"
            case missRatio = "miss_ratio"
            case closedFormMiss = "closed_form_miss"
            case memoryBytes = "memory_bytes"
            case overBudget = "over_budget"
        }
    }

    enum CodingKeys: String, CodingKey {
        case pool, arrivals, startups, candidates
        case windowStart = "window_start"
        case windowEnd = "window_end"
        case ratePerSecond = "rate_per_s"
        case startupMsP50 = "startup_ms_p50"
        case meanStartupSeconds = "mean_startup_s"
        case targetMiss = "target_miss"
        case currentSpares = "current_spares"
        case recommendedSpares = "recommended_spares"
        case memoryMaxSpares = "memory_max_spares"
        case cappedByMemory = "capped_by_memory"
        case spareBytes = "spare_bytes"
        case resume
    }

    /// The most spares `advise` tries.
    public static let maxCandidate = 1_000

    public enum Failure: Error, CustomStringConvertible, Equatable {
        case noTurns(String)
        case noStartups(String)

        public var description: String {
            switch self {
            case .noTurns(let pool): "pool \(pool) has no turns in the journal for that period; widen --since or send traffic first"
            case .noStartups(let pool): "pool \(pool) has no start-up that reached readiness in the journal for that period; nothing to replay with"
            }
        }
    }

    /// Replays the busiest `window` of `turns` (one pool's, oldest first) through the pool's
    /// state machine with `spares` = 0, 1, 2... and the journal's start-up durations, and
    /// recommends the smallest N whose simulated miss rate is at most `targetMiss`, within
    /// `roomBytes` (the memory budget this pool may use, if known).
    public static func advise(
        config: PoolConfig, turns: [TurnRecord], startups: [StartupRecord], targetMiss: Double, window: Double, roomBytes: Int?
    ) throws(Failure) -> Advice {
        guard !turns.isEmpty else { throw .noTurns(config.name) }
        let durations = startups.compactMap(\.readyMs).map { $0 / 1000 }
        guard !durations.isEmpty else { throw .noStartups(config.name) }
        let times = turns.map(\.time.timeIntervalSince1970)
        let busiest = PoolStats.busiest(times, window: window)
        let start = times[busiest.lowerBound]
        let arrivals = times[busiest].map { $0 - start }
        // The window, or the whole journal when it is shorter.
        let span = max(arrivals.last ?? 0, min(window, times.last! - times.first!), 1)
        let rate = Double(arrivals.count) / span
        let served = turns[busiest].filter { !$0.rejected }.map(\.durationMs).sorted()
        let turnSeconds = (PoolStats.percentile(served, 50) ?? 1000) / 1000
        let meanStartup = durations.reduce(0, +) / Double(durations.count)

        // What a spare and a turn cost, estimated from the journal's readings as the live
        // pool estimates them (else the configured figures).
        var spareCost = PeakEstimator(configured: config.spareBytes)
        var turnPeak = PeakEstimator(configured: config.turnBytes)
        for startup in startups {
            if let ready = startup.pssReady ?? startup.rssReady { spareCost.record(ready) }
            if let peak = startup.peakBytes { turnPeak.record(peak) }
        }
        let spareBytes = spareCost.value
        let turnBytes = max(spareBytes, turnPeak.value)
        var memoryMax: Int?
        if let roomBytes {
            var settings = config.machineSettings
            settings.spares = maxCandidate
            settings.maxProcesses = maxCandidate + 1
            settings.costs = MemoryCosts(spare: spareBytes, turn: turnBytes)
            var machine = PoolStateMachine(settings: settings)
            machine.room = roomBytes
            memoryMax = machine.effectiveSpares
        }

        func simulate(_ spares: Int) -> Candidate {
            var settings = config.machineSettings
            settings.spares = spares
            settings.maxProcesses = max(config.maxProcesses, spares + 8)
            let simulator = PoolSimulator(settings: settings, startupSeconds: durations, turnSeconds: turnSeconds)
            let outcome = simulator.run(arrivals: arrivals)
            return Candidate(
                spares: spares, hitRatio: outcome.hitRatio, missRatio: outcome.missRatio,
                closedFormMiss: poissonTail(mean: rate * meanStartup, atLeast: spares),
                memoryBytes: spares * spareBytes, overBudget: memoryMax.map { spares > $0 } ?? false
            )
        }

        // Sizes beyond what the memory holds are not tried: the cap is the answer then.
        let largest = min(maxCandidate, memoryMax ?? maxCandidate)
        var results: [Int: Candidate] = [:]
        var recommended = largest
        var met = false
        for spares in 0...largest {
            let candidate = simulate(spares)
            results[spares] = candidate
            if candidate.missRatio <= targetMiss {
                recommended = spares
                met = true
                break
            }
        }
        let capped = !met && memoryMax != nil
        let shown = [recommended - 1, recommended, recommended + 1].filter { $0 >= 0 }.map { results[$0] ?? simulate($0) }
        return Advice(
            pool: config.name,
            windowStart: Date(timeIntervalSince1970: start),
            windowEnd: Date(timeIntervalSince1970: start + span),
            arrivals: arrivals.count,
            ratePerSecond: rate,
            startups: durations.count,
            startupMsP50: (PoolStats.percentile(durations.sorted(), 50) ?? 0) * 1000,
            meanStartupSeconds: meanStartup,
            targetMiss: targetMiss,
            currentSpares: config.spares,
            recommendedSpares: recommended,
            memoryMaxSpares: memoryMax,
            cappedByMemory: capped,
            spareBytes: spareBytes,
            candidates: shown,
            resume: ResumeAdvice.advise(turns: turns, ttl: config.resumeSpares?.ttl)
        )
    }

    /// P[X ≥ n] for X ~ Poisson(mean).
    public static func poissonTail(mean: Double, atLeast n: Int) -> Double {
        guard n > 0 else { return 1 }
        guard mean > 0 else { return 0 }
        var term = exp(-mean)
        var below = term
        for k in 1..<n {
            term *= mean / Double(k)
            below += term
        }
        return max(0, 1 - below)
    }
}

/// `prewarm advise` on resume spares: the resumed turns the journal saw, served or not, and
/// the gaps between each session's turns (from the end of one to the arrival of the next),
/// so an operator sees whether `resume_spare_ttl_s` would have caught the misses.
public struct ResumeAdvice: Sendable, Codable, Equatable {
    /// Resumed turns, and how they were served.
    public var resumed: Int
    public var hits: Int
    public var misses: Int
    public var stale: Int
    /// The pool's `resume_spare_ttl_s`; nil when it keeps no resume spares.
    public var ttlSeconds: Double?
    /// Misses (stale ones apart) whose gap was within the TTL: the TTL was not the cause
    /// (the spare was not ready yet, memory, `max_resume_spares`), or, with no TTL, all of them.
    public var missesWithinTTL: Int
    /// Misses whose gap was longer than the TTL: a longer TTL would have caught them.
    public var missesBeyondTTL: Int
    /// Gaps between a session's turns, in seconds.
    public var gapSecondsP50: Double?
    public var gapSecondsP90: Double?
    /// A TTL that covers 90% of the gaps seen, when it differs from the pool's.
    public var suggestedTTLSeconds: Double?

    enum CodingKeys: String, CodingKey {
        case resumed, hits, misses, stale
        case ttlSeconds = "ttl_s"
        case missesWithinTTL = "misses_within_ttl"
        case missesBeyondTTL = "misses_beyond_ttl"
        case gapSecondsP50 = "gap_s_p50"
        case gapSecondsP90 = "gap_s_p90"
        case suggestedTTLSeconds = "suggested_ttl_s"
    }

    /// The most a suggested TTL may be (a spare held longer costs more than it saves).
    public static let maxSuggestedTTL: Double = 3600

    /// From one pool's turns, oldest first; nil when none was a resumed turn.
    public static func advise(turns: [TurnRecord], ttl: Duration?) -> ResumeAdvice? {
        guard turns.contains(where: { $0.resume != nil }) else { return nil }
        let ttlSeconds = ttl.map { Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18 }
        var advice = ResumeAdvice(
            resumed: 0, hits: 0, misses: 0, stale: 0, ttlSeconds: ttlSeconds, missesWithinTTL: 0, missesBeyondTTL: 0
        )
        var lastEnd: [String: Date] = [:]
        var gaps: [Double] = []
        for turn in turns.sorted(by: { $0.time < $1.time }) {
            let gap = turn.sessionID.flatMap { lastEnd[$0] }.map { turn.time.timeIntervalSince($0) }
            if let outcome = turn.resume {
                advice.resumed += 1
                if let gap { gaps.append(max(0, gap)) }
                switch outcome {
                case ResumeOutcome.hit.rawValue: advice.hits += 1
                case ResumeOutcome.stale.rawValue:
                    advice.misses += 1
                    advice.stale += 1
                default:
                    advice.misses += 1
                    if let gap, let ttlSeconds, gap > ttlSeconds {
                        advice.missesBeyondTTL += 1
                    } else {
                        advice.missesWithinTTL += 1
                    }
                }
            }
            if let session = turn.sessionID, turn.start != nil {
                lastEnd[session] = turn.time.addingTimeInterval(turn.durationMs / 1000)
            }
        }
        let sorted = gaps.sorted()
        advice.gapSecondsP50 = PoolStats.percentile(sorted, 50)
        advice.gapSecondsP90 = PoolStats.percentile(sorted, 90)
        if let p90 = advice.gapSecondsP90 {
            let suggested = min(maxSuggestedTTL, max(1, (p90 * 1.2).rounded(.up)))
            if ttlSeconds.map({ abs($0 - suggested) / max($0, 1) > 0.25 }) ?? true { advice.suggestedTTLSeconds = suggested }
        }
        return advice
    }
}
