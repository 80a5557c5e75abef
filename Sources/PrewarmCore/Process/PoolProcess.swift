#if canImport(Glibc)
import Glibc
#endif

/// What a pool needs of one of its processes. `ChildProcess` is the real one; the tests run
/// pools on processes of their own (`Pool(…, makeProcess:)`) to drive every race in process.
protocol PoolProcess: AnyObject, Sendable {
    var id: SpareID { get }
    var pid: pid_t? { get }
    var currentPhase: ProcessLifecycle.Phase { get }
    /// Runs the process for its whole life, reporting to `delegate`; returns once it is gone.
    func run(delegate: any ChildProcessDelegate) async
    /// Binds the idle process to `turn`; false if it is no longer idle.
    func claim(_ turn: Turn) -> Bool
    /// Why it cannot serve a turn now (stopped, dead); nil: runnable.
    func notRunnable() -> String?
    func raisePriority()
    func retire()
    func clientGone()
    /// Sends a signal to the process while it serves its turn; false when it does not.
    func signal(_ signal: Int32) -> Bool
    /// The turn it was handed, if any.
    var servedTurn: Turn? { get }
    /// The claim it is claimed with ahead (fixed at its start); nil: none.
    var aheadClaim: AheadClaim? { get }
    /// The stamp of what the CLI read as that claim went in.
    var aheadStamp: ClaimStamp? { get }
}

extension PoolProcess {
    var servedTurn: Turn? { nil }
    var aheadClaim: AheadClaim? { nil }
    var aheadStamp: ClaimStamp? { nil }
}

extension ChildProcess: PoolProcess {}
