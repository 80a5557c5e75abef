import Foundation
import NIOCore
import PrewarmClient
import PrewarmCore
import PrewarmServer
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension LiveDaemons {
    /// The request path under the faults that hostile or careless clients cause, through the
    /// real socket against a real daemon: each test is one finding that a client could once
    /// turn into a leak of one session into another, unbounded memory, a hung connection or
    /// an orphaned process.
    @Suite("Request path under faults", .serialized)
    struct RequestPathFaultTests {
        static func pool(_ name: String = "p", args: String = "", spares: Int = 2, extra: String = "") -> String {
            DaemonTests.pool(name, args: args, spares: spares, extra: extra)
        }

        /// A claude pool of the fake agent.
        static func claudePool(_ name: String, args: String = "", spares: Int, extra: String = "") -> String {
            """
            [[pool]]
            name = "\(name)"
            kind = "claude"
            command = "FAKE"
            args = [\(args)]
            spares = \(spares)
            \(extra)

            """
        }

        /// A process started for one session never serves another: turn A asks for its own
        /// session (cwd, permission mode, a secret in its env) on an unclaimed claude pool and
        /// leaves while A's process boots; the next turns of the pool's session never get A's
        /// process (its cwd, its mode, its secret), and A's process is gone.
        @Test func aSessionsProcessNeverReachesAnotherSession() async throws {
            let daemon = try await TestDaemon(
                pools: Self.claudePool(
                    "c", args: #""--init-ms", "1500""#, spares: 1,
                    extra: "claim = false\nmax_starting = 2\nwhen_empty = \"wait\"\n[pool.session]\npermission_mode = \"default\""
                )
            )
            let spare = try await daemon.pool("c").pids
            let tenant = try TestDaemon.makeTemporaryDirectory()
            let secret = "tenant-a-" + UUID().uuidString
            let bodyA = try JSONSerialization.data(withJSONObject: [
                "prompt": "hello", "session": ["cwd": tenant, "permission_mode": "bypassPermissions", "env": ["TENANT_SECRET": secret]],
            ])
            let a = try UnixStreamSocket(path: daemon.socket)
            a.write(Array(Self.request(pool: "c", body: String(decoding: bodyA, as: UTF8.self), contentType: "application/json").utf8))
            // A's process is booting when A leaves.
            try await waitUntil("A's process is starting", timeout: .seconds(10)) { try await daemon.pool("c").starting >= 1 }
            let processA = try #require(try await daemon.pool("c").pids.first { !spare.contains($0) })
            a.closeNow()
            // B1 takes the pool's idle spare; B2 waits for the next process.
            async let b1 = Self.jsonTurn(daemon, pool: "c")
            async let b2 = Self.jsonTurn(daemon, pool: "c")
            for response in try await [b1, b2] {
                #expect(response.status == 200, "\(response.bodyString)")
                #expect(response.headers.first(name: "Prewarm-Pid") != String(processA), "a turn of the pool's session got A's process")
                let initLine = try #require(jsonLines(response).first { $0["subtype"] as? String == "init" })
                #expect(initLine["cwd"] as? String != tenant, "a turn of the pool's session ran in A's directory")
                #expect(initLine["permissionMode"] as? String == "default", "a turn of the pool's session ran in A's permission mode")
            }
            // A's process is retired: it ran no turn.
            try await waitUntil("A's process is gone", timeout: .seconds(10)) { !isAlive(Int32(processA)) }
            #expect(!daemon.log.contains(secret), "the secret is never logged")
        }

        /// Turns on one keep-alive connection hold nothing once they are over: over 1000
        /// sequential turns the daemon's RSS grows by under 3 MiB after the first 250.
        @Test func keepAliveConnectionsDoNotGrow() async throws {
            let daemon = try await TestDaemon(pools: Self.pool(spares: 4, extra: "max_starting = 2\nmax_processes = 8"))
            let connection = try KeepAliveConnection(path: daemon.socket)
            var rssAfterWarmUp = 0
            for index in 0..<1000 {
                let (status, body) = try connection.turn(pool: "p")
                #expect(status == 200)
                #expect(body.contains(#""type":"result""#))
                if status != 200 { return }
                if index == 249 { rssAfterWarmUp = Self.rss(of: daemon) }
            }
            let grown = Self.rss(of: daemon) - rssAfterWarmUp
            print("keep-alive: the daemon's RSS moved by \(grown >> 10) KiB over turns 250-1000 on one connection")
            #expect(grown < 3 << 20, "the daemon grew by \(grown >> 10) KiB over 750 turns on one connection")
            #expect(try await daemon.pool("p").served == 1000)
        }

        /// A two-way client that floods a process which reads nothing is held back by
        /// backpressure: the daemon's memory grows by under 64 MiB while the client tries to
        /// send 200 MiB, and the client's departure ends the turn.
        @Test func twoWayInputFloodIsBounded() async throws {
            let daemon = try await TestDaemon(pools: Self.pool("hang", args: #""--hang-turn""#, spares: 1, extra: "turn_timeout_s = 120"))
            let before = Self.rss(of: daemon)
            let socket = try UnixStreamSocket(path: daemon.socket)
            socket.write(Array(TwoWayTests.request(pool: "hang").utf8))
            let head = try #require(socket.readHead())
            #expect(head.hasPrefix("HTTP/1.1 101"))
            let pid = try #require(head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("prewarm-pid:") }.flatMap { Int32($0.split(separator: " ").last ?? "") })
            socket.write(Array((TestDaemon.userLine + "\n").utf8))
            // Writes what the daemon takes for up to 4 s (or 200 MiB).
            let chunk = [UInt8](repeating: UInt8(ascii: "x"), count: 1 << 20)
            var sent = 0
            var stalledSince: ContinuousClock.Instant?
            let deadline = ContinuousClock.now.advanced(by: .seconds(4))
            while sent < 200 << 20, ContinuousClock.now < deadline {
                let written = socket.writeNow(chunk)
                if written < 0 { break }
                if written == 0 {
                    stalledSince = stalledSince ?? .now
                    try await Task.sleep(for: .milliseconds(10))  // the socket is full: the client waits, as a real one would
                } else {
                    sent += written
                    stalledSince = nil
                }
            }
            let grown = Self.rss(of: daemon) - before
            print("two-way flood: the client got \(sent >> 10) KiB through before it was held back; the daemon grew by \(grown >> 10) KiB")
            #expect(sent < 200 << 20, "the daemon read everything the client sent (\(sent >> 20) MiB): no backpressure")
            #expect(grown < 64 << 20, "the daemon grew by \(grown >> 20) MiB while the client sent \(sent >> 20) MiB")
            #expect(stalledSince != nil, "the client was never held back")
            socket.closeNow()
            try await waitUntil("the flooded turn's process is killed", timeout: .seconds(10)) { !isAlive(pid) }
            #expect((try? await daemon.client.request(.GET, "/healthz"))?.status == 200)
        }

        /// No child outlives the daemon even after its keeper is killed: the daemon notices
        /// the keeper's death, starts a new one that takes over every live process group
        /// (status shows the restart), and a later SIGKILL of the daemon leaves nothing.
        @Test func aKilledKeeperIsReplacedAndStillCleansUp() async throws {
            let daemon = try await TestDaemon(pools: Self.pool(args: #""--fork-child""#, spares: 2))
            let health = try await Self.health(daemon)
            guard let keeper = health.keeper?.pid else {
                Issue.record("/healthz names no keeper: \(health)")
                return
            }
            #expect(health.keeper?.restarts == 0)
            let groups = Set(try await daemon.pool("p").pids.map(Int32.init))
            #expect(groups.count == 2)
            #expect(livingMembers(ofGroups: groups).count >= 4, "each spare has a child of its own")
            kill(Int32(keeper), SIGKILL)
            try await waitUntil("a new keeper took over", timeout: .seconds(10)) {
                let now = try await Self.health(daemon).keeper
                return now?.restarts == 1 && now?.pid != nil && now?.pid != keeper
            }
            #expect(try await Self.health(daemon).keeper?.groups ?? 0 >= 2)
            let metrics = try await daemon.client.request(.GET, "/metrics").bodyString
            #expect(metrics.contains("prewarm_keeper_restarts_total 1"))
            #expect(daemon.log.contains("the keeper died"))
            // A turn still works, and its replacement is registered with the new keeper.
            #expect(try await daemon.turn("p").status == 200)
            try await waitUntil("the pool refills", timeout: .seconds(10)) { try await daemon.pool("p").idle == 2 }
            let all = groups.union(try await daemon.pool("p").pids.map(Int32.init))
            daemon.signal(SIGKILL)
            _ = try await daemon.waitForExit()
            try await waitUntil("every child and grandchild is gone", timeout: .seconds(10)) {
                livingMembers(ofGroups: all).isEmpty
            }
        }

        /// Every malformed request gets an answer (400 bad_request, 431 headers_too_large)
        /// and a closed connection, and the daemon serves on.
        @Test(arguments: MalformedRequest.corpus)
        func malformedRequestsAreAnsweredAndClosed(_ malformed: MalformedRequest) async throws {
            let daemon = try await TestDaemon(pools: Self.pool(spares: 1))
            let socket = try UnixStreamSocket(path: daemon.socket)
            socket.setReceiveTimeout(3)
            let bytes = malformed.bytes
            let writer = Thread { socket.write(bytes) }
            writer.start()
            let started = ContinuousClock.now
            var received: [UInt8] = []
            while case let chunk = socket.read(), !chunk.isEmpty { received += chunk }
            let elapsed = started.duration(to: .now)
            let text = String(decoding: received, as: UTF8.self)
            #expect(text.hasPrefix("HTTP/1.1 \(malformed.status) "), "\(malformed.name): got \(text.prefix(200).debugDescription)")
            #expect(text.contains(#""code":"\#(malformed.code)""#), "\(malformed.name): \(text.prefix(300))")
            #expect(elapsed < .seconds(3), "\(malformed.name): the connection stayed open")
            #expect(!daemon.log.contains("error prewarm"), "\(malformed.name) was logged as the daemon's error")
            #expect(try await daemon.turn("p").status == 200)
        }

        /// A body cut short or a bad chunk after a valid head is the client's error (400,
        /// never 500), and a connection that sends an incomplete request and stalls is closed
        /// after idle_timeout_s.
        @Test func truncatedAndStalledRequestsAreTheClients() async throws {
            let daemon = try await TestDaemon(pools: Self.pool(spares: 1), top: "idle_timeout_s = 1")
            // A bad chunk size after a valid head.
            let chunked = try UnixStreamSocket(path: daemon.socket)
            chunked.setReceiveTimeout(5)
            chunked.write(Array("POST /v1/pools/p/turns HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZZ\r\n".utf8))
            var answer = ""
            while case let chunk = chunked.read(), !chunk.isEmpty { answer += String(decoding: chunk, as: UTF8.self) }
            #expect(answer.hasPrefix("HTTP/1.1 400 "), "\(answer.prefix(200))")
            // A body cut short by the client's half-close: nothing to answer, nothing logged as an error.
            let cut = try UnixStreamSocket(path: daemon.socket)
            cut.setReceiveTimeout(5)
            cut.write(Array("POST /v1/pools/p/turns HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"type\"".utf8))
            cut.shutdownWrite()
            while case let chunk = cut.read(), !chunk.isEmpty {}
            // A request line that never ends, and a connection that never sends anything.
            for opening in ["POST /v1/pools/p/tu", ""] {
                let stalled = try UnixStreamSocket(path: daemon.socket)
                stalled.setReceiveTimeout(10)
                stalled.write(Array(opening.utf8))
                let started = ContinuousClock.now
                while case let chunk = stalled.read(), !chunk.isEmpty {}
                let waited = started.duration(to: .now)
                #expect(waited < .seconds(9), "a stalled connection \(opening.debugDescription) stayed open")
            }
            #expect(!daemon.log.contains("error prewarm"), "a client's framing error was logged as the daemon's: \(daemon.log)")
            #expect(!daemon.log.contains("internal"))
            #expect(try await daemon.turn("p").status == 200)
        }

        /// A two-way turn is never timed out by idle_timeout_s: a person may take minutes to
        /// answer a permission request.
        @Test func idleTimeoutSparesATwoWayTurn() async throws {
            let daemon = try await TestDaemon(pools: Self.pool(spares: 1), top: "idle_timeout_s = 1")
            let socket = try RawSocket(path: daemon.socket)
            try socket.send(TwoWayTests.request(pool: "p"))
            #expect(socket.readHead()?.hasPrefix("HTTP/1.1 101") == true)
            try await Task.sleep(for: .milliseconds(2500))  // the idle timeout passing is the point of the test
            try socket.send(TestDaemon.userLine + "\n")
            socket.shutdownWrite()
            let lines = socket.readAll().split(separator: "\n")
            #expect(lines.contains { $0.contains(#""type":"result""#) })
        }

        /// A client that leaves while the CLI binds itself to its session (a claim, which
        /// takes 3 s here) gets its process killed then: the claimed process never runs a turn
        /// nobody reads. Plain turns and two-way upgrades alike.
        @Test(arguments: [false, true])
        func aClientGoneDuringTheClaimKillsTheProcess(twoWay: Bool) async throws {
            let daemon = try await TestDaemon(pools: Self.claudePool("c", args: #""--claim-ms", "3000""#, spares: 1, extra: "turn_timeout_s = 60"))
            let spare = try #require(try await daemon.pool("c").pids.first)
            let socket = try UnixStreamSocket(path: daemon.socket)
            let body = #"{"prompt":"hello"}"#
            socket.write(Array((twoWay ? TwoWayTests.request(pool: "c") : Self.request(pool: "c", body: body, contentType: "application/json")).utf8))
            try await waitUntil("the spare is being claimed", timeout: .seconds(10)) { try await daemon.pool("c").busy == 1 }
            let left = ContinuousClock.now
            socket.closeNow()
            try await waitUntil("the claimed process is killed", timeout: .seconds(10)) { !isAlive(Int32(spare)) }
            #expect(left.duration(to: .now) < .seconds(2), "the process lived on until its claim was answered")
            try await waitUntil("the pool refills", timeout: .seconds(10)) { try await daemon.pool("c").idle == 1 }
            #expect(try await Self.jsonTurn(daemon, pool: "c").status == 200)
        }

        /// A spare stopped with SIGSTOP is not handed out as warm: it is retired at hand-off
        /// and the turn gets a runnable process.
        @Test func aStoppedSpareIsNotHandedOut() async throws {
            let daemon = try await TestDaemon(pools: Self.pool(spares: 2, extra: "turn_timeout_s = 20"))
            let pids = try await daemon.pool("p").pids
            #expect(pids.count == 2)
            for pid in pids { kill(Int32(pid), SIGSTOP) }
            defer { for pid in pids { kill(Int32(pid), SIGCONT) } }
            // SIGSTOP takes effect once the process is scheduled: wait until the kernel says so.
            try await waitUntil("the spares are stopped", timeout: .seconds(10)) {
                pids.allSatisfy { ProcessMemory.statFields(path: "/proc/\($0)/stat")?.first == "T" }
            }
            let response = try await daemon.turn("p")
            #expect(response.status == 200)
            let served = Int(response.headers.first(name: "Prewarm-Pid") ?? "") ?? 0
            #expect(!pids.contains(served), "a stopped spare served the turn")
            try await waitUntil("the stopped spares are retired", timeout: .seconds(10)) { pids.allSatisfy { !isAlive(Int32($0)) } }
            #expect(daemon.log.contains("not runnable at hand-off"))
        }

        /// Turns that name no directory never share one: on a claimed pool without a
        /// configured cwd each turn runs in a fresh directory of its own (0700) that is
        /// removed after the turn; the parking directory is for parked spares only.
        @Test func turnsWithoutADirectoryGetTheirOwn() async throws {
            let daemon = try await TestDaemon(pools: Self.claudePool("c", spares: 2) + Self.claudePool("u", spares: 2, extra: "claim = false"))
            for pool in ["c", "u"] {
                var seen = Set<String>()
                for _ in 0..<3 {
                    let response = try await Self.jsonTurn(daemon, pool: pool)
                    #expect(response.status == 200, "\(response.bodyString)")
                    let cwd = try #require(jsonLines(response).first { $0["subtype"] as? String == "init" }?["cwd"] as? String)
                    #expect(cwd.hasPrefix(daemon.directory + "/state/prewarm/\(pool)/turns/"), "\(pool): \(cwd)")
                    #expect(!cwd.hasSuffix("/parking"))
                    #expect(seen.insert(cwd).inserted, "\(pool): two turns ran in \(cwd)")
                }
                let directories = seen
                try await waitUntil("\(pool): the turns' directories are removed", timeout: .seconds(10)) {
                    directories.allSatisfy { !FileManager.default.fileExists(atPath: $0) }
                }
            }
        }

        // MARK: - Helpers

        static func request(pool: String, body: String, contentType: String = "application/x-ndjson") -> String {
            "POST /v1/pools/\(pool)/turns HTTP/1.1\r\nHost: prewarm\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        }

        static func jsonTurn(_ daemon: TestDaemon, pool: String, session: [String: Any]? = nil) async throws -> UnixHTTPClient.Response {
            var object: [String: Any] = ["prompt": "hello"]
            if let session { object["session"] = session }
            return try await daemon.client.request(
                .POST, "/v1/pools/\(pool)/turns", headers: [("Content-Type", "application/json")],
                body: ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: object))
            )
        }

        static func health(_ daemon: TestDaemon) async throws -> Health {
            let response = try await daemon.client.request(.GET, "/healthz")
            return try JSONDecoder().decode(Health.self, from: Data(response.body.readableBytesView))
        }

        /// The daemon's resident memory, in bytes.
        static func rss(of daemon: TestDaemon) -> Int {
            let status = (try? String(contentsOfFile: "/proc/\(daemon.process.processIdentifier)/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
            return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) << 10
        }
    }
}

/// One malformed request of the corpus, and what it must be answered.
struct MalformedRequest: Sendable, CustomTestStringConvertible {
    let name: String
    let bytes: [UInt8]
    let status: Int
    let code: String

    var testDescription: String { name }

    static let corpus: [MalformedRequest] = {
        func text(_ name: String, _ request: String, _ status: Int = 400, _ code: String = "bad_request") -> MalformedRequest {
            MalformedRequest(name: name, bytes: Array(request.utf8), status: status, code: code)
        }
        var random = SeededGenerator(seed: 42)
        let noise = (0..<4096).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        return [
            text("garbage request line", "HELLO THERE\r\n\r\n"),
            text("HTTP/9.9", "GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n"),
            text("100 KB URI", "GET /" + String(repeating: "a", count: 100_000) + " HTTP/1.1\r\nHost: x\r\n\r\n", 431, "headers_too_large"),
            text("10 KB URI", "GET /" + String(repeating: "a", count: 10_000) + " HTTP/1.1\r\nHost: x\r\n\r\n"),
            text("1 MB header", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "b", count: 1 << 20) + "\r\n\r\n", 431, "headers_too_large"),
            text(
                "20000 headers", "GET /healthz HTTP/1.1\r\nHost: x\r\n" + (0..<20000).map { "X-H\($0): v\r\n" }.joined() + "\r\n", 431,
                "headers_too_large"
            ),
            text(
                "Content-Length with Transfer-Encoding",
                "POST /v1/pools/p/turns HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            text("huge chunk size", "POST /v1/pools/p/turns HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFFFF\r\n"),
            MalformedRequest(name: "random bytes", bytes: [0x16, 0x03, 0x01] + noise, status: 400, code: "bad_request"),
        ]
    }()
}

/// One HTTP/1.1 connection kept alive across turns, as pooled upstream clients use the
/// socket: a request with Content-Length, then the chunked response and its trailers.
final class KeepAliveConnection {
    private let socket: UnixStreamSocket
    private var buffer: [UInt8] = []

    init(path: String) throws {
        socket = try UnixStreamSocket(path: path)
        socket.setReceiveTimeout(30)
    }

    struct Closed: Error {}

    /// One turn; its status and body.
    func turn(pool: String, body: String = TestDaemon.userLine + "\n") throws -> (Int, String) {
        let request = LiveDaemons.RequestPathFaultTests.request(pool: pool, body: body)
        guard socket.write(Array(request.utf8)) else { throw Closed() }
        let statusLine = try line()
        let status = Int(statusLine.split(separator: " ").dropFirst().first ?? "") ?? 0
        var chunked = false
        var length: Int?
        while case let header = try line(), !header.isEmpty {
            let lower = header.lowercased()
            if lower.hasPrefix("transfer-encoding:") && lower.contains("chunked") { chunked = true }
            if lower.hasPrefix("content-length:") { length = Int(lower.dropFirst(15).trimmingCharacters(in: .whitespaces)) }
        }
        var body: [UInt8] = []
        if chunked {
            while true {
                let size = Int(try line().split(separator: ";")[0], radix: 16) ?? 0
                if size == 0 {
                    while try !line().isEmpty {}  // trailers
                    break
                }
                body += try bytes(size)
                _ = try line()
            }
        } else if let length {
            body = try bytes(length)
        }
        return (status, String(decoding: body, as: UTF8.self))
    }

    private func fill() throws {
        let chunk = socket.read()
        guard !chunk.isEmpty else { throw Closed() }
        buffer += chunk
    }

    private func line() throws -> String {
        while true {
            if let end = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<end], as: UTF8.self).trimmingCharacters(in: CharacterSet(charactersIn: "\r"))
                buffer.removeSubrange(...end)
                return line
            }
            try fill()
        }
    }

    private func bytes(_ count: Int) throws -> [UInt8] {
        while buffer.count < count { try fill() }
        defer { buffer.removeSubrange(..<count) }
        return Array(buffer[..<count])
    }
}
