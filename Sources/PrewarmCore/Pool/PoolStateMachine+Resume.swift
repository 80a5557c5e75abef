/// Resume spares: the next turn of a conversation, started in advance.
///
/// When a turn of session S ends (its process gone, so its transcript is complete), the pool
/// may start a process with that turn's settings and `--resume=S` (`resumeWanted`). It is
/// *held* for S: never idle, never counted among the pool's spares, never handed to any turn
/// but one that resumes S with the same key (`resumeTurnArrived`), and only if the caller
/// found S's transcript unchanged since the spare became ready (`fresh`). A turn it cannot
/// serve runs cold, as without it.
///
/// Resume spares come last in memory: charged like any process (a start-up at the turn's
/// peak, a ready one at a spare's cost), started only when the pool's own spares are all
/// there and the room and `max_processes` allow, and the first thing shed, least recently
/// made first, when a turn, a spare of the pool or another pool needs the room, or under
/// pressure. They never push out a busy turn or an idle spare. Retired resume spares are
/// killed at once (an unused resuming CLI that is let exit writes to its transcript).
public struct ResumeSpareSettings: Sendable, Equatable {
    /// `resume_spare_ttl_s`: how long a ready resume spare waits for its turn.
    public var ttl: Duration
    /// `max_resume_spares`: at most this many held at once.
    public var maxHeld: Int

    public init(ttl: Duration = .seconds(600), maxHeld: Int = 4) {
        self.ttl = ttl
        self.maxHeld = maxHeld
    }
}

/// What a resume spare was started for.
struct ResumeHold: Sendable, Equatable {
    let key: ResumeKey
    /// When it was asked for: the least recently made give way first.
    let made: ContinuousClock.Instant
}

extension PoolStateMachine {
    /// Resume spares held now, starting or ready (retiring ones not counted).
    public var resumeHeldCount: Int { resumes.count }

    /// Those of them ready.
    public var resumeReadyCount: Int {
        resumes.keys.count { if case .held(ready: .some) = processes[$0] { true } else { false } }
    }

    var retiringHeldCount: Int { retiringHolds.count }

    /// The resume spare held for `key`, and whether it is ready.
    public func resumeSpare(for key: ResumeKey) -> (spare: SpareID, ready: Bool)? {
        guard let spare = resumes.first(where: { $0.value.key == key })?.key, case .held(let ready) = processes[spare] else { return nil }
        return (spare, ready != nil)
    }

    /// A turn of `key`'s session ended and its process is gone: a resume spare for the
    /// session's next turn is wanted, after the session's earlier ones are retired (their
    /// transcript has moved on). It starts now if it can, else as soon as the pool's own
    /// spares are there, a start-up slot is free and it fits (`startWantedResumes`), unless
    /// its TTL passes first. Returns its id if it started now (the caller's `.start` action
    /// for it carries the key: `resumes[id]`).
    public mutating func resumeWanted(_ key: ResumeKey, now: Instant) -> (SpareID?, [Action]) {
        var actions: [Action] = []
        guard let resume = settings.resume, resume.maxHeld > 0, !draining else { return (nil, actions) }
        for (spare, hold) in resumes where hold.key.session == key.session {
            if case .held(let ready) = processes[spare] {
                counters.resumeStale += 1
                retireHold(spare, wasReady: ready != nil, into: &actions)
            }
        }
        wantedResumes.removeAll { $0.key.session == key.session }
        wantedResumes.append(ResumeHold(key: key, made: now))
        if wantedResumes.count > resume.maxHeld { wantedResumes.removeFirst(wantedResumes.count - resume.maxHeld) }
        startWantedResumes(now: now, into: &actions)
        let started = resumes.first { $0.value.key == key && processes[$0.key] == .held(ready: nil) }?.key
        return (started, actions)
    }

    /// Resume spares still wanted (their session's turn ended; not started yet), oldest first.
    public var wantedResumeKeys: [ResumeKey] { wantedResumes.map(\.key) }

    /// Starts wanted resume spares, newest first, while the pool's own spares and waiting
    /// turns are covered, fewer than `max_starting` resume spares are starting (a budget of
    /// their own: the pool's start-ups are not held back by them, nor they by a refill) and
    /// one fits; older resume spares make way for newer ones. Those wanted for
    /// longer than the TTL are forgotten. Called at the end of every refill.
    mutating func startWantedResumes(now: Instant, into actions: inout [Action]) {
        guard let resume = settings.resume, !wantedResumes.isEmpty else { return }
        wantedResumes.removeAll { $0.made.advanced(by: resume.ttl) <= now }
        guard !draining, !failing, !pressure, !inBackoff(now) else { return }
        while let wanted = wantedResumes.last,
            queue.isEmpty, idleCount + poolStartingCount >= effectiveSpares,
            resumeStartingCount < settings.maxStarting
        {
            while resumes.count >= resume.maxHeld, let oldest = oldestHold() {
                evict(oldest, into: &actions)
            }
            evictHolds(toStart: 1, into: &actions)
            guard roomToStart(1) else { return }
            wantedResumes.removeLast()
            let spare = makeSpareID()
            processes[spare] = .held(ready: nil)
            resumes[spare] = wanted
            actions.append(.start(spare))
        }
    }

    /// The keys of the resume spares held.
    public var resumeKeys: [ResumeKey] { resumes.values.map(\.key) }

    /// The key a resume spare was started for.
    public func resumeKey(of spare: SpareID) -> ResumeKey? { resumes[spare]?.key }

    /// Resume spares starting now.
    var resumeStartingCount: Int { resumes.keys.count { processes[$0] == .held(ready: nil) } }

    /// A turn resuming a session arrived: its resume spare is handed over if there is one,
    /// ready, and `fresh` (the caller checked the session's transcript against the spare's
    /// readiness); else that spare is retired and the turn gets a cold start of its own.
    public mutating func resumeTurnArrived(
        _ waiter: WaiterID? = nil, key: ResumeKey, fresh: Bool, universal: Bool = false, now: Instant
    ) -> (TurnDecision, [Action]) {
        var actions: [Action] = []
        // The session moves on with this turn: a spare still wanted for it, or held for it
        // with other settings, would load what this turn is about to change. A fork leaves
        // the session as it was: its spares stay (whoever knows a session id cannot destroy
        // its spares by naming it with another command line).
        if key.continuesSession {
            wantedResumes.removeAll { $0.key.session == key.session }
            for (spare, hold) in resumes where hold.key.session == key.session && hold.key != key {
                if case .held(let ready) = processes[spare] { retireHold(spare, wasReady: ready != nil, into: &actions) }
            }
        }
        if let (spare, ready) = resumeSpare(for: key) {
            if ready, fresh, !draining {
                // As for a warm spare: other idle processes make room for its peak.
                let extra = settings.costs.map { max(0, $0.turn - $0.spare) } ?? 0
                while !fits(extra, countRetiringSparesFree: true), let other = nextToShed(excluding: spare) {
                    shed(other, into: &actions)
                }
                if fits(extra, countRetiringSparesFree: true) {
                    resumes[spare] = nil
                    counters.resumeHits += 1
                    handOver(spare, .warm, now: now, into: &actions)
                    refill(now: now, into: &actions)
                    return (.take(spare), actions)
                }
            }
            if ready && !fresh { counters.resumeStale += 1 }
            retireHold(spare, wasReady: ready, into: &actions)
        }
        counters.resumeMisses += 1
        let (decision, more) = coldTurnArrived(waiter, universal: universal, now: now)
        return (decision, actions + more)
    }

    /// Retires resume spares, least recently made first, until `bytes` are freed or none is
    /// left (memory pressure, another pool's turn): they go before any pool's idle spares.
    public mutating func shedResumeSpares(upTo bytes: Int, now: Instant) -> (freed: Int, [Action]) {
        var actions: [Action] = []
        var freed = 0
        while freed < bytes, let oldest = oldestHold() {
            let cost = processes[oldest].flatMap { state in settings.costs.map { Self.charge(state, $0) } } ?? 1
            evict(oldest, into: &actions)
            freed += max(1, cost)
        }
        return (freed, actions)
    }

    /// A resume spare answered its readiness probe: held until its TTL.
    mutating func resumeReady(_ spare: SpareID, now: Instant, into actions: inout [Action]) {
        processes[spare] = .held(ready: now)
        actions.append(.schedule(.resumeExpiry(spare), at: now.advanced(by: settings.resume?.ttl ?? .zero)))
    }

    mutating func resumeExpired(_ spare: SpareID, now: Instant, into actions: inout [Action]) {
        guard case .held(let ready?) = processes[spare], ready.advanced(by: settings.resume?.ttl ?? .zero) <= now else { return }
        counters.resumeExpired += 1
        retireHold(spare, wasReady: true, into: &actions)
    }

    /// Out of the holds, killed; its room counts as free from now on.
    mutating func retireHold(_ spare: SpareID, wasReady: Bool, into actions: inout [Action]) {
        resumes[spare] = nil
        retiringHolds.insert(spare)
        processes[spare] = .retiring(wasIdle: wasReady)
        actions.append(.retire(spare))
    }

    private mutating func evict(_ spare: SpareID, into actions: inout [Action]) {
        guard case .held(let ready) = processes[spare] else { return }
        counters.resumeEvicted += 1
        retireHold(spare, wasReady: ready != nil, into: &actions)
    }

    /// Resume spares give way, least recently made first, until `count` more start-ups fit
    /// in the room and in `max_processes`.
    mutating func evictHolds(toStart count: Int, into actions: inout [Action]) {
        while !roomToStart(count), let oldest = oldestHold() {
            evict(oldest, into: &actions)
        }
        while !roomToStart(count), let parked = oldestUniversal() {
            shed(parked, into: &actions)
        }
    }

    /// A cold turn's room: resume spares give way to it.
    mutating func makeRoomForTurn(into actions: inout [Action]) {
        evictHolds(toStart: 1, into: &actions)
    }

    /// Whether `count` more start-ups fit, resume spares being killed counted as gone.
    func roomToStart(_ count: Int) -> Bool {
        guard totalCount - retiringHeldCount + count <= settings.maxProcesses else { return false }
        guard let room, let costs = settings.costs else { return true }
        var charged = 0
        for (spare, state) in processes where !retiringHolds.contains(spare) {
            charged += Self.charge(state, costs)
        }
        return charged + count * costs.turn <= room
    }

    func oldestHold(excluding excluded: SpareID? = nil) -> SpareID? {
        resumes.filter { $0.key != excluded }.min { ($0.value.made, $0.key) < ($1.value.made, $1.key) }?.key
    }

    /// What is shed first to make room: resume spares (least recently made), then universal
    /// spares, then idle spares (oldest first).
    func nextToShed(excluding excluded: SpareID? = nil) -> SpareID? {
        oldestHold(excluding: excluded) ?? oldestUniversal(excluding: excluded) ?? oldestIdle(excluding: excluded)
    }
}
