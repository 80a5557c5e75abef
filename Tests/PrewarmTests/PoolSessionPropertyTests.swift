import Testing

@testable import PrewarmCore

/// The pool's first invariant, written down: **a process serves only the session it was
/// started with.** The pool's start-ups belong to the pool's session and may go to any turn
/// that takes a spare; a start-up dedicated to one turn (a cold start with that turn's own
/// session) goes to that turn or to nobody. And a process is handed to at most one turn.
///
/// Checked here on the state machine over random sequences of every event it takes (arrivals
/// plain and cold, readiness, failures, exits, cancellations before and after the hand-over,
/// timers, resizes, recycles, memory changes), with each process and each turn labelled with
/// its session by the test, from the machine's own actions.
@Suite("Pool sessions (property)")
struct PoolSessionPropertyTests {
    typealias Machine = PoolStateMachine

    /// A session label: 0 is the pool's, every cold turn has its own.
    typealias Session = Int

    struct Model {
        var machine: Machine
        var now = ContinuousClock.now
        /// The session each process was started with.
        var processSession: [SpareID: Session] = [:]
        /// The session of each waiting turn.
        var waiterSession: [WaiterID: Session] = [:]
        /// Processes handed out so far (each at most once).
        var handedOut: Set<SpareID> = []
        /// Turns that left after their process was handed over (the pool must retire it).
        var timers: [Machine.Timer: ContinuousClock.Instant] = [:]
        var nextSession = 1
        var nextWaiter: UInt64 = 1_000_000
        var violations: [String] = []
        /// The session of each resume key (ResumeSparePropertyTests).
        var keyLabel: [ResumeKey: Session] = [:]

        /// Applies the machine's actions and checks each hand-over.
        mutating func apply(_ actions: [Machine.Action], coldOwner: (WaiterID, Session)? = nil) {
            for action in actions {
                switch action {
                case .start(let spare):
                    // A dedicated start-up carries its turn's session, a resume spare its key's,
                    // any other the pool's.
                    if let owner = machine.owner(of: spare), let (waiter, session) = coldOwner, owner == waiter {
                        processSession[spare] = session
                    } else if let owner = machine.owner(of: spare) {
                        processSession[spare] = waiterSession[owner] ?? -1
                    } else if let key = machine.resumeKey(of: spare) {
                        processSession[spare] = keyLabel[key] ?? -2
                        // Started only where it fits (resume spares being killed counted gone),
                        // and never while turns wait.
                        if let room = machine.room, machine.chargedBytes - ResumeSparePropertyTests.retiringHoldBytes(machine) > room {
                            violations.append("resume spare \(spare) started beyond the room: \(machine.chargedBytes) > \(room)")
                        }
                        if machine.queue.count > 0 { violations.append("resume spare \(spare) started while turns wait") }
                    } else if machine.isUniversal(spare) {
                        processSession[spare] = Self.noSessionYet
                    } else {
                        processSession[spare] = 0
                    }
                case .deliver(let waiter, let spare, _):
                    check(spare, servesTurnOf: waiterSession[waiter], label: "deliver to \(waiter)")
                    waiterSession[waiter] = nil
                case .reject(let waiter, _):
                    waiterSession[waiter] = nil
                case .schedule(let timer, let at):
                    timers[timer] = at
                case .cancelTimer(let timer):
                    timers[timer] = nil
                case .retire, .replaySizing, .sizingChanged:
                    break  // a fixed pool's machine: no sizing
                }
            }
        }

        /// A universal spare's label until a turn's claim gives it the turn's session.
        static let noSessionYet: Session = -3

        mutating func check(_ spare: SpareID, servesTurnOf session: Session?, label: String) {
            if handedOut.contains(spare) { violations.append("\(label): \(spare) handed out twice") }
            handedOut.insert(spare)
            guard let session else {
                violations.append("\(label): \(spare) delivered to a turn that is not waiting")
                return
            }
            if processSession[spare] == Self.noSessionYet {
                // A universal spare becomes the turn's own process: only a turn that would have
                // started one (not a turn of the pool's session, which a spare serves).
                if session == 0 { violations.append("\(label): universal spare \(spare) served a turn of the pool's session") }
                processSession[spare] = session
            }
            if processSession[spare] != session {
                violations.append("\(label): \(spare) of session \(processSession[spare] ?? -99) served a turn of session \(session)")
            }
        }
    }

    /// No process ever serves a turn whose session differs from the one it was started with,
    /// and none serves two turns, whatever the order of events.
    @Test(arguments: 0..<40)
    func aProcessServesOnlyItsSession(seed: Int) {
        var random = SeededGenerator(seed: UInt64(seed) &* 0x9E37_79B9 &+ 17)
        let whenEmpty: [WhenEmpty] = [.wait, .start, .reject]
        var model = Model(
            machine: Machine(
                settings: .init(
                    spares: Int(random.next() % 4), maxProcesses: 3 + Int(random.next() % 6), maxStarting: 1 + Int(random.next() % 3),
                    whenEmpty: whenEmpty[Int(random.next() % 3)], maxWaiting: 4, waitTimeout: .seconds(5), maxIdle: .seconds(30),
                    replaceAfter: random.next() % 2 == 0 ? nil : .milliseconds(Int64(200 + random.next() % 2000))
                )
            )
        )
        model.apply(model.machine.start(now: model.now))
        for _ in 0..<400 {
            model.now = model.now.advanced(by: .milliseconds(Int64(random.next() % 700)))
            let now = model.now
            let ids = model.machine.processes.keys.sorted()
            func pick(_ filter: (Machine.ProcessState) -> Bool) -> SpareID? {
                ids.filter { model.machine.processes[$0].map(filter) ?? false }.randomElement(using: &random)
            }
            switch random.next() % 12 {
            case 0, 1:
                // A turn of the pool's session.
                let waiter = WaiterID(model.nextWaiter)
                model.nextWaiter += 1
                model.waiterSession[waiter] = 0
                // Spares claimed ahead (`claim_ahead`): some idle ones with the turn's claim, some with another.
                let idle = Set(ids.filter { if case .idle = model.machine.processes[$0] { true } else { false } })
                let preferring = Set(idle.filter { _ in random.next() % 3 == 0 })
                let avoiding = Set(idle.subtracting(preferring).filter { _ in random.next() % 3 == 0 })
                let (decision, actions) = model.machine.turnArrived(waiter, preferring: preferring, avoiding: avoiding, now: now)
                if case .take(let spare) = decision {
                    model.check(spare, servesTurnOf: 0, label: "warm take")
                    // One with the turn's claim if any is idle; one with another claim only if nothing else is.
                    if !preferring.isEmpty { #expect(preferring.contains(spare), "seed \(seed): a spare claimed ahead with the turn's claim was idle") }
                    if avoiding.contains(spare) { #expect(idle.isSubset(of: avoiding), "seed \(seed): a spare claimed with another claim was taken while another was idle") }
                }
                if case .wait = decision {} else { model.waiterSession[waiter] = nil }
                model.apply(actions)
            case 2:
                // A turn with its own session: only a process started for it may serve it.
                let waiter = WaiterID(model.nextWaiter)
                model.nextWaiter += 1
                let session = model.nextSession
                model.nextSession += 1
                model.waiterSession[waiter] = session
                let (decision, actions) = model.machine.coldTurnArrived(waiter, now: now)
                if case .wait = decision {} else { model.waiterSession[waiter] = nil }
                model.apply(actions, coldOwner: (waiter, session))
            case 3, 4:
                if let spare = pick({ if case .starting = $0 { true } else { false } }) {
                    model.apply(model.machine.processReady(spare, now: now))
                }
            case 5:
                if let spare = pick({ if case .starting = $0 { true } else { false } }) {
                    model.apply(model.machine.startFailed(spare, reason: "boom", now: now))
                }
            case 6:
                // A waiting turn's client goes away before anything reached it.
                if let waiter = model.waiterSession.keys.randomElement(using: &random) {
                    model.waiterSession[waiter] = nil
                    model.apply(model.machine.waiterCancelled(waiter, now: now))
                }
            case 7:
                if let spare = pick({ $0 == .busy }) {
                    // Half the time the turn ran; else its client was gone at the hand-over.
                    if random.next() % 2 == 0 {
                        model.apply(model.machine.turnEnded(spare, now: now))
                    } else {
                        model.apply(model.machine.leaseAbandoned(spare, now: now))
                    }
                }
            case 8:
                if let spare = pick({ if case .retiring = $0 { true } else { false } }) {
                    model.apply(model.machine.processGone(spare, now: now))
                }
            case 9:
                if let spare = pick({ if case .idle = $0 { true } else { false } }) ?? pick({ $0 == .busy }) {
                    model.apply(model.machine.processExited(spare, reason: "died", now: now))
                }
            case 10:
                // Every timer due fires.
                for (timer, at) in model.timers where at <= now {
                    model.timers[timer] = nil
                    model.apply(model.machine.timerFired(timer, now: now))
                }
            default:
                switch random.next() % 3 {
                case 0: model.apply(model.machine.resize(spares: Int(random.next() % 4), maxProcesses: model.machine.settings.maxProcesses, now: now))
                case 1: model.apply(model.machine.recycle(now: now).1)
                default: model.apply(model.machine.memoryChanged(now: now))
                }
            }
            // `replace_after_ms` never keeps a waiting turn from the start-up it waits for.
            if !model.machine.queue.isEmpty, model.machine.replacementHold != nil {
                model.violations.append("a turn waits behind a replacement hold")
            }
            if !model.violations.isEmpty { break }
        }
        #expect(model.violations.isEmpty, "seed \(seed): \(model.violations)")
    }

    /// The finding this guards against, as one example: a process started for turn A's own
    /// session, whose client leaves while it boots, is retired; it never becomes a spare that
    /// a turn of another session (the pool's) gets.
    @Test func aColdStartWhoseTurnLeftIsRetiredNotShared() throws {
        let now = ContinuousClock.now
        var m = Machine(settings: .init(spares: 1, maxProcesses: 4, whenEmpty: .wait))
        let first = m.start(now: now).compactMap { if case .start(let id) = $0 { id } else { nil } }[0]
        _ = m.processReady(first, now: now)
        let a = WaiterID(100)
        let (decision, actions) = m.coldTurnArrived(a, now: now)
        #expect(decision == .wait(a))
        let dedicated = actions.compactMap { if case .start(let id) = $0 { id } else { nil } }
        #expect(dedicated.count == 1 && m.owner(of: dedicated[0]) == a)
        let cancelled = m.waiterCancelled(a, now: now)
        #expect(cancelled.contains(.retire(dedicated[0])), "A's process is retired with A")
        // B1 takes the pool's spare; B2 waits: it must get a new process, never A's.
        let (b1Decision, b1Actions) = m.turnArrived(WaiterID(101), now: now)
        guard case .take(let b1) = b1Decision else { Issue.record("B1 should take the spare"); return }
        #expect(b1 == first)
        let (b2, b2Actions) = m.turnArrived(WaiterID(102), now: now)
        #expect(b2 == .wait(WaiterID(102)))
        let ready = m.processReady(dedicated[0], now: now)
        #expect(!ready.contains { if case .deliver = $0 { true } else { false } }, "A's process reaches nobody")
        let fresh = (b1Actions + b2Actions + cancelled).compactMap { if case .start(let id) = $0, m.owner(of: id) == nil { id } else { nil } }
        try #require(!fresh.isEmpty)
        #expect(m.processReady(fresh[0], now: now).contains(.deliver(WaiterID(102), fresh[0], .waited)))
    }

    /// A process handed to a turn that had just gone is retired, never handed again.
    @Test func anAbandonedHandOverIsRetired() {
        let now = ContinuousClock.now
        var m = Machine(settings: .init(spares: 1, maxProcesses: 4))
        let spare = m.start(now: now).compactMap { if case .start(let id) = $0 { id } else { nil } }[0]
        _ = m.processReady(spare, now: now)
        guard case .take(let taken) = m.turnArrived(now: now).0 else { Issue.record("expected a take"); return }
        #expect(m.leaseAbandoned(taken, now: now).contains(.retire(taken)))
        #expect(m.processes[taken] == .retiring(wasIdle: false))
        #expect(m.idleCount == 0)
    }

    /// Stale timer firings change nothing: a served waiter's deadline, a taken spare's idle
    /// expiry, an earlier backoff's end.
    @Test func staleTimersAreIgnored() {
        let now = ContinuousClock.now
        var m = Machine(settings: .init(spares: 1, maxProcesses: 4, waitTimeout: .seconds(1), maxIdle: .seconds(1)))
        let spare = m.start(now: now).compactMap { if case .start(let id) = $0 { id } else { nil } }[0]
        let (decision, _) = m.turnArrived(WaiterID(7), now: now)
        #expect(decision == .wait(WaiterID(7)))
        let served = m.processReady(spare, now: now)
        #expect(served.contains(.cancelTimer(.waitDeadline(WaiterID(7)))))
        let later = now.advanced(by: .seconds(5))
        #expect(m.timerFired(.waitDeadline(WaiterID(7)), now: later).allSatisfy { if case .reject = $0 { false } else { true } })
        #expect(m.timerFired(.idleExpiry(spare), now: later).allSatisfy { $0 != .retire(spare) })
        #expect(m.timerFired(.backoffEnd(generation: 99), now: later).isEmpty)
        #expect(m.busyCount == 1)
    }
}
