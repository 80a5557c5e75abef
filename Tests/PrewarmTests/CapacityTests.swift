import Foundation
import Logging
import NIOCore
import PrewarmClient
import Testing

@testable import PrewarmCore

#if canImport(Glibc)
import Glibc
#endif

/// A pool that serves runs (kind "claude", fingerprint pools) is limited by memory and by the
/// operator's own limits, never by a default count: the machine's rules.
@Suite("Capacity by memory (state machine)")
struct CapacityMachineTests {
    typealias Machine = PoolStateMachine
    static let mib = 1 << 20
    let t0 = ContinuousClock.now

    /// A pool as a claude pool is configured by default: no max_processes, no wait deadline,
    /// no count of waiters; costs in MiB and a room in MiB.
    func machine(spares: Int = 1, maxProcesses: Int = PoolConfig.unlimitedProcesses, spare: Int = 50, turn: Int = 100, room: Int?, maxStarting: Int = 1) -> Machine {
        var m = Machine(
            settings: .init(
                spares: spares, maxProcesses: maxProcesses, maxStarting: maxStarting, whenEmpty: .wait, maxWaiting: .max, waitTimeout: nil,
                costs: MemoryCosts(spare: spare * Self.mib, turn: turn * Self.mib)
            )
        )
        m.room = room.map { $0 * Self.mib }
        return m
    }

    func starts(_ actions: [Machine.Action]) -> [SpareID] {
        actions.compactMap { if case .start(let id) = $0 { id } else { nil } }
    }

    func delivered(_ actions: [Machine.Action]) -> [WaiterID] {
        actions.compactMap { if case .deliver(let waiter, _, _) = $0 { waiter } else { nil } }
    }

    /// The configuration gives claude pools no count and no deadline, command pools both.
    @Test func claudePoolsHaveNoDefaultCount() throws {
        let loader = ConfigurationLoader(executableDirectory: "/nonexistent", environment: ["PATH": "/usr/bin:/bin"], cpus: 2)
        let config = try loader.parse(
            """
            [[pool]]
            name = "c"
            kind = "claude"
            command = "/bin/true"
            [[pool]]
            name = "p"
            command = "/bin/true"
            [pool.turn]
            end_type = "result"
            [[pool]]
            name = "set"
            kind = "claude"
            command = "/bin/true"
            max_processes = 12
            wait_timeout_ms = 5000
            max_waiting = 3
            """, origin: "test", baseDirectory: "/tmp"
        )
        let (claude, command, set) = (config.pools[0], config.pools[1], config.pools[2])
        #expect(claude.maxProcesses == PoolConfig.unlimitedProcesses && claude.waitTimeout == nil && claude.maxWaiting == nil)
        #expect(command.maxProcesses == command.spares + 8 && command.waitTimeout == .seconds(10) && command.maxWaiting == 64)
        #expect(set.maxProcesses == 12 && set.waitTimeout == .seconds(5) && set.maxWaiting == 3)
    }

    /// Forty turns at once in a room for forty: every one gets a process, in arrival order,
    /// none refused and none timed out (there is no deadline to time out at).
    @Test func manyTurnsWaitInOrderAndAllAreServed() {
        var m = machine(room: 40 * 100 + 50)
        var pending = starts(m.start(now: t0))
        var waiters: [WaiterID] = []
        for _ in 0..<40 {
            let (decision, actions) = m.turnArrived(now: t0)
            pending += starts(actions)
            switch decision {
            case .take: break
            case .wait(let waiter): waiters.append(waiter)
            case .reject(let reason): Issue.record("refused: \(reason)")
            }
            #expect(!actions.contains { if case .schedule(.waitDeadline, _) = $0 { true } else { false } }, "no deadline")
        }
        var served: [WaiterID] = []
        while let id = pending.first {
            pending.removeFirst()
            let actions = m.processReady(id, now: t0)
            served += delivered(actions)
            pending += starts(actions)
        }
        #expect(served == waiters, "in arrival order")
        #expect(m.counters.rejected == 0 && m.busyCount == 40)
    }

    /// Without a deadline, a turn memory has no room for is refused at once (not after an
    /// endless wait), counting the turns queued before it; one that fits waits.
    @Test func aTurnMemoryCannotHoldIsRefusedAtOnce() {
        // Room for three turns' peaks (the spare counts as free: it becomes a turn).
        var m = machine(spares: 0, room: 350)
        for _ in 0..<3 {
            let (decision, _) = m.turnArrived(now: t0)
            guard case .wait = decision else { Issue.record("expected a wait, got \(decision)"); return }
        }
        let (fourth, _) = m.turnArrived(now: t0)
        #expect(fourth == .reject(.memoryExhausted))
        // Another pool's idle spares count: they are shed for this pool's turns.
        m.reclaimable = 100 * Self.mib
        let (fifth, _) = m.turnArrived(now: t0)
        guard case .wait = fifth else { Issue.record("expected a wait, got \(fifth)"); return }
    }

    /// The operator's max_processes still holds: at it, a turn with no process coming is
    /// refused at once (no_capacity), since runs hold theirs for minutes.
    @Test func anOperatorsMaxProcessesHolds() {
        var m = machine(spares: 0, maxProcesses: 2, room: nil)
        var pending: [SpareID] = []
        for _ in 0..<2 {
            let (decision, actions) = m.turnArrived(now: t0)
            guard case .wait = decision else { Issue.record("expected a wait, got \(decision)"); return }
            pending += starts(actions)
        }
        while let id = pending.first {
            pending.removeFirst()
            pending += starts(m.processReady(id, now: t0))
        }
        #expect(m.busyCount == 2)
        let (third, _) = m.turnArrived(now: t0)
        #expect(third == .reject(.noCapacity))
    }

    /// The memory ledger is keyed by pool identity: two pools of one name (a fingerprint pool
    /// closing with a busy run, and the one made again under its name) are both charged
    /// (before: the second's charge replaced the first's, 500 MiB in all instead of 1000).
    @Test func theLedgerKeepsPoolsOfOneNameApart() async throws {
        let governor = MemoryGovernor(config: MemoryConfig(reserve: 0, limit: 8 << 30), logger: Logger(label: "test"))
        var harnesses: [PoolInProcessTests.Harness] = []
        for _ in 0..<2 {
            var h = try PoolInProcessTests.Harness(spares: 1, extra: "turn_mib = 500\nspare_mib = 100", governor: governor)
            let spare = await h.next()
            spare.becomeReady()
            try await PoolInProcessTests.until(h.pool, "the spare is idle") { $0.idle == 1 }
            harnesses.append(h)
        }
        #expect(harnesses[0].pool.name == harnesses[1].pool.name)
        var leases: [Lease] = []
        for h in harnesses { leases.append(try await h.pool.acquire(PoolInProcessTests.turn())) }
        let charged = governor.status().charged
        // Each pool's own charge (a busy turn, a replacement starting, both at 500 MiB), in
        // the ledger twice over: keyed by name, one would have replaced the other.
        let own = harnesses.map { h in h.pool.state.withLock { $0.machine.chargedBytes } }
        #expect(own.allSatisfy { $0 >= 500 << 20 } && charged == own.reduce(0, +), "charged \(charged >> 20) MiB, the pools' own \(own.map { $0 >> 20 }) MiB")
        for h in harnesses { await h.stop() }
        _ = leases
    }
}

extension LiveDaemons {
    /// Capacity through the real `prewarm-claude`, a real daemon and the fake agent.
    @Suite("Capacity by memory (drop-in runs)", .serialized)
    struct CapacityTests {
        typealias DropIn = RunTests.DropIn
        static let sdkFlags = RunTests.sdkFlags
        static let userLine = RunTests.userLine

        /// A run held open: its first turn answered, its process kept until stdin ends.
        static func open(_ arguments: [String], daemon: TestDaemon, project: String) throws -> DropIn {
            let run = try DropIn(arguments, environment: RunTests.environment(daemon), cwd: project)
            run.write(userLine)
            #expect(run.readLine(containing: #""type":"result""#) != nil, "the run's first turn is answered")
            return run
        }

        /// Twelve long-lived runs at once on a pool of one spare: all are served, none waits
        /// for another to end (before: `spares + 8` processes, so three waited 10 s and got
        /// exit 75 while memory had room for them).
        @Test func longLivedRunsAreLimitedByMemoryNotACount() async throws {
            let daemon = try await TestDaemon(pools: RunTests.pool(spares: 1, extra: "turn_mib = 20\nspare_mib = 10"))
            let project = try TestDaemon.makeTemporaryDirectory()
            let runs = try (0..<12).map { _ in try DropIn(Self.sdkFlags, environment: RunTests.environment(daemon), cwd: project) }
            for run in runs { run.write(Self.userLine) }
            for run in runs { #expect(run.readLine(containing: #""type":"result""#) != nil) }
            let pool = try await daemon.pool("c")
            #expect(pool.busy == 12 && pool.rejected == 0, "\(pool)")
            #expect(pool.maxProcesses > 12, "max_processes is what memory allows: \(pool.maxProcesses)")
            for run in runs { run.closeInput() }
            for run in runs { #expect(run.finish().status == 0) }
        }

        /// `replace_after_ms` (here longer than the test): the replacements of spares runs took
        /// start when those runs end, not beside them; a run that finds no spare starts
        /// replacements at once.
        @Test func aReplacementWaitsForTheRunThatTookItsSpare() async throws {
            let daemon = try await TestDaemon(pools: RunTests.pool(spares: 2, extra: "replace_after_ms = 600000"))
            let project = try TestDaemon.makeTemporaryDirectory()
            // Two runs take both spares: the machine decides start-ups with a hand-off, and
            // decided none. They end: the replacements start (the delay is far off).
            var runs = try (0..<2).map { _ in try Self.open(Self.sdkFlags, daemon: daemon, project: project) }
            var pool = try await daemon.pool("c")
            #expect(pool.busy == 2 && pool.idle == 0 && pool.starting == 0, "\(pool)")
            for run in runs { run.closeInput() }
            for run in runs { #expect(run.finish().status == 0) }
            try await waitUntil("the replacements start once the runs end", timeout: .seconds(20)) { try await daemon.pool("c").idle == 2 }
            // Again; then a third run has to wait: start-ups begin now, and it is served.
            runs = try (0..<2).map { _ in try Self.open(Self.sdkFlags, daemon: daemon, project: project) }
            pool = try await daemon.pool("c")
            #expect(pool.busy == 2 && pool.starting == 0, "\(pool)")
            runs.append(try Self.open(Self.sdkFlags, daemon: daemon, project: project))
            pool = try await daemon.pool("c")
            #expect(pool.busy == 3 && pool.waited == 1, "\(pool)")
            for run in runs { run.closeInput() }
            for run in runs { #expect(run.finish().status == 0) }
        }

        /// The operator's limit still holds, and its refusal names it: exit 75 at once.
        @Test func anOperatorsLimitIsNamed() async throws {
            let daemon = try await TestDaemon(pools: RunTests.pool(spares: 1, extra: "max_processes = 2"))
            let project = try TestDaemon.makeTemporaryDirectory()
            let held = try (0..<2).map { _ in try Self.open(Self.sdkFlags, daemon: daemon, project: project) }
            let started = ContinuousClock.now
            let refused = try DropIn(Self.sdkFlags, environment: RunTests.environment(daemon), cwd: project)
            refused.write(Self.userLine)
            refused.closeInput()
            let (status, _, err) = refused.finish()
            #expect(status == 75 && err.contains("max_processes = 2"), "\(status): \(err)")
            #expect(started.duration(to: .now) < .seconds(5), "refused at once, not after a wait")
            for run in held { run.closeInput() }
            for run in held { #expect(run.finish().status == 0) }
        }

        /// At `max_pools`, the fingerprint pool unused the longest closes: its busy run goes on
        /// (a second turn, then its own exit 0), then the pool goes with its state directory
        /// (before: its run was killed, exit 137, 2 s later).
        @Test func aClosingFingerprintPoolLetsItsRunFinish() async throws {
            let daemon = try await TestDaemon(pools: RunTests.pool(), top: "[fingerprint_pools]\nmax_pools = 1\nspares = 1\n")
            let project = try TestDaemon.makeTemporaryDirectory()
            let first = try Self.open(Self.sdkFlags + ["--max-turns", "3"], daemon: daemon, project: project)
            let closing = try #require(try await daemon.pools().first { $0.fingerprint != nil })
            let directory = daemon.directory + "/state/prewarm/fingerprint/" + closing.name
            #expect(FileManager.default.fileExists(atPath: directory))
            let second = try Self.open(Self.sdkFlags + ["--max-turns", "4"], daemon: daemon, project: project)
            let closed = try await daemon.pool(closing.name)
            #expect(closed.closing == true && closed.busy == 1, "\(closed)")
            // Its run goes on: another turn, answered.
            first.write(Self.userLine)
            #expect(first.readLine(containing: #""type":"result""#) != nil, "the closing pool's run still answers")
            first.closeInput()
            let (status, _, err) = first.finish()
            #expect(status == 0, "the run ended on its own: \(err)")
            try await waitUntil("the closed pool is gone", timeout: .seconds(10)) {
                try await !daemon.pools().contains { $0.name == closing.name }
            }
            #expect(!FileManager.default.fileExists(atPath: directory), "its state directory went with it")
            second.closeInput()
            #expect(second.finish().status == 0)
        }

        /// Command lines that change on every run make no spares: each runs cold in a pool that
        /// only counts it. A fingerprint seen twice gets spares, at most
        /// `max_new_pools_per_minute` a minute; pools unused for `idle_ttl_s` go with their
        /// state directories (before: 24 distinct runs spawned 96 processes, and the
        /// directories stayed).
        @Test func fingerprintChurnIsBounded() async throws {
            let daemon = try await TestDaemon(
                pools: RunTests.pool(), top: "[fingerprint_pools]\nspares = 2\nmax_pools = 16\nmax_new_pools_per_minute = 1\nidle_ttl_s = 3\n"
            )
            let project = try TestDaemon.makeTemporaryDirectory()
            func run(_ turns: Int) throws {
                let run = try DropIn(Self.sdkFlags + ["--max-turns", "\(turns)"], environment: RunTests.environment(daemon), cwd: project)
                run.write(Self.userLine)
                run.closeInput()
                #expect(run.finish().status == 0)
            }
            for turns in 1...6 { try run(turns) }
            var made = try await daemon.pools().filter { $0.fingerprint != nil }
            #expect(made.count == 6 && made.allSatisfy { $0.cold == 1 && $0.effectiveSpares == 0 && $0.idle + $0.starting == 0 }, "\(made)")
            // A second run of fingerprint 1 gives its pool spares; one of fingerprint 2 does not
            // (one pool a minute).
            try run(1)
            try run(2)
            made = try await daemon.pools().filter { $0.fingerprint != nil }
            let withSpares = made.filter { $0.targetSpares > 0 }
            #expect(withSpares.count == 1 && withSpares.first?.served == 2, "\(made.map { ($0.name, $0.targetSpares, $0.served) })")
            try await waitUntil("every fingerprint pool goes after idle_ttl_s", timeout: .seconds(20)) {
                try await daemon.pools().allSatisfy { $0.fingerprint == nil }
            }
            let left = (try? FileManager.default.contentsOfDirectory(atPath: daemon.directory + "/state/prewarm/fingerprint")) ?? []
            let contents = left.map { name in (try? FileManager.default.subpathsOfDirectory(atPath: daemon.directory + "/state/prewarm/fingerprint/" + name)) ?? [] }
            #expect(left.isEmpty, "state directories left: \(left) \(contents)")
        }

        /// A run description as large as a command line (a 100 KiB argument, as one argument
        /// may be up to 128 KiB) is served warm (before: 431 over 16 KiB a header field, and the
        /// real CLI ran cold). Every other request keeps the usual 16/64 KiB head limits, and
        /// a run's head beyond what execve could take is still 431.
        @Test func runDescriptionsAsLargeAsACommandLine() async throws {
            let daemon = try await TestDaemon(pools: RunTests.pool())
            let project = try TestDaemon.makeTemporaryDirectory()
            let prompt = String(repeating: "You are careful.\n", count: 100 * 1024 / 17)
            let run = try DropIn(Self.sdkFlags + ["--system-prompt", prompt], environment: RunTests.environment(daemon), cwd: project)
            run.write(Self.userLine)
            run.closeInput()
            let (status, out, err) = run.finish()
            #expect(status == 0 && out.contains(#""type":"result""#), "\(err)")
            let pool = try await daemon.pool("c")
            #expect(pool.warm == 1 && pool.cold == 0, "\(pool)")

            // Another route, a 20 KiB header: refused as before.
            let other = try RawSocket(path: daemon.socket)
            try other.send("GET /v1/pools HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "y", count: 20 << 10))\r\n\r\n")
            let answer = other.readAll()
            #expect(answer.hasPrefix("HTTP/1.1 431") && answer.contains("headers_too_large"), "\(answer.prefix(200))")

            // A run's head larger than any command line: 431, and the daemon goes on.
            let huge = try RawSocket(path: daemon.socket)
            let limit = max(1 << 20, 4 * Int(sysconf(Int32(_SC_ARG_MAX))))
            try? huge.send(
                "POST /v1/runs HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: prewarm-stream\r\nPrewarm-Run: \(String(repeating: "A", count: limit + (128 << 10)))\r\n\r\n"
            )
            let refused = huge.readAll()
            // (Refused before it was all read, the answer may be lost to the reset of a socket
            // closed with unread bytes: the daemon's going on is what must hold.)
            #expect(refused.isEmpty || refused.hasPrefix("HTTP/1.1 431"), "\(refused.prefix(200))")
            #expect((try? await daemon.client.request(.GET, "/healthz"))?.status == 200)
        }

        /// A frame over the limit (a 4 GiB length) is a protocol violation: the run's process
        /// is killed and the exit status reported is never 0, even if the process saw its
        /// stdin end first (before: closing stdin raced the kill, and 0 could come back).
        @Test func aProtocolViolationNeverExitsZero() async throws {
            let daemon = try await TestDaemon(pools: RunTests.pool(spares: 2))
            let project = try TestDaemon.makeTemporaryDirectory()
            for _ in 0..<5 {
                let description = RunDescription(argv: Self.sdkFlags, cwd: project, env: RunTests.environment(daemon), cli: TestDaemon.fakeAgent)
                let socket = try UnixStreamSocket(path: daemon.socket)
                socket.write(Array(
                    "POST /v1/runs HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: prewarm-stream\r\nPrewarm-Run: \(description.encodedHeader())\r\nContent-Length: 0\r\n\r\n".utf8
                ))
                let head = try #require(socket.readHead())
                #expect(head.hasPrefix("HTTP/1.1 101"), "\(head)")
                // A turn, the end of stdin, then a frame of 4 GiB.
                let line = Array(Self.userLine.utf8)
                let n = UInt32(line.count)
                socket.write([UInt8(ascii: "i"), UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + line)
                socket.write([UInt8(ascii: "e"), 0, 0, 0, 0])
                socket.write([UInt8(ascii: "i"), 0xff, 0xff, 0xff, 0xff])
                var bytes: [UInt8] = []
                while true {
                    let chunk = socket.read()
                    if chunk.isEmpty { break }
                    bytes += chunk
                }
                // The frames: find the exit frame `x`.
                var index = 0
                var exit: Int32?
                while index + 5 <= bytes.count {
                    let length = Int(bytes[index + 1]) << 24 | Int(bytes[index + 2]) << 16 | Int(bytes[index + 3]) << 8 | Int(bytes[index + 4])
                    if bytes[index] == UInt8(ascii: "x"), index + 9 <= bytes.count {
                        exit = Int32(bitPattern: UInt32(bytes[index + 5]) << 24 | UInt32(bytes[index + 6]) << 16 | UInt32(bytes[index + 7]) << 8 | UInt32(bytes[index + 8]))
                    }
                    index += 5 + length
                }
                let status = try #require(exit, "the run's end was reported: \(bytes.count) bytes")
                #expect(status != 0, "a protocol violation reported as success")
                socket.closeNow()
            }
            #expect((try? await daemon.client.request(.GET, "/healthz"))?.status == 200)
        }
    }
}
