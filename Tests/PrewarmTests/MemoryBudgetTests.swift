import Testing

@testable import PrewarmCore

/// The budget arithmetic and admission, through the pool's own state machine (no processes).
@Suite("Memory budget")
struct MemoryBudgetTests {
    typealias Machine = PoolStateMachine
    let t0 = ContinuousClock.now
    static let mib = 1 << 20

    /// A pool with memory costs in MiB and a room in MiB.
    func machine(spares: Int, spare: Int, turn: Int, room: Int?, whenEmpty: WhenEmpty = .reject, maxStarting: Int = 1) -> Machine {
        var m = Machine(
            settings: .init(
                spares: spares, maxProcesses: spares + 8, maxStarting: maxStarting, whenEmpty: whenEmpty,
                costs: MemoryCosts(spare: spare * Self.mib, turn: turn * Self.mib)
            )
        )
        m.room = room.map { $0 * Self.mib }
        return m
    }

    func starts(_ actions: [Machine.Action]) -> [SpareID] {
        actions.compactMap { if case .start(let id) = $0 { id } else { nil } }
    }

    func retires(_ actions: [Machine.Action]) -> [SpareID] {
        actions.compactMap { if case .retire(let id) = $0 { id } else { nil } }
    }

    /// Completes start-ups one at a time until the pool starts nothing more.
    func warmUp(_ m: inout Machine) {
        var pending = starts(m.start(now: t0))
        while let id = pending.first {
            pending.removeFirst()
            pending += starts(m.processReady(id, now: t0))
        }
    }

    /// The charge the machine holds, in MiB, counting retiring spares as freed.
    func heldMiB(_ m: Machine) -> Int {
        (m.chargedBytes - m.processes.values.count { $0 == .retiring(wasIdle: true) } * (m.settings.costs?.spare ?? 0)) / Self.mib
    }

    /// The README's worked example: a 2 GiB replica, 256 MiB reserve, a 40 MiB daemon, the
    /// Claude CLI at 300 MiB idle and 500 MiB at its peak, 8 spares asked for.
    @Test func twoGiBReplica() {
        var pool = PoolConfig(name: "claude", command: "claude", executable: "/bin/claude", spares: 8, spareBytes: 300 * Self.mib, turnBytes: 500 * Self.mib)
        pool.maxProcessesSetting = 16
        let plan = MemoryPlan.derive(
            pools: [(pool, MemoryCosts(spare: 300 * Self.mib, turn: 500 * Self.mib), false)],
            limit: MemoryLimit(bytes: 2048 * Self.mib, source: "cgroup v2 /sys/fs/cgroup/memory.max", kind: .cgroup),
            memory: MemoryConfig(),
            daemonRSS: 40 * Self.mib,
            daemonRSSSource: "estimate",
            cpus: 2
        )
        #expect(plan.budget == 1752 * Self.mib)
        // (1752 - (500 - 300)) / 300 = 5 spares; 1752 / 500 = 3 busy turns at once.
        #expect(plan.pools[0].effectiveSpares == 5)
        #expect(plan.pools[0].maxProcesses == 3)
    }

    /// Two pools share the budget: the second gets what the first's spares leave.
    @Test func poolsShareTheBudget() {
        let a = PoolConfig(name: "a", command: "a", executable: "/bin/a", spares: 4)
        let b = PoolConfig(name: "b", command: "b", executable: "/bin/b", spares: 4)
        let plan = MemoryPlan.derive(
            pools: [(a, MemoryCosts(spare: 100 * Self.mib, turn: 200 * Self.mib), true), (b, MemoryCosts(spare: 100 * Self.mib, turn: 200 * Self.mib), true)],
            limit: MemoryLimit(bytes: 1000 * Self.mib, source: "test", kind: .configured),
            memory: MemoryConfig(reserve: 0),
            daemonRSS: 0,
            daemonRSSSource: "test",
            cpus: 2
        )
        #expect(plan.pools[0].effectiveSpares == 4)  // (1000 - 100) / 100 = 9, capped at 4
        #expect(plan.pools[1].effectiveSpares == 4)  // (600 - 100) / 100 = 5, capped at 4
        #expect(plan.pools[0].maxProcesses == 3)  // (1000 - 400) / 200
        #expect(plan.pools[1].maxProcesses == 3)
    }

    /// Start-ups stop at what fits: spares are charged at their idle cost, each start-up at
    /// the turn peak, and room is left for one spare to become a turn.
    @Test func sparesStopAtWhatFits() {
        var m = machine(spares: 8, spare: 150, turn: 350, room: 738, maxStarting: 8)
        // Start-ups stack at the turn peak: only two fit at once in 738 MiB.
        var pending = starts(m.start(now: t0))
        #expect(pending.count == 2)
        while let id = pending.first {
            pending.removeFirst()
            pending += starts(m.processReady(id, now: t0))
        }
        #expect(m.idleCount == 3)  // (738 - 200) / 150 = 3
        #expect(m.effectiveSpares == 3)
        #expect(m.memoryMaxProcesses == 2)
        #expect(heldMiB(m) <= 738)
    }

    /// Busy turns come first: a turn that needs room sheds other idle spares to get it; when
    /// even that is not enough the turn is refused with memory_exhausted.
    @Test func turnsShedSparesThenAreRefused() {
        var m = machine(spares: 8, spare: 150, turn: 350, room: 738)
        warmUp(&m)
        let (first, firstActions) = m.turnArrived(now: t0)
        guard case .take = first else { Issue.record("expected a warm take, got \(first)"); return }
        #expect(retires(firstActions).isEmpty)
        let (second, secondActions) = m.turnArrived(now: t0)
        guard case .take = second else { Issue.record("expected a warm take, got \(second)"); return }
        #expect(retires(secondActions).count == 1, "one idle spare shed for the second turn")
        #expect(m.counters.shed == 1)
        #expect(m.busyCount == 2)
        #expect(heldMiB(m) == 700)
        let (third, _) = m.turnArrived(now: t0)
        #expect(third == .reject(.memoryExhausted))
        #expect(m.busyCount == 2)
    }

    /// With when_empty = "wait", a turn that does not fit waits, and gets a process once a
    /// busy turn's memory is free.
    @Test func memoryWaiterIsServedWhenATurnEnds() {
        var m = machine(spares: 1, spare: 150, turn: 350, room: 738, whenEmpty: .wait)
        warmUp(&m)
        let (first, firstActions) = m.turnArrived(now: t0)
        guard case .take(let a) = first, let replacement = starts(firstActions).first else {
            Issue.record("expected a warm take and a replacement, got \(first)"); return
        }
        _ = m.processReady(replacement, now: t0)
        guard case .take = m.turnArrived(now: t0).0 else { Issue.record("expected a second warm take"); return }
        let (third, thirdActions) = m.turnArrived(now: t0)
        guard case .wait(let waiter) = third else { Issue.record("expected a memory wait, got \(third)"); return }
        // No start-up fits while two turns run (700 of 738 MiB held).
        #expect(starts(thirdActions).isEmpty)
        #expect(starts(m.turnEnded(a, now: t0)).isEmpty, "a retiring turn still holds its memory")
        let started = starts(m.processGone(a, now: t0))
        #expect(started.count == 1)
        guard let next = started.first else { return }
        #expect(m.processReady(next, now: t0).contains(.deliver(waiter, next, .waited)))
    }

    /// Under pressure nothing starts, a cold start is refused, idle spares can be shed.
    @Test func pressureStopsStartups() {
        var m = machine(spares: 2, spare: 10, turn: 20, room: 10_000, whenEmpty: .start)
        warmUp(&m)
        m.pressure = true
        guard case .take = m.turnArrived(now: t0).0 else { Issue.record("a warm take still works under pressure"); return }
        #expect(m.startingCount == 0, "no replacement under pressure")
        guard case .take = m.turnArrived(now: t0).0 else { Issue.record("expected the second spare"); return }
        #expect(m.turnArrived(now: t0).0 == .reject(.memoryExhausted))
        m.pressure = false
        #expect(starts(m.memoryChanged(now: t0)).count == 1)
    }

    /// Shedding under pressure retires idle spares, oldest first.
    @Test func shedIdleFreesSpares() {
        var m = machine(spares: 3, spare: 100, turn: 200, room: nil)
        warmUp(&m)
        let (freed, actions) = m.shedIdle(upTo: 150 * Self.mib, now: t0)
        #expect(freed == 200 * Self.mib)
        #expect(retires(actions).count == 2)
        #expect(m.idleCount == 1)
    }

    /// Measured costs above the estimates shed idle spares until the pool fits its room.
    @Test func risingEstimatesShed() {
        var m = machine(spares: 4, spare: 100, turn: 150, room: 600)
        warmUp(&m)
        #expect(m.idleCount == 4)
        let actions = m.setCosts(MemoryCosts(spare: 200 * Self.mib, turn: 300 * Self.mib), now: t0)
        #expect(retires(actions).count == 1)
        #expect(m.idleCount == 3)
        #expect(heldMiB(m) <= 600)
    }

    /// Whatever the order of events, what the machine holds (retiring spares counted free)
    /// never exceeds its room: the check and the charge are one step.
    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8])
    func neverOvershoots(seed: UInt64) {
        var random = SeededGenerator(seed: seed)
        for whenEmpty in WhenEmpty.allCases {
            var m = machine(spares: 6, spare: 150, turn: 350, room: 900, whenEmpty: whenEmpty, maxStarting: 3)
            _ = m.start(now: t0)
            for _ in 0..<2000 {
                let ids = Array(m.processes.keys)
                switch random.next() % 5 {
                case 0:
                    _ = m.turnArrived(now: t0)
                case 1:
                    if let id = ids.filter({ if case .starting = m.processes[$0] { true } else { false } }).randomElement(using: &random) {
                        _ = m.processReady(id, now: t0)
                    }
                case 2:
                    if let id = ids.filter({ m.processes[$0] == .busy }).randomElement(using: &random) { _ = m.turnEnded(id, now: t0) }
                case 3:
                    if let id = ids.filter({ if case .retiring = m.processes[$0] { true } else { false } }).randomElement(using: &random) {
                        _ = m.processGone(id, now: t0)
                    }
                default:
                    _ = m.memoryChanged(now: t0)
                }
                #expect(heldMiB(m) <= 900, "held \(heldMiB(m)) MiB of 900 (seed \(seed), \(whenEmpty))")
                if heldMiB(m) > 900 { return }
            }
        }
    }

    /// The estimate rises at once on a new high and decays slowly after it.
    @Test func peakEstimator() {
        var estimate = PeakEstimator(configured: 500)
        #expect(estimate.value == 500 && !estimate.measured)
        for _ in 0..<20 { estimate.record(200) }
        #expect(estimate.value == 200)
        estimate.record(400)
        #expect(estimate.value == 400, "a new high counts at once")
        for _ in 0..<10 { estimate.record(200) }
        #expect(estimate.value > 300, "and decays slowly: \(estimate.value)")
        for _ in 0..<200 { estimate.record(200) }
        #expect(estimate.value == 200, "an old outlier stops counting: \(estimate.value)")
    }
}
