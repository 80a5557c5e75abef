#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Histogram
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A pool at run time: the state machine behind a lock, and the thin code that performs its
/// actions (spawn, retire, hand over, refuse, arm timers).
///
/// One owner for everything that lives: every process is run by one child task of `run()`
/// for its whole life, and the machine's timers by one more (`PoolTimers`). Turns call
/// `acquire` (Pool+Turns), which returns a `Lease` on exactly one process, or throws a
/// `PrewarmError`. Every event goes into the machine under the lock; the actions it returns
/// are performed, and continuations resumed, after the lock is released.
///
/// Lock order: the memory ledger's (when memory is governed), then the pool's. The pool
/// never calls the governor while it holds its own lock, and the governor calls the pool
/// only outside its ledger's lock.
public final class Pool: Sendable {
    public let name: String
    /// The pool's identity for the daemon's life: what the memory ledger is keyed by (a pool
    /// made again under a removed one's name is another pool).
    public let serial: UInt64
    private static let serials = Atomic<UInt64>(1)
    let keeper: ProcessGroupKeeper?
    let governor: MemoryGovernor?
    let telemetry: Telemetry?
    let environment: [String: String]
    let logger: Logger
    let state: Mutex<State>
    let timers = PoolTimers()
    /// Names the turns that ask for a process, so a turn can be cancelled by its name even
    /// before the machine has answered it.
    private let nextWaiter = Atomic<UInt64>(1)
    private let launches: AsyncStream<any PoolProcess>
    private let launch: AsyncStream<any PoolProcess>.Continuation
    /// An auto pool's evaluations, replayed one at a time by a task of `run()`.
    private let sizingRequests: AsyncStream<SizingSnapshot>
    private let sizingRequest: AsyncStream<SizingSnapshot>.Continuation
    private let makeProcess: ProcessFactory

    /// Makes the process a start-up runs: its id, its settings, and how much lower than the
    /// daemon's its CPU priority starts.
    typealias ProcessFactory = @Sendable (_ id: SpareID, _ config: PoolConfig, _ niceOffset: Int) -> any PoolProcess

    struct State: ~Copyable {
        var config: PoolConfig
        var machine: PoolStateMachine
        var processes: [SpareID: any PoolProcess] = [:]
        /// The turns waiting for a process: each waiter's continuation, stored in the same
        /// locked step as the machine queues it.
        var waiters: [WaiterID: CheckedContinuation<(SpareID, StartKind), any Error>] = [:]
        var startupMillis = Histogram<UInt64>(highestTrackableValue: 3_600_000, numberOfSignificantValueDigits: .three)
        var emptyWaiters: [CheckedContinuation<Void, Never>] = []
        /// A fingerprint pool taken out of routing (`close`).
        var closing = false
        /// What a spare costs at readiness, and a turn at its peak (measured, else configured).
        var spareCost: PeakEstimator
        var turnPeak: PeakEstimator
        /// Spares already measured at readiness.
        var measuredReady: Set<SpareID> = []
        /// The highest reading of each busy process so far, and its group's members.
        var busyPeaks: [SpareID: Int] = [:]
        /// Each busy process's last full reading (`Pool.sampleMemory`): its group's resident
        /// bytes then (statm) and what it cost.
        var lastWalks: [SpareID: (resident: UInt64, cost: Int)] = [:]
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
        /// `max_turns_per_minute`.
        var rateLimiter = TurnRateLimiter()
        /// A claude pool's profile for drop-in runs, for the configuration it was made from
        /// (the pool's arguments parsed once, not once per run).
        var runProfile: (config: PoolConfig, profile: RunProfile?)?
        /// Resume spares' transcripts (Pool+Resume).
        var resumeFiles: [SpareID: ResumeSpareFile] = [:]
        /// Universal spares' sockets (Pool+Universal).
        var universals: [SpareID: UniversalSpare.Endpoint] = [:]
        /// The settings a universal spare handed to a turn is claimed with.
        var universalRuns: [SpareID: PoolConfig] = [:]
        /// The settings of resume spares wanted, until they start.
        var resumeLaunches: [ResumeKey: (config: PoolConfig, transcript: String, before: FileIdentity?)] = [:]
        /// Drop-in runs admitted, by how prewarm-claude came to be run (Pool+RunsVia).
        var runsVia: [String: Int] = [:]
        /// `claim_ahead`: what the pool's turns claim, and what came of spares claimed ahead.
        var claimAhead = ClaimAheadPlanner()

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

    public convenience init(
        config: PoolConfig, keeper: ProcessGroupKeeper?, governor: MemoryGovernor? = nil, telemetry: Telemetry? = nil,
        environment: [String: String], logger: Logger
    ) {
        self.init(config: config, keeper: keeper, governor: governor, telemetry: telemetry, environment: environment, logger: logger, makeProcess: nil)
    }

    /// `makeProcess`: the processes it runs (nil: real ones, `ChildProcess`).
    init(
        config: PoolConfig, keeper: ProcessGroupKeeper?, governor: MemoryGovernor? = nil, telemetry: Telemetry? = nil,
        environment: [String: String], logger: Logger, makeProcess: ProcessFactory?
    ) {
        self.name = config.name
        self.serial = Self.serials.wrappingAdd(1, ordering: .relaxed).oldValue
        self.keeper = keeper
        self.governor = governor
        self.telemetry = telemetry
        self.environment = environment
        var logger = logger
        logger[metadataKey: "pool.name"] = "\(config.name)"
        self.logger = logger
        var settings = config.machineSettings
        settings.costs = MemoryCosts(spare: config.spareBytes, turn: config.turnBytes)
        if settings.autoSizing != nil {
            logger.info("the pool sizes itself (spares = \"auto\")", metadata: ["pool.min_spares": "\(config.spares)", "pool.max_processes": "\(config.maxProcesses)"])
        }
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
        (self.launches, self.launch) = AsyncStream.makeStream(of: (any PoolProcess).self)
        // Only the newest snapshot matters: one asked for while a replay runs replaces the last.
        (self.sizingRequests, self.sizingRequest) = AsyncStream.makeStream(of: SizingSnapshot.self, bufferingPolicy: .bufferingNewest(1))
        self.makeProcess =
            makeProcess ?? { [environment, keeper, logger] id, config, niceOffset in
                ChildProcess(id: id, config: config, environment: environment, keeper: keeper, niceOffset: niceOffset, logger: logger)
            }
    }

    public var config: PoolConfig { state.withLock { $0.config } }

    /// What a drop-in run is matched against, the spares idle now, and the pool's settings
    /// (one locked read on the request path); nil for a pool that is not a claude pool, or a
    /// fingerprint pool closing.
    func runCandidate() -> (profile: RunProfile, idle: Int, config: PoolConfig)? {
        state.withLock { state in
            // A fingerprint pool closing takes no new runs.
            if state.closing { return nil }
            if state.runProfile?.config != state.config {
                state.runProfile = (state.config, RunProfile(config: state.config, daemonEnvironment: environment))
            }
            return state.runProfile?.profile.map { ($0, state.machine.idleCount, state.config) }
        }
    }

    /// A fresh name for a turn that asks for a process.
    func makeWaiterID() -> WaiterID {
        WaiterID(nextWaiter.wrappingAdd(1, ordering: .relaxed).oldValue)
    }

    /// Runs one step of the state machine: under the memory ledger's lock when memory is
    /// governed (the room in, the pool's charge out), else under the pool's own.
    func mutate<R>(_ body: (inout State) -> R) -> R {
        guard let governor else { return state.withLock { body(&$0) } }
        return governor.transact(pool: serial) { room, pressure, reclaimable in
            state.withLock { state in
                state.machine.room = room
                state.machine.pressure = pressure
                state.machine.reclaimable = reclaimable
                let result = body(&state)
                return (result, state.machine.chargedBytes, state.machine.sheddableBytes)
            }
        }
    }

    // MARK: - Running

    /// Runs the pool's processes and timers until `stopLaunching()`; cancellation kills them.
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
                await self.timers.run { timer in
                    self.perform(self.mutate { $0.machine.timerFired(timer, now: .now) })
                }
            }
            group.addTask {
                for await snapshot in self.sizingRequests {
                    let decision = await Self.replay(snapshot)
                    self.perform(self.mutate { $0.machine.sizingReplayed(decision, now: .now) })
                }
            }
            for await process in launches {
                group.addTask { await process.run(delegate: self) }
            }
            group.cancelAll()
        }
    }

    /// Ends `run()` once the processes are gone.
    public func stopLaunching() {
        launch.finish()
        sizingRequest.finish()
    }

    /// An auto pool's evaluation, on a thread of NIO's pool: it replays minutes of traffic
    /// several times over, which must hold neither the pool's lock nor a thread of the
    /// cooperative pool the turns run on.
    static func replay(_ snapshot: SizingSnapshot) async -> SizingDecision {
        (try? await NIOThreadPool.singleton.runIfActive { SizingReplay.decide(snapshot) }) ?? SizingReplay.decide(snapshot)
    }

    // MARK: - Performing the machine's actions

    /// Performs the machine's actions; called with no lock held.
    func perform(_ actions: [PoolStateMachine.Action]) {
        for action in actions {
            switch action {
            case .start(let spare):
                let (process, failure) = state.withLock { state -> ((any PoolProcess)?, String?) in
                    var config: PoolConfig
                    if let launch = state.launches.removeValue(forKey: spare) {
                        config = launch
                    } else if state.machine.resumeKey(of: spare) != nil {
                        // A resume spare starts with its session's settings, or not at all.
                        guard let resume = Self.takeResumeLaunch(&state, spare: spare) else { return (nil, "a resume spare's settings are gone") }
                        config = resume
                    } else if state.machine.isUniversal(spare) {
                        do throws(PrewarmError) {
                            config = try Self.universalLaunch(&state, spare: spare)
                        } catch {
                            return (nil, error.message)
                        }
                    } else {
                        config = state.config
                        // A spare for no turn in particular, in a pool whose turns repeat one claim.
                        if state.machine.waitingCount == 0, let ahead = state.claimAhead.plan {
                            config.aheadClaim = ahead
                            config.retireAtOnce = true  // never let an unused claimed CLI exit on its own
                        }
                    }
                    // A spare boots below the turns' CPU priority, unless a turn waits already
                    // (queued, or the one a cold start is for: both are counted as waiting).
                    let background = state.machine.waitingCount == 0
                    let process = makeProcess(spare, config, background ? StartupPriority.effectiveSpareNice(config.spareNice) : 0)
                    state.processes[spare] = process
                    state.lives[spare] = Life()
                    return (process, nil)
                }
                guard let process else {
                    perform(mutate { $0.machine.startFailed(spare, reason: failure ?? "no settings", now: .now) })
                    continue
                }
                launch.yield(process)
            case .retire(let spare):
                state.withLock { $0.processes[spare] }?.retire()
            case .deliver(let waiter, let spare, let kind):
                resolve(waiter, .success((spare, kind)), spare: spare)
            case .reject(let waiter, let reason):
                resolve(waiter, .failure(error(for: reason)), spare: nil)
            case .schedule(let timer, let at):
                timers.schedule(timer, at: at)
            case .cancelTimer(let timer):
                timers.cancel(timer)
            case .replaySizing(let snapshot):
                sizingRequest.yield(snapshot)
            case .sizingChanged(let change):
                sizingChanged(change)
            }
        }
    }

    /// Resumes a waiting turn. A process delivered to a turn that is no longer there (it
    /// was cancelled in between) is retired unused.
    private func resolve(_ waiter: WaiterID, _ result: Result<(SpareID, StartKind), PrewarmError>, spare: SpareID?) {
        let continuation = state.withLock { $0.waiters.removeValue(forKey: waiter) }
        if let continuation {
            continuation.resume(with: result.mapError { $0 as any Error })
        } else if let spare {
            abandon(spare)
        }
    }

    /// A process handed to a turn that will not use it: retired, never handed to another.
    func abandon(_ spare: SpareID) {
        perform(mutate { $0.machine.leaseAbandoned(spare, now: .now) })
    }

    func error(for reason: RejectReason) -> PrewarmError {
        switch reason {
        case .noCapacity:
            // Which limit: the operator's (key and value), or no spare where the pool refuses.
            let (config, machine) = state.withLock { ($0.config, $0.machine) }
            let why: String
            if machine.queue.count >= config.maxWaiting ?? Int.max {
                why = "max_waiting = \(config.maxWaiting ?? 0) turns wait already; raise max_waiting"
            } else if machine.totalCount >= machine.settings.maxProcesses {
                why = "it holds max_processes = \(machine.settings.maxProcesses) processes (\(machine.busyCount) busy); raise max_processes, or remove it to be limited by memory alone"
            } else if config.whenEmpty == .reject {
                why = "no spare is idle and when_empty = \"reject\"; raise spares or set when_empty = \"wait\""
            } else {
                why = "no spare is idle and none can start now; raise spares"
            }
            return PrewarmError(.noCapacity, "pool \(name) cannot take this turn: \(why)", retryAfter: 1)
        case .waitTimeout:
            let waited = state.withLock { $0.config.waitTimeout?.wholeMilliseconds ?? 0 }
            return PrewarmError(.waitTimeout, "pool \(name) had no spare within wait_timeout_ms = \(waited); retry later, raise spares or wait_timeout_ms", retryAfter: 1)
        case .poolFailing:
            let last = state.withLock { $0.machine.lastError } ?? "unknown"
            return PrewarmError(.poolFailing, "pool \(name) is failing: its start-ups keep failing (last: \(last)); see prewarm status")
        case .draining:
            return PrewarmError(.draining, "the daemon is shutting down; retry on another instance or after the restart")
        case .startFailed(let why):
            return PrewarmError(.startFailed, "the process started for this turn failed: \(why)")
        case .memoryExhausted:
            let (costs, pressure, busy, charged) = state.withLock { ($0.costs, $0.machine.pressure, $0.machine.busyCount, $0.machine.chargedBytes) }
            let figures = governor?.figures
            let budget = figures.map { ", budget \($0.budget >> 20) MiB, \($0.charged >> 20) MiB charged (this pool: \(charged >> 20) MiB, \(busy) busy)" } ?? ""
            let why =
                pressure
                ? "the cgroup is above its high watermark (memory pressure)"
                : "its peak (turn_mib \(costs.turn >> 20) MiB) does not fit in the memory budget next to the turns running\(budget)"
            return PrewarmError(
                .memoryExhausted,
                "pool \(name) cannot take this turn now: \(why); retry later, or see GET /v1/memory and prewarm size",
                retryAfter: 1
            )
        }
    }
}
