import Testing

@testable import PrewarmCore

@Suite("Pool state machine")
struct PoolStateMachineTests {
    typealias Machine = PoolStateMachine
    let t0 = ContinuousClock.now

    func machine(spares: Int = 2, maxProcesses: Int? = nil, maxStarting: Int = 1, whenEmpty: WhenEmpty = .wait, maxWaiting: Int = 64) -> Machine {
        Machine(
            settings: .init(
                spares: spares, maxProcesses: maxProcesses ?? spares + 8, maxStarting: maxStarting, whenEmpty: whenEmpty,
                maxWaiting: maxWaiting, waitTimeout: .seconds(10), maxIdle: .seconds(3600)
            )
        )
    }

    func starts(_ actions: [Machine.Action]) -> [SpareID] {
        actions.compactMap { if case .start(let id) = $0 { id } else { nil } }
    }

    /// The backoff timers among `actions`, with their instants.
    func backoffTimers(_ actions: [Machine.Action]) -> [(Machine.Timer, ContinuousClock.Instant)] {
        actions.compactMap { if case .schedule(let timer, let at) = $0, case .backoffEnd = timer { (timer, at) } else { nil } }
    }

    /// Brings a pool up to its target by completing start-ups one at a time.
    func warmUp(_ m: inout Machine) {
        var pending = starts(m.start(now: t0))
        while let id = pending.first {
            pending.removeFirst()
            pending += starts(m.processReady(id, now: t0))
        }
    }

    /// Start-ups respect max_starting: a pool of 4 starts one at a time by default.
    @Test func startsAtMostMaxStarting() {
        var m = machine(spares: 4)
        #expect(starts(m.start(now: t0)).count == 1)
        var m2 = machine(spares: 4, maxStarting: 3)
        #expect(starts(m2.start(now: t0)).count == 3)
    }

    /// A turn takes an idle spare (warm), and its replacement starts at once.
    @Test func warmTakeRefills() {
        var m = machine(spares: 2)
        warmUp(&m)
        #expect(m.idleCount == 2)
        let (decision, actions) = m.turnArrived(now: t0)
        guard case .take = decision else {
            Issue.record("expected a warm take, got \(decision)")
            return
        }
        #expect(starts(actions).count == 1)
        #expect(m.counters.warm == 1)
        #expect(m.busyCount == 1)
    }

    /// `replace_after_ms`: the replacements of spares a burst took wait for its turns to end
    /// (or for the delay, or for a turn that has to wait), then all start.
    @Test func replacementsWaitForTheTurnsThatTookSpares() {
        var m = Machine(
            settings: .init(spares: 3, maxProcesses: 20, maxStarting: 3, waitTimeout: .seconds(10), replaceAfter: .seconds(2))
        )
        warmUp(&m)
        var taken: [SpareID] = []
        var scheduled: [(Machine.Timer, ContinuousClock.Instant)] = []
        for _ in 0..<2 {
            let (decision, actions) = m.turnArrived(now: t0)
            guard case .take(let id) = decision else {
                Issue.record("expected a warm take, got \(decision)")
                return
            }
            taken.append(id)
            #expect(starts(actions).isEmpty, "no replacement beside the turns starting")
            scheduled += actions.compactMap { if case .schedule(let timer, let at) = $0, case .replacementHoldEnd = timer { (timer, at) } else { nil } }
        }
        #expect(scheduled.count == 1 && scheduled.first?.1 == t0.advanced(by: .seconds(2)), "one hold, from the first hand-off")
        // One turn ends: the other still runs, nothing starts.
        #expect(starts(m.turnEnded(taken[0], now: t0.advanced(by: .milliseconds(300)))).isEmpty)
        // The last one ends: both replacements start.
        #expect(starts(m.turnEnded(taken[1], now: t0.advanced(by: .milliseconds(400)))).count == 2)

        // The delay: turns still busy at its end no longer hold the replacements back.
        var d = Machine(settings: .init(spares: 2, maxProcesses: 20, maxStarting: 2, waitTimeout: .seconds(10), replaceAfter: .seconds(1)))
        warmUp(&d)
        let first = d.turnArrived(now: t0).1
        #expect(starts(d.turnArrived(now: t0).1).isEmpty)
        guard case .schedule(let timer, let at)? = first.first(where: { if case .schedule(.replacementHoldEnd, _) = $0 { true } else { false } }) else {
            Issue.record("no hold timer: \(first)")
            return
        }
        #expect(starts(d.timerFired(timer, now: at)).count == 2, "the hold's end starts the replacements")

        // A turn that has to wait starts replacements at once, whatever the hold.
        var w = Machine(settings: .init(spares: 1, maxProcesses: 20, maxStarting: 2, waitTimeout: .seconds(10), replaceAfter: .seconds(5)))
        warmUp(&w)
        #expect(starts(w.turnArrived(now: t0).1).isEmpty)
        let (second, actions) = w.turnArrived(now: t0)
        guard case .wait = second else {
            Issue.record("expected a wait, got \(second)")
            return
        }
        #expect(starts(actions).count == 2, "the replacement and a process for the waiting turn start now")
    }

    /// Without `replace_after_ms` (or with 0) a replacement starts with the hand-off.
    @Test func replacementsStartAtOnceByDefault() throws {
        let config = try ConfigurationLoader(executableDirectory: nil, environment: [:], cpus: 2).parse(
            "[[pool]]\nname = \"a\"\ncommand = \"/bin/cat\"\nreplace_after_ms = 0\n[pool.turn]\nclose_stdin = true\n"
                + "[[pool]]\nname = \"b\"\ncommand = \"/bin/cat\"\nreplace_after_ms = 1500\n[pool.turn]\nclose_stdin = true\n"
                + "[[pool]]\nname = \"c\"\ncommand = \"/bin/cat\"\n[pool.turn]\nclose_stdin = true\n",
            origin: "test.toml", baseDirectory: "/"
        )
        #expect(config.pools[0].replaceAfter == nil && config.pools[1].replaceAfter == .milliseconds(1500) && config.pools[2].replaceAfter == nil)
        #expect(config.pools[1].machineSettings.replaceAfter == .milliseconds(1500))
    }

    /// Each spare is handed out once: two turns never get the same process.
    @Test func neverHandsTheSameSpareTwice() {
        var m = machine(spares: 3, maxStarting: 3)
        warmUp(&m)
        var taken = Set<SpareID>()
        for _ in 0..<3 {
            if case .take(let id) = m.turnArrived(now: t0).0 { #expect(taken.insert(id).inserted) }
        }
        #expect(taken.count == 3)
    }

    /// With no idle spare, a turn takes a start-up under way (waited); a second turn does not
    /// take the same start-up.
    @Test func waiterTakesUnpromisedStartup() {
        var m = machine(spares: 1)
        let first = starts(m.start(now: t0))
        #expect(first.count == 1)
        let (d1, _) = m.turnArrived(now: t0)
        guard case .wait(let w1) = d1 else {
            Issue.record("expected wait")
            return
        }
        let actions = m.processReady(first[0], now: t0)
        #expect(actions.contains(.deliver(w1, first[0], .waited)))
        #expect(m.counters.waited == 1)
    }

    /// when_empty = reject: no spare means 429 at once.
    @Test func rejectWhenEmpty() {
        var m = machine(spares: 0, whenEmpty: .reject)
        _ = m.start(now: t0)
        #expect(m.turnArrived(now: t0).0 == .reject(.noCapacity))
        #expect(m.counters.rejected == 1)
    }

    /// when_empty = start: a cold process dedicated to the turn, delivered as cold.
    @Test func coldStart() {
        var m = machine(spares: 0, whenEmpty: .start)
        _ = m.start(now: t0)
        let (decision, actions) = m.turnArrived(now: t0)
        guard case .wait(let waiter) = decision, let spare = starts(actions).first else {
            Issue.record("expected a dedicated start-up")
            return
        }
        #expect(m.processReady(spare, now: t0).contains(.deliver(waiter, spare, .cold)))
        #expect(m.counters.cold == 1)
    }

    /// max_waiting bounds the queue; the rest is rejected.
    @Test func maxWaiting() {
        var m = machine(spares: 0, maxWaiting: 2)
        _ = m.start(now: t0)
        if case .wait = m.turnArrived(now: t0).0 {} else { Issue.record("first should wait") }
        if case .wait = m.turnArrived(now: t0).0 {} else { Issue.record("second should wait") }
        #expect(m.turnArrived(now: t0).0 == .reject(.noCapacity))
    }

    /// A waiter is refused with wait_timeout once its deadline passes.
    @Test func waitTimeout() {
        var m = machine(spares: 0)
        _ = m.start(now: t0)
        let (decision, actions) = m.turnArrived(now: t0)
        guard case .wait(let waiter) = decision else {
            Issue.record("expected wait")
            return
        }
        #expect(actions.contains(.schedule(.waitDeadline(waiter), at: t0.advanced(by: .seconds(10)))))
        #expect(m.timerFired(.waitDeadline(waiter), now: t0.advanced(by: .seconds(5))).contains(.reject(waiter, .waitTimeout)) == false)
        #expect(m.timerFired(.waitDeadline(waiter), now: t0.advanced(by: .seconds(10))).contains(.reject(waiter, .waitTimeout)))
        #expect(m.waitingCount == 0)
    }

    /// Start-up failures back off 1 s, 2 s, 4 s...; after 3 in a row the pool is failing,
    /// waiters and new turns get pool_failing; one success clears it.
    @Test func backoffAndFailing() {
        var m = machine(spares: 1)
        var spare = starts(m.start(now: t0))[0]
        guard case .wait(let waiter) = m.turnArrived(now: t0).0 else {
            Issue.record("expected wait")
            return
        }
        var now = t0
        var failed = m.startFailed(spare, reason: "exit 1", now: now)
        #expect(starts(failed).isEmpty)  // backoff 1 s
        #expect(m.backoffUntil == now.advanced(by: .seconds(1)))
        #expect(backoffTimers(failed).map(\.1) == [now.advanced(by: .seconds(1))])
        now = now.advanced(by: .seconds(1))
        spare = starts(m.timerFired(backoffTimers(failed)[0].0, now: now))[0]
        failed = m.startFailed(spare, reason: "exit 1", now: now)
        #expect(m.backoffUntil == now.advanced(by: .seconds(2)))
        now = now.advanced(by: .seconds(2))
        spare = starts(m.timerFired(backoffTimers(failed)[0].0, now: now))[0]
        failed = m.startFailed(spare, reason: "exit 1", now: now)
        #expect(m.failing)
        #expect(failed.contains(.reject(waiter, .poolFailing)))
        #expect(m.turnArrived(now: now).0 == .reject(.poolFailing))
        now = now.advanced(by: .seconds(4))
        spare = starts(m.timerFired(backoffTimers(failed)[0].0, now: now))[0]
        _ = m.processReady(spare, now: now)
        #expect(!m.failing)
        #expect(m.idleCount == 1)
    }

    /// The backoff doubles from 1 s up to 60 s.
    @Test func backoffCaps() {
        let m = machine()
        #expect(m.backoff(afterFailures: 1) == .seconds(1))
        #expect(m.backoff(afterFailures: 4) == .seconds(8))
        #expect(m.backoff(afterFailures: 20) == .seconds(60))
    }

    /// An idle spare that dies is retired and replaced at once.
    @Test func idleDeathReplaced() {
        var m = machine(spares: 1)
        warmUp(&m)
        let spare = m.processes.keys.first!
        let actions = m.processExited(spare, reason: "died", now: t0)
        #expect(actions.contains(.retire(spare)))
        #expect(starts(actions).count == 1)
    }

    /// Spares older than max_idle_s are recycled.
    @Test func maxIdleRecycles() {
        var m = machine(spares: 1)
        warmUp(&m)
        let spare = m.processes.keys.first!
        #expect(m.timerFired(.idleExpiry(spare), now: t0.advanced(by: .seconds(3599))).isEmpty, "not yet")
        let actions = m.timerFired(.idleExpiry(spare), now: t0.advanced(by: .seconds(3600)))
        #expect(actions.contains(.retire(spare)))
        #expect(m.counters.recycled == 1)
    }

    /// Shrinking retires idle spares; growing starts more.
    @Test func resize() {
        var m = machine(spares: 3, maxStarting: 3)
        warmUp(&m)
        let shrink = m.resize(spares: 1, maxProcesses: 9, now: t0)
        #expect(shrink.filter { if case .retire = $0 { true } else { false } }.count == 2)
        var grow = machine(spares: 1)
        warmUp(&grow)
        #expect(starts(grow.resize(spares: 2, maxProcesses: 10, now: t0)).count == 1)
    }

    /// max_processes bounds spares + starting + busy (+ retiring).
    @Test func maxProcessesBounds() {
        var m = machine(spares: 2, maxProcesses: 2, maxStarting: 2)
        warmUp(&m)
        _ = m.turnArrived(now: t0)
        let (_, actions) = m.turnArrived(now: t0)
        #expect(m.totalCount == 2)
        #expect(starts(actions).isEmpty)
    }

    /// A drain refuses waiters and new turns, retires spares and start-ups, leaves busy ones.
    @Test func drain() {
        var m = machine(spares: 2, maxStarting: 2)
        warmUp(&m)
        _ = m.turnArrived(now: t0)
        let actions = m.drain(now: t0)
        #expect(actions.filter { if case .retire = $0 { true } else { false } }.count == 2)  // the idle one and the replacement start-up
        #expect(m.busyCount == 1)
        #expect(m.turnArrived(now: t0).0 == .reject(.draining))
    }

    /// Recycling retires every idle spare and every pool start-up, never a busy process or
    /// a start-up promised to a waiting turn, and starts replacements.
    @Test func recycleReplacesIdleSparesOnly() {
        var m = machine(spares: 2, maxStarting: 4)
        warmUp(&m)
        guard case (.take(let busy), _) = m.turnArrived(now: t0) else { Issue.record("no take"); return }
        let (recycled, actions) = m.recycle(now: t0)
        #expect(recycled == 1, "one idle spare left after the take; the refill was starting")
        let retired = actions.compactMap { if case .retire(let id) = $0 { id } else { nil } }
        #expect(!retired.contains(busy))
        #expect(retired.count == 2, "the idle spare and the refill under way")
        #expect(starts(actions).count == 2, "two new spares")
        #expect(m.busyCount == 1)
        #expect(m.counters.recycled == 1)
    }

    /// A reload's new settings apply, the measured costs stay, and a failing pool gets a
    /// fresh try at once.
    @Test func reconfigureClearsFailuresAndKeepsCosts() {
        var m = machine(spares: 1)
        var pending = starts(m.start(now: t0))
        pending += starts(m.setCosts(MemoryCosts(spare: 10, turn: 20), now: t0))
        var now = t0
        for _ in 0..<3 {
            guard !pending.isEmpty else { break }
            let id = pending.removeFirst()
            let failed = m.startFailed(id, reason: "boom", now: now)
            pending += starts(failed)
            now = now.advanced(by: .seconds(120))
            for (timer, _) in backoffTimers(failed) { pending += starts(m.timerFired(timer, now: now)) }
        }
        #expect(m.failing)
        #expect(m.startingCount == 1, "\(pending)")
        var settings = m.settings
        settings.spares = 3
        settings.maxStarting = 3
        settings.costs = nil
        let (_, actions) = m.reconfigure(settings, now: now)
        #expect(!m.failing)
        #expect(m.settings.costs == MemoryCosts(spare: 10, turn: 20))
        #expect(m.settings.spares == 3)
        #expect(!starts(actions).isEmpty, "start-ups at once, no backoff")
    }
}
