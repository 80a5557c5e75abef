#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Histogram
import Logging
import NIOCore
import Synchronization

/// A pool at run time: the state machine behind a lock, and the thin code that performs its
/// actions (spawn, retire, hand over, refuse).
///
/// Every process is run by one child task of `run()` for its whole life. Turns call
/// `acquire`, which returns a `Lease` on exactly one process, or throws a `PrewarmError`.
public final class Pool: Sendable {
    public let name: String
    private let keeper: ProcessGroupKeeper?
    private let governor: MemoryGovernor?
    private let telemetry: Telemetry?
    private let environment: [String: String]
    private let logger: Logger
    private let state: Mutex<State>
    private let launches: AsyncStream<ChildProcess>
    private let launch: AsyncStream<ChildProcess>.Continuation

    /// How often time-driven decisions (wait timeouts, backoff, `max_idle_s`) are checked.
    static let tickInterval: Duration = .milliseconds(50)

    private struct State: ~Copyable {
        var config: PoolConfig
        var machine: PoolStateMachine
        var processes: [SpareID: ChildProcess] = [:]
        var waiters: [WaiterID: CheckedContinuation<(SpareID, StartKind), any Error>] = [:]
        /// Outcomes that arrived before their waiter registered its continuation.
        var early: [WaiterID: Result<(SpareID, StartKind), PrewarmError>] = [:]
        var startupMillis = Histogram<UInt64>(highestTrackableValue: 3_600_000, numberOfSignificantValueDigits: .three)
        var emptyWaiters: [CheckedContinuation<Void, Never>] = []
        /// What a spare costs at readiness, and a turn at its peak (measured, else configured).
        var spareCost: PeakEstimator
        var turnPeak: PeakEstimator
        /// Spares already measured at readiness.
        var measuredReady: Set<SpareID> = []
        /// The highest reading of each busy process so far, and its group's members.
        var busyPeaks: [SpareID: Int] = [:]
        var members: [SpareID: [Int32]] = [:]
        /// Settings of processes started for one turn (cold starts with their own session).
        var launches: [SpareID: PoolConfig] = [:]
        /// Each process's life so far, for the journal.
        var lives: [SpareID: Life] = [:]
        /// The configuration as the file gives it (`config` may differ: a CLI without
        /// `--await-claim`, a size set at run time).
        var configured: PoolConfig
        /// The spares set by `resize` since the last (re)load, if any.
        var runtimeSpares: Int?
        /// The command file as it was when the pool's current spares were started.
        var commandFile: FileIdentity?
        /// Turns admitted in the last minute, per caller uid (`max_turns_per_minute`).
        var recentTurns: [UInt32: [ContinuousClock.Instant]] = [:]

        var costs: MemoryCosts { MemoryCosts(spare: spareCost.value, turn: turnPeak.value) }
    }

    /// A process's life, as the journal records it.
    struct Life {
        var spawned = Date()
        var started = ContinuousClock.now
        var pid: Int?
        var readyMs: Double?
        var pssReady: Int?
        var rssReady: Int?
        var peak: Int?
    }

    public init(
        config: PoolConfig, keeper: ProcessGroupKeeper?, governor: MemoryGovernor? = nil, telemetry: Telemetry? = nil,
        environment: [String: String], logger: Logger
    ) {
        self.name = config.name
        self.keeper = keeper
        self.governor = governor
        self.telemetry = telemetry
        self.environment = environment
        var logger = logger
        logger[metadataKey: "pool.name"] = "\(config.name)"
        self.logger = logger
        var settings = config.machineSettings
        settings.costs = MemoryCosts(spare: config.spareBytes, turn: config.turnBytes)
        self.state = Mutex(
            State(
                config: config,
                machine: PoolStateMachine(settings: settings),
                spareCost: PeakEstimator(configured: config.spareBytes),
                turnPeak: PeakEstimator(configured: config.turnBytes),
                configured: config,
                commandFile: FileIdentity(path: config.executable)
            )
        )
        (self.launches, self.launch) = AsyncStream.makeStream(of: ChildProcess.self)
    }

    public var config: PoolConfig { state.withLock { $0.config } }

    /// Runs one step of the state machine: under the memory ledger's lock when memory is
    /// governed (the room in, the pool's charge out), else under the pool's own.
    private func mutate<R>(_ body: (inout State) -> R) -> R {
        guard let governor else { return state.withLock { body(&$0) } }
        return governor.transact(pool: name) { room, pressure in
            state.withLock { state in
                state.machine.room = room
                state.machine.pressure = pressure
                let result = body(&state)
                return (result, state.machine.chargedBytes)
            }
        }
    }

    // MARK: - Running

    /// Runs the pool's processes until `shutdown()`; cancellation kills them.
    public func run() async {
        if config.spareNice > 0, !StartupPriority.canRestore {
            logger.notice(
                "spares start at the daemon's CPU priority: spare_nice needs CAP_SYS_NICE to give a spare its priority back when a turn takes it",
                metadata: ["pool.spare_nice": "\(config.spareNice)"]
            )
        }
        await prepareClaude()
        perform(mutate { $0.machine.start(now: .now) })
        await withDiscardingTaskGroup { group in
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: Self.tickInterval)
                    self.perform(self.mutate { $0.machine.tick(now: .now) })
                }
            }
            for await process in launches {
                group.addTask { await process.run(delegate: self) }
            }
            group.cancelAll()
        }
    }

    /// A claude pool's directories, and whether its CLI knows `--await-claim`.
    private func prepareClaude() async {
        let config = self.config
        let prepared = await prepared(config)
        guard prepared != config else { return }
        state.withLock { $0.config = prepared }
    }

    /// `config` made ready to run: a claude pool's directories created, and, when its CLI does
    /// not know `--await-claim`, its spares bound to the pool's session (they then serve only
    /// turns that share it).
    private func prepared(_ config: PoolConfig) async -> PoolConfig {
        guard let claude = config.claude else { return config }
        for directory in [claude.configDirectory, claude.parkingDirectory] {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                logger.error("cannot create \(directory): \(error.localizedDescription)")
            }
        }
        guard claude.claim else { return config }
        let supported = await ClaudeProbe.knowsAwaitClaim(executable: config.executable, environment: config.childEnvironment(from: environment))
        guard !supported else { return config }
        logger.warning(
            "the CLI does not know --await-claim: spares start bound to the pool's session; turns with other settings start cold",
            metadata: ["pool.command": "\(config.executable)"]
        )
        var bound = config
        bound.claude?.claimSupported = false
        bound.args = claude.arguments(for: claude.session)
        bound.cwd = claude.session.cwd
        return bound
    }

    // MARK: - Changes at run time

    /// Replaces every idle spare (and start-up under way) with one started now: after a CLI
    /// upgrade or a credential rotation. Busy turns go on. Returns the spares recycled.
    @discardableResult
    public func recycle(reason: String) -> Int {
        let (recycled, actions) = mutate { state in
            state.commandFile = FileIdentity(path: state.config.executable)
            return state.machine.recycle(now: .now)
        }
        perform(actions)
        logger.info("spares recycled", metadata: ["reason": "\(reason)", "pool.recycled": "\(recycled)"])
        return recycled
    }

    /// True when the command file is not the one the spares were started from (a CLI
    /// upgrade). A missing file (mid-upgrade) is not a change yet.
    func commandFileChanged() -> Bool {
        let (path, known) = state.withLock { ($0.config.executable, $0.commandFile) }
        guard let current = FileIdentity(path: path) else { return false }
        return current != known
    }

    /// What a reload did to this pool.
    public enum Reload: Sendable, Equatable {
        case unchanged
        /// Only the size set at run time went back to the file's.
        case sizeRestored(from: Int, to: Int)
        /// New settings; the idle spares were recycled.
        case changed(recycled: Int)
    }

    /// Applies a reloaded `[[pool]]`: a changed pool gets its new settings and new spares
    /// (busy turns go on as they were); an unchanged one only loses a size set at run time.
    public func reload(_ config: PoolConfig) async -> Reload {
        let (configured, runtime) = state.withLock { ($0.configured, $0.runtimeSpares) }
        if config == configured {
            guard let runtime, runtime != config.spares else {
                state.withLock { $0.runtimeSpares = nil }
                return .unchanged
            }
            resize(spares: config.spares, atRunTime: false)
            return .sizeRestored(from: runtime, to: config.spares)
        }
        let prepared = await prepared(config)
        let (recycled, actions) = mutate { state in
            state.configured = config
            state.config = prepared
            state.runtimeSpares = nil
            state.commandFile = FileIdentity(path: prepared.executable)
            var settings = prepared.machineSettings
            settings.costs = state.machine.settings.costs
            return state.machine.reconfigure(settings, now: .now)
        }
        perform(actions)
        return .changed(recycled: recycled)
    }

    /// Counts a turn against `max_turns_per_minute` for its caller; 429 `rate_limited` with
    /// Retry-After when the caller has used the minute's turns.
    public func admit(caller uid: UInt32?) throws(PrewarmError) {
        let now = ContinuousClock.now
        let refusal = state.withLock { state -> (limit: Int, retryAfter: Int)? in
            guard let limit = state.config.maxTurnsPerMinute else { return nil }
            let key = uid ?? UInt32.max
            var times = state.recentTurns[key] ?? []
            while let first = times.first, first.duration(to: now) >= .seconds(60) { times.removeFirst() }
            defer { state.recentTurns[key] = times.isEmpty ? nil : times }
            guard times.count < limit else {
                let left = now.duration(to: times[0] + .seconds(60))
                return (limit, max(1, Int((left.milliseconds / 1000).rounded(.up))))
            }
            times.append(now)
            return nil
        }
        if let refusal {
            throw PrewarmError(
                .rateLimited,
                "uid \(uid.map(String.init) ?? "unknown") has used pool \(name)'s \(refusal.limit) turns a minute (max_turns_per_minute); retry after \(refusal.retryAfter) s",
                retryAfter: refusal.retryAfter
            )
        }
    }

    /// Stops taking turns; idle spares and start-ups are retired, busy turns go on.
    public func drain() {
        perform(mutate { $0.machine.drain(now: .now) })
    }

    /// Retires every process, busy or not (the end of a drain).
    public func retireAll() {
        let processes = state.withLock { Array($0.processes.values) }
        for process in processes { process.retire() }
    }

    /// Waits until no process is left, or `timeout` passes; true if none is left.
    public func waitUntilEmpty(timeout: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let empty = self.state.withLock { state -> Bool in
                        if state.processes.isEmpty { return true }
                        state.emptyWaiters.append(continuation)
                        return false
                    }
                    if empty { continuation.resume() }
                }
                return true
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next()!
            if !first {
                // Release the waiter that will never be resumed otherwise.
                let waiters = state.withLock { state in
                    defer { state.emptyWaiters.removeAll() }
                    return state.emptyWaiters
                }
                for waiter in waiters { waiter.resume() }
            }
            group.cancelAll()
            return first && state.withLock { $0.processes.isEmpty }
        }
    }

    /// Ends `run()` once the processes are gone.
    public func stopLaunching() {
        launch.finish()
    }

    /// Sets the spares target at run time (until the next reload).
    public func resize(spares: Int) {
        resize(spares: spares, atRunTime: true)
    }

    private func resize(spares: Int, atRunTime: Bool) {
        perform(
            mutate { state in
                state.config.spares = spares
                state.runtimeSpares = atRunTime ? spares : nil
                return state.machine.resize(spares: spares, maxProcesses: state.config.maxProcesses, now: .now)
            }
        )
        if atRunTime { logger.info("pool resized; the size lasts until the next reload", metadata: ["pool.spares": "\(spares)"]) }
    }

    // MARK: - Turns

    /// Where a turn's process comes from.
    public enum Launch: Sendable {
        /// One of the pool's spares (or a process started the pool's way).
        case spare
        /// A process started for this turn alone, with these settings (a session no spare
        /// can serve, a resume): always cold.
        case cold(PoolConfig)
    }

    /// Gets exactly one process for `turn` and binds it to the turn; the process's stdout
    /// flows into `turn.output` from then on. A turn with a claim returns once the CLI has
    /// accepted it (else `claim_refused`, and the spare is retired).
    public func acquire(_ turn: Turn, launch: Launch = .spare) async throws(PrewarmError) -> Lease {
        let arrived = ContinuousClock.now
        while true {
            let (spare, kind) = try await obtain(launch)
            let process = state.withLock { $0.processes[spare] }
            if let process, process.claim(turn) {
                if turn.claim != nil, case .refused(let reason, let message) = await turn.claimOutcome() {
                    throw PrewarmError(.claimRefused, "the CLI refused to bind a spare of pool \(name) to this session: \(message)", reason: reason)
                }
                return Lease(pool: name, spare: spare, pid: process.pid ?? 0, startKind: kind, waited: arrived.duration(to: .now), process: process)
            }
            // It died between readiness and the claim: it is being replaced; ask again.
            logger.debug("spare gone before its claim; asking again", metadata: ["process.spare": "\(spare)"])
        }
    }

    private func obtain(_ launch: Launch) async throws(PrewarmError) -> (SpareID, StartKind) {
        let (decision, actions, shortfall) = mutate { state -> (PoolStateMachine.TurnDecision, [PoolStateMachine.Action], Int?) in
            let (decision, actions): (PoolStateMachine.TurnDecision, [PoolStateMachine.Action])
            switch launch {
            case .spare:
                (decision, actions) = state.machine.turnArrived(now: .now)
            case .cold(let config):
                (decision, actions) = state.machine.coldTurnArrived(now: .now)
                // The process started for this turn gets the turn's settings.
                if case .wait(let waiter) = decision {
                    for case .start(let spare) in actions where state.machine.owner(of: spare) == waiter {
                        state.launches[spare] = config
                    }
                }
            }
            // Short of memory: the other pools' idle spares make room for this turn. (A warm
            // take needs no room, and does not pay for the check.)
            if case .take = decision { return (decision, actions, nil) }
            let turn = state.machine.settings.costs?.turn ?? 0
            let short = state.machine.room != nil && !state.machine.fits(turn)
            return (decision, actions, short ? turn : nil)
        }
        perform(actions)
        if let shortfall { governor?.requestRoom(shortfall, for: name) }
        switch decision {
        case .take(let spare):
            return (spare, .warm)
        case .reject(let reason):
            throw error(for: reason)
        case .wait(let waiter):
            if case .spare = launch {
                // The first spare ready is this turn's: none of them is in the background now.
                for process in state.withLock({ Array($0.processes.values) }) where process.currentPhase == .starting {
                    process.raisePriority()
                }
            }
            do {
                return try await withTaskCancellationHandler {
                    try await withCheckedThrowingContinuation { continuation in
                        let early = state.withLock { state -> Result<(SpareID, StartKind), PrewarmError>? in
                            if let early = state.early.removeValue(forKey: waiter) { return early }
                            state.waiters[waiter] = continuation
                            return nil
                        }
                        if let early { continuation.resume(with: early.mapError { $0 as any Error }) }
                    }
                } onCancel: {
                    self.cancelWait(waiter)
                }
            } catch let error as PrewarmError {
                throw error
            } catch {
                throw PrewarmError(.internal, "the wait for a spare was cancelled")
            }
        }
    }

    private func cancelWait(_ waiter: WaiterID) {
        let (continuation, actions) = mutate { state in
            let continuation = state.waiters.removeValue(forKey: waiter)
            state.early[waiter] = nil
            return (continuation, state.machine.waiterCancelled(waiter, now: .now))
        }
        continuation?.resume(throwing: CancellationError())
        perform(actions)
    }

    private func error(for reason: RejectReason) -> PrewarmError {
        switch reason {
        case .noCapacity:
            return PrewarmError(.noCapacity, "pool \(name) has no idle spare and no room to wait or start one; retry later or raise spares", retryAfter: 1)
        case .waitTimeout:
            let waited = state.withLock { $0.config.waitTimeout.wholeMilliseconds }
            return PrewarmError(.waitTimeout, "pool \(name) had no spare within \(waited) ms (wait_timeout_ms); retry later or raise spares", retryAfter: 1)
        case .poolFailing:
            let last = state.withLock { $0.machine.lastError } ?? "unknown"
            return PrewarmError(.poolFailing, "pool \(name) is failing: its start-ups keep failing (last: \(last)); see prewarm status")
        case .draining:
            return PrewarmError(.draining, "the daemon is shutting down; retry on another instance or after the restart")
        case .startFailed(let why):
            return PrewarmError(.startFailed, "the process started for this turn failed: \(why)")
        case .memoryExhausted:
            let (costs, pressure) = state.withLock { ($0.costs, $0.machine.pressure) }
            let why =
                pressure
                ? "the cgroup is above its high watermark (memory pressure)"
                : "its peak (\(costs.turn >> 20) MiB) does not fit in the memory budget next to the turns running"
            return PrewarmError(
                .memoryExhausted,
                "pool \(name) cannot take this turn now: \(why); retry later, or see GET /v1/memory and prewarm size",
                retryAfter: 1
            )
        }
    }

    // MARK: - Performing the machine's actions

    private func perform(_ actions: [PoolStateMachine.Action]) {
        for action in actions {
            switch action {
            case .start(let spare):
                let process = state.withLock { state in
                    let config = state.launches.removeValue(forKey: spare) ?? state.config
                    // A spare boots below the turns' CPU priority, unless a turn waits already
                    // (queued, or the one a cold start is for: both are counted as waiting).
                    let background = state.machine.waitingCount == 0
                    let process = ChildProcess(
                        id: spare, config: config, environment: environment, keeper: keeper,
                        niceOffset: background ? StartupPriority.effectiveSpareNice(config.spareNice) : 0, logger: logger
                    )
                    state.processes[spare] = process
                    state.lives[spare] = Life()
                    return process
                }
                launch.yield(process)
            case .retire(let spare):
                state.withLock { $0.processes[spare] }?.retire()
            case .deliver(let waiter, let spare, let kind):
                resolve(waiter, .success((spare, kind)))
            case .reject(let waiter, let reason):
                resolve(waiter, .failure(error(for: reason)))
            }
        }
    }

    private func resolve(_ waiter: WaiterID, _ result: Result<(SpareID, StartKind), PrewarmError>) {
        let continuation = state.withLock { state -> CheckedContinuation<(SpareID, StartKind), any Error>? in
            guard let continuation = state.waiters.removeValue(forKey: waiter) else {
                state.early[waiter] = result
                return nil
            }
            return continuation
        }
        continuation?.resume(with: result.mapError { $0 as any Error })
    }

    // MARK: - Memory

    var idleCount: Int { state.withLock { $0.machine.idleCount } }

    /// Measures the processes (`groups`: process group -> members, from one /proc scan):
    /// a spare once at readiness, a busy process on every sample (its peak is kept until
    /// the turn ends). A process's cost includes its group: MCP servers, tools. With `all`,
    /// every process is read, and the sum returned (the pools' own usage).
    @discardableResult
    func sampleMemory(groups: [Int32: [Int32]], root: SystemRoot, all: Bool = false) -> Int {
        let targets = state.withLock { state in
            state.processes.compactMap { id, process -> (SpareID, Int32, busy: Bool)? in
                guard let pid = process.pid else { return nil }
                switch state.machine.processes[id] {
                case .idle where !state.measuredReady.contains(id): return (id, pid, false)
                case .busy: return (id, pid, true)
                default: return all ? (id, pid, false) : nil
                }
            }
        }
        guard !targets.isEmpty else { return 0 }
        var readings: [(SpareID, Int, busy: Bool, members: [Int32], reading: ProcessMemoryReading)] = []
        for (id, pid, busy) in targets {
            guard let reading = ProcessMemory.group(pid, groups: groups, root: root) else { continue }
            readings.append((id, Int(clamping: reading.cost), busy, groups[pid] ?? [pid], reading))
        }
        perform(
            mutate { state in
                let before = state.costs
                for (id, bytes, busy, members, reading) in readings {
                    state.members[id] = members
                    if busy {
                        state.busyPeaks[id] = max(state.busyPeaks[id] ?? 0, bytes)
                    } else if case .idle = state.machine.processes[id], state.measuredReady.insert(id).inserted {
                        state.spareCost.record(bytes)
                        state.lives[id]?.pssReady = reading.pss.map { Int(clamping: $0) }
                        state.lives[id]?.rssReady = Int(clamping: reading.rss)
                    }
                }
                return state.costs == before ? [] : state.machine.setCosts(state.costs, now: .now)
            }
        )
        return readings.reduce(0) { $0 + $1.1 }
    }

    /// Retires idle spares, oldest first, until `bytes` are freed; returns the bytes freed.
    func shedIdle(upTo bytes: Int) -> Int {
        let (freed, actions) = mutate { $0.machine.shedIdle(upTo: bytes, now: .now) }
        perform(actions)
        if freed > 0 { logger.info("idle spares shed for memory", metadata: ["memory.freed_mib": "\(freed >> 20)"]) }
        return freed
    }

    public func memoryStatus() -> MemoryStatus.PoolMemory {
        mutate { state in
            MemoryStatus.PoolMemory(
                name: name,
                spareBytes: state.spareCost.value,
                turnPeakBytes: state.turnPeak.value,
                measured: state.spareCost.measured && state.turnPeak.measured,
                spareMeasured: state.spareCost.measured,
                turnMeasured: state.turnPeak.measured,
                charged: state.machine.chargedBytes,
                maxProcesses: state.machine.memoryMaxProcesses,
                spares: state.config.spares,
                effectiveSpares: state.machine.effectiveSpares,
                shed: state.machine.counters.shed
            )
        }
    }

    // MARK: - Status

    public func status() -> PoolStatus {
        mutate { state in
            let machine = state.machine
            let hasSamples = state.startupMillis.totalCount > 0
            return PoolStatus(
                name: name,
                idle: machine.idleCount,
                starting: machine.startingCount,
                busy: machine.busyCount,
                waiting: machine.waitingCount,
                targetSpares: state.config.spares,
                effectiveSpares: machine.effectiveSpares,
                maxProcesses: machine.memoryMaxProcesses,
                served: machine.counters.served,
                warm: machine.counters.warm,
                waited: machine.counters.waited,
                cold: machine.counters.cold,
                rejected: machine.counters.rejected,
                startFailures: machine.counters.startFailures,
                recycled: machine.counters.recycled,
                shed: machine.counters.shed,
                spawnMs: hasSamples
                    ? .init(p50: Int(state.startupMillis.valueAtPercentile(50)), p99: Int(state.startupMillis.valueAtPercentile(99)))
                    : .init(p50: nil, p99: nil),
                failing: machine.failing,
                lastError: machine.lastError,
                pids: state.processes.values.compactMap(\.pid).map(Int.init).sorted(),
                kind: state.config.kind.rawValue,
                claim: state.config.claude.map { $0.claim ? ($0.claimSupported ? "on" : "unsupported") : "off" },
                spareNice: StartupPriority.effectiveSpareNice(state.config.spareNice)
            )
        }
    }
}

extension Pool: ChildProcessDelegate {
    func processReady(_ id: SpareID, pid: pid_t, startup: Duration) {
        perform(
            mutate { state in
                _ = state.startupMillis.record(UInt64(max(0, startup.wholeMilliseconds)))
                state.lives[id]?.pid = Int(pid)
                state.lives[id]?.readyMs = startup.milliseconds
                return state.machine.processReady(id, now: .now)
            }
        )
        telemetry?.startupReady(pool: name, duration: startup)
        // The journal's reading at readiness, of the process itself (the memory sampler's
        // reading of its whole group replaces it if the spare stays idle long enough).
        if telemetry?.journal != nil, let reading = ProcessMemory.read(pid: pid) {
            state.withLock { state in
                guard state.lives[id]?.rssReady == nil else { return }
                state.lives[id]?.pssReady = reading.pss.map { Int(clamping: $0) }
                state.lives[id]?.rssReady = Int(clamping: reading.rss)
            }
        }
    }

    func processStartFailed(_ id: SpareID, reason: String) {
        perform(mutate { $0.machine.startFailed(id, reason: reason, now: .now) })
    }

    func processExited(_ id: SpareID, reason: String) {
        logger.warning("spare exited while idle", metadata: ["process.spare": "\(id)", "reason": "\(reason)"])
        perform(mutate { $0.machine.processExited(id, reason: reason, now: .now) })
    }

    func processTurnEnded(_ id: SpareID) {
        perform(mutate { $0.machine.turnEnded(id, now: .now) })
    }

    func processTurnAnswered(_ id: SpareID) {
        // The turn's last reading, taken once its client has the answer and before the
        // process is stopped: its group's members as last seen.
        let (pid, members) = state.withLock { ($0.processes[id]?.pid, $0.members[id]) }
        var final = 0
        if let pid {
            final = (members ?? [pid]).compactMap { ProcessMemory.read(pid: $0) }.reduce(0) { $0 + Int(clamping: $1.cost) }
        }
        perform(
            mutate { state in
                let peak = max(state.busyPeaks.removeValue(forKey: id) ?? 0, final)
                guard peak > 0 else { return [] }
                state.turnPeak.record(peak)
                state.lives[id]?.peak = peak
                return state.machine.setCosts(state.costs, now: .now)
            }
        )
    }

    func processGone(_ id: SpareID, exit: String) {
        let (actions, emptyWaiters, life) = mutate { state in
            let life = state.lives.removeValue(forKey: id)
            state.processes[id] = nil
            state.measuredReady.remove(id)
            state.busyPeaks[id] = nil
            state.members[id] = nil
            let actions = state.machine.processGone(id, now: .now)
            guard state.processes.isEmpty else { return (actions, [CheckedContinuation<Void, Never>](), life) }
            defer { state.emptyWaiters.removeAll() }
            return (actions, state.emptyWaiters, life)
        }
        perform(actions)
        // Recorded before the pool is reported empty: a drain waits for that, then the journal
        // writes its last records.
        if let life, let telemetry {
            telemetry.processEnded(
                StartupRecord(
                    time: life.spawned, pool: name, pid: life.pid, readyMs: life.readyMs, pssReady: life.pssReady, rssReady: life.rssReady,
                    peakBytes: life.peak, exitReason: exit, lifetimeMs: life.started.duration(to: .now).milliseconds
                )
            )
        }
        for waiter in emptyWaiters { waiter.resume() }
    }
}

/// One process, bound to one turn. The holder must see the turn through (read its output
/// to the end, or report the client gone).
public struct Lease: Sendable {
    public let pool: String
    public let spare: SpareID
    public let pid: pid_t
    public let startKind: StartKind
    /// From the turn's arrival to the hand-over.
    public let waited: Duration
    let process: ChildProcess

    /// The client went away: kill the process at once.
    public func clientGone() {
        process.clientGone()
    }
}
