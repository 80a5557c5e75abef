import AsyncAlgorithms
import NIOCore
import Synchronization

/// One turn on one process: the request written to its stdin, the stdout it streams back,
/// and how it ended.
///
/// The process's owner task produces `output` (a rendezvous channel: the owner reads the
/// process's stdout only as fast as the client takes it, so a slow reader holds back the
/// process instead of filling the daemon's memory) and then sets the result exactly once.
public final class Turn: Sendable {
    public let id: String
    public let input: ByteBuffer
    public let closeStdin: Bool
    /// The whole turn's limit (`turn_timeout_s`; a drop-in run's `drop_in_timeout_s`); nil: none.
    public let timeout: Duration?
    /// A drop-in run: it lasts until the process exits (not until an end line), and its
    /// client gets the exit status (`ClaudeSDKClient` sends several queries to one process).
    public let untilExit: Bool
    /// The process's stderr from the hand-over on (a drop-in run forwards it); nil: stderr
    /// is only kept for the log. A rendezvous channel, like `output`.
    public let errors: AsyncChannel<ByteBuffer>?
    /// For a claimed spare: the `claim_session` request written before the turn's input.
    public let claim: Claim?
    /// Unrequested lines at the start of the turn (the CLI's `ui_invalidate`) are dropped.
    public let dropLeadingChatter: Bool
    /// A two-way turn: what the client sends after `input`, written to stdin as it comes;
    /// its end closes stdin. A rendezvous channel: the client's socket is read only as fast
    /// as the process reads its stdin, so a client cannot fill the daemon's memory.
    public let inputStream: AsyncChannel<ByteBuffer>?
    /// A directory made for this turn alone (its working directory when it names none),
    /// removed once the process that ran the turn is gone.
    public let ownedDirectory: String?
    /// What a resume spare for this turn's session is started from, if it may have one.
    public let resume: ResumeSource?
    /// The session its last `result` named.
    private let session = Mutex<String?>(nil)
    /// stdout of the process from the start of the turn to the end of the turn.
    public let output = AsyncChannel<ByteBuffer>()
    private let outcome = OneShot<TurnResult>()
    private let claimAnswer = OneShot<ClaimOutcome>()

    /// A `claim_session` control request and its id.
    public struct Claim: Sendable {
        public let id: String
        public let line: ByteBuffer
        /// The same claim as a spare may have been claimed with ahead (`claim_ahead`), if it may be.
        public let ahead: AheadClaim?

        public init(id: String, line: String, ahead: AheadClaim? = nil) {
            self.id = id
            self.line = ByteBuffer(string: line.hasSuffix("\n") ? line : line + "\n")
            self.ahead = ahead
        }
    }

    public init(
        id: String, input: ByteBuffer, closeStdin: Bool, timeout: Duration?, claim: Claim? = nil, dropLeadingChatter: Bool = false,
        inputStream: AsyncChannel<ByteBuffer>? = nil, ownedDirectory: String? = nil, untilExit: Bool = false, forwardsErrors: Bool = false,
        resume: ResumeSource? = nil
    ) {
        self.resume = resume
        self.untilExit = untilExit
        self.errors = forwardsErrors ? AsyncChannel<ByteBuffer>() : nil
        self.ownedDirectory = ownedDirectory
        self.inputStream = inputStream
        self.id = id
        self.input = input
        self.closeStdin = closeStdin
        self.timeout = timeout
        self.claim = claim
        self.dropLeadingChatter = dropLeadingChatter
    }

    /// Sets the claim's outcome (the first call wins).
    func settleClaim(_ outcome: ClaimOutcome) {
        claimAnswer.set(outcome)
    }

    /// What the CLI answered to the claim; waits until it has (or the process ended).
    public func claimOutcome() async -> ClaimOutcome {
        await claimAnswer.value()
    }

    /// Sets the result (the first call wins) and ends `output`.
    func finish(_ result: TurnResult) {
        if claim != nil {
            settleClaim(.refused(reason: "process_ended", message: result.detail ?? "the process ended before answering the claim"))
        }
        outcome.set(result)
        output.finish()
        errors?.finish()
    }

    /// How the turn ended; waits until it has.
    public func result() async -> TurnResult {
        await outcome.value()
    }

    public var isFinished: Bool { outcome.isSet }

    /// How the turn ended, if it has.
    public var peekResult: TurnResult? { outcome.current }

    /// The session of the turn's last `result` line, if any.
    public var sessionID: String? { session.withLock { $0 } }

    func ended(inSession id: String) {
        session.withLock { $0 = id }
    }
}

/// How a turn's process was started, for a resume spare of its session: the command line,
/// directory and environment the caller gave (what a later resume is matched on), and the
/// settings its process ran with (what a resume spare copies).
public struct ResumeSource: Sendable {
    public let run: RunDescription
    public let config: PoolConfig

    public init(run: RunDescription, config: PoolConfig) {
        self.run = run
        self.config = config
    }

    /// The key a resume spare for `session` serves.
    public func key(session: String) -> ResumeKey? {
        ResumeKey(after: run, session: session, executable: run.cli ?? config.executable)
    }
}
/// How a turn ended.
public enum TurnOutcome: String, Sendable, Codable, CaseIterable {
    /// The end-of-turn line came.
    case completed
    /// The process exited before the end of the turn.
    case exited
    /// `turn_timeout_s` passed.
    case timeout
    /// The daemon killed the process: its client went away, or the drain timed out.
    case killed
    /// The daemon could not drive the process (a write to its stdin failed...).
    case error
}

public struct TurnResult: Sendable, Equatable {
    public var outcome: TurnOutcome
    /// The process's exit status when it exited on its own (128 + signal when killed).
    public var exitStatus: Int32?
    /// A one-line explanation for the log and the client.
    public var detail: String?

    public init(outcome: TurnOutcome, exitStatus: Int32? = nil, detail: String? = nil) {
        self.outcome = outcome
        self.exitStatus = exitStatus
        self.detail = detail
    }
}
