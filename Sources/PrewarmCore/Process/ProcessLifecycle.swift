/// The life of one child process, as a pure state machine: the events its owner task sees
/// in, the actions to perform out. `ChildProcess` runs one in its single owner loop; the
/// tests drive it alone, without processes.
///
/// starting -(ready)-> idle -(claim)-> [claiming -(claim accepted)->] busy -(end)-> ended.
/// A spare claimed ahead (`AheadClaim`) is ready once the CLI accepted that claim, and its
/// turn's input goes in at once: starting -(ready line)-> starting -(claim accepted)-> idle.
/// A process serves one turn at most and is never reused: every turn's end, and every other
/// way out (a failed start-up, a death while idle, a retirement), ends the machine.
struct ProcessLifecycle {
    enum Phase: Sendable, Equatable {
        case starting, idle
        /// A turn took it; the CLI is asked to bind itself to the turn's session.
        case claiming
        case busy, ended
    }

    enum Event: Sendable {
        /// The readiness line was seen (or none is expected).
        case ready
        /// The readiness line of a spare to be claimed ahead was seen: its claim goes in.
        case readyToClaimAhead
        /// The CLI answered the claim made ahead.
        case aheadClaimAnswered(ClaimOutcome)
        case readyTimeout
        /// The process closed its stdout: it exited, or is exiting.
        case stdoutClosed
        /// A turn takes this process (the pool handed it over).
        case claim(Turn)
        /// The CLI answered the turn's `claim_session` request.
        case claimAnswered(ClaimOutcome)
        /// The turn's end line was seen.
        case turnCompleted
        case turnTimeout
        case clientGone
        /// The pool retires it (a spare no longer needed, a drain).
        case retire
        case stdinFailed(String)
    }

    enum Action: Sendable {
        /// Tell the pool it is an idle spare.
        case reportReady
        /// Tell the pool an idle spare died.
        case reportDiedIdle
        /// The process ended before the claim reached it: the turn never ran (it ends as
        /// `exited`, and its client may retry).
        case refuseClaim(Turn)
        /// From now on its stdout belongs to the turn.
        case route(Turn)
        case armTurnTimeout(Duration?)
        /// Write the turn's `claim_session` request.
        case writeClaim(Turn)
        /// Write the claim made ahead (the process's `AheadClaim`).
        case writeAheadClaim
        /// Write the turn's input (its body, then a two-way client's stream).
        case writeInput(Turn)
        case settleClaim(Turn, ClaimOutcome)
        /// Tell the pool the turn is over (the process will be retired).
        case turnEnded
        /// The turn's client gets its outcome.
        case finish(Turn, TurnResult)
        /// Tell the pool the client has its answer (its last memory reading).
        case turnAnswered
        /// The end of its life: stop the process group, report how it ended.
        case stop(Ending)
    }

    /// Why a process's life ended, and so how it is stopped and reported.
    enum Ending: Sendable {
        case startFailed(String)
        /// Retired before or after readiness, with no turn.
        case retired
        case diedIdle
        case turn(Turn, TurnOutcome, detail: String?)

        var isRetired: Bool {
            if case .retired = self { true } else { false }
        }

        /// How the process ended, for the journal.
        var summary: String {
            switch self {
            case .startFailed(let why): "start failed: \(why.prefix(200))"
            case .retired: "retired"
            case .diedIdle: "died idle"
            case .turn(_, let outcome, _): "turn \(outcome.rawValue)"
            }
        }

        /// Its report quotes the end of the process's stderr.
        var reportsStderr: Bool {
            switch self {
            case .startFailed, .turn(_, .exited, _): true
            // A drop-in run's client gets the process's stderr to its end.
            case .turn(let turn, _, _): turn.untilExit
            default: false
            }
        }

        /// Killed at once (SIGKILL to the group), rather than asked to finish (stdin closed,
        /// then SIGTERM, then SIGKILL).
        var killAtOnce: Bool {
            switch self {
            case .turn(_, .timeout, _), .turn(_, .killed, _), .turn(_, .error, _): true
            case .startFailed: true
            default: false
            }
        }
    }

    private(set) var phase: Phase = .starting
    /// The turn it serves, from the claim on.
    private(set) var turn: Turn?
    /// The CLI's answer to the claim made ahead: the turn's claim, already made.
    private(set) var claimedAhead: ClaimOutcome?
    let readyTimeout: Duration

    init(readyTimeout: Duration) {
        self.readyTimeout = readyTimeout
    }

    mutating func handle(_ event: Event) -> [Action] {
        switch (phase, event) {
        case (.starting, .ready):
            phase = .idle
            return [.reportReady]
        case (.starting, .readyToClaimAhead):
            return [.writeAheadClaim]
        case (.starting, .aheadClaimAnswered(let outcome)):
            guard case .accepted = outcome else { return end(.startFailed("the claim made ahead was refused: \(outcome)")) }
            phase = .idle
            claimedAhead = outcome
            return [.reportReady]
        case (.starting, .readyTimeout):
            return end(.startFailed("not ready after \(readyTimeout.wholeMilliseconds) ms (ready.timeout_s)"))
        case (.starting, .stdoutClosed):
            return end(.startFailed("the process closed stdout before it was ready"))
        case (.starting, .retire), (.idle, .retire):
            return end(.retired)
        case (.idle, .stdoutClosed):
            return [.reportDiedIdle] + end(.diedIdle)

        case (.idle, .claim(let turn)) where claimedAhead != nil:
            // Claimed ahead with the claim the pool matched to this turn's: its input goes in now.
            guard turn.claim != nil, let claimedAhead else { return [.refuseClaim(turn)] + end(.retired) }
            self.turn = turn
            phase = .busy
            return [.route(turn), .armTurnTimeout(turn.timeout), .settleClaim(turn, claimedAhead), .writeInput(turn)]
        case (.idle, .claim(let turn)):
            self.turn = turn
            phase = turn.claim == nil ? .busy : .claiming
            // A claim first; the turn's input once the CLI accepts it.
            return [.route(turn), .armTurnTimeout(turn.timeout), turn.claim == nil ? .writeInput(turn) : .writeClaim(turn)]
        case (_, .claim(let turn)):
            // Not idle: it died (or is being retired) between the hand-over and the claim.
            return [.refuseClaim(turn)]

        case (.claiming, .claimAnswered(let outcome)):
            guard let turn else { return [] }
            guard case .accepted = outcome else {
                // The refused process is retired; the turn never started for its client.
                let detail = "the CLI refused the claim: \(outcome)"
                phase = .ended
                return [.settleClaim(turn, outcome), .turnEnded, .finish(turn, TurnResult(outcome: .error, detail: detail)), .stop(.turn(turn, .error, detail: detail))]
            }
            phase = .busy
            return [.settleClaim(turn, outcome), .writeInput(turn)]

        case (.busy, let event), (.claiming, let event):
            guard let turn, let (outcome, detail) = Self.turnOutcome(event, turn: turn) else { return [] }
            phase = .ended
            var actions: [Action] = [.turnEnded]
            // An exited process's exit status is known only once it is reaped: its client
            // gets the outcome after `stop` (a drop-in run's always: its status is its answer).
            if outcome != .exited && !turn.untilExit { actions.append(.finish(turn, TurnResult(outcome: outcome, detail: detail))) }
            actions += [.turnAnswered, .stop(.turn(turn, outcome, detail: detail))]
            return actions

        default:
            // Stale or late: a timeout after readiness, a second close, anything once ended.
            return []
        }
    }

    /// How a turn ends on `event`; nil when the event does not end it.
    private static func turnOutcome(_ event: Event, turn: Turn) -> (TurnOutcome, String?)? {
        let timeout = turn.timeout?.wholeMilliseconds ?? 0
        switch event {
        case .turnCompleted: return turn.untilExit ? nil : (.completed, nil)
        // A drop-in run ends when its process does: that is its completion.
        case .stdoutClosed: return turn.untilExit ? (.completed, nil) : (.exited, nil)
        case .turnTimeout:
            return turn.untilExit
                ? (.timeout, "the run did not end within \(timeout) ms (drop_in_timeout_s)")
                : (.timeout, "no end of turn after \(timeout) ms (turn_timeout_s)")
        case .clientGone: return (.killed, "the client went away")
        case .retire: return (.killed, "the daemon stopped before the end of the turn")
        case .stdinFailed(let error): return (.error, "writing the request to the process failed: \(error)")
        default: return nil
        }
    }

    private mutating func end(_ ending: Ending) -> [Action] {
        phase = .ended
        return [.stop(ending)]
    }
}
