#if canImport(Glibc)
import Glibc
#endif
import Logging

extension Pool {
    /// Where a turn's process comes from.
    public enum Launch: Sendable {
        /// One of the pool's spares (or a process started the pool's way).
        case spare
        /// A process started for this turn alone, with these settings (a session no spare
        /// can serve, a resume): always cold. It belongs to this turn: if the turn goes away
        /// before it is ready, it is retired.
        case cold(PoolConfig)
        /// A turn resuming a session: the resume spare held for `key` if it is ready and its
        /// transcript unchanged (warm), else a process started for it alone with these
        /// settings (cold), as `cold`.
        case resume(ResumeKey, cold: PoolConfig)
    }

    /// Gets exactly one process for `turn` and binds it to the turn; the process's stdout
    /// flows into `turn.output` from then on. A turn with a claim returns once the CLI has
    /// accepted it (else `claim_refused`, and the spare is retired).
    ///
    /// Cancelling the calling task (its client went away) ends the wait: a start-up made for
    /// the turn is retired, and a process handed over at that moment is retired unused.
    public func acquire(_ turn: Turn, launch: Launch = .spare) async throws(PrewarmError) -> Lease {
        let arrived = ContinuousClock.now
        // The stamp of what the CLI would read at this turn's claim, taken once: a spare claimed
        // ahead serves the turn only if it read the same. A claim whose directory has none (a
        // git work tree, too much to watch) would make spares no turn can take: not planned.
        var stamp: ClaimStamp?
        if case .spare = launch, let claim = turn.claim {
            if let ahead = claim.ahead {
                let configDirectory = state.withLock { $0.config.claude?.configDirectory }
                stamp = ClaimStamp.take(cwd: ahead.cwd, configDirectory: configDirectory)
            }
            state.withLock { $0.claimAhead.turnArrived(stamp == nil ? nil : claim.ahead) }
        }
        while true {
            let (spare, kind, stale) = try await obtain(launch, ahead: turn.claim?.ahead?.key)
            let process = state.withLock { $0.processes[spare] }
            if Task.isCancelled {
                // Handed over as the turn went away: nobody else may have it.
                abandon(spare)
                throw Self.cancelled
            }
            guard let process else { continue }
            if let problem = process.notRunnable() {
                // Stopped (SIGSTOP), or dead and not reaped yet: not a warm spare.
                logger.warning("a spare was not runnable at hand-off; retired", metadata: ["process.spare": "\(spare)", "reason": "\(problem)"])
                abandon(spare)
                continue
            }
            if let (endpoint, config) = state.withLock({ state in
                state.universalRuns.removeValue(forKey: spare).flatMap { config in state.universals[spare].map { ($0, config) } }
            }) {
                // A universal spare: its command line, directory and environment first.
                if let failure = await claimUniversal(endpoint, pid: process.pid ?? -1, config: config) {
                    logger.warning(
                        "a universal spare refused its claim; the pool keeps none from now on", metadata: ["process.spare": "\(spare)", "reason": "\(failure)"]
                    )
                    perform(mutate { $0.machine.universalClaimFailed(spare, now: .now) })
                    continue
                }
                if Task.isCancelled {
                    // The client left while the line was on its way: the process, now the
                    // turn's, is killed unused (a universal spare is never let exit).
                    abandon(spare)
                    throw Self.cancelled
                }
            }
            if let ahead = process.aheadClaim {
                // Claimed ahead: only for this very claim, and only if what the CLI read then is unchanged.
                let matches = turn.claim?.ahead?.key == ahead.key
                guard matches, let stamp, process.aheadStamp == stamp else {
                    logger.info(
                        "a spare claimed ahead was discarded at hand-off",
                        metadata: ["process.spare": "\(spare)", "reason": "\(matches ? "what the CLI read at its claim changed since" : "the turn makes another claim")"]
                    )
                    perform(
                        mutate { state in
                            state.claimAhead.discarded += 1
                            return state.machine.leaseAbandoned(spare, uncounting: kind, now: .now)
                        }
                    )
                    continue
                }
                state.withLock { $0.claimAhead.hits += 1 }
            }
            if process.claim(turn) {
                if turn.claim != nil {
                    // The client may leave while the CLI binds itself: the process is killed then,
                    // not left to run a turn nobody reads.
                    let outcome = await withTaskCancellationHandler { await turn.claimOutcome() } onCancel: { process.clientGone() }
                    if Task.isCancelled { throw Self.cancelled }
                    if case .refused(let reason, let message) = outcome {
                        throw PrewarmError(.claimRefused, "the CLI refused to bind a spare of pool \(name) to this session: \(message)", reason: reason)
                    }
                }
                var resume: ResumeOutcome?
                if case .resume = launch { resume = kind == .warm ? .hit : (stale ? .stale : .miss) }
                return Lease(
                    pool: name, spare: spare, pid: process.pid ?? 0, startKind: kind, waited: arrived.duration(to: .now), resume: resume, process: process
                )
            }
            // It died between readiness and the claim: it is being replaced; ask again.
            logger.debug("spare gone before its claim; asking again", metadata: ["process.spare": "\(spare)"])
        }
    }

    static var cancelled: PrewarmError { PrewarmError(.clientGone, "the client went away while its turn waited for a process") }

    /// One request to the machine. The turn, its continuation and (if it waits) its place in
    /// the queue are registered in one locked step; a cancellation is a machine event.
    /// `stale`: a resumed turn's spare was found stale (it runs cold).
    /// `ahead`: the key of the turn's claim, if a spare claimed ahead may serve it.
    private func obtain(_ launch: Launch, ahead: String?) async throws(PrewarmError) -> (SpareID, StartKind, stale: Bool) {
        let waiter = makeWaiterID()
        // What needs no lock is worked out before the locked step: a resumed turn's transcript
        // (a stat), whether a universal spare may take the turn (its environment).
        var check: ResumeCheck?
        var universal = false
        switch launch {
        case .spare: break
        case .cold(let config): universal = Self.universalServes(config, environment: environment)
        case .resume(let key, let config):
            check = checkResumeSpare(key)
            universal = Self.universalServes(config, environment: environment)
        }
        if let note = check?.staleNote {
            logger.info("resume spare stale: its session's transcript changed since it was ready; the turn runs cold", metadata: ["reason": "\(note)"])
        }
        let arrival = Arrival(launch: launch, resume: check, universal: universal, ahead: ahead)
        do {
            let (spare, kind) = try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    let (answer, actions, shortfall) = arrive(waiter, arrival, continuation: continuation)
                    perform(actions)
                    if let shortfall { governor?.requestRoom(shortfall, for: serial) }
                    switch answer {
                    case .none: break
                    case .take(let spare): continuation.resume(returning: (spare, .warm))
                    case .reject(let reason): continuation.resume(throwing: error(for: reason))
                    case .cancelled: continuation.resume(throwing: Self.cancelled)
                    }
                }
            } onCancel: {
                self.cancelWait(waiter)
            }
            return (spare, kind, check?.staleNote != nil && kind != .warm)
        } catch let error as PrewarmError {
            throw error
        } catch {
            throw Self.cancelled
        }
    }

    /// A turn's arrival: how it wants its process, and what was found out before the lock.
    private struct Arrival {
        let launch: Launch
        /// A resumed turn's spare, checked against its transcript.
        let resume: ResumeCheck?
        /// A universal spare may take the turn.
        let universal: Bool
        /// The key of its claim, if a spare claimed ahead may serve it.
        let ahead: String?
    }

    /// The locked step of a turn's arrival: the machine's decision, and either an answer to
    /// give at once or the continuation stored for a later `deliver` or `reject`.
    private func arrive(
        _ waiter: WaiterID, _ arrival: Arrival, continuation: CheckedContinuation<(SpareID, StartKind), any Error>
    ) -> (Answer?, [PoolStateMachine.Action], shortfall: Int?) {
        let launch = arrival.launch
        return mutate { state in
            // Cancelled before it reached the machine: it never does. (Cancelled after this
            // step, `cancelWait` finds it under the same lock.)
            if Task.isCancelled { return (.cancelled, [], nil) }
            let (decision, actions): (PoolStateMachine.TurnDecision, [PoolStateMachine.Action])
            switch launch {
            case .spare:
                // Spares claimed ahead: those with the turn's claim first, others never if another will do.
                var preferred: Set<SpareID> = []
                var avoided: Set<SpareID> = []
                for (spare, process) in state.processes {
                    guard let key = process.aheadClaim?.key else { continue }
                    if key == arrival.ahead { preferred.insert(spare) } else { avoided.insert(spare) }
                }
                (decision, actions) = state.machine.turnArrived(waiter, preferring: preferred, avoiding: avoided, now: .now)
            case .cold(let config), .resume(_, cold: let config):
                if case .resume(let key, _) = launch {
                    // Fresh only if the spare checked is the one still held for the key.
                    let fresh = arrival.resume.map { $0.fresh && state.machine.resumeSpare(for: key)?.spare == $0.spare } ?? false
                    (decision, actions) = state.machine.resumeTurnArrived(waiter, key: key, fresh: fresh, universal: arrival.universal, now: .now)
                } else {
                    (decision, actions) = state.machine.coldTurnArrived(waiter, universal: arrival.universal, now: .now)
                }
                // A universal spare handed to this turn is claimed with the turn's settings.
                for case .deliver(let to, let spare, _) in actions where to == waiter && state.universals[spare] != nil {
                    state.universalRuns[spare] = config
                }
                // The process started for this turn gets the turn's settings.
                if case .wait = decision {
                    for case .start(let spare) in actions where state.machine.owner(of: spare) == waiter {
                        state.launches[spare] = config
                    }
                }
            }
            switch decision {
            case .take(let spare):
                // A warm take needs no room, and does not pay for the check.
                return (.take(spare), actions, nil)
            case .reject(let reason):
                return (.reject(reason), actions, nil)
            case .wait:
                state.waiters[waiter] = continuation
                if case .spare = launch {
                    // The first spare ready is this turn's: none of them is in the background now.
                    for process in state.processes.values where process.currentPhase == .starting {
                        process.raisePriority()
                    }
                }
                // Short of memory: the other pools' idle spares make room for this turn.
                let turn = state.machine.settings.costs?.turn ?? 0
                let short = state.machine.room != nil && !state.machine.fits(turn)
                return (nil, actions, short ? turn : nil)
            }
        }
    }

    /// What a turn's arrival is answered at once (outside the lock).
    private enum Answer {
        case take(SpareID)
        case reject(RejectReason)
        case cancelled
    }

    /// The waiting turn went away: out of the machine (a start-up made for it is retired),
    /// its continuation resumed. If a process was already handed to it, `acquire` retires it.
    private func cancelWait(_ waiter: WaiterID) {
        let (continuation, actions) = mutate { state in
            guard let continuation = state.waiters.removeValue(forKey: waiter) else {
                return (CheckedContinuation<(SpareID, StartKind), any Error>?.none, [PoolStateMachine.Action]())
            }
            return (continuation, state.machine.waiterCancelled(waiter, now: .now))
        }
        perform(actions)
        continuation?.resume(throwing: Self.cancelled)
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
    /// A resumed turn: served by its session's resume spare, or not (and why).
    public let resume: ResumeOutcome?
    let process: any PoolProcess

    /// The session its turn ended in (its last `result`), once it has.
    public var sessionID: String? { process.servedTurn?.sessionID }

    /// The client went away: kill the process at once.
    public func clientGone() {
        process.clientGone()
    }

    /// Forwards a signal to the process (a drop-in run's SIGTERM, SIGINT, SIGHUP); false
    /// when its turn is over.
    @discardableResult
    public func signal(_ signal: Int32) -> Bool {
        process.signal(signal)
    }
}

/// How a resumed turn was served.
public enum ResumeOutcome: String, Sendable, Codable {
    /// By its session's resume spare (warm).
    case hit
    /// Cold: no resume spare was ready for it.
    case miss
    /// Cold: its resume spare had loaded a transcript that changed since.
    case stale
}
