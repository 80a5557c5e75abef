import Foundation
import NIOCore
import PrewarmClient
import PrewarmCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension LiveDaemons {
    /// The daemon end to end: a real `prewarm serve`, real fake-agent processes, the real Unix
    /// socket. Serialized: each test owns the machine's two cores while it runs.
    @Suite("Daemon", .serialized)
    struct DaemonTests {
        static func pool(
            _ name: String = "p", args: String = "", spares: Int = 2, extra: String = "", readyTimeout: Int = 30
        ) -> String {
            """
            [[pool]]
            name = "\(name)"
            command = "FAKE"
            args = [\(args)]
            spares = \(spares)
            \(extra)
            [pool.ready]
            send = '{"type":"control_request","request_id":"i","request":{"subtype":"initialize","hooks":null}}'
            expect = '"type":"control_response"'
            timeout_s = \(readyTimeout)
            [pool.turn]
            end = '"type":"result"'

            """
        }

        /// A warm turn's first byte does not pay the start-up (--init-ms 1000).
        @Test func warmTurnSkipsStartup() async throws {
            let daemon = try await TestDaemon(pools: Self.pool(args: #""--init-ms", "1000""#))
            let sent = ContinuousClock.now
            var firstByte: Duration?
            var collected = ""
            let trailers = try await daemon.client.stream(
                .POST, "/v1/pools/p/turns", body: ByteBuffer(string: TestDaemon.userLine)
            ) { head in
                #expect(head.status == 200)
                #expect(head.headers.first(name: "Prewarm-Start") == "warm")
                #expect(head.headers.first(name: "Prewarm-Pid") != nil)
            } onBody: { chunk in
                if firstByte == nil { firstByte = sent.duration(to: .now) }
                collected += String(buffer: chunk)
            }
            #expect(trailers?.first(name: "Prewarm-Outcome") == "completed")
            #expect(firstByte! < .milliseconds(500), "first byte after \(firstByte!)")
            #expect(collected.contains(#""turns_served":1"#))
            daemon.signal(SIGTERM)
            #expect(try await daemon.waitForExit() == 0)
        }

        /// 20 concurrent turns get 20 distinct processes, each serving its first and only turn,
        /// and the pool refills to its target afterwards.
        @Test func concurrentTurnsNeverShareAProcess() async throws {
            let daemon = try await TestDaemon(
                pools: Self.pool(args: #""--init-sleep-ms", "100", "--ttft-ms", "20""#, spares: 4, extra: "max_starting = 4")
            )
            let results = try await withThrowingTaskGroup(of: UnixHTTPClient.Response.self) { group in
                for _ in 0..<20 { group.addTask { try await daemon.turn("p") } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            var pids = Set<String>()
            for response in results {
                #expect(response.status == 200)
                #expect(response.trailers?.first(name: "Prewarm-Outcome") == "completed")
                let result = jsonLines(response).first { $0["type"] as? String == "result" }
                #expect(result?["turns_served"] as? Int == 1)
                pids.insert(response.headers.first(name: "Prewarm-Pid") ?? "")
            }
            #expect(pids.count == 20)
            try await waitUntil("the pool refills to 4 idle spares", timeout: .seconds(20)) {
                try await daemon.pool("p").idle == 4
            }
            let status = try await daemon.pool("p")
            #expect(status.served == 20)
            #expect(status.warm + status.waited + status.cold == 20)
        }

        /// A client that disconnects mid-turn gets its process killed at once and replaced;
        /// the daemon goes on serving.
        @Test func disconnectKillsTheProcess() async throws {
            let daemon = try await TestDaemon(pools: Self.pool("hang", args: #""--hang-turn""#, spares: 1) + Self.pool("ok", spares: 1))
            struct Abort: Error {}
            var pid: Int32 = 0
            do {
                _ = try await daemon.client.stream(.POST, "/v1/pools/hang/turns", body: ByteBuffer(string: TestDaemon.userLine)) { head in
                    pid = Int32(head.headers.first(name: "Prewarm-Pid") ?? "") ?? 0
                } onBody: { _ in
                    throw Abort()  // the first line is there: leave mid-turn
                }
            } catch is Abort {}
            let abandoned = pid
            #expect(abandoned > 0)
            try await waitUntil("the abandoned process is gone", timeout: .seconds(5)) { !isAlive(abandoned) }
            try await waitUntil("the pool refills", timeout: .seconds(10)) { try await daemon.pool("hang").idle == 1 }
            #expect(try await daemon.turn("ok").status == 200)
        }

        /// Each fault of the fake agent gives the documented outcome, and the daemon keeps serving.
        @Test func faultModes() async throws {
            let daemon = try await TestDaemon(
                pools: Self.pool("crash", args: #""--crash-mid-turn""#, spares: 1)
                    + Self.pool("hang", args: #""--hang-turn""#, spares: 1, extra: "turn_timeout_s = 1")
                    + Self.pool("garbage", args: #""--garbage""#, spares: 1)
                    + Self.pool("failinit", args: #""--fail-init""#, spares: 1)
                    + Self.pool("hanginit", args: #""--hang-init""#, spares: 1, readyTimeout: 1)
                    + Self.pool("ok", spares: 1),
                waitForIdle: false
            )
            try await waitUntil("the healthy pools are up", timeout: .seconds(20)) {
                let pools = try await daemon.pools()
                return pools.filter { ["crash", "hang", "garbage", "ok"].contains($0.name) }.allSatisfy { $0.idle == 1 }
            }
            let crash = try await daemon.turn("crash")
            #expect(crash.trailers?.first(name: "Prewarm-Outcome") == "exited")
            #expect(crash.trailers?.first(name: "Prewarm-Exit-Status") == "3")

            let hang = try await daemon.turn("hang", headers: [("Prewarm-Outcome-Line", "1")])
            let outcome = jsonLines(hang).last
            #expect(outcome?["type"] as? String == "prewarm_outcome")
            #expect(outcome?["outcome"] as? String == "timeout")

            let garbage = try await daemon.turn("garbage")
            #expect(garbage.trailers?.first(name: "Prewarm-Outcome") == "completed")
            #expect(garbage.bodyString.contains("garbage line"))

            // Three failed start-ups in a row (1 s, then 2 s of backoff): the pool is failing.
            try await waitUntil("failinit is failing", timeout: .seconds(20)) { try await daemon.pool("failinit").failing }
            let failing = try await daemon.turn("failinit")
            #expect(failing.status == 503)
            #expect(failing.bodyString.contains("pool_failing"))
            #expect(try await daemon.pool("failinit").lastError?.contains("simulated start-up failure") == true)

            try await waitUntil("hanginit has timed out a start-up", timeout: .seconds(10)) {
                try await daemon.pool("hanginit").lastError?.contains("not ready after") == true
            }
            #expect(try await daemon.turn("ok").status == 200)
        }

        /// An idle spare lives past 15 s (it is not killed when a worker thread exits).
        @Test func idleSpareSurvives() async throws {
            let daemon = try await TestDaemon(pools: Self.pool(spares: 1))
            let before = try await daemon.pool("p").pids
            try await Task.sleep(for: .seconds(16))  // the time passing is what is tested
            let after = try await daemon.pool("p")
            #expect(after.pids == before)
            #expect(after.idle == 1)
            #expect(before.allSatisfy { isAlive(Int32($0)) })
        }

        /// SIGTERM: the daemon drains, exits 0, removes its socket and leaves no process behind,
        /// not even a child's own child.
        @Test func sigtermLeavesNoProcess() async throws {
            let daemon = try await TestDaemon(pools: Self.pool(args: #""--fork-child""#, spares: 2))
            let groups = Set(try await daemon.pool("p").pids.map { Int32($0) })
            #expect(livingMembers(ofGroups: groups).count >= 4)  // two agents and their grandchildren
            daemon.signal(SIGTERM)
            #expect(try await daemon.waitForExit() == 0)
            #expect(!FileManager.default.fileExists(atPath: daemon.socket))
            try await waitUntil("no process is left", timeout: .seconds(5)) { livingMembers(ofGroups: groups).isEmpty }
        }

        /// SIGKILL: the keeper kills every process group the daemon had.
        @Test func sigkillLeavesNoProcess() async throws {
            let daemon = try await TestDaemon(pools: Self.pool(args: #""--fork-child""#, spares: 2))
            let groups = Set(try await daemon.pool("p").pids.map { Int32($0) })
            #expect(livingMembers(ofGroups: groups).count >= 4)
            daemon.signal(SIGKILL)
            _ = try await daemon.waitForExit()
            try await waitUntil("no process is left", timeout: .seconds(5)) { livingMembers(ofGroups: groups).isEmpty }
        }

        /// Bad requests get the documented errors and hurt nobody.
        @Test func badRequests() async throws {
            let daemon = try await TestDaemon(pools: Self.pool(spares: 1, extra: "max_request_bytes = 1000"))
            let notJSON = try await daemon.turn("p", body: "hello\n")
            #expect(notJSON.status == 400 && notJSON.bodyString.contains(#""code":"bad_json""#))
            let tooLarge = try await daemon.turn("p", body: "{\"x\":\"" + String(repeating: "a", count: 2000) + "\"}")
            #expect(tooLarge.status == 413 && tooLarge.bodyString.contains("body_too_large"))
            let noPool = try await daemon.turn("nope")
            #expect(noPool.status == 404 && noPool.bodyString.contains("pool_not_found"))
            let noRoute = try await daemon.client.request(.GET, "/v2/whatever")
            #expect(noRoute.status == 404 && noRoute.bodyString.contains("route_not_found"))
            let badPatch = try await daemon.client.request(.PATCH, "/v1/pools/p", body: ByteBuffer(string: #"{"spares":"many"}"#))
            #expect(badPatch.status == 400 && badPatch.bodyString.contains("bad_json"))
            let patch = try await daemon.client.request(.PATCH, "/v1/pools/p", body: ByteBuffer(string: #"{"spares":2}"#))
            #expect(patch.status == 200 && patch.bodyString.contains(#""target_spares":2"#))
            try await waitUntil("the pool grows to 2", timeout: .seconds(10)) { try await daemon.pool("p").idle == 2 }
            #expect(try await daemon.turn("p").status == 200)
            #expect(try await daemon.pool("p").served == 1)
        }

        /// A bad configuration is refused at start, naming the file and the key.
        @Test func badConfigRefused() throws {
            let directory = try TestDaemon.makeTemporaryDirectory()
            let config = directory + "/bad.toml"
            try "[[pool]]\nname = \"p\"\ncommand = \"x\"\nspares = -3\n".write(toFile: config, atomically: true, encoding: .utf8)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: TestDaemon.prewarm)
            process.arguments = ["serve", "--config", config, "--socket", directory + "/s.sock"]
            let stderr = Pipe()
            process.standardError = stderr
            try process.run()
            process.waitUntilExit()
            let message = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(process.terminationStatus == 78)
            #expect(message.contains(config) && message.contains("pool.p.spares"))
        }

        /// A second daemon on a live socket is refused; the first goes on.
        @Test func liveSocketRefused() async throws {
            let daemon = try await TestDaemon(pools: Self.pool(spares: 0))
            let second = Process()
            second.executableURL = URL(fileURLWithPath: TestDaemon.prewarm)
            second.arguments = ["serve", "--config", daemon.directory + "/prewarm.toml", "--socket", daemon.socket]
            let stderr = Pipe()
            second.standardError = stderr
            try second.run()
            second.waitUntilExit()
            #expect(second.terminationStatus != 0)
            #expect(String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).contains("another daemon"))
            #expect(try await daemon.client.request(.GET, "/healthz").status == 200)
        }

        /// With allowed_uids, a peer whose uid is not allowed gets 403 (SO_PEERCRED); root is served.
        @Test func peerUIDChecked() async throws {
            guard getuid() == 0 else {
                print("skipped peerUIDChecked: switching uid needs root")
                return
            }
            let daemon = try await TestDaemon(pools: Self.pool(spares: 0), top: "allowed_uids = [12345]")
            chmod(daemon.directory, 0o755)
            let curl = Process()
            curl.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            curl.arguments = [
                "--reuid=65534", "--regid=65534", "--clear-groups", "curl", "-s", "--unix-socket", daemon.socket, "http://localhost/v1/pools",
            ]
            let output = Pipe()
            curl.standardOutput = output
            try curl.run()
            curl.waitUntilExit()
            let body = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(body.contains(#""code":"forbidden""#), "got \(body)")
            #expect(try await daemon.client.request(.GET, "/v1/pools").status == 200)
        }


        /// Spares boot `spare_nice` below the daemon's CPU priority (every thread of their
        /// group); the one a turn takes gets the daemon's back for its turn, and a start-up a
        /// turn waits for gets it at once.
        @Test func sparesBootBelowTheTurnsPriority() async throws {
            guard StartupPriority.canRestore else {
                print("skipped sparesBootBelowTheTurnsPriority: the test runner lacks CAP_SYS_NICE, so the daemon keeps spares at its own priority")
                return
            }
            let base = Int(StartupPriority.base)
            let offset = min(7, 19 - base)
            let daemon = try await TestDaemon(pools: Self.pool(args: #""--init-ms", "1500""#, spares: 1, extra: "spare_nice = 7\nwhen_empty = \"wait\""))
            #expect(try await daemon.pool("p").spareNice == offset)
            let spare = try #require(try await daemon.pool("p").pids.first)
            #expect(Self.threadNices(spare) == [base + offset])

            // A two-way turn holds the spare: it runs at the daemon's priority.
            let socket = try RawSocket(path: daemon.socket)
            try socket.send(TwoWayTests.request(pool: "p"))
            let head = try #require(socket.readHead())
            #expect(head.contains("Prewarm-Pid: \(spare)"), "\(head)")
            #expect(Self.threadNices(spare) == [base])

            // Its replacement boots lower, until a turn waits for it.
            let replacement = try await Self.otherPid(in: daemon, than: spare)
            try await waitUntil("the replacement runs at nice +\(offset)", timeout: .seconds(5)) {
                Self.threadNices(replacement) == [base + offset]
            }
            let waiting = Task { try await daemon.turn("p") }
            try await waitUntil("the waited-for start-up gets the daemon's priority", timeout: .seconds(5)) {
                Self.threadNices(replacement) == [base]
            }
            let response = try await waiting.value
            #expect(response.status == 200)
            #expect(response.headers.first(name: "Prewarm-Pid") == "\(replacement)")

            try socket.send(TestDaemon.userLine + "\n")
            #expect(socket.readAll().contains("prewarm_outcome"))
        }

        /// The distinct nice values of a process's threads.
        static func threadNices(_ pid: Int) -> Set<Int> {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
            return Set(tasks.compactMap { Int32($0) }.compactMap { StartupPriority.nice(pid: Int32(pid), tid: $0) })
        }

        static func otherPid(in daemon: TestDaemon, than pid: Int) async throws -> Int {
            try await waitUntil("a second process in the pool", timeout: .seconds(5)) {
                try await daemon.pool("p").pids.contains { $0 != pid }
            }
            return try #require(try await daemon.pool("p").pids.first { $0 != pid })
        }
    }
}
