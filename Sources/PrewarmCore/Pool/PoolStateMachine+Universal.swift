/// Universal spares: CLIs parked before their command line (CLI 2.1.332's `--bg-spare`,
/// docs/claude-cli.md §8), for the turns no spare serves: a resume with no resume spare ready,
/// a command line no pool matches. Such a turn would start a CLI of its own; it takes a parked
/// one instead, which has loaded the CLI's modules already, and sends it its command line,
/// directory and environment (the pool does, outside the machine). It still counts `cold`:
/// the CLI's own start-up remains.
///
/// They come after the pool's own spares and after resume spares: started only when both are
/// covered, a start-up slot is free and one fits, and shed before idle spares (after resume
/// spares). Three start-ups in a row that fail turn them off for the pool (the CLI may have
/// lost the mode: it is internal).
extension PoolStateMachine {
    public var universalIdleCount: Int { processes.values.count { if case .parked(ready: .some) = $0 { true } else { false } } }
    var universalStartingCount: Int { processes.values.count { $0 == .parked(ready: nil) } }
    var universalCount: Int { processes.values.count { if case .parked = $0 { true } else { false } } }

    /// Whether `spare` is a universal spare (parked or starting).
    public func isUniversal(_ spare: SpareID) -> Bool {
        if case .parked = processes[spare] { true } else { false }
    }

    /// Starts universal spares while fewer than `universal_spares` are there, after the pool's
    /// own spares and the resume spares wanted.
    mutating func startUniversalSpares(now: Instant, into actions: inout [Action]) {
        guard settings.universalSpares > 0, !draining, !failing, !pressure, !inBackoff(now), wantedResumes.isEmpty else { return }
        while universalCount < settings.universalSpares, queue.isEmpty, idleCount + poolStartingCount >= effectiveSpares,
            startingCount + universalStartingCount < settings.maxStarting, roomToStart(1)
        {
            let spare = makeSpareID()
            processes[spare] = .parked(ready: nil)
            actions.append(.start(spare))
        }
    }

    mutating func universalReady(_ spare: SpareID, now: Instant, into actions: inout [Action]) {
        universalFailures = 0
        processes[spare] = .parked(ready: now)
    }

    mutating func universalFailed(_ spare: SpareID, reason: String, now: Instant, into actions: inout [Action]) {
        processes[spare] = nil
        lastError = "a universal spare failed: \(reason)"
        universalFailures += 1
        if universalFailures >= 3 {
            settings.universalSpares = 0
        }
        refill(now: now, into: &actions)
    }

    /// The oldest ready universal spare, handed over as a turn's cold start (its peak made room
    /// for as for a warm spare); nil when none is ready or it cannot become a turn here.
    mutating func takeUniversalSpare(now: Instant, into actions: inout [Action]) -> SpareID? {
        guard let parked = oldestUniversal() else { return nil }
        let extra = settings.costs.map { max(0, $0.turn - $0.spare) } ?? 0
        while !fits(extra, countRetiringSparesFree: true), let other = nextToShed(excluding: parked) {
            shed(other, into: &actions)
        }
        guard fits(extra, countRetiringSparesFree: true) else { return nil }
        counters.universalHits += 1
        handOver(parked, .cold, now: now, into: &actions)
        refill(now: now, into: &actions)
        return parked
    }

    /// A universal spare's claim failed (the CLI refused the line, or lost the mode): it is
    /// retired and the pool keeps no more of them.
    public mutating func universalClaimFailed(_ spare: SpareID, now: Instant) -> [Action] {
        var actions: [Action] = []
        settings.universalSpares = 0
        for (other, state) in processes {
            if case .parked(let ready) = state { retireHold(other, wasReady: ready != nil, into: &actions) }
        }
        if processes[spare] == .busy {
            processes[spare] = .retiring(wasIdle: false)
            actions.append(.retire(spare))
        }
        refill(now: now, into: &actions)
        return actions
    }

    func oldestUniversal(excluding excluded: SpareID? = nil) -> SpareID? {
        var best: (SpareID, Instant)?
        for (spare, state) in processes where spare != excluded {
            if case .parked(let ready?) = state, best == nil || (ready, spare) < (best!.1, best!.0) {
                best = (spare, ready)
            }
        }
        return best?.0
    }
}
