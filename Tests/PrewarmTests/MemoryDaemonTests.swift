import Foundation
import NIOCore
import PrewarmClient
import PrewarmCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension LiveDaemons {
    /// The memory governor in a real daemon: admission refused for memory, the live figures, and
    /// bursts inside a real memory cgroup that would otherwise get processes OOM-killed.
    @Suite("Memory in the daemon", .serialized)
    struct MemoryDaemonTests {
        static func pool(args: String, spares: Int, spareMiB: Int, turnMiB: Int, whenEmpty: String = "start") -> String {
            """
            [[pool]]
            name = "p"
            command = "FAKE"
            args = [\(args)]
            spares = \(spares)
            max_processes = 40
            when_empty = "\(whenEmpty)"
            spare_mib = \(spareMiB)
            turn_mib = \(turnMiB)
            [pool.ready]
            send = '{"type":"control_request","request_id":"i","request":{"subtype":"initialize","hooks":null}}'
            expect = '"type":"control_response"'
            [pool.turn]
            end = '"type":"result"'

            """
        }

        /// A turn whose peak does not fit next to the running turn gets 429 memory_exhausted with
        /// Retry-After; /v1/memory shows the budget, the measured spare cost, and what fits.
        @Test func turnThatDoesNotFitGets429() async throws {
            // 400 MiB for the daemon and its processes: a 100 MiB spare fits next to a 200 MiB
            // turn, a second turn (another 100 MiB over its spare) does not.
            let daemon = try await TestDaemon(
                pools: Self.pool(
                    args: #""--init-mib", "100", "--turn-mib", "100", "--ttft-ms", "2500""#,
                    spares: 2, spareMiB: 100, turnMiB: 200
                ),
                top: "[memory]\nlimit_mib = 400\nreserve_mib = 0\nhigh_watermark = 0.99\nlow_watermark = 0.98\n"
            )
            let before = try await daemon.memory()
            #expect(before.limit == 400 << 20)
            #expect(before.limitSource.contains("limit_mib"))
            #expect(before.budget > 300 << 20 && before.budget < 400 << 20, "budget \(before.budget >> 20) MiB")
            try await waitUntil("the spares are measured", timeout: .seconds(5)) {
                try await daemon.memory().pools[0].spareMeasured
            }
            let measured = try await daemon.memory().pools[0]
            #expect(measured.spareBytes >= 100 << 20 && measured.spareBytes < 140 << 20, "spare \(measured.spareBytes >> 20) MiB")
            #expect(measured.effectiveSpares == 2)

            let first = Task { try await daemon.turn("p") }
            try await waitUntil("the first turn runs", timeout: .seconds(5)) { try await daemon.pool("p").busy == 1 }
            let second = try await daemon.turn("p")
            #expect(second.status == 429)
            #expect(second.headers.first(name: "Retry-After") == "1")
            #expect(second.bodyString.contains(#""code":"memory_exhausted""#), "\(second.bodyString)")
            let during = try await daemon.memory()
            #expect(during.pools[0].maxProcesses == 1)
            #expect(during.charged <= during.budget)

            let completed = try await first.value
            #expect(completed.status == 200)
            // The measured turn peak (100 MiB ballast + 100 MiB for the turn) replaces the estimate
            // (its last reading is taken once the client has the answer, off the turn's path).
            try await waitUntil("the turn's peak is measured", timeout: .seconds(5)) { try await daemon.memory().pools[0].turnMeasured }
            let after = try await daemon.memory()
            #expect(after.pools[0].turnPeakBytes >= 200 << 20 && after.pools[0].turnPeakBytes < 260 << 20, "turn peak \(after.pools[0].turnPeakBytes >> 20) MiB")
            // With the room back, a turn is served again. (While a spare boots it is charged a
            // turn's peak, and a warm take then has no room: wait for the boots to end.)
            try await waitUntil("the turn's process is gone and the spares are ready", timeout: .seconds(10)) {
                let status = try await daemon.pool("p")
                return status.idle >= 1 && status.starting == 0 && status.pids.count == status.idle
            }
            let again = try await daemon.turn("p")
            let figures = try await daemon.memory()
            #expect(again.status == 200, "\(again.bodyString); memory: \(figures)")
            daemon.signal(SIGTERM)
            #expect(try await daemon.waitForExit() == 0)
        }

        /// Two bursts of 10 turns into a daemon inside a fresh 1 GiB memory cgroup: with the
        /// governor, no OOM kill, every turn completed or refused with 429, the daemon serving
        /// afterwards. Without it (enforce = false, 6 spares), the same bursts get processes
        /// OOM-killed: the test is known to fail when the governor is off.
        @Test(arguments: [true, false])
        func burstsInAOneGiBCgroup(enforce: Bool) async throws {
            guard let cgroup = try TestCgroup.make(limit: 1 << 30) else { return }
            defer { cgroup.destroy() }
            let daemon = try await TestDaemon(
                pools: Self.pool(
                    args: #""--init-mib", "150", "--turn-mib", "200", "--ttft-ms", "1500", "--tokens", "3", "--token-ms", "100""#,
                    spares: 6, spareMiB: 160, turnMiB: 360
                ),
                top: "[memory]\nenforce = \(enforce)\n",
                waitForIdle: enforce,
                cgroup: cgroup.path
            )
            if !enforce {
                // Six 150 MiB spares: wait for them (or for the kernel to kill some).
                try? await waitUntil("six spares", timeout: .seconds(20)) { (try? await daemon.pool("p").idle) == 6 }
            }
            let memory = try await daemon.memory()
            #expect(memory.limit == 1 << 30, "the daemon reads its cgroup's limit: \(memory.limitSource)")

            var statuses: [Int] = []
            for burst in 0..<2 {
                if burst > 0 {
                    try await Task.sleep(for: .seconds(3))  // "a few seconds apart", as the scenario says
                }
                statuses += await withTaskGroup(of: Int.self) { group in
                    for _ in 0..<10 {
                        group.addTask {
                            guard let response = try? await daemon.turn("p") else { return -1 }  // broken connection
                            if response.status == 200, response.trailers?.first(name: "Prewarm-Outcome") != "completed" {
                                return -2  // a 200 whose turn did not complete
                            }
                            return response.status
                        }
                    }
                    return await group.reduce(into: []) { $0.append($1) }
                }
            }
            let kills = cgroup.oomKills()
            if enforce {
                #expect(kills == 0, "OOM kills in the cgroup: \(kills)")
                #expect(statuses.allSatisfy { $0 == 200 || $0 == 429 }, "statuses: \(statuses)")
                #expect(statuses.contains(200))
                #expect((try? await daemon.client.request(.GET, "/healthz"))?.status == 200, "the daemon serves after the bursts")
                let after = try await daemon.memory()
                #expect(after.oomKills == 0)
                print("governed bursts: \(statuses.filter { $0 == 200 }.count) completed, \(statuses.filter { $0 == 429 }.count) refused (429); budget \(after.budget >> 20) MiB, spare \(after.pools[0].spareBytes >> 20) MiB, turn peak \(after.pools[0].turnPeakBytes >> 20) MiB")
            } else {
                #expect(kills > 0, "without the governor the bursts should get processes OOM-killed; statuses \(statuses)")
                print("ungoverned bursts: \(kills) OOM kill(s); statuses \(statuses)")
            }
            daemon.signal(SIGKILL)
            _ = try? await daemon.waitForExit(timeout: .seconds(10))
        }
    }
}

/// A memory cgroup the test creates under its own (v1 memory controller, or v2 with the
/// memory controller delegated), and removes after killing what is left in it.
struct TestCgroup {
    let path: String
    let version: CgroupVersion

    /// nil, with the reason printed, where the machine does not let the test create one.
    static func make(limit: Int) throws -> TestCgroup? {
        func skip(_ why: String) -> TestCgroup? {
            print("SKIPPED: the memory-cgroup test needs a memory cgroup it can create: \(why)")
            return nil
        }
        guard geteuid() == 0 else { return skip("not root") }
        guard let own = Cgroup.memory() else { return skip("no memory cgroup controller is mounted") }
        let path = own.directory + "/prewarm-test-" + UUID().uuidString.prefix(8)
        guard mkdir(path, 0o755) == 0 else { return skip("mkdir \(path): \(String(cString: strerror(errno)))") }
        let cgroup = TestCgroup(path: path, version: own.version)
        let limitFile = own.version == .v1 ? "memory.limit_in_bytes" : "memory.max"
        guard cgroup.write(limitFile, "\(limit)") else {
            cgroup.destroy()
            return skip("cannot write \(path)/\(limitFile) (on cgroup v2 the parent must delegate the memory controller)")
        }
        // No swap, so an overshoot is an OOM kill rather than a slow host.
        _ = cgroup.write(own.version == .v1 ? "memory.swappiness" : "memory.swap.max", "0")
        return cgroup
    }

    @discardableResult
    func write(_ file: String, _ value: String) -> Bool {
        let fd = open(path + "/" + file, O_WRONLY)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return value.withCString { Glibc.write(fd, $0, strlen($0)) } >= 0
    }

    /// The kernel's count of OOM kills in this cgroup.
    func oomKills() -> Int {
        let file = version == .v1 ? "memory.oom_control" : "memory.events"
        guard let text = try? String(contentsOfFile: path + "/" + file, encoding: .utf8) else { return -1 }
        for line in text.split(separator: "\n") where line.hasPrefix("oom_kill ") {
            return Int(line.split(separator: " ")[1]) ?? -1
        }
        return 0
    }

    /// Kills what is left in it (processes this test started), then removes it.
    func destroy() {
        for _ in 0..<100 {
            let procs = (try? String(contentsOfFile: path + "/cgroup.procs", encoding: .utf8)) ?? ""
            let pids = procs.split(separator: "\n").compactMap { pid_t($0) }
            for pid in pids { kill(pid, SIGKILL) }
            if rmdir(path) == 0 || errno == ENOENT { return }
            usleep(50_000)
        }
        print("warning: could not remove the test cgroup \(path)")
    }
}
