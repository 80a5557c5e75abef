#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging

/// A pool the daemon made for drop-in runs of one fingerprint (command line and environment).
/// It starts no spare until a second run of its fingerprint comes within `idle_ttl_s`
/// (`promoted`): a command line seen once (a timestamp in it, a one-off script) costs its
/// own cold run and nothing more.
struct FingerprintPool: Sendable {
    let pool: Pool
    var lastUsed: ContinuousClock.Instant
    /// It keeps spares (its fingerprint was seen twice, and `max_new_pools_per_minute` let it).
    var promoted = false
}

/// How a drop-in run is served.
public enum RunRoute: Sendable {
    /// By a spare of this pool (waiting for one if need be), bound to the run by the plan;
    /// `fallback`: the run's own process there, if the CLI refuses the claim.
    case spare(Pool, RunPlan, fallback: PoolConfig)
    /// By a process started for it alone, with its own command line, in this pool (a
    /// fingerprint pool, or a pool whose host part it shares): counted `cold` there, charged
    /// to the memory budget like any other.
    case cold(Pool, PoolConfig, reason: String)
    /// A run resuming a session: the pool's resume spare for it if there is one, ready and
    /// current (warm), else as `cold` with these settings.
    case resume(Pool, ResumeKey, cold: PoolConfig)

    /// The pool that serves the run.
    public var pool: Pool {
        switch self {
        case .spare(let pool, _, _), .cold(let pool, _, _), .resume(let pool, _, _): pool
        }
    }

    /// The settings of a process started for the run alone: what a resume spare of its
    /// session copies.
    public var ownConfig: PoolConfig {
        switch self {
        case .spare(_, _, let config), .cold(_, let config, _), .resume(_, _, let config): config
        }
    }
}

extension Broker {
    /// What a run description must carry of its caller's environment: the host variables and
    /// every name the claude pools' `env` and `pass_env` give.
    public var runEnvironment: RunEnvironment {
        let extra = allPools.reduce(into: Set<String>()) { names, pool in
            let config = pool.config
            guard config.kind == .claude else { return }
            names.formUnion(config.env.keys)
            names.formUnion(config.passEnv)
        }
        return HostEnvironment.routing(extra: extra)
    }

    /// Where a drop-in run goes: a spare of the pool that serves its command line and
    /// environment (unclaimed spares of its exact session first, then claimed ones), else a
    /// cold start in its fingerprint pool (made now if need be, so the next such run is warm).
    public func route(_ run: RunDescription) throws(PrewarmError) -> RunRoute {
        let shape = RunShape(arguments: run.argv, cwd: run.cwd, env: run.env)
        let cli = run.cli.flatMap(FileIdentity.init(path:))
        // Matched on its host part alone: a run no spare can serve (a resume...) still runs
        // cold in the pool of its kind, rather than in a fingerprint pool of its own.
        var hostOnly = shape
        hostOnly.coldReasons = []
        var mismatches: [RunMatcher.Mismatch] = []
        typealias Candidate = (pool: Pool, plan: RunPlan, idle: Int, config: PoolConfig)
        var candidates: [Candidate] = []
        var configured: [RunProfile] = []
        for pool in allPools {
            // One locked read per pool: its profile (parsed once per configuration), its idle
            // count and its settings.
            guard let (profile, idle, config) = pool.runCandidate() else { continue }
            if config.fingerprint == nil { configured.append(profile) }
            switch RunMatcher.plan(hostOnly, env: run.env, cli: cli, on: profile) {
            case .success(let plan): candidates.append((pool, plan, idle, config))
            case .failure(let mismatch): mismatches.append(mismatch)
            }
        }
        // No claim to pay for first; then whoever has a spare idle now; then the first.
        let ranked = candidates.enumerated().sorted { a, b in
            let rank = { (c: Candidate) in (c.idle > 0 ? 0 : 2) + (c.plan.claimed ? 1 : 0) }
            return (rank(a.element), a.offset) < (rank(b.element), b.offset)
        }
        // A resume is one of the reasons to run cold: only then is the command line read for a key.
        let resumeKey = shape.coldReasons.isEmpty ? nil : ResumeKey(run: run, executable: run.cli ?? "")
        let resume = { (c: Candidate) in resumeKey.map { run.cli == nil ? $0.with(executable: c.config.executable) : $0 } }
        if var best = ranked.first?.element {
            // A resume goes where its session's resume spare is, if one of them holds it.
            if resumeKey != nil, let holder = ranked.first(where: { c in resume(c.element).map(c.element.pool.holdsResumeSpare) ?? false }) {
                best = holder.element
            }
            let own = Self.coldConfig(best.config, run: run, shape: shape)
            if best.config.fingerprint != nil {
                logRunToFingerprintPool(best.pool, nearest: best.config.nearest)
                if !sighted(best.pool) {
                    // A fingerprint pool seen once before: this run starts its spares, and runs cold.
                    if let key = resume(best) { return .resume(best.pool, key, cold: own) }
                    return .cold(best.pool, own, reason: shape.coldReasons.first ?? "the first runs of a fingerprint pool run cold")
                }
            }
            if let key = resume(best) { return .resume(best.pool, key, cold: own) }
            if let reason = shape.coldReasons.first { return .cold(best.pool, own, reason: reason) }
            return .spare(best.pool, best.plan, fallback: own)
        }
        let why = shape.coldReasons.first ?? mismatches.map { "\($0.pool): \($0.reason)" }.joined(separator: "; ")
        logger.debug("a drop-in run no spare serves", metadata: ["run.why": "\(why.isEmpty ? "no claude pool" : why)"])
        let claude = ConfigurationLoader(executableDirectory: nil, environment: environment, cpus: 1).resolveCommand("claude", baseDirectory: "/")
        guard let executable = run.cli ?? (claude.hasPrefix("/") ? claude : nil) else {
            throw PrewarmError(.runNotServed, "the run names no CLI and there is no claude on the daemon's PATH")
        }
        // Why not a configured pool: the names that differ from the nearest one, for the
        // operator (logged with the run, shown in the fingerprint pool's status).
        let nearest = RunMatcher.nearest(hostOnly, env: run.env, cli: cli, among: configured).map {
            NearestPool(pool: $0.pool, differences: $0.differences)
        }
        let pool = fingerprintPool(for: shape, env: run.env, executable: executable, nearest: nearest)
        logRunToFingerprintPool(pool, nearest: nearest)
        let config = pool.config
        let own = Self.coldConfig(config, run: run, shape: shape)
        if let key = resumeKey.map({ run.cli == nil ? $0.with(executable: config.executable) : $0 }) { return .resume(pool, key, cold: own) }
        return .cold(pool, own, reason: why)
    }

    /// The run's line saying why it did not go to a configured pool: the names that differ
    /// from the nearest one (its fingerprint pool keeps them from its first run).
    private func logRunToFingerprintPool(_ pool: Pool, nearest: NearestPool?) {
        logger.info(
            "a drop-in run goes to a fingerprint pool",
            metadata: [
                "run.pool": "\(pool.name)", "run.nearest_pool": "\(nearest?.pool ?? "none")",
                "run.differs": "\(nearest.map { $0.differences.joined(separator: " ") } ?? "no claude pool is configured")",
            ]
        )
    }

    /// The settings of a process started for `run` alone: its own command line, directory
    /// and claimable variables, the pool's environment, no readiness handshake (the run's
    /// own `initialize` is the first thing it reads).
    public static func coldConfig(_ pool: PoolConfig, run: RunDescription, shape: RunShape) -> PoolConfig {
        var config = pool
        config.args = run.argv
        config.cwd = run.cwd
        config.ready = PoolConfig.Readiness(send: nil, expect: nil, timeout: pool.ready.timeout)
        for (name, value) in shape.session.env ?? [:] { config.env[name] = value }
        return config
    }

    /// The pool of `shape`'s fingerprint: found, or made. A pool made now keeps no spares; a
    /// second run within `idle_ttl_s` gives it `[fingerprint_pools] spares`, at most
    /// `max_new_pools_per_minute` a minute. At `max_pools`, the pool unused the longest is
    /// closed: it takes no more runs and goes once its busy and waiting runs have ended,
    /// never killing one. With `enabled = false` no pool keeps spares: they only count and
    /// govern the cold runs.
    func fingerprintPool(for shape: RunShape, env: [String: String], executable: String, nearest: NearestPool?) -> Pool {
        let key = RunMatcher.fingerprintKey(RunMatcher.fingerprint(shape, env: env, executable: executable))
        let settings = configuration.fingerprintPools
        let now = ContinuousClock.now
        var evicted: Pool?
        let (pool, made) = state.withLock { state -> (Pool, Bool) in
            if let existing = state.fingerprints[key] { return (existing.pool, false) }
            // Unique among the pools, those still closing included (a suffix in the unlikely
            // case 128 bits collide, or a closing pool of the same fingerprint).
            var name = RunMatcher.poolName(key: key)
            var suffix = 2
            while state.pools[name] != nil || state.fingerprintPool(named: name) != nil {
                name = RunMatcher.poolName(key: key) + "-\(suffix)"
                suffix += 1
            }
            if state.fingerprints.count >= settings.maxPools,
                let oldest = state.fingerprints.min(by: { $0.value.lastUsed < $1.value.lastUsed })
            {
                evicted = oldest.value.pool
                state.fingerprints[oldest.key] = nil
                state.closing.append(oldest.value.pool)
            }
            var config = Self.fingerprintConfig(
                name: name, shape: shape, env: env, executable: executable, settings: settings, stateDirectory: state.configuration.stateDirectory
            )
            config.nearest = nearest
            let pool = Pool(config: config, keeper: keeper, governor: memory, telemetry: telemetry, environment: environment, logger: logger)
            state.fingerprints[key] = FingerprintPool(pool: pool, lastUsed: now)
            return (pool, true)
        }
        if made {
            memory.attach(allPools)
            added.yield(pool)
            logger.info(
                "fingerprint pool made for drop-in runs; it starts spares when a second run of it comes",
                metadata: [
                    "pool.name": "\(pool.name)", "pool.fingerprint": "\((pool.config.fingerprint ?? []).joined(separator: " "))",
                    "pool.nearest": "\(nearest?.pool ?? "none")", "pool.differs": "\((nearest?.differences ?? []).joined(separator: " "))",
                ]
            )
        }
        if !made { _ = sighted(pool) }
        if let evicted { close(evicted, why: "max_pools (\(settings.maxPools)) reached; unused the longest") }
        return pool
    }

    /// A fingerprint pool's settings: spares parked with the run's host options and host
    /// environment, claimed per run, not initialized by the pool (the run's `initialize` is
    /// then the process's first, and every field of it applies).
    static func fingerprintConfig(
        name: String, shape: RunShape, env: [String: String], executable: String, settings: FingerprintPools, stateDirectory: String
    ) -> PoolConfig {
        var processEnv = HostEnvironment.of(env)
        // The SDK's markers: spares write what the callers of this fingerprint expect.
        for name in ["CLAUDE_CODE_ENTRYPOINT", "CLAUDE_AGENT_SDK_VERSION", "CLAUDE_AGENT_SDK_CLIENT_APP"] {
            if let value = env[name] { processEnv[name] = value }
        }
        if HostEnvironment.wantsSessionState(env) { processEnv[HostEnvironment.readsSessionState] = "1" }
        let state = stateDirectory + "/fingerprint/" + name
        var claude = PoolConfig.ClaudeSettings(
            claim: true, configDirectory: processEnv["CLAUDE_CONFIG_DIR"] ?? state + "/claude-config", parkingDirectory: state + "/parking"
        )
        claude.initialize = false
        claude.baseArguments = shape.hostWords + (shape.partialMessages ? ["--include-partial-messages"] : [])
        var config = PoolConfig(
            name: name, command: executable, executable: executable, args: claude.arguments(for: nil), env: processEnv,
            // None until a second run of the fingerprint comes (`promote`).
            spares: 0, maxProcesses: settings.maxProcesses, spareBytes: settings.spareBytes, turnBytes: settings.turnBytes,
            waitTimeout: settings.waitTimeout, maxWaiting: settings.maxWaiting,
            ready: PoolConfig.Readiness(send: PoolConfig.ClaudeSettings.versionProbe, expect: #""request_id":"prewarm-ready""#, timeout: .seconds(60)),
            turn: PoolConfig.TurnEnd(endType: "result")
        )
        config.kind = .claude
        config.claude = claude
        config.cwd = claude.parkingDirectory
        config.privateDirectories = PoolConfig.PrivateDirectories(root: state + "/turns")
        config.universalRoot = UniversalSpare.root(stateDirectory: stateDirectory)
        config.maxStarting = settings.maxStarting
        config.replaceAfter = settings.replaceAfter
        config.dropInTimeout = settings.dropInTimeout
        config.resumeSpares = settings.resumeSpares
        config.fingerprintDirectory = state
        config.fingerprint = shape.hostSummary + processEnv.keys.sorted().map { "$" + $0 }
        return config
    }

    /// A run goes to fingerprint pool `pool`: it is marked used now, and given its spares if
    /// this is its fingerprint's second run within `idle_ttl_s` (at most
    /// `max_new_pools_per_minute` a minute). Returns whether the pool keeps spares.
    func sighted(_ pool: Pool) -> Bool {
        let settings = configuration.fingerprintPools
        let now = ContinuousClock.now
        let (promoted, promote) = state.withLock { state -> (Bool, Bool) in
            guard let key = state.fingerprints.first(where: { $0.value.pool === pool })?.key, var entry = state.fingerprints[key] else {
                // Closing since it was chosen: its runs go on; it starts nothing.
                return (false, false)
            }
            var promote = false
            if !entry.promoted, settings.enabled, settings.spares > 0, entry.lastUsed.duration(to: now) <= settings.idleTTL {
                state.promotions.removeAll { $0.duration(to: now) > .seconds(60) }
                if state.promotions.count < settings.maxNewPoolsPerMinute {
                    state.promotions.append(now)
                    entry.promoted = true
                    promote = true
                }
            }
            entry.lastUsed = now
            state.fingerprints[key] = entry
            return (entry.promoted, promote)
        }
        if promote {
            logger.info("fingerprint pool starts its spares: a second run of it came", metadata: ["pool.name": "\(pool.name)", "pool.spares": "\(settings.spares)"])
            Task { await pool.promote(spares: settings.spares) }
        }
        return promoted
    }

    /// Removes fingerprint pools no run used for `idle_ttl_s` (their busy runs finish first).
    func removeIdleFingerprintPools() async {
        while !Task.isCancelled {
            let ttl = configuration.fingerprintPools.idleTTL
            try? await Task.sleep(for: min(ttl / 4, .seconds(5)))
            guard !draining else { return }
            let idle = state.withLock { state in
                let stale = state.fingerprints.filter { $0.value.lastUsed.duration(to: .now) > ttl }
                for key in stale.keys { state.fingerprints[key] = nil }
                state.closing += stale.values.map(\.pool)
                return stale.values.map(\.pool)
            }
            for pool in idle { close(pool, why: "no run for idle_ttl_s (\(ttl.components.seconds) s)") }
        }
    }

    /// Closes a fingerprint pool taken out of routing: it keeps no spares, its busy and
    /// waiting runs go on to their end (never killed), then it goes with its state directory
    /// and its line in the memory ledger.
    private func close(_ pool: Pool, why: String) {
        logger.info("fingerprint pool closing: it takes no new runs and goes when its last run ends", metadata: ["pool.name": "\(pool.name)", "reason": "\(why)"])
        pool.close()
        Task {
            // No deadline: a run's process is never killed to make room (the daemon's drain
            // still ends everything).
            while !(await pool.waitUntilEmpty(timeout: .seconds(3600))) {}
            await self.retire(pool, timeout: self.configuration.drainTimeout)
            // Its files first: once it is out of the status, nothing of it is left.
            if let directory = pool.config.fingerprintDirectory {
                try? FileManager.default.removeItem(atPath: directory)
            }
            self.state.withLock { $0.closing.removeAll { $0 === pool } }
            self.memory.attach(self.allPools)
            self.memory.remove(pool: pool.serial)
            self.telemetry.metrics.forget(pool: pool.name)
            self.logger.info("fingerprint pool removed", metadata: ["pool.name": "\(pool.name)", "reason": "\(why)"])
        }
    }
}
