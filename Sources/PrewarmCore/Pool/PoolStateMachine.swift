/// The pool's decisions, as a pure state machine: events in, actions out.
///
/// It owns no process, no task and no clock: the caller feeds it events (a turn arrived, a
/// process became ready, a start-up failed, a timer fired, a waiting turn was cancelled...)
/// with the current instant, and performs the actions it returns (start a process, retire
/// one, hand one to a waiting turn, reject a turn, arm or cancel a timer). Time enters only
/// through the timers it asks for (`schedule`): there is no polling tick. The same machine
/// runs the live daemon and, in simulated time, the benchmark's and the advisor's
/// predictions.
///
/// Sessions: a process *belongs* to the session it was started with. The pool's start-ups
/// belong to the pool's session and serve any turn that takes a spare; a start-up dedicated
/// to one turn (a cold start, possibly with that turn's own session) serves that turn or
/// nobody: if its turn goes away, it is retired, never handed to another turn.
///
/// Vocabulary:
/// - a *spare* is a process that reached readiness and waits, idle, for exactly one turn;
/// - a *start-up* is a process spawned but not ready yet; it is either the pool's (it will
///   become a spare, or go to the oldest waiting turn) or *dedicated* to one turn (a cold
///   start, `when_empty = "start"`);
/// - a *waiter* is a turn that found no idle spare and waits for the next one.
///
/// Memory: with `Settings.costs` and a `room` (the budget less what other pools hold), every
/// process is charged (start-ups and busy turns at the turn peak, idle spares at the spare
/// cost) and nothing is started that does not fit. Busy turns come first: a turn that needs
/// room sheds idle spares to get it; spares are what gets shed, never busy turns. Under
/// `pressure` (the cgroup near its limit) no process is started at all. The caller sets
/// `room` and `pressure` before each event, under the same lock as the charge it records
/// after it, so the check and the charge are one step.
public struct PoolStateMachine: Sendable {
    public typealias Instant = ContinuousClock.Instant

    /// The knobs the machine decides by; a subset of the pool's configuration.
    public struct Settings: Sendable, Equatable {
        public var spares: Int
        public var maxProcesses: Int
        public var maxStarting: Int
        public var whenEmpty: WhenEmpty
        public var maxWaiting: Int
        /// nil: no deadline. A turn then waits only for what is sure to come (a process that
        /// fits in memory, in order); one memory has no room for is refused at once.
        public var waitTimeout: Duration?
        public var maxIdle: Duration
        public var backoffInitial: Duration
        public var backoffMax: Duration
        /// Consecutive start-up failures after which the pool is failing.
        public var failingAfter: Int
        /// What one process costs; nil when memory is not governed.
        public var costs: MemoryCosts?
        /// `spares = "auto"`: the pool sizes itself, `spares` being its floor; nil: fixed.
        public var autoSizing: AutoSizing?
        /// `resume_spares`: a session's next turn may find a spare resumed for it; nil: none.
        public var resume: ResumeSpareSettings?
        /// `universal_spares`: CLIs parked before their command line (`--bg-spare`) kept for
        /// turns no spare serves (PoolStateMachine+Universal); 0: none.
        public var universalSpares = 0
        /// `replace_after_ms`: a spare a turn took is replaced once the turns that took spares
        /// with it have ended, or this long after the first of them, whichever is sooner (a
        /// turn that has to wait starts replacements at once); nil: at once.
        public var replaceAfter: Duration?

        public init(
            spares: Int,
            maxProcesses: Int,
            maxStarting: Int = 1,
            whenEmpty: WhenEmpty = .wait,
            maxWaiting: Int = 64,
            waitTimeout: Duration? = .seconds(10),
            maxIdle: Duration = .seconds(3600),
            backoffInitial: Duration = .seconds(1),
            backoffMax: Duration = .seconds(60),
            failingAfter: Int = 3,
            costs: MemoryCosts? = nil,
            autoSizing: AutoSizing? = nil,
            resume: ResumeSpareSettings? = nil,
            universalSpares: Int = 0,
            replaceAfter: Duration? = nil
        ) {
            self.replaceAfter = replaceAfter
            self.universalSpares = universalSpares
            self.resume = resume
            self.costs = costs
            self.autoSizing = autoSizing
            self.spares = spares
            self.maxProcesses = maxProcesses
            self.maxStarting = maxStarting
            self.whenEmpty = whenEmpty
            self.maxWaiting = maxWaiting
            self.waitTimeout = waitTimeout
            self.maxIdle = maxIdle
            self.backoffInitial = backoffInitial
            self.backoffMax = backoffMax
            self.failingAfter = failingAfter
        }
    }

    /// What a turn's arrival led to.
    public enum TurnDecision: Sendable, Equatable {
        /// An idle spare is handed over at once: a warm start.
        case take(SpareID)
        /// The turn waits; an action `.deliver` or `.reject` with this id ends the wait.
        case wait(WaiterID)
        /// Refused at once.
        case reject(RejectReason)
    }

    /// A side effect for the caller to perform.
    public enum Action: Sendable, Equatable {
        /// Spawn a process under this id and report `processReady` or `startFailed` for it.
        case start(SpareID)
        /// Stop this process (idle spare, start-up or finished turn) and report `processGone`.
        case retire(SpareID)
        /// Hand this process to the waiting turn.
        case deliver(WaiterID, SpareID, StartKind)
        /// End this turn's wait with an error.
        case reject(WaiterID, RejectReason)
        /// Arm a timer: report `timerFired` for it at that instant (unless cancelled).
        case schedule(Timer, at: Instant)
        /// Disarm a timer scheduled earlier (a firing that comes anyway is ignored).
        case cancelTimer(Timer)
        /// An auto pool's evaluation: replay this snapshot (`SizingReplay.decide`) and report
        /// `sizingReplayed` with the answer.
        case replaySizing(SizingSnapshot)
        /// An auto pool's target changed: to be logged, exported and journaled.
        case sizingChanged(SizingChange)
    }

    /// A point in time the machine wants to hear about. Each names what it is for, so a
    /// stale firing (the waiter served, the spare taken, a later backoff) is recognised and
    /// ignored.
    public enum Timer: Hashable, Sendable {
        /// The waiting turn's `wait_timeout_ms`.
        case waitDeadline(WaiterID)
        /// The idle spare's `max_idle_s`.
        case idleExpiry(SpareID)
        /// The end of the backoff after a failed start-up; the generation tells one backoff
        /// from the next.
        case backoffEnd(generation: UInt64)
        /// An auto pool's `auto_every_s`; the generation tells the ticks of its settings from
        /// those of settings since replaced.
        case sizing(generation: UInt64)
        /// A resume spare's `resume_spare_ttl_s`.
        case resumeExpiry(SpareID)
        /// The longest replacements are held back for the turns that took spares
        /// (`replace_after_ms`).
        case replacementHoldEnd(generation: UInt64)
    }

    enum ProcessState: Sendable, Equatable {
        /// Spawned, not ready; `dedicatedTo` is the turn it was started for (a cold start).
        case starting(dedicatedTo: WaiterID?)
        case idle(since: Instant)
        case busy
        /// Asked to stop; still holds its memory until `processGone`: a spare's if it was
        /// idle (or just ready), a turn's otherwise.
        case retiring(wasIdle: Bool)
        /// A resume spare (PoolStateMachine+Resume): started for the next turn of one
        /// session; `ready` nil while it starts. Never idle, never handed to another turn.
        case held(ready: Instant?)
        /// A universal spare (PoolStateMachine+Universal): a CLI parked before its command
        /// line, for a turn that would otherwise start cold; `ready` nil while it starts.
        case parked(ready: Instant?)
    }

    struct Waiter: Sendable, Equatable {
        let id: WaiterID
        /// nil: it waits until served (a pool without `wait_timeout_ms`).
        let deadline: Instant?
    }

    public internal(set) var settings: Settings
    var processes: [SpareID: ProcessState] = [:]
    /// Turns waiting for the next spare, oldest first.
    private(set) var queue: [Waiter] = []
    /// Cold starts: the turn each dedicated start-up belongs to.
    var dedicated: [SpareID: WaiterID] = [:]
    /// Resume spares, by process (PoolStateMachine+Resume).
    var resumes: [SpareID: ResumeHold] = [:]
    /// Resume spares wanted and not started yet, oldest first (PoolStateMachine+Resume).
    var wantedResumes: [ResumeHold] = []
    /// Resume and universal spares retired and not gone yet: killed at once, so their room
    /// is as good as free.
    var retiringHolds: Set<SpareID> = []
    /// Universal spares' start-ups that failed in a row.
    var universalFailures = 0
    private var nextSpare: UInt64 = 1
    private var nextWaiter: UInt64 = 1
    /// The name the caller chose for the turn being decided, if any.
    private var pendingWaiterID: WaiterID?

    public private(set) var consecutiveFailures = 0
    public private(set) var backoffUntil: Instant?
    /// Counts backoffs, so that the firing of an earlier one is ignored.
    private var backoffGeneration: UInt64 = 0
    /// Replacements held back while the turns that took spares start (`replace_after_ms`).
    var replacementHold: ReplacementHold?
    private var replacementHoldGeneration: UInt64 = 0
    public internal(set) var lastError: String?
    public private(set) var draining = false
    public internal(set) var counters = Counters()
    /// Bytes this pool may hold in all: the budget less what the other pools hold. nil: no limit.
    public var room: Int?
    /// The cgroup is above its high watermark: start nothing.
    public var pressure = false
    /// Bytes the other pools hold in idle spares (and resume and universal spares), which
    /// they shed for a turn of this pool: counted as room when deciding whether a turn may
    /// wait for memory at all.
    public var reclaimable = 0
    /// An auto pool's controller (PoolStateMachine+AutoSizing); nil for a fixed pool.
    var sizer: AutoSizer?

    public struct Counters: Sendable, Equatable {
        public var served = 0
        public var warm = 0
        public var waited = 0
        public var cold = 0
        public var rejected = 0
        public var startFailures = 0
        public var recycled = 0
        /// Idle spares retired to make room for turns, or under memory pressure.
        public var shed = 0
        /// Resumed turns served by a resume spare of their session (also counted `warm`).
        public var resumeHits = 0
        /// Resumed turns no resume spare served (run cold); `resumeStale` included.
        public var resumeMisses = 0
        /// Resume spares discarded at hand-off: their session's transcript had changed.
        public var resumeStale = 0
        /// Resume spares retired to make room (memory, plain spares, `max_resume_spares`).
        public var resumeEvicted = 0
        /// Resume spares retired unused after `resume_spare_ttl_s`.
        public var resumeExpired = 0
        /// Turns that would have started cold, served by a universal spare (also counted `cold`).
        public var universalHits = 0
        /// Universal spares retired to make room.
        public var universalShed = 0
    }

    public init(settings: Settings) {
        self.settings = settings
        self.sizer = settings.autoSizing.map { AutoSizer(settings: $0, floor: settings.spares) }
    }

    // MARK: - Derived counts

    public var idleCount: Int { processes.values.count { if case .idle = $0 { true } else { false } } }
    public var busyCount: Int { processes.values.count { $0 == .busy } }
    public var retiringCount: Int { processes.values.count { if case .retiring = $0 { true } else { false } } }
    /// All start-ups under way, the pool's and the dedicated ones.
    public var startingCount: Int { processes.values.count { if case .starting = $0 { true } else { false } } }
    /// Start-ups that will become spares or go to waiters (not dedicated to one turn).
    var poolStartingCount: Int { processes.values.count { $0 == .starting(dedicatedTo: nil) } }
    public var waitingCount: Int { queue.count + dedicated.count }
    public var totalCount: Int { processes.count }
    /// The pool is failing after `failingAfter` start-up failures in a row, until one succeeds.
    public var failing: Bool { consecutiveFailures >= settings.failingAfter }
    /// The number of idle spares the pool aims for: the configured `spares` (an auto pool's
    /// target), or what fits.
    public var effectiveSpares: Int {
        min(sizer?.target ?? settings.spares, settings.maxProcesses, memorySpares ?? .max)
    }

    // MARK: - Memory

    /// What each process is charged now, in bytes.
    public var chargedBytes: Int {
        guard let costs = settings.costs else { return 0 }
        return processes.values.reduce(0) { $0 + Self.charge($1, costs) }
    }

    static func charge(_ state: ProcessState, _ costs: MemoryCosts) -> Int {
        switch state {
        case .starting, .busy: costs.turn
        case .idle: costs.spare
        case .retiring(let wasIdle): wasIdle ? costs.spare : costs.turn
        case .held(let ready), .parked(let ready): ready == nil ? costs.turn : costs.spare
        }
    }

    /// Whether `extra` more bytes fit in the room. A retiring spare has its stdin closed and
    /// is gone within milliseconds (a resume spare is killed), so a turn taking a warm spare
    /// may count its bytes as free (`countRetiringSparesFree`); start-ups never do.
    func fits(_ extra: Int, countRetiringSparesFree: Bool = false) -> Bool {
        guard let room, let costs = settings.costs else { return true }
        var charged = chargedBytes
        if countRetiringSparesFree {
            // Retiring resume spares are killed at once, whatever they were doing.
            for (spare, state) in processes where state == .retiring(wasIdle: true) || retiringHolds.contains(spare) {
                charged -= Self.charge(state, costs)
            }
        }
        return charged + extra <= room
    }

    /// How many spares fit next to the busy turns and start-ups dedicated to turns, leaving
    /// room for one spare to become a turn (its peak over its idle cost) without shedding.
    var memorySpares: Int? {
        guard let room, let costs = settings.costs, costs.spare > 0 else { return nil }
        var held = 0
        for state in processes.values {
            switch state {
            // Resume spares give way to the pool's own spares: they are not counted against them.
            case .idle, .starting(dedicatedTo: nil), .held, .parked: break
            default: held += Self.charge(state, costs)
            }
        }
        let headroom = max(0, costs.turn - costs.spare)
        return max(0, (room - held - headroom) / costs.spare)
    }

    /// What this pool's idle spares, resume spares and universal spares are charged (and
    /// retiring ones, gone in a moment): what it gives up for another pool's turn.
    public var sheddableBytes: Int {
        guard let costs = settings.costs else { return 0 }
        var bytes = 0
        for (spare, state) in processes {
            switch state {
            case .idle, .held, .parked, .retiring(wasIdle: true): bytes += Self.charge(state, costs)
            default: if retiringHolds.contains(spare) { bytes += Self.charge(state, costs) }
            }
        }
        return bytes
    }

    /// Whether one more waiting turn fits in memory next to everything that holds memory for
    /// a turn: the busy turns, the start-ups, and the turns queued before it, each of them a
    /// turn's peak once served. The pool's idle spares and the other pools' (`reclaimable`)
    /// count as free: they are shed, or become the turns. Under pressure nothing fits.
    var roomForAnotherWaiter: Bool {
        guard !pressure else { return false }
        guard let room, let costs = settings.costs else { return true }
        let held = chargedBytes - sheddableBytes
        let coming = max(0, queue.count + 1 - poolStartingCount)
        return held + coming * costs.turn <= room + reclaimable
    }

    /// The most processes this pool could run at once, all busy, in its room.
    public var memoryMaxProcesses: Int {
        guard let room, let costs = settings.costs, costs.turn > 0 else { return settings.maxProcesses }
        return min(settings.maxProcesses, max(0, room / costs.turn))
    }

    /// New estimates of what a process costs (measured, or a reload).
    public mutating func setCosts(_ costs: MemoryCosts?, now: Instant) -> [Action] {
        settings.costs = costs
        var actions: [Action] = []
        shedWhileOverBudget(into: &actions)
        refill(now: now, into: &actions)
        return actions
    }

    /// The room or the pressure changed (a new memory reading, another pool's processes came
    /// or went): idle spares that no longer fit are shed, start-ups that now fit begin.
    public mutating func memoryChanged(now: Instant) -> [Action] {
        var actions: [Action] = []
        shedWhileOverBudget(into: &actions)
        refill(now: now, into: &actions)
        return actions
    }

    /// Retires idle spares, oldest first, until `bytes` are freed or none is left (memory
    /// pressure, or another pool's turn needs the room). Returns the bytes freed.
    public mutating func shedIdle(upTo bytes: Int, now: Instant) -> (freed: Int, [Action]) {
        var actions: [Action] = []
        var freed = 0
        while freed < bytes, let spare = nextToShed() {
            let cost = processes[spare].flatMap { state in settings.costs.map { Self.charge(state, $0) } } ?? 1
            shed(spare, into: &actions)
            freed += max(1, cost)
        }
        return (freed, actions)
    }

    // MARK: - Events

    /// Starts the pool: the first start-ups.
    public mutating func start(now: Instant) -> [Action] {
        var actions: [Action] = []
        scheduleSizing(now: now, into: &actions)
        refill(now: now, into: &actions)
        return actions
    }

    /// A turn arrived and wants a process. `waiter` names the turn if it has to wait (the
    /// caller may choose it, to cancel the turn by that name before this call returns);
    /// nil: the machine names it.
    /// `preferring`: idle spares handed over first (claimed ahead with the turn's claim);
    /// `avoiding`: idle spares handed over only if no other is idle (claimed with another).
    public mutating func turnArrived(
        _ waiter: WaiterID? = nil, preferring: Set<SpareID> = [], avoiding: Set<SpareID> = [], now: Instant
    ) -> (TurnDecision, [Action]) {
        var actions: [Action] = []
        pendingWaiterID = waiter
        defer { pendingWaiterID = nil }
        if let reason = refusedOutright() { return (.reject(reason), actions) }
        sizingArrival(now: now, into: &actions)
        if let spare = oldestIdle(preferring: preferring, avoiding: avoiding), queue.isEmpty {
            // Busy turns come first: shed other idle spares until the turn's peak fits.
            let extra = settings.costs.map { max(0, $0.turn - $0.spare) } ?? 0
            while !fits(extra, countRetiringSparesFree: true), let other = nextToShed(excluding: spare) {
                shed(other, into: &actions)
            }
            if fits(extra, countRetiringSparesFree: true) {
                handOver(spare, .warm, now: now, into: &actions)
                holdReplacements(for: spare, now: now, into: &actions)
                refill(now: now, into: &actions)
                return (.take(spare), actions)
            }
            // Even alone, the spare cannot become a turn: the busy turns hold the memory.
            return memoryExhausted(now: now, into: &actions)
        }
        // A start-up under way that no earlier waiter has claimed.
        if poolStartingCount > queue.count, queue.count < settings.maxWaiting {
            return (.wait(enqueue(now: now, into: &actions)), actions)
        }
        if settings.whenEmpty == .start { makeRoomForTurn(into: &actions) }
        let memoryBlocked = pressure || !roomToStart(1)
        let belowMax = totalCount - retiringHeldCount < settings.maxProcesses
        switch settings.whenEmpty {
        case .reject:
            counters.rejected += 1
            refill(now: now, into: &actions)
            return (.reject(memoryBlocked ? .memoryExhausted : .noCapacity), actions)
        case .start where belowMax && !inBackoff(now) && memoryBlocked:
            return memoryExhausted(now: now, into: &actions)
        case .start where belowMax && !inBackoff(now):
            return (.wait(startDedicated(now: now, into: &actions)), actions)
        case .start, .wait:
            // `start` at its limit behaves like `wait`: the turn queues for the next spare.
            guard queue.count < settings.maxWaiting else {
                counters.rejected += 1
                return (.reject(.noCapacity), actions)
            }
            if settings.waitTimeout == nil {
                // No deadline: the turn waits only for a process sure to come. At the
                // operator's max_processes none is (runs hold theirs for minutes), and one
                // memory has no room for is refused now, not after an endless wait.
                guard belowMax || poolStartingCount > queue.count else {
                    counters.rejected += 1
                    return (.reject(.noCapacity), actions)
                }
                guard roomForAnotherWaiter else {
                    counters.rejected += 1
                    return (.reject(.memoryExhausted), actions)
                }
            }
            let waiter = enqueue(now: now, into: &actions)
            refill(now: now, into: &actions)
            return (.wait(waiter), actions)
        }
    }

    /// A turn no spare can serve (its own session settings, a session to resume): a process
    /// is started for it alone, a cold start, if the pool's limits and memory allow.
    /// `universal`: the turn may take a universal spare (its command line and directory can
    /// be sent in a claim line); it is then delivered at once, still counted `cold`.
    public mutating func coldTurnArrived(_ waiter: WaiterID? = nil, universal: Bool = false, now: Instant) -> (TurnDecision, [Action]) {
        var actions: [Action] = []
        pendingWaiterID = waiter
        defer { pendingWaiterID = nil }
        if let reason = refusedOutright() { return (.reject(reason), actions) }
        if universal, let parked = takeUniversalSpare(now: now, into: &actions) {
            let waiter = makeWaiterID()
            actions.append(.deliver(waiter, parked, .cold))
            return (.wait(waiter), actions)
        }
        makeRoomForTurn(into: &actions)
        guard totalCount - retiringHeldCount < settings.maxProcesses else {
            counters.rejected += 1
            return (.reject(.noCapacity), actions)
        }
        guard !pressure, roomToStart(1) else {
            counters.rejected += 1
            return (.reject(.memoryExhausted), actions)
        }
        return (.wait(startDedicated(now: now, into: &actions)), actions)
    }

    /// Starts a process for one turn alone (a cold start); returns the turn's waiter.
    mutating func startDedicated(now: Instant, into actions: inout [Action]) -> WaiterID {
        let waiter = makeWaiterID()
        let spare = makeSpareID()
        processes[spare] = .starting(dedicatedTo: waiter)
        dedicated[spare] = waiter
        sizingStarted(spare, concurrency: startingCount, now: now)
        actions.append(.start(spare))
        return waiter
    }

    /// The turn a start-up was started for, if it is a cold start.
    public func owner(of spare: SpareID) -> WaiterID? { dedicated[spare] }

    /// A draining or failing pool refuses every turn at once.
    mutating func refusedOutright() -> RejectReason? {
        let reason: RejectReason? = draining ? .draining : (failing ? .poolFailing : nil)
        if reason != nil { counters.rejected += 1 }
        return reason
    }

    /// No room for the turn: it waits for memory if the pool waits (and has a deadline, or
    /// the room will come: see `roomForAnotherWaiter`), else it is refused.
    private mutating func memoryExhausted(now: Instant, into actions: inout [Action]) -> (TurnDecision, [Action]) {
        if settings.whenEmpty == .wait, queue.count < settings.maxWaiting, settings.waitTimeout != nil || roomForAnotherWaiter {
            let waiter = enqueue(now: now, into: &actions)
            refill(now: now, into: &actions)
            return (.wait(waiter), actions)
        }
        counters.rejected += 1
        return (.reject(.memoryExhausted), actions)
    }

    /// A start-up reached readiness.
    public mutating func processReady(_ spare: SpareID, now: Instant) -> [Action] {
        var actions: [Action] = []
        if case .held(ready: nil) = processes[spare] {
            resumeReady(spare, now: now, into: &actions)
            return actions
        }
        if case .parked(ready: nil) = processes[spare] {
            universalReady(spare, now: now, into: &actions)
            return actions
        }
        guard case .starting(let owner) = processes[spare] else { return actions }
        consecutiveFailures = 0
        backoffUntil = nil
        sizingReady(spare, now: now)
        if let owner {
            dedicated[spare] = nil
            handOver(spare, .cold, now: now, into: &actions)
            actions.append(.deliver(owner, spare, .cold))
        } else if !queue.isEmpty {
            let waiter = removeWaiter(at: 0, into: &actions)
            handOver(spare, .waited, now: now, into: &actions)
            actions.append(.deliver(waiter.id, spare, .waited))
        } else if draining || (idleCount >= effectiveSpares && sizer == nil) {
            // An auto pool keeps a spare its lower target no longer needs until it has been
            // unused for auto_hold_s (sizingTick): the target may come back up.
            processes[spare] = .retiring(wasIdle: true)
            actions.append(.retire(spare))
        } else {
            set(spare, .idle(since: now), into: &actions)
        }
        refill(now: now, into: &actions)
        return actions
    }

    /// A start-up failed: it exited, timed out or could not be spawned.
    public mutating func startFailed(_ spare: SpareID, reason: String, now: Instant) -> [Action] {
        var actions: [Action] = []
        if case .parked = processes[spare] {
            universalFailed(spare, reason: reason, now: now, into: &actions)
            return actions
        }
        if case .held = processes[spare] {
            // A resume spare that could not start (its transcript gone...): the pool is fine.
            processes[spare] = nil
            resumes[spare] = nil
            lastError = reason
            refill(now: now, into: &actions)
            return actions
        }
        guard case .starting(let owner) = processes[spare] else {
            // A retiring start-up that went away: nothing failed.
            processes[spare] = nil
            refill(now: now, into: &actions)
            return actions
        }
        processes[spare] = nil
        sizingGone(spare)
        consecutiveFailures += 1
        counters.startFailures += 1
        lastError = reason
        let until = now.advanced(by: backoff(afterFailures: consecutiveFailures))
        backoffUntil = until
        backoffGeneration += 1
        actions.append(.schedule(.backoffEnd(generation: backoffGeneration), at: until))
        if let owner {
            dedicated[spare] = nil
            counters.rejected += 1
            actions.append(.reject(owner, .startFailed(reason)))
        }
        if failing {
            for waiter in removeAllWaiters(into: &actions) {
                counters.rejected += 1
                actions.append(.reject(waiter.id, .poolFailing))
            }
        }
        refill(now: now, into: &actions)
        return actions
    }

    /// A process that was ready (idle or busy) exited or was killed on its own.
    public mutating func processExited(_ spare: SpareID, reason: String, now: Instant) -> [Action] {
        var actions: [Action] = []
        switch processes[spare] {
        case .idle:
            lastError = reason
            set(spare, .retiring(wasIdle: true), into: &actions)
            actions.append(.retire(spare))
        case .busy:
            processes[spare] = .retiring(wasIdle: false)
        case .held(let ready), .parked(let ready):
            lastError = reason
            retireHold(spare, wasReady: ready != nil, into: &actions)
        default:
            break
        }
        refill(now: now, into: &actions)
        return actions
    }

    /// The turn on this process is over; the process is being retired (never reused).
    public mutating func turnEnded(_ spare: SpareID, now: Instant) -> [Action] {
        var actions: [Action] = []
        if processes[spare] == .busy {
            processes[spare] = .retiring(wasIdle: false)
            sizingTurnEnded(spare, now: now)
        }
        refill(now: now, into: &actions)
        return actions
    }

    /// A process is gone for good: its resources are free.
    public mutating func processGone(_ spare: SpareID, now: Instant) -> [Action] {
        var actions: [Action] = []
        if case .starting(let owner?) = processes[spare] {
            // A dedicated start-up retired before readiness (drain): its turn cannot go on.
            counters.rejected += 1
            actions.append(.reject(owner, .draining))
        }
        processes[spare] = nil
        dedicated[spare] = nil
        resumes[spare] = nil
        retiringHolds.remove(spare)
        sizingGone(spare)
        refill(now: now, into: &actions)
        return actions
    }

    /// A waiting turn gave up (its client went away, or its task was cancelled) before a
    /// process was handed to it. A start-up dedicated to it was launched with its session:
    /// it is retired, never turned into a spare another turn could get.
    public mutating func waiterCancelled(_ waiter: WaiterID, now: Instant) -> [Action] {
        var actions: [Action] = []
        if let index = queue.firstIndex(where: { $0.id == waiter }) {
            removeWaiter(at: index, into: &actions)
        }
        if let spare = dedicated.first(where: { $0.value == waiter })?.key {
            dedicated[spare] = nil
            processes[spare] = .retiring(wasIdle: false)
            actions.append(.retire(spare))
        }
        refill(now: now, into: &actions)
        return actions
    }

    /// A process was handed to a turn that had already gone (cancelled after the hand-over,
    /// before it could use it): it is retired unused, never handed to anyone else.
    /// `uncounting`: the hand-over is not counted as a turn served (a spare claimed ahead that
    /// the pool discarded at the hand-off: the turn asks again).
    public mutating func leaseAbandoned(_ spare: SpareID, uncounting: StartKind? = nil, now: Instant) -> [Action] {
        var actions: [Action] = []
        if processes[spare] == .busy {
            processes[spare] = .retiring(wasIdle: false)
            actions.append(.retire(spare))
            if let kind = uncounting {
                counters.served -= 1
                switch kind {
                case .warm: counters.warm -= 1
                case .waited: counters.waited -= 1
                case .cold: counters.cold -= 1
                }
            }
        }
        refill(now: now, into: &actions)
        return actions
    }

    /// A timer the machine scheduled fired. Stale firings change nothing.
    public mutating func timerFired(_ timer: Timer, now: Instant) -> [Action] {
        var actions: [Action] = []
        switch timer {
        case .waitDeadline(let waiter):
            guard let index = queue.firstIndex(where: { $0.id == waiter }), let deadline = queue[index].deadline, deadline <= now else { return actions }
            queue.remove(at: index)
            counters.rejected += 1
            actions.append(.reject(waiter, .waitTimeout))
        case .idleExpiry(let spare):
            guard case .idle(let since) = processes[spare], since.advanced(by: settings.maxIdle) <= now else { return actions }
            processes[spare] = .retiring(wasIdle: true)
            counters.recycled += 1
            actions.append(.retire(spare))
        case .backoffEnd(let generation):
            guard generation == backoffGeneration else { return actions }
        case .sizing(let generation):
            sizingTick(generation: generation, now: now, into: &actions)
        case .resumeExpiry(let spare):
            resumeExpired(spare, now: now, into: &actions)
        case .replacementHoldEnd(let generation):
            guard generation == replacementHoldGeneration else { return actions }
            replacementHold = nil
        }
        refill(now: now, into: &actions)
        return actions
    }

    /// Changes the spares target at run time; shrinking retires idle spares, oldest first.
    /// An auto pool's `spares` is its floor: its target rises to it at once, and a lower
    /// floor retires nothing (the replays bring the target down, and the spares beyond it
    /// are given back as always).
    public mutating func resize(spares: Int, maxProcesses: Int, now: Instant) -> [Action] {
        var actions: [Action] = []
        settings.spares = spares
        settings.maxProcesses = maxProcesses
        if sizer != nil {
            resizeSizer(now: now, into: &actions)
            refill(now: now, into: &actions)
            return actions
        }
        while idleCount > effectiveSpares, let spare = oldestIdle() {
            set(spare, .retiring(wasIdle: true), into: &actions)
            actions.append(.retire(spare))
        }
        refill(now: now, into: &actions)
        return actions
    }

    /// Replaces every idle spare and every start-up under way (not those started for a
    /// waiting turn): after a CLI upgrade, a credential rotation, a changed configuration.
    /// Returns how many idle spares were recycled.
    public mutating func recycle(now: Instant) -> (recycled: Int, [Action]) {
        var actions: [Action] = []
        var recycled = 0
        for (spare, state) in processes.sorted(by: { $0.key < $1.key }) {
            switch state {
            case .idle:
                set(spare, .retiring(wasIdle: true), into: &actions)
                counters.recycled += 1
                recycled += 1
                actions.append(.retire(spare))
            case .starting(dedicatedTo: nil):
                processes[spare] = .retiring(wasIdle: false)
                actions.append(.retire(spare))
            case .held(let ready), .parked(let ready):
                // Started with the command file or settings being replaced.
                retireHold(spare, wasReady: ready != nil, into: &actions)
            default:
                break
            }
        }
        refill(now: now, into: &actions)
        return (recycled, actions)
    }

    /// A reloaded configuration: new settings (the measured costs kept), spares recycled,
    /// the failure count cleared (a changed command deserves a fresh try). Busy turns go on.
    public mutating func reconfigure(_ new: Settings, now: Instant) -> (recycled: Int, [Action]) {
        var new = new
        new.costs = settings.costs
        settings = new
        consecutiveFailures = 0
        backoffUntil = nil
        var actions: [Action] = []
        resizeSizer(now: now, into: &actions)
        let (recycled, more) = recycle(now: now)
        return (recycled, actions + more)
    }

    /// Winds the pool down without refusing anyone (a fingerprint pool chosen for removal):
    /// no spares, no resume or universal spares from now on, the idle ones retired; busy
    /// turns go on and waiting turns are still served, by start-ups of their own. The pool
    /// is gone once the last of them ends (the caller waits for it to be empty).
    public mutating func close(now: Instant) -> [Action] {
        settings.spares = 0
        settings.autoSizing = nil
        sizer = nil
        settings.resume = nil
        settings.universalSpares = 0
        wantedResumes.removeAll()
        return recycle(now: now).1
    }

    /// Stops the pool: no new turns, waiters refused, spares and start-ups retired.
    /// Busy turns go on.
    public mutating func drain(now: Instant) -> [Action] {
        var actions: [Action] = []
        draining = true
        wantedResumes.removeAll()
        for waiter in removeAllWaiters(into: &actions) {
            counters.rejected += 1
            actions.append(.reject(waiter.id, .draining))
        }
        for (spare, state) in processes {
            switch state {
            case .idle, .starting:
                if case .starting(let owner?) = state {
                    counters.rejected += 1
                    actions.append(.reject(owner, .draining))
                    dedicated[spare] = nil
                }
                let wasIdle = if case .idle = state { true } else { false }
                set(spare, .retiring(wasIdle: wasIdle), into: &actions)
                actions.append(.retire(spare))
            case .held(let ready), .parked(let ready):
                retireHold(spare, wasReady: ready != nil, into: &actions)
            case .busy, .retiring:
                break
            }
        }
        return actions
    }

    // MARK: - Internals

    /// Hands idle spares to waiting turns while their peaks fit (turns that waited for
    /// memory), then starts processes until the pool's spares and waiters are covered,
    /// within `max_starting`, `max_processes`, the memory room and the backoff.
    mutating func refill(now: Instant, into actions: inout [Action]) {
        guard !draining else { return }
        let extra = settings.costs.map { max(0, $0.turn - $0.spare) } ?? 0
        while !queue.isEmpty, let spare = oldestIdle(), fits(extra, countRetiringSparesFree: true) {
            let waiter = removeWaiter(at: 0, into: &actions)
            handOver(spare, .waited, now: now, into: &actions)
            actions.append(.deliver(waiter.id, spare, .waited))
        }
        guard !inBackoff(now), !pressure, !holdingReplacements(now) else { return }
        var wanted = effectiveSpares + queue.count - idleCount - poolStartingCount
        // Resume spares give way to the pool's own: the least recently made go first.
        if wanted > 0, startingCount < settings.maxStarting {
            evictHolds(toStart: min(wanted, settings.maxStarting - startingCount), into: &actions)
        }
        var started: [SpareID] = []
        while wanted > 0, startingCount < settings.maxStarting, roomToStart(1) {
            let spare = makeSpareID()
            processes[spare] = .starting(dedicatedTo: nil)
            actions.append(.start(spare))
            started.append(spare)
            wanted -= 1
        }
        // Those started together contend with each other from the start.
        for spare in started { sizingStarted(spare, concurrency: startingCount, now: now) }
        startWantedResumes(now: now, into: &actions)
        startUniversalSpares(now: now, into: &actions)
    }

    /// Replacements wait while turns that took spares are starting: on a small machine a
    /// CLI's boot takes as much CPU as a turn's start, and the turns are on the request path
    /// (measured: eight turns at once took 2.1 s beside eight boots, 1.3 s without). The
    /// first warm hand-off opens the hold; it ends when its turns have all ended, at
    /// `replace_after_ms` after it opened, or when a turn has to wait.
    mutating func holdReplacements(for spare: SpareID, now: Instant, into actions: inout [Action]) {
        guard let delay = settings.replaceAfter, delay > .zero else { return }
        if replacementHold == nil {
            replacementHoldGeneration += 1
            replacementHold = ReplacementHold(until: now.advanced(by: delay), turns: [])
            actions.append(.schedule(.replacementHoldEnd(generation: replacementHoldGeneration), at: now.advanced(by: delay)))
        }
        replacementHold?.turns.insert(spare)
    }

    /// Whether start-ups are held back now (see `holdReplacements`); ends a hold that is over.
    /// (A turn that has to wait ends it in `enqueue`.)
    mutating func holdingReplacements(_ now: Instant) -> Bool {
        guard let hold = replacementHold else { return false }
        if now < hold.until, hold.turns.contains(where: { processes[$0] == .busy }) { return true }
        replacementHold = nil
        return false
    }

    func inBackoff(_ now: Instant) -> Bool {
        if let backoffUntil, now < backoffUntil { return true }
        return false
    }

    /// 1 s after the first failure, doubling up to 60 s.
    func backoff(afterFailures failures: Int) -> Duration {
        var delay = settings.backoffInitial
        for _ in 1..<max(1, failures) where delay < settings.backoffMax {
            delay *= 2
        }
        return min(delay, settings.backoffMax)
    }

    /// Retires an idle spare to free memory.
    mutating func shed(_ spare: SpareID, into actions: inout [Action]) {
        if case .held(let ready) = processes[spare] {
            counters.resumeEvicted += 1
            retireHold(spare, wasReady: ready != nil, into: &actions)
            return
        }
        if case .parked(let ready) = processes[spare] {
            counters.universalShed += 1
            retireHold(spare, wasReady: ready != nil, into: &actions)
            return
        }
        set(spare, .retiring(wasIdle: true), into: &actions)
        counters.shed += 1
        actions.append(.retire(spare))
    }

    /// The room shrank (other pools grew, estimates rose): shed idle spares until the pool fits.
    private mutating func shedWhileOverBudget(into actions: inout [Action]) {
        while !fits(0, countRetiringSparesFree: true), let spare = nextToShed() {
            shed(spare, into: &actions)
        }
    }

    /// The oldest idle spare in `preferring`, else the oldest not in `avoiding`, else the oldest.
    func oldestIdle(preferring: Set<SpareID>, avoiding: Set<SpareID>) -> SpareID? {
        guard !preferring.isEmpty || !avoiding.isEmpty else { return oldestIdle() }
        var best: (rank: Int, since: Instant, spare: SpareID)?
        for (spare, state) in processes {
            guard case .idle(let since) = state else { continue }
            let rank = preferring.contains(spare) ? 0 : avoiding.contains(spare) ? 2 : 1
            if best == nil || (rank, since) < (best!.rank, best!.since) || ((rank, since) == (best!.rank, best!.since) && spare < best!.spare) {
                best = (rank, since, spare)
            }
        }
        return best?.spare
    }

    func oldestIdle(excluding excluded: SpareID? = nil) -> SpareID? {
        var best: (SpareID, Instant)?
        for (spare, state) in processes where spare != excluded {
            if case .idle(let since) = state, best == nil || since < best!.1 || (since == best!.1 && spare < best!.0) {
                best = (spare, since)
            }
        }
        return best?.0
    }

    /// Queues a waiting turn, with its deadline armed.
    private mutating func enqueue(now: Instant, into actions: inout [Action]) -> WaiterID {
        let waiter = makeWaiterID()
        let deadline = settings.waitTimeout.map { now.advanced(by: $0) }
        queue.append(Waiter(id: waiter, deadline: deadline))
        if let deadline { actions.append(.schedule(.waitDeadline(waiter), at: deadline)) }
        // A turn that has to wait ends a replacement hold: start-ups are what it waits for.
        replacementHold = nil
        return waiter
    }

    /// Takes a turn out of the queue (served, refused or gone), its deadline disarmed.
    @discardableResult
    private mutating func removeWaiter(at index: Int, into actions: inout [Action]) -> Waiter {
        let waiter = queue.remove(at: index)
        if waiter.deadline != nil { actions.append(.cancelTimer(.waitDeadline(waiter.id))) }
        return waiter
    }

    private mutating func removeAllWaiters(into actions: inout [Action]) -> [Waiter] {
        defer { queue.removeAll() }
        for waiter in queue where waiter.deadline != nil { actions.append(.cancelTimer(.waitDeadline(waiter.id))) }
        return queue
    }

    /// Sets a process's state; an idle spare's `max_idle_s` timer is armed when it becomes
    /// idle and disarmed when it stops being idle.
    mutating func set(_ spare: SpareID, _ state: ProcessState, into actions: inout [Action]) {
        if case .idle = processes[spare] { actions.append(.cancelTimer(.idleExpiry(spare))) }
        processes[spare] = state
        if case .idle(let since) = state { actions.append(.schedule(.idleExpiry(spare), at: since.advanced(by: settings.maxIdle))) }
    }

    /// A process goes to a turn: busy, counted by how it started.
    mutating func handOver(_ spare: SpareID, _ kind: StartKind, now: Instant, into actions: inout [Action]) {
        set(spare, .busy, into: &actions)
        count(kind)
        sizingBusy(spare, now: now)
    }

    private mutating func count(_ kind: StartKind) {
        counters.served += 1
        switch kind {
        case .warm: counters.warm += 1
        case .waited: counters.waited += 1
        case .cold: counters.cold += 1
        }
    }

    mutating func makeSpareID() -> SpareID {
        defer { nextSpare += 1 }
        return SpareID(nextSpare)
    }

    /// The arriving turn's name: the caller's, else the next of the machine's own.
    private mutating func makeWaiterID() -> WaiterID {
        if let chosen = pendingWaiterID {
            pendingWaiterID = nil
            return chosen
        }
        defer { nextWaiter += 1 }
        return WaiterID(nextWaiter)
    }
}

/// Names one process of a pool, for the pool's whole life (never reused).
public struct SpareID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "#\(rawValue)" }
}

/// Names one waiting turn.
public struct WaiterID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "w\(rawValue)" }
}

/// How a turn got its process; every count and hit ratio is by these.
public enum StartKind: String, Sendable, Codable, CaseIterable {
    /// An idle spare was there when the turn arrived.
    case warm
    /// It took a start-up under way, or waited in the queue.
    case waited
    /// A process was spawned for this turn.
    case cold
}

/// What the pool does when a turn finds no idle spare.
public enum WhenEmpty: String, Sendable, Codable, CaseIterable {
    case start, wait, reject
}

/// Why a turn got no process.
public enum RejectReason: Sendable, Equatable {
    case noCapacity
    case waitTimeout
    case poolFailing
    case draining
    /// The process started for this turn (a cold start) failed.
    case startFailed(String)
    /// The turn's memory does not fit in the budget (or the cgroup is under pressure).
    case memoryExhausted
}

/// What one process of a pool is charged against the memory budget, in bytes.
public struct MemoryCosts: Sendable, Equatable {
    /// An idle spare, as measured at readiness.
    public var spare: Int
    /// A start-up or a busy turn: the turn's peak.
    public var turn: Int

    public init(spare: Int, turn: Int) {
        self.spare = spare
        self.turn = turn
    }
}

/// Start-ups held back for the turns that took spares (`replace_after_ms`).
struct ReplacementHold: Sendable, Equatable {
    var until: ContinuousClock.Instant
    var turns: Set<SpareID>
}
