import NIOCore
import Testing

@testable import PrewarmCore

/// A process's life decided without a process: the `ProcessLifecycle` alone.
@Suite("Process lifecycle")
struct ProcessLifecycleTests {
    typealias Machine = ProcessLifecycle

    func turn(claim: Bool = false, timeout: Duration = .seconds(5)) -> Turn {
        Turn(
            id: "t", input: ByteBuffer(string: "{}\n"), closeStdin: false, timeout: timeout,
            claim: claim ? Turn.Claim(id: "c1", line: "{}") : nil
        )
    }

    /// A name per action, to compare sequences.
    func names(_ actions: [Machine.Action]) -> [String] {
        actions.map { action in
            switch action {
            case .reportReady: "reportReady"
            case .reportDiedIdle: "reportDiedIdle"
            case .refuseClaim: "refuseClaim"
            case .route: "route"
            case .armTurnTimeout: "armTurnTimeout"
            case .writeClaim: "writeClaim"
            case .writeAheadClaim: "writeAheadClaim"
            case .writeInput: "writeInput"
            case .settleClaim: "settleClaim"
            case .turnEnded: "turnEnded"
            case .finish(_, let result): "finish(\(result.outcome.rawValue))"
            case .turnAnswered: "turnAnswered"
            case .stop(let ending): "stop(\(ending.summary))"
            }
        }
    }

    func idle() -> Machine {
        var m = Machine(readyTimeout: .seconds(30))
        _ = m.handle(.ready)
        return m
    }

    /// A plain turn: claimed, its input written, its end line ends it; the process stops
    /// gently and is never idle again.
    @Test func aTurnRunsOnceAndEndsTheProcess() {
        var m = idle()
        #expect(m.phase == .idle)
        #expect(names(m.handle(.claim(turn()))) == ["route", "armTurnTimeout", "writeInput"])
        #expect(m.phase == .busy)
        #expect(names(m.handle(.turnCompleted)) == ["turnEnded", "finish(completed)", "turnAnswered", "stop(turn completed)"])
        #expect(m.phase == .ended)
        // Never reused: a second claim is refused, every later event is ignored.
        #expect(names(m.handle(.claim(turn()))) == ["refuseClaim"])
        #expect(m.handle(.stdoutClosed).isEmpty && m.handle(.turnTimeout).isEmpty)
    }

    /// A claimed spare writes the claim first and the input only once the CLI accepts it; a
    /// refused claim ends the process without running the turn.
    @Test func claimsGateTheInput() {
        var m = idle()
        #expect(names(m.handle(.claim(turn(claim: true)))) == ["route", "armTurnTimeout", "writeClaim"])
        #expect(m.phase == .claiming)
        #expect(names(m.handle(.claimAnswered(.accepted(sessionID: "s")))) == ["settleClaim", "writeInput"])
        #expect(m.phase == .busy)

        var refused = idle()
        _ = refused.handle(.claim(turn(claim: true)))
        let actions = names(refused.handle(.claimAnswered(.refused(reason: "busy", message: "busy"))))
        #expect(actions == ["settleClaim", "turnEnded", "finish(error)", "stop(turn error)"])
        #expect(!actions.contains("writeInput"))
    }

    /// Every way a turn can end gives its outcome, and kills at once where it must.
    @Test(arguments: [
        (Machine.Event.stdoutClosed, "exited", false), (.turnTimeout, "timeout", true), (.clientGone, "killed", true),
        (.retire, "killed", true), (.stdinFailed("EPIPE"), "error", true),
    ])
    func turnEndings(_ event: Machine.Event, outcome: String, atOnce: Bool) {
        var m = idle()
        _ = m.handle(.claim(turn()))
        let actions = m.handle(event)
        #expect(m.phase == .ended)
        guard case .stop(let ending) = actions.last, case .turn(_, let ended, _) = ending else {
            Issue.record("no stop: \(names(actions))")
            return
        }
        #expect(ended.rawValue == outcome)
        #expect(ending.killAtOnce == atOnce)
        // An exited process's client learns the exit status once it is reaped, not here.
        #expect(names(actions).contains("finish(\(outcome))") == (outcome != "exited"))
    }

    /// Start-up: a timeout or an early close is a failed start-up; a retirement is not.
    @Test func startUpEndings() {
        var timedOut = Machine(readyTimeout: .milliseconds(1500))
        #expect(names(timedOut.handle(.readyTimeout)) == ["stop(start failed: not ready after 1500 ms (ready.timeout_s))"])
        var closed = Machine(readyTimeout: .seconds(1))
        #expect(names(closed.handle(.stdoutClosed)) == ["stop(start failed: the process closed stdout before it was ready)"])
        var retired = Machine(readyTimeout: .seconds(1))
        #expect(names(retired.handle(.retire)) == ["stop(retired)"])
        var early = Machine(readyTimeout: .seconds(1))
        #expect(names(early.handle(.claim(turn()))) == ["refuseClaim"], "a process still starting is nobody's")
        #expect(early.phase == .starting)
    }

    /// An idle spare that dies is reported and ended; a claim that comes after its death is
    /// refused (the pool then takes another spare).
    @Test func deathWhileIdle() {
        var m = idle()
        #expect(names(m.handle(.stdoutClosed)) == ["reportDiedIdle", "stop(died idle)"])
        #expect(names(m.handle(.claim(turn()))) == ["refuseClaim"])
        // A readiness timeout that fires after readiness is stale.
        var ready = idle()
        #expect(ready.handle(.readyTimeout).isEmpty)
        #expect(ready.phase == .idle)
    }
}
