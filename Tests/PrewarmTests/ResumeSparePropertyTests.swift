import Testing

@testable import PrewarmCore

/// Resume spares, written down as properties of the pool's state machine and checked over
/// random sequences of every event it takes, resume spares asked for and resumed turns
/// included, with memory room that comes and goes:
/// 1. a resume spare serves only a turn resuming its session with its key, and only if the
///    caller found its transcript unchanged (`fresh`); no other turn ever gets it;
/// 2. it is never counted among the pool's idle spares, and at most `max_resume_spares` are held;
/// 3. it comes last in memory: it is started only if it fits, and an idle spare of the pool is
///    never shed while a resume spare is held; no busy turn is ever retired to make room.
@Suite("Resume spares (property)")
struct ResumeSparePropertyTests {
    typealias Machine = PoolStateMachine

    /// The session property's model: it labels resume spares with their key's session too.
    typealias Model = PoolSessionPropertyTests.Model

    /// A resume session's label and key: three sessions, two command lines each.
    static func key(_ index: Int) -> (label: Int, key: ResumeKey) {
        let session = "s\(index % 3)"
        let argv = ["--output-format", "stream-json"] + (index % 2 == 0 ? [] : ["--model", "opus"]) + ["--resume", session]
        let run = RunDescription(argv: argv, cwd: "/w", env: [:])
        return (10_000 + index, ResumeKey(run: run, executable: "/claude")!)
    }

    @Test(arguments: 0..<40)
    func resumeSparesServeTheirSessionAndComeLast(seed: Int) {
        var random = SeededGenerator(seed: UInt64(seed) &* 0x2545_F491 &+ 3)
        let maxHeld = 1 + Int(random.next() % 3)
        let whenEmpty: [WhenEmpty] = [.wait, .start, .reject]
        var model = Model(
            machine: Machine(
                settings: .init(
                    spares: Int(random.next() % 3), maxProcesses: 3 + Int(random.next() % 5), maxStarting: 1 + Int(random.next() % 2),
                    whenEmpty: whenEmpty[Int(random.next() % 3)], maxWaiting: 4, waitTimeout: .seconds(5), maxIdle: .seconds(30),
                    costs: MemoryCosts(spare: 100, turn: 300), resume: ResumeSpareSettings(ttl: .seconds(20), maxHeld: maxHeld),
                    universalSpares: Int(random.next() % 3)
                )
            )
        )
        model.machine.room = 1500
        model.apply(model.machine.start(now: model.now))
        for step in 0..<500 {
            model.now = model.now.advanced(by: .milliseconds(Int64(random.next() % 700)))
            let now = model.now
            let ids = model.machine.processes.keys.sorted()
            func pick(_ filter: (Machine.ProcessState) -> Bool) -> SpareID? {
                ids.filter { model.machine.processes[$0].map(filter) ?? false }.randomElement(using: &random)
            }
            let busyBefore = Set(ids.filter { model.machine.processes[$0] == .busy })
            let shedBefore = model.machine.counters.shed
            var mayRetireBusy = false
            var event = ""
            switch random.next() % 14 {
            case 0, 1:
                event = "turn"
                let waiter = WaiterID(model.nextWaiter)
                model.nextWaiter += 1
                model.waiterSession[waiter] = 0
                let (decision, actions) = model.machine.turnArrived(waiter, now: now)
                if case .take(let spare) = decision { model.check(spare, servesTurnOf: 0, label: "warm take") }
                if case .wait = decision {} else { model.waiterSession[waiter] = nil }
                model.apply(actions)
            case 2:
                event = "cold turn"
                let waiter = WaiterID(model.nextWaiter)
                model.nextWaiter += 1
                let session = model.nextSession
                model.nextSession += 1
                model.waiterSession[waiter] = session
                let (decision, actions) = model.machine.coldTurnArrived(waiter, universal: random.next() % 2 == 0, now: now)
                if case .wait = decision {} else { model.waiterSession[waiter] = nil }
                model.apply(actions, coldOwner: (waiter, session))
            case 3:
                // A session's turn ended: a resume spare for it, if it fits.
                event = "resume wanted"
                let (label, key) = Self.key(Int(random.next() % 6))
                model.keyLabel[key] = label
                model.apply(model.machine.resumeWanted(key, now: now).1)
            case 4:
                // A turn resuming a session: its spare if fresh, else a cold start with its own session.
                event = "resumed turn"
                let (label, key) = Self.key(Int(random.next() % 6))
                model.keyLabel[key] = label
                let fresh = random.next() % 4 != 0
                let waiter = WaiterID(model.nextWaiter)
                model.nextWaiter += 1
                model.waiterSession[waiter] = label
                let (decision, actions) = model.machine.resumeTurnArrived(waiter, key: key, fresh: fresh, universal: random.next() % 2 == 0, now: now)
                if case .take(let spare) = decision {
                    model.check(spare, servesTurnOf: label, label: "resume take")
                    if !fresh { model.violations.append("a stale resume spare \(spare) was handed over") }
                }
                if case .wait = decision {} else { model.waiterSession[waiter] = nil }
                // The cold start is the turn's own, with the resumed session: same label.
                model.apply(actions, coldOwner: (waiter, label))
            case 5, 6:
                event = "ready"
                if let spare = pick({ if case .starting = $0 { true } else { $0 == .held(ready: nil) || $0 == .parked(ready: nil) } }) {
                    model.apply(model.machine.processReady(spare, now: now))
                }
            case 7:
                event = "start failed"
                if let spare = pick({ if case .starting = $0 { true } else { $0 == .held(ready: nil) || $0 == .parked(ready: nil) } }) {
                    model.apply(model.machine.startFailed(spare, reason: "boom", now: now))
                }
            case 8:
                event = "waiter cancelled"
                if let waiter = model.waiterSession.keys.randomElement(using: &random) {
                    model.waiterSession[waiter] = nil
                    model.apply(model.machine.waiterCancelled(waiter, now: now))
                }
            case 9:
                event = "turn ended"
                if let spare = pick({ $0 == .busy }) {
                    mayRetireBusy = true  // its own end, not room made for another
                    if random.next() % 2 == 0 {
                        model.apply(model.machine.turnEnded(spare, now: now))
                    } else {
                        model.apply(model.machine.leaseAbandoned(spare, now: now))
                    }
                }
            case 10:
                event = "gone"
                if let spare = pick({ if case .retiring = $0 { true } else { false } }) {
                    model.apply(model.machine.processGone(spare, now: now))
                }
            case 11:
                event = "timers"
                for (timer, at) in model.timers where at <= now {
                    model.timers[timer] = nil
                    model.apply(model.machine.timerFired(timer, now: now))
                }
            case 12:
                // The room comes and goes (other pools), pressure too.
                event = "memory"
                model.machine.room = [600, 900, 1500, 3000][Int(random.next() % 4)]
                model.machine.pressure = random.next() % 5 == 0
                model.apply(model.machine.memoryChanged(now: now))
            default:
                event = "shed for another pool"
                let (_, actions) = model.machine.shedIdle(upTo: 100, now: now)
                model.apply(actions)
            }
            if model.machine.resumeHeldCount > maxHeld {
                model.violations.append("step \(step) \(event): \(model.machine.resumeHeldCount) resume spares held, max \(maxHeld)")
            }
            if model.machine.counters.shed > shedBefore, model.machine.resumeHeldCount > 0 {
                model.violations.append("step \(step) \(event): an idle spare was shed while a resume spare was held")
            }
            if model.machine.counters.shed > shedBefore, model.machine.universalIdleCount > 0 {
                model.violations.append("step \(step) \(event): an idle spare was shed while a universal spare was parked")
            }
            for spare in busyBefore where !mayRetireBusy {
                if case .retiring = model.machine.processes[spare] {
                    model.violations.append("step \(step) \(event): busy \(spare) retired")
                }
            }
            for spare in model.machine.resumes.keys where model.machine.idleCount > 0 {
                if case .idle = model.machine.processes[spare] { model.violations.append("resume spare \(spare) counted idle") }
            }
            if !model.violations.isEmpty { break }
        }
        #expect(model.violations.isEmpty, "seed \(seed): \(model.violations)")
    }

    /// Retiring resume spares are killed at once: their bytes are as good as free.
    static func retiringHoldBytes(_ machine: Machine) -> Int {
        machine.retiringHolds.reduce(0) { total, spare in total + (machine.processes[spare].map { Machine.charge($0, machine.settings.costs!) } ?? 0) }
    }

    // MARK: - Examples

    static let settings = Machine.Settings(
        spares: 1, maxProcesses: 4, whenEmpty: .wait, costs: MemoryCosts(spare: 100, turn: 300), resume: ResumeSpareSettings(ttl: .seconds(60), maxHeld: 2)
    )

    /// Starts a machine with its one spare ready.
    static func ready(_ settings: Machine.Settings = settings, room: Int? = nil, now: ContinuousClock.Instant) -> Machine {
        var m = Machine(settings: settings)
        m.room = room
        for case .start(let spare) in m.start(now: now) { _ = m.processReady(spare, now: now) }
        return m
    }

    @Test func aReadyFreshSpareServesItsSessionWarm() throws {
        let now = ContinuousClock.now
        var m = Self.ready(now: now)
        let key = Self.key(0).key
        let spare = try #require(m.resumeWanted(key, now: now).0)
        #expect(m.resumeHeldCount == 1 && m.idleCount == 1)
        _ = m.processReady(spare, now: now)
        // Another session does not get it: it runs cold.
        let (other, _) = m.resumeTurnArrived(WaiterID(1), key: Self.key(1).key, fresh: true, now: now)
        #expect(other == .wait(WaiterID(1)))
        #expect(m.counters.resumeMisses == 1 && m.resumeHeldCount == 1)
        let (decision, _) = m.resumeTurnArrived(WaiterID(2), key: key, fresh: true, now: now)
        #expect(decision == .take(spare))
        #expect(m.counters.resumeHits == 1 && m.counters.warm == 1 && m.resumeHeldCount == 0)
    }

    /// Another command line of the same session does not get it either: it runs cold, and the
    /// spare, about to be behind its transcript, goes.
    @Test func anotherCommandLineOfTheSessionRetiresItsSpare() throws {
        let now = ContinuousClock.now
        var m = Self.ready(now: now)
        let spare = try #require(m.resumeWanted(Self.key(0).key, now: now).0)
        _ = m.processReady(spare, now: now)
        let (decision, actions) = m.resumeTurnArrived(WaiterID(1), key: Self.key(3).key, fresh: true, now: now)
        #expect(decision == .wait(WaiterID(1)) && actions.contains(.retire(spare)))
        #expect(m.counters.resumeMisses == 1 && m.resumeHeldCount == 0)
    }

    /// A fork of the session (`--fork-session`) leaves the session's transcript as it was:
    /// the spare stays, so a run that merely names the session cannot destroy it.
    @Test func aForkOfTheSessionLeavesItsSpare() throws {
        let now = ContinuousClock.now
        var m = Self.ready(now: now)
        let spare = try #require(m.resumeWanted(Self.key(0).key, now: now).0)
        _ = m.processReady(spare, now: now)
        let fork = try #require(
            ResumeKey(run: RunDescription(argv: ["--output-format", "stream-json", "--resume", "s0", "--fork-session"], cwd: "/w", env: [:]), executable: "/claude")
        )
        #expect(!fork.continuesSession && Self.key(0).key.continuesSession)
        let (decision, actions) = m.resumeTurnArrived(WaiterID(1), key: fork, fresh: true, now: now)
        #expect(decision == .wait(WaiterID(1)) && !actions.contains(.retire(spare)))
        #expect(m.resumeHeldCount == 1)
        #expect(m.resumeTurnArrived(WaiterID(2), key: Self.key(0).key, fresh: true, now: now).0 == .take(spare))
    }

    @Test func aStaleSpareIsDiscardedAndTheTurnRunsCold() throws {
        let now = ContinuousClock.now
        var m = Self.ready(now: now)
        let key = Self.key(0).key
        let spare = try #require(m.resumeWanted(key, now: now).0)
        _ = m.processReady(spare, now: now)
        let (decision, actions) = m.resumeTurnArrived(WaiterID(1), key: key, fresh: false, now: now)
        #expect(decision == .wait(WaiterID(1)))
        #expect(actions.contains(.retire(spare)))
        #expect(actions.contains { if case .start(let id) = $0 { m.owner(of: id) == WaiterID(1) } else { false } })
        #expect(m.counters.resumeStale == 1 && m.counters.resumeMisses == 1 && m.counters.resumeHits == 0)
    }

    @Test func aSpareExpiresAfterItsTTL() throws {
        let now = ContinuousClock.now
        var m = Self.ready(now: now)
        let spare = try #require(m.resumeWanted(Self.key(0).key, now: now).0)
        let actions = m.processReady(spare, now: now)
        #expect(actions.contains(.schedule(.resumeExpiry(spare), at: now.advanced(by: .seconds(60)))))
        #expect(m.timerFired(.resumeExpiry(spare), now: now.advanced(by: .seconds(30))).isEmpty)
        #expect(m.timerFired(.resumeExpiry(spare), now: now.advanced(by: .seconds(60))).contains(.retire(spare)))
        #expect(m.counters.resumeExpired == 1 && m.resumeHeldCount == 0)
    }

    /// Memory: a resume spare goes before an idle spare when a turn needs the room, and is
    /// not started when the pool's own spares are short.
    @Test func resumeSparesGoFirstWhenATurnNeedsRoom() throws {
        let now = ContinuousClock.now
        // Room 900: the spare (100) and a resume spare (100, once ready) fit.
        var m = Self.ready(room: 900, now: now)
        let spare = try #require(m.resumeWanted(Self.key(0).key, now: now).0)
        _ = m.processReady(spare, now: now)
        // The pool's spare becomes a turn (300), its replacement starts (300): 700 held; another
        // cold turn (300) needs the resume spare's room.
        guard case .take = m.turnArrived(WaiterID(1), now: now).0 else { Issue.record("warm take"); return }
        let (decision, actions) = m.coldTurnArrived(WaiterID(2), now: now)
        #expect(decision == .wait(WaiterID(2)))
        #expect(actions.contains(.retire(spare)), "the resume spare gave way")
        #expect(m.counters.resumeEvicted == 1 && m.counters.shed == 0 && m.busyCount == 1)
    }

    /// The pool's own spares first: a resume spare wanted while they are short starts once
    /// they are there; one wanted longer than its TTL ago is forgotten.
    @Test func aResumeSpareWaitsForThePoolsSpares() throws {
        let now = ContinuousClock.now
        var settings = Self.settings
        settings.spares = 2
        var m = Machine(settings: settings)
        let first = try #require(m.start(now: now).compactMap { if case .start(let id) = $0 { id } else { nil } }.first)
        // One of its two spares starting (max_starting 1).
        let key = Self.key(0).key
        #expect(m.resumeWanted(key, now: now).0 == nil && m.wantedResumeKeys == [key])
        // Its first spare ready: the second starts, and with both under way the resume spare too.
        let started = m.processReady(first, now: now).compactMap { if case .start(let id) = $0 { id } else { nil } }
        #expect(started.count == 2 && m.resumeKey(of: started[0]) == nil && m.resumeKey(of: started[1]) == key)
        // Wanted too long ago: forgotten.
        var late = Machine(settings: settings)
        _ = late.start(now: now)
        _ = late.resumeWanted(key, now: now)
        _ = late.memoryChanged(now: now.advanced(by: .seconds(61)))
        #expect(late.wantedResumeKeys.isEmpty)
    }

    @Test func atMostMaxResumeSparesTheOldestGoes() throws {
        let now = ContinuousClock.now
        var m = Self.ready(now: now)
        let first = try #require(m.resumeWanted(Self.key(0).key, now: now).0)
        _ = m.processReady(first, now: now)  // one start-up at a time (max_starting 1)
        let second = try #require(m.resumeWanted(Self.key(1).key, now: now.advanced(by: .seconds(1))).0)
        _ = m.processReady(second, now: now)
        let (third, actions) = m.resumeWanted(Self.key(2).key, now: now.advanced(by: .seconds(2)))
        #expect(third != nil && actions.contains(.retire(first)))
        #expect(m.resumeHeldCount == 2 && m.counters.resumeEvicted == 1)
    }

    /// A turn of the session that arrives first (a miss) makes its wanted spare obsolete: it
    /// would load a transcript that turn is changing.
    @Test func aTurnOfTheSessionCancelsItsWantedSpare() {
        let now = ContinuousClock.now
        var settings = Self.settings
        settings.spares = 2
        var m = Machine(settings: settings)
        _ = m.start(now: now)  // the pool's spares first: the resume spare waits
        _ = m.resumeWanted(Self.key(0).key, now: now)
        #expect(m.wantedResumeKeys.count == 1)
        _ = m.resumeTurnArrived(WaiterID(1), key: Self.key(0).key, fresh: true, now: now)
        #expect(m.wantedResumeKeys.isEmpty && m.counters.resumeMisses == 1)
    }

    /// A session's newer turn makes its older resume spares stale.
    @Test func aNewerTurnOfTheSessionReplacesItsSpare() throws {
        let now = ContinuousClock.now
        var m = Self.ready(now: now)
        let first = try #require(m.resumeWanted(Self.key(0).key, now: now).0)
        let (second, actions) = m.resumeWanted(Self.key(3).key, now: now)  // same session s0, other options
        #expect(second != nil && actions.contains(.retire(first)))
        #expect(m.counters.resumeStale == 1 && m.resumeHeldCount == 1)
    }

    // MARK: - Universal spares

    static let universal = Machine.Settings(
        spares: 1, maxProcesses: 6, maxStarting: 2, whenEmpty: .wait, costs: MemoryCosts(spare: 100, turn: 300),
        resume: ResumeSpareSettings(ttl: .seconds(60), maxHeld: 2), universalSpares: 1
    )

    /// Kept after the pool's own spares; a turn that would start cold takes one at once
    /// (still counted cold); a turn of the pool's session never does.
    @Test func aColdTurnTakesAUniversalSpare() throws {
        let now = ContinuousClock.now
        var m = Machine(settings: Self.universal)
        let started = m.start(now: now).compactMap { if case .start(let id) = $0 { id } else { nil } }
        #expect(started.count == 2 && !m.isUniversal(started[0]) && m.isUniversal(started[1]), "the pool's spare, then a universal one")
        for spare in started { _ = m.processReady(spare, now: now) }
        #expect(m.universalIdleCount == 1 && m.idleCount == 1)
        guard case .take(let warm) = m.turnArrived(WaiterID(1), now: now).0 else { Issue.record("warm take"); return }
        #expect(!m.isUniversal(warm) && warm == started[0])
        let (decision, actions) = m.coldTurnArrived(WaiterID(2), universal: true, now: now)
        #expect(decision == .wait(WaiterID(2)) && actions.contains(.deliver(WaiterID(2), started[1], .cold)))
        #expect(m.counters.universalHits == 1 && m.counters.cold == 1 && m.universalIdleCount == 0)
        // Without a universal spare (or not allowed one), a process of its own.
        let (other, more) = m.coldTurnArrived(WaiterID(3), universal: false, now: now)
        #expect(other == .wait(WaiterID(3)) && more.contains { if case .start(let id) = $0 { m.owner(of: id) == WaiterID(3) } else { false } })
    }

    /// Shed after resume spares and before idle spares; a refused claim turns them off.
    @Test func universalSparesGoAfterResumeSparesAndStopOnARefusal() throws {
        let now = ContinuousClock.now
        var m = Machine(settings: Self.universal)
        for case .start(let spare) in m.start(now: now) { _ = m.processReady(spare, now: now) }
        let hold = try #require(m.resumeWanted(Self.key(0).key, now: now).0)
        _ = m.processReady(hold, now: now)
        let parked = try #require(m.oldestUniversal())
        let (_, first) = m.shedIdle(upTo: 1, now: now)
        #expect(first.contains(.retire(hold)))
        let (_, second) = m.shedIdle(upTo: 1, now: now)
        #expect(second.contains(.retire(parked)) && m.idleCount == 1 && m.counters.shed == 0)
        // A claim refused: none kept from then on.
        var n = Machine(settings: Self.universal)
        for case .start(let spare) in n.start(now: now) { _ = n.processReady(spare, now: now) }
        let taken = try #require(n.oldestUniversal())
        _ = n.coldTurnArrived(WaiterID(1), universal: true, now: now)
        #expect(n.universalClaimFailed(taken, now: now).contains(.retire(taken)))
        #expect(n.settings.universalSpares == 0 && n.universalIdleCount == 0)
    }

    /// Three start-ups in a row that fail (a CLI without the mode) turn them off.
    @Test func failingUniversalSparesStop() throws {
        let now = ContinuousClock.now
        var m = Machine(settings: Self.universal)
        var starts = m.start(now: now).compactMap { if case .start(let id) = $0 { id } else { nil } }
        _ = m.processReady(starts.removeFirst(), now: now)
        for _ in 0..<3 {
            let parked = try #require(starts.first { m.isUniversal($0) } ?? m.processes.keys.first { m.isUniversal($0) })
            starts = m.startFailed(parked, reason: "unknown option", now: now).compactMap { if case .start(let id) = $0 { id } else { nil } }
        }
        #expect(m.settings.universalSpares == 0 && !m.failing && m.universalIdleCount == 0)
    }
}

