import Foundation
import Logging
import NIOCore
import Synchronization
import Testing

@testable import PrewarmCore

/// The pool itself (its locks, its continuations, its performed actions) run in process on
/// fake processes the test drives step by step: every start-up is ready, fails or dies when
/// the test says, so each race of the request path happens in a chosen order.
///
/// (Time is not faked here: these tests involve no timeout. The machine's timers are tested
/// in simulated time in `PoolStateMachineTests` and `PoolSessionPropertyTests`.)
@Suite("Pool in process (fake processes)", .serialized)
struct PoolInProcessTests {
    /// A process of the test's: it does what the test tells it, when it tells it.
    final class FakeProcess: PoolProcess, Sendable {
        enum Command: Sendable {
            case ready
            case fail(String)
            case die
            case completeTurn
        }

        let id: SpareID
        let config: PoolConfig
        private let commands: AsyncStream<Command>
        private let send: AsyncStream<Command>.Continuation
        private let state = Mutex<(phase: ProcessLifecycle.Phase, turn: Turn?, retired: Bool)>((.starting, nil, false))

        init(id: SpareID, config: PoolConfig) {
            self.id = id
            self.config = config
            (commands, send) = AsyncStream.makeStream(of: Command.self)
        }

        var pid: pid_t? { 40_000 + pid_t(id.rawValue) }
        var currentPhase: ProcessLifecycle.Phase { state.withLock { $0.phase } }
        var wasRetired: Bool { state.withLock { $0.retired } }
        var turn: Turn? { state.withLock { $0.turn } }
        /// The session it was started with (a cold start's is its turn's).
        var cwd: String? { config.cwd }

        func becomeReady() { send.yield(.ready) }
        func failStartup(_ reason: String = "boom") { send.yield(.fail(reason)) }
        func die() { send.yield(.die) }
        func completeTurn() { send.yield(.completeTurn) }

        func run(delegate: any ChildProcessDelegate) async {
            for await command in commands {
                let phase = currentPhase
                switch (phase, command) {
                case (.starting, .ready):
                    state.withLock { $0.phase = .idle }
                    delegate.processReady(id, pid: pid!, startup: .milliseconds(10))
                case (.starting, .fail(let reason)):
                    delegate.processStartFailed(id, reason: reason)
                    return end(delegate, "start failed")
                case (.idle, .die):
                    delegate.processExited(id, reason: "died")
                    return end(delegate, "died idle")
                case (.busy, .completeTurn), (.busy, .die):
                    let outcome: TurnOutcome = if case .die = command { .exited } else { .completed }
                    delegate.processTurnEnded(id)
                    turn?.finish(TurnResult(outcome: outcome))
                    delegate.processTurnAnswered(id)
                    return end(delegate, "turn \(outcome.rawValue)")
                default:
                    continue
                }
            }
            end(delegate, "retired")
        }

        private func end(_ delegate: any ChildProcessDelegate, _ how: String) {
            state.withLock { $0.phase = .ended }
            send.finish()
            delegate.processGone(id, exit: how)
        }

        func claim(_ turn: Turn) -> Bool {
            state.withLock { state in
                guard state.phase == .idle else { return false }
                state.phase = .busy
                state.turn = turn
                return true
            }
        }

        func notRunnable() -> String? { nil }
        func raisePriority() {}

        func retire() {
            state.withLock { $0.retired = true }
            let busy = currentPhase == .busy
            if busy {
                send.yield(.die)
            } else {
                send.finish()
            }
        }

        func clientGone() { send.yield(.die) }
        func signal(_ signal: Int32) -> Bool { false }
    }

    /// Makes fake processes and hands each to the test as it is made.
    final class FakeFactory: Sendable {
        let made: AsyncStream<FakeProcess>
        private let madeContinuation: AsyncStream<FakeProcess>.Continuation

        init() {
            (made, madeContinuation) = AsyncStream.makeStream(of: FakeProcess.self)
        }

        func make(_ id: SpareID, _ config: PoolConfig, _ nice: Int) -> any PoolProcess {
            let process = FakeProcess(id: id, config: config)
            madeContinuation.yield(process)
            return process
        }
    }

    /// A pool of fake processes, running in a task of its own, and the processes as the pool makes them.
    struct Harness {
        let pool: Pool
        let factory: FakeFactory
        let running: Task<Void, Never>
        var made: AsyncStream<FakeProcess>.AsyncIterator

        init(spares: Int, extra: String = "", governor: MemoryGovernor? = nil) throws {
            let loader = ConfigurationLoader(executableDirectory: "/nonexistent", environment: ["PATH": "/usr/bin:/bin"], cpus: 2)
            let text = """
                [journal]
                enabled = false
                [[pool]]
                name = "p"
                command = "/bin/true"
                spares = \(spares)
                max_starting = 4
                spare_nice = 0
                \(extra)
                [pool.turn]
                end = "result"
                """
            let config = try loader.parse(text, origin: "test", baseDirectory: "/tmp").pools[0]
            let factory = FakeFactory()
            let pool = Pool(
                config: config, keeper: nil, governor: governor, environment: [:], logger: Logger(label: "test"),
                makeProcess: { factory.make($0, $1, $2) }
            )
            governor?.attach(governor!.pools + [pool])
            self.pool = pool
            self.factory = factory
            self.made = factory.made.makeAsyncIterator()
            running = Task { await pool.run() }
        }

        /// The next process the pool makes.
        mutating func next() async -> FakeProcess {
            await made.next()!
        }

        func stop() async {
            pool.drain()
            pool.retireAll()
            pool.stopLaunching()
            await running.value
        }
    }

    static func turn(_ id: String = "t") -> Turn {
        Turn(id: id, input: ByteBuffer(string: "{}\n"), closeStdin: false, timeout: .seconds(60))
    }

    /// Waits until the pool's status says so (the pool's own state, changed by other tasks).
    static func until(_ pool: Pool, _ what: String, _ condition: @escaping @Sendable (PoolStatus) -> Bool) async throws {
        try await waitUntil(what, timeout: .seconds(5)) { condition(pool.status()) }
    }

    /// A turn cancelled while it waits leaves the queue at once with client_gone; the start-up
    /// it waited for becomes an idle spare of the pool (it was the pool's, not the turn's).
    @Test func cancelWhileWaiting() async throws {
        var h = try Harness(spares: 1)
        let first = await h.next()
        let pool = h.pool
        let waiting = Task { try await pool.acquire(Self.turn()) }
        try await Self.until(pool, "the turn waits") { $0.waiting == 1 }
        waiting.cancel()
        let result = await waiting.result
        guard case .failure(let error as PrewarmError) = result else { Issue.record("expected client_gone, got \(result)"); return }
        #expect(error.code == .clientGone)
        #expect(pool.status().waiting == 0)
        first.becomeReady()
        try await Self.until(pool, "the spare is idle") { $0.idle == 1 }
        #expect(!first.wasRetired)
        await h.stop()
    }

    /// A turn cancelled before it reaches the pool never enters it.
    @Test func cancelBeforeArrival() async throws {
        var h = try Harness(spares: 1)
        let first = await h.next()
        first.becomeReady()
        try await Self.until(h.pool, "the spare is idle") { $0.idle == 1 }
        let pool = h.pool
        let cancelled = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await pool.acquire(Self.turn())
        }
        guard case .failure(let error as PrewarmError) = await cancelled.result else { Issue.record("expected client_gone"); return }
        #expect(error.code == .clientGone)
        #expect(pool.status().idle == 1, "the spare was not taken")
        #expect(pool.status().served == 0)
        await h.stop()
    }

    /// A process started for a turn's own session (a cold start) whose client leaves while it
    /// boots is retired; the next turns of the pool's session never get it.
    @Test func disconnectDuringASessionsStartup() async throws {
        var h = try Harness(spares: 1)
        let spare = await h.next()
        spare.becomeReady()
        try await Self.until(h.pool, "the spare is idle") { $0.idle == 1 }
        let pool = h.pool
        var own = pool.config
        own.cwd = "/srv/tenant-a"
        let launch = Pool.Launch.cold(own)
        let a = Task { try await pool.acquire(Self.turn("a"), launch: launch) }
        let dedicated = await h.next()
        #expect(dedicated.cwd == "/srv/tenant-a")
        a.cancel()
        _ = await a.result
        #expect(dedicated.wasRetired, "A's process is retired with A")
        // B1 takes the spare; B2 waits and gets a new process of the pool's, never A's.
        let b1 = try await pool.acquire(Self.turn("b1"))
        #expect(b1.spare == spare.id)
        let b2 = Task { try await pool.acquire(Self.turn("b2")) }
        var replacement = await h.next()
        while replacement.id == dedicated.id { replacement = await h.next() }
        try await Self.until(pool, "B2 waits") { $0.waiting == 1 }
        dedicated.becomeReady()  // too late: it is retired
        replacement.becomeReady()
        let lease = try await b2.value
        #expect(lease.spare == replacement.id)
        #expect(replacement.cwd == pool.config.cwd)
        #expect(lease.startKind == .waited)
        spare.completeTurn()
        replacement.completeTurn()
        await h.stop()
    }

    /// A spare that dies between its hand-over and its claim is not the turn's: the turn gets
    /// the next process.
    @Test func aSpareDeadBeforeItsClaimIsSkipped() async throws {
        var h = try Harness(spares: 2)
        let first = await h.next()
        let second = await h.next()
        first.becomeReady()
        try await Self.until(h.pool, "the first spare is idle") { $0.idle == 1 }
        second.becomeReady()
        try await Self.until(h.pool, "two idle spares") { $0.idle == 2 }
        // Dead in the fake, not yet reported to the pool: the pool still holds it idle.
        _ = first.claim(Self.turn("elsewhere"))
        let lease = try await h.pool.acquire(Self.turn())
        #expect(lease.spare == second.id)
        second.completeTurn()
        first.die()
        await h.stop()
    }

    /// Shrinking a full pool to no spares at run time strands no waiting turn: each is served
    /// as a busy turn's end makes room, by a process of its own.
    @Test func resizeKeepsWaiters() async throws {
        var h = try Harness(spares: 2, extra: "max_processes = 2")
        let a = await h.next()
        let b = await h.next()
        a.becomeReady()
        b.becomeReady()
        let pool = h.pool
        try await Self.until(pool, "two idle spares") { $0.idle == 2 }
        _ = try await pool.acquire(Self.turn("busy-a"))
        _ = try await pool.acquire(Self.turn("busy-b"))
        let waiters = (0..<2).map { index in Task { try await pool.acquire(Self.turn("w\(index)")) } }
        try await Self.until(pool, "two turns wait, no room to start") { $0.waiting == 2 && $0.starting == 0 }
        pool.resize(spares: 0)
        #expect(pool.status().waiting == 2)
        a.completeTurn()
        b.completeTurn()
        var served: Set<SpareID> = []
        for _ in 0..<2 {
            let process = await h.next()
            process.becomeReady()
        }
        for waiter in waiters {
            let lease = try await waiter.value
            #expect(lease.startKind == .waited)
            served.insert(lease.spare)
        }
        #expect(served.count == 2, "each waiter got its own process")
        #expect(served.isDisjoint(with: [a.id, b.id]))
        await h.stop()
    }

    /// A reload that changes the pool keeps its waiting turns, which are served by processes
    /// started with the new settings.
    @Test func reloadServesWaitersWithTheNewSettings() async throws {
        var h = try Harness(spares: 1)
        let old = await h.next()
        let pool = h.pool
        let waiting = Task { try await pool.acquire(Self.turn()) }
        try await Self.until(pool, "the turn waits") { $0.waiting == 1 }
        var changed = pool.config
        changed.args = ["--new"]
        _ = await pool.reload(changed)
        #expect(old.wasRetired, "the old start-up is recycled")
        var fresh = await h.next()
        while fresh.config.args != ["--new"] { fresh = await h.next() }
        fresh.becomeReady()
        let lease = try await waiting.value
        #expect(lease.spare == fresh.id)
        fresh.completeTurn()
        await h.stop()
    }

    /// A drain refuses the waiting turns with draining and retires spares; a busy turn goes on.
    @Test func drainRefusesWaiters() async throws {
        var h = try Harness(spares: 1, extra: "max_processes = 1")
        let only = await h.next()
        only.becomeReady()
        let pool = h.pool
        try await Self.until(pool, "the spare is idle") { $0.idle == 1 }
        let busy = try await pool.acquire(Self.turn("busy"))
        let waiting = Task { try await pool.acquire(Self.turn("waiting")) }
        try await Self.until(pool, "the turn waits") { $0.waiting == 1 }
        pool.drain()
        guard case .failure(let error as PrewarmError) = await waiting.result else { Issue.record("expected draining"); return }
        #expect(error.code == .draining)
        #expect(pool.status().busy == 1, "the busy turn goes on")
        #expect(!only.wasRetired)
        only.completeTurn()
        #expect(await pool.waitUntilEmpty(timeout: .seconds(5)))
        #expect(busy.startKind == .warm)
        pool.stopLaunching()
        await h.running.value
    }
}
