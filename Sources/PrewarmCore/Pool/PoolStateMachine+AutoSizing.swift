/// `spares = "auto"`: the pool's target, decided by the machine like everything else.
///
/// The machine keeps, in memory, the pool's recent arrivals, start-ups (duration and
/// concurrency) and turn durations. Every `auto_every_s` (a timer, `.sizing`) it asks for a
/// replay of the recent window (`.replaySizing`, a snapshot the caller replays outside its
/// lock) and takes the answer back as an event (`sizingReplayed`). Between replays it reacts
/// to a miss at once: a turn that finds no idle spare raises the target by one. It gives back
/// slowly: a lower target retires nothing; a spare beyond it is used and not replaced, or,
/// once it has been idle for `auto_hold_s`, retired, one per `auto_every_s`. Every change of
/// the target is an action (`.sizingChanged`) for the caller to log, export and journal.
extension PoolStateMachine {
    /// A change of an auto pool's target.
    public struct SizingChange: Sendable, Equatable {
        public enum Cause: String, Sendable, Equatable {
            /// The replay of the recent window.
            case replay
            /// A turn found no idle spare.
            case miss
            /// The floor moved: a size set at run time, or back to `min_spares`.
            case floor
        }

        public var from: Int
        public var to: Int
        public var cause: Cause
        /// The miss the replay predicts at the new target, when it comes from a replay.
        public var predictedMiss: Double?
        public var reason: String
    }

    /// An auto pool's controller: its target and what it has seen.
    struct AutoSizer: Sendable {
        var settings: AutoSizing
        /// The spares the pool keeps (before the memory budget lowers it), never below the
        /// floor (`Settings.spares`).
        var target: Int
        var predictedMiss: Double?
        var reason = "the floor, until the first replay"
        var arrivals = RecentArrivals()
        var startups: [Sample<StartupSample>] = []
        var turns: [Sample<Double>] = []
        /// Start-ups under way: when each began, and how many were under way then.
        var starting: [SpareID: Started] = [:]
        var busySince: [SpareID: Instant] = [:]
        /// Counts settings (reloads, resizes), so a replay asked for before one is ignored.
        var generation: UInt64 = 1
        /// The generation of the replay under way, if one is.
        var replaying: UInt64?
        /// Since when it has seen the traffic (the pool's start): a window reaching further
        /// back would count the time before as time without turns.
        var watchingSince: Instant?

        struct Started: Sendable {
            var since: Instant
            var concurrency: Int
        }

        struct Sample<Value: Sendable>: Sendable {
            var at: Instant
            var value: Value
        }

        /// Samples kept whatever their age, so a quiet pool still knows its start-up time.
        static let keptSamples = 20
        /// Samples kept at most.
        static let maxSamples = 2_000

        init(settings: AutoSizing, floor: Int) {
            self.settings = settings
            self.target = floor
        }

        /// The samples of the window, or the newest `keptSamples` if the window holds fewer.
        func recent<Value>(_ samples: [Sample<Value>], since start: Instant) -> [Value] {
            let inWindow = samples.reversed().prefix { $0.at >= start }
            let kept = inWindow.count >= Self.keptSamples ? Array(inWindow) : Array(samples.suffix(Self.keptSamples).reversed())
            return kept.reversed().map(\.value)
        }

        mutating func record<Value>(_ value: Value, at now: Instant, in samples: WritableKeyPath<Self, [Sample<Value>]>) {
            self[keyPath: samples].append(Sample(at: now, value: value))
            let horizon = now.advanced(by: .zero - settings.window)
            if self[keyPath: samples].count > Self.maxSamples
                || (self[keyPath: samples].count > Self.keptSamples && self[keyPath: samples][0].at < horizon)
            {
                self[keyPath: samples].removeFirst()
            }
        }
    }

    /// Arrivals in order, and whether each found no idle spare; the old ones dropped in
    /// batches (no shift per arrival).
    struct RecentArrivals: Sendable {
        struct Arrival: Sendable {
            var at: Instant
            var missed: Bool
            /// The pool's target when it came (the first of a run of misses: see `append`).
            var target: Int
        }

        private var arrivals: [Arrival] = []
        private var start = 0

        /// A run of misses is charged to the target the pool had when the run began: the
        /// target the misses raised on the way had no time to start a spare.
        mutating func append(_ arrival: Arrival, keeping window: Duration) {
            var arrival = arrival
            if arrival.missed, let last = arrivals.last, last.missed { arrival.target = last.target }
            arrivals.append(arrival)
            let horizon = arrival.at.advanced(by: .zero - window)
            while start < arrivals.count && arrivals[start].at < horizon { start += 1 }
            if start > 1024 && start * 2 > arrivals.count {
                arrivals.removeFirst(start)
                start = 0
            }
        }

        func since(_ instant: Instant) -> ArraySlice<Arrival> {
            let all = arrivals[start...]
            let first = all.firstIndex { $0.at >= instant } ?? all.endIndex
            return all[first...]
        }
    }

    /// An auto pool's figures for its status.
    public struct AutoSizingStatus: Sendable, Equatable {
        public var target: Int
        /// The most spares it may keep now: `max_spares`, `max_processes`, the memory budget.
        public var maxSpares: Int
        public var targetMiss: Double
        public var predictedMiss: Double?
        public var reason: String
    }

    public var autoSizing: AutoSizingStatus? {
        guard let sizer else { return nil }
        return AutoSizingStatus(
            target: sizer.target, maxSpares: sizingCap.spares, targetMiss: sizer.settings.targetMiss, predictedMiss: sizer.predictedMiss,
            reason: sizer.reason
        )
    }

    // MARK: - Events

    /// An evaluation's answer (`SizingReplay.decide` of a `.replaySizing` snapshot). A stale
    /// one (settings changed since it was asked for) changes nothing.
    public mutating func sizingReplayed(_ decision: SizingDecision, now: Instant) -> [Action] {
        var actions: [Action] = []
        guard var sizer, decision.generation == sizer.generation else { return actions }
        sizer.replaying = nil
        self.sizer = sizer
        guard let miss = decision.predictedMiss else { return actions }
        let to = min(max(decision.spares, settings.spares), max(settings.spares, sizingCap.spares))
        setTarget(to, cause: .replay, predictedMiss: miss, reason: decision.reason, into: &actions)
        refill(now: now, into: &actions)
        return actions
    }

    // MARK: - Internals

    /// The most spares an auto pool may keep: `max_spares`, `max_processes`, and what the
    /// memory budget holds at rest (no turn running); which of them binds.
    var sizingCap: (spares: Int, reason: String) {
        var cap = (spares: settings.maxProcesses, reason: "max_processes")
        if let maxSpares = sizer?.settings.maxSpares, maxSpares < cap.spares { cap = (maxSpares, "max_spares") }
        if let room, let costs = settings.costs, costs.spare > 0 {
            let fit = max(0, (room - max(0, costs.turn - costs.spare)) / costs.spare)
            if fit < cap.spares { cap = (fit, "the memory budget") }
        }
        return cap
    }

    /// Moves the target (within the floor and the cap), with the action that reports it.
    mutating func setTarget(_ to: Int, cause: SizingChange.Cause, predictedMiss: Double?, reason: String, into actions: inout [Action]) {
        guard var sizer else { return }
        let from = sizer.target
        // The last replay's prediction stands until the next one (every auto_every_s).
        if let predictedMiss { sizer.predictedMiss = predictedMiss }
        if to != from || cause == .replay { sizer.reason = reason }
        sizer.target = to
        self.sizer = sizer
        if to != from {
            actions.append(.sizingChanged(SizingChange(from: from, to: to, cause: cause, predictedMiss: predictedMiss, reason: reason)))
        }
    }

    /// A turn arrives: it is counted, and if it will find no idle spare the target rises by
    /// one at once (a burst is not left to the next replay).
    mutating func sizingArrival(now: Instant, into actions: inout [Action]) {
        guard var sizer else { return }
        let missed = oldestIdle() == nil || !queue.isEmpty
        sizer.arrivals.append(.init(at: now, missed: missed, target: effectiveSpares), keeping: sizer.settings.window)
        self.sizer = sizer
        guard missed else { return }
        let cap = max(settings.spares, sizingCap.spares)
        guard sizer.target < cap else { return }
        setTarget(sizer.target + 1, cause: .miss, predictedMiss: nil, reason: "a turn found no idle spare", into: &actions)
        refill(now: now, into: &actions)
    }

    /// A start-up began; `concurrency`: start-ups under way with it.
    mutating func sizingStarted(_ spare: SpareID, concurrency: Int, now: Instant) {
        sizer?.starting[spare] = AutoSizer.Started(since: now, concurrency: concurrency)
    }

    /// A start-up reached readiness: its duration and concurrency are a sample.
    mutating func sizingReady(_ spare: SpareID, now: Instant) {
        guard var sizer, let started = sizer.starting.removeValue(forKey: spare) else { return }
        // Counted before it leaves the start-ups: those under way at its end, itself included.
        let concurrency = Double(started.concurrency + startingCount) / 2
        let sample = StartupSample(seconds: started.since.duration(to: now).milliseconds / 1000, concurrency: concurrency)
        sizer.record(sample, at: now, in: \.startups)
        self.sizer = sizer
    }

    mutating func sizingBusy(_ spare: SpareID, now: Instant) {
        sizer?.busySince[spare] = now
    }

    mutating func sizingTurnEnded(_ spare: SpareID, now: Instant) {
        guard var sizer, let since = sizer.busySince.removeValue(forKey: spare) else { return }
        sizer.record(since.duration(to: now).milliseconds / 1000, at: now, in: \.turns)
        self.sizer = sizer
    }

    mutating func sizingGone(_ spare: SpareID) {
        guard sizer != nil else { return }
        sizer?.starting[spare] = nil
        sizer?.busySince[spare] = nil
    }

    /// Every `auto_every_s`: one spare beyond the target that has been idle for `auto_hold_s`
    /// is retired, and the window is replayed (unless a replay is still under way).
    mutating func sizingTick(generation: UInt64, now: Instant, into actions: inout [Action]) {
        guard var sizer, generation == sizer.generation, !draining else { return }
        actions.append(.schedule(.sizing(generation: generation), at: now.advanced(by: sizer.settings.every)))
        if idleCount > effectiveSpares, let spare = oldestIdle(), case .idle(let since) = processes[spare],
            since.advanced(by: sizer.settings.hold) <= now
        {
            set(spare, .retiring(wasIdle: true), into: &actions)
            actions.append(.retire(spare))
        }
        guard sizer.replaying == nil else { return }
        sizer.replaying = sizer.generation
        self.sizer = sizer
        actions.append(.replaySizing(sizingSnapshot(sizer, now: now)))
    }

    /// What a replay needs: the window's traffic (since the pool's start, if that is nearer),
    /// the bounds of the answer, the machine's settings made fixed.
    func sizingSnapshot(_ sizer: AutoSizer, now: Instant) -> SizingSnapshot {
        let start = max(now.advanced(by: .zero - sizer.settings.window), sizer.watchingSince ?? now)
        var fixed = settings
        fixed.autoSizing = nil
        fixed.costs = nil
        let turns = sizer.recent(sizer.turns, since: start).sorted()
        let arrivals = sizer.arrivals.since(start)
        let cap = sizingCap
        return SizingSnapshot(
            generation: sizer.generation,
            settings: fixed,
            arrivals: arrivals.map { start.duration(to: $0.at).milliseconds / 1000 },
            missed: arrivals.map(\.missed),
            targets: arrivals.map(\.target),
            windowSeconds: max(0.001, start.duration(to: now).milliseconds / 1000),
            startups: sizer.recent(sizer.startups, since: start),
            turnSeconds: turns.isEmpty ? 1 : turns[turns.count / 2],
            floor: settings.spares,
            cap: max(settings.spares, cap.spares),
            capReason: cap.reason,
            targetMiss: sizer.settings.targetMiss,
            current: sizer.target
        )
    }

    /// The first tick of an auto pool (its start, or a reload that made it one).
    mutating func scheduleSizing(now: Instant, into actions: inout [Action]) {
        guard var sizer else { return }
        sizer.watchingSince = sizer.watchingSince ?? now
        self.sizer = sizer
        actions.append(.schedule(.sizing(generation: sizer.generation), at: now.advanced(by: sizer.settings.every)))
    }

    /// New settings (a reload, a resize): the controller follows them. What it has seen of
    /// the traffic is kept (the same pool, the same traffic); its target stays within the
    /// new floor and cap; a replay under way is ignored when it comes back.
    mutating func resizeSizer(now: Instant, into actions: inout [Action]) {
        guard let auto = settings.autoSizing else {
            sizer = nil
            return
        }
        guard var sizer else {
            self.sizer = AutoSizer(settings: auto, floor: settings.spares)
            scheduleSizing(now: now, into: &actions)
            return
        }
        // A new generation: the old ticks and the replay under way are ignored when they come.
        sizer.settings = auto
        sizer.replaying = nil
        sizer.generation += 1
        self.sizer = sizer
        scheduleSizing(now: now, into: &actions)
        let cap = max(settings.spares, sizingCap.spares)
        let to = min(max(sizer.target, settings.spares), cap)
        let reason = to > sizer.target ? "the floor is now \(settings.spares)" : "the cap is now \(cap)"
        setTarget(to, cause: .floor, predictedMiss: nil, reason: reason, into: &actions)
    }
}
