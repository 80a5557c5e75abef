import Foundation
import NIOCore
import PrewarmClient
import PrewarmCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension LiveDaemons {
    /// `kind = "claude"` pools end to end, run on the fake agent (which speaks the CLI's
    /// claim_session protocol): claimed spares in a per-turn cwd, refused claims, fallbacks,
    /// resumes and unclaimed pools. The real CLI's test is `RealClaudeTests`.
    @Suite("Claude pools", .serialized)
    struct ClaudePoolTests {
        static func pool(_ extra: String = "", session: String = "") -> String {
            """
            [[pool]]
            name = "c"
            kind = "claude"
            command = "FAKE"
            spares = 2
            when_empty = "start"
            \(extra)
            [pool.session]
            permission_mode = "default"
            \(session)

            """
        }

        static func jsonTurn(_ daemon: TestDaemon, prompt: String = "hello", session: [String: Any]) async throws -> UnixHTTPClient.Response {
            let body = try JSONSerialization.data(withJSONObject: ["prompt": prompt, "session": session])
            return try await daemon.client.request(
                .POST, "/v1/pools/c/turns", headers: [("Content-Type", "application/json")], body: ByteBuffer(bytes: body)
            )
        }

        /// A claimed spare serves a turn in the turn's own cwd: warm, its system/init reports the
        /// cwd, the body ends with the result line, and the CLI's claim chatter is not forwarded.
        @Test func claimedSpareInPerTurnCwd() async throws {
            let daemon = try await TestDaemon(pools: Self.pool())
            let status = try await daemon.pool("c")
            #expect(status.kind == "claude" && status.claim == "on")
            let cwd = try TestDaemon.makeTemporaryDirectory()
            let response = try await Self.jsonTurn(daemon, session: ["cwd": cwd, "permission_mode": "acceptEdits"])
            #expect(response.status == 200, "\(response.bodyString)")
            #expect(response.headers.first(name: "Prewarm-Start") == "warm")
            let lines = jsonLines(response)
            let initLine = lines.first { $0["type"] as? String == "system" && $0["subtype"] as? String == "init" }
            #expect(initLine?["cwd"] as? String == cwd)
            #expect(initLine?["permissionMode"] as? String == "acceptEdits")
            #expect(lines.last?["type"] as? String == "result")
            #expect(!lines.contains { $0["subtype"] as? String == "ui_invalidate" }, "claim chatter is dropped")
            #expect(!lines.contains { $0["type"] as? String == "control_response" }, "the claim's answer is the daemon's")
            #expect(response.trailers?.first(name: "Prewarm-Outcome") == "completed")
        }

        /// A raw stream-json body on a claimed pool: the spare is claimed with the pool's session.
        @Test func rawBodyIsClaimedWithThePoolSession() async throws {
            let daemon = try await TestDaemon(pools: Self.pool())
            let response = try await daemon.turn("c")
            #expect(response.status == 200, "\(response.bodyString)")
            #expect(jsonLines(response).last?["type"] as? String == "result")
        }

        /// A refused claim is 409 claim_refused with the CLI's reason, and the spare is retired.
        @Test func refusedClaimIs409() async throws {
            let daemon = try await TestDaemon(pools: Self.pool())
            let before = Set(try await daemon.pool("c").pids)
            let response = try await Self.jsonTurn(daemon, session: ["cwd": "/nonexistent/prewarm-test"])
            #expect(response.status == 409)
            #expect(response.bodyString.contains(#""code":"claim_refused""#))
            #expect(response.bodyString.contains(#""reason":"cwd_not_found""#), "\(response.bodyString)")
            try await waitUntil("the refused spare is retired and replaced", timeout: .seconds(10)) {
                let status = try await daemon.pool("c")
                return status.idle == 2 && Set(status.pids).intersection(before).count == 1
            }
            #expect(try await daemon.turn("c").status == 200, "the pool serves on")
        }

        /// With claim_fallback, a refused claim becomes a cold start with the same session.
        @Test func claimFallbackStartsCold() async throws {
            let daemon = try await TestDaemon(pools: Self.pool("claim_fallback = true"))
            let cwd = try TestDaemon.makeTemporaryDirectory()
            let response = try await Self.jsonTurn(daemon, session: ["cwd": cwd, "env": ["NOT_CLAIMABLE": "1"]])
            #expect(response.status == 200, "\(response.bodyString)")
            #expect(response.headers.first(name: "Prewarm-Start") == "cold")
            let initLine = jsonLines(response).first { $0["subtype"] as? String == "init" }
            #expect(initLine?["cwd"] as? String == cwd)
        }

        /// A resume never goes to a claimed spare: a cold start with --resume=ID.
        @Test func resumeStartsCold() async throws {
            let daemon = try await TestDaemon(pools: Self.pool())
            let response = try await Self.jsonTurn(daemon, session: ["resume": "0e5d8a4c-resume"])
            #expect(response.status == 200, "\(response.bodyString)")
            #expect(response.headers.first(name: "Prewarm-Start") == "cold")
            let initLine = jsonLines(response).first { $0["subtype"] as? String == "init" }
            #expect(initLine?["session_id"] as? String == "0e5d8a4c-resume")
        }

        /// Without claim: spares serve turns with the pool's session; other settings start cold.
        @Test func unclaimedPoolServesOnlyItsSession() async throws {
            let home = try TestDaemon.makeTemporaryDirectory()
            let daemon = try await TestDaemon(pools: Self.pool("claim = false", session: "cwd = \"\(home)\""))
            #expect(try await daemon.pool("c").claim == "off")
            let same = try await Self.jsonTurn(daemon, session: [:])
            #expect(same.headers.first(name: "Prewarm-Start") == "warm")
            #expect(jsonLines(same).first { $0["subtype"] as? String == "init" }?["cwd"] as? String == home)
            let other = try TestDaemon.makeTemporaryDirectory()
            let different = try await Self.jsonTurn(daemon, session: ["cwd": other])
            #expect(different.status == 200)
            #expect(different.headers.first(name: "Prewarm-Start") == "cold")
            #expect(jsonLines(different).first { $0["subtype"] as? String == "init" }?["cwd"] as? String == other)
        }

        /// A CLI that does not know --await-claim is found out when the pool starts, and status
        /// says so (GNU cat refuses the option as the CLI's older versions would).
        @Test func awaitClaimUnsupported() async throws {
            let daemon = try await TestDaemon(pools: Self.pool().replacingOccurrences(of: "command = \"FAKE\"", with: "command = \"/bin/cat\""), waitForIdle: false)
            try await waitUntil("the probe has run", timeout: .seconds(20)) { try await daemon.pool("c").claim == "unsupported" }
        }

        /// `claim_ahead`: after two turns in a row with one claim, the next spares are claimed
        /// with it as they start, and a turn with that claim gets one (its input written at
        /// once). A spare claimed ahead never serves another claim: turns of another directory,
        /// even a flood of them, each run in their own directory. A claim with credentials is
        /// never made ahead, and a spare whose directory's CLAUDE.md changed since its claim is
        /// discarded at the hand-off.
        @Test func sparesClaimedAheadServeOnlyTheirClaim() async throws {
            let daemon = try await TestDaemon(pools: Self.pool("claim_ahead = true"))
            let a = try TestDaemon.makeTemporaryDirectory()
            let b = try TestDaemon.makeTemporaryDirectory()
            @Sendable func turn(_ cwd: String, env: [String: String]? = nil) async throws -> String? {
                var session: [String: Any] = ["cwd": cwd, "permission_mode": "acceptEdits"]
                if let env { session["env"] = env }
                let response = try await Self.jsonTurn(daemon, session: session)
                #expect(response.status == 200, "\(response.bodyString)")
                #expect(jsonLines(response).last?["type"] as? String == "result")
                let initLine = jsonLines(response).first { $0["subtype"] as? String == "init" }
                #expect(initLine?["permissionMode"] as? String == "acceptEdits")
                return initLine?["cwd"] as? String
            }
            var pool: PoolStatus
            func settled() async throws {
                try await waitUntil("the pool has its spares and starts none", timeout: .seconds(20)) {
                    let pool = try await daemon.pool("c")
                    return pool.idle == 2 && pool.starting == 0 && pool.busy == 0
                }
            }
            // A claim with credentials (a claimable variable) is never made ahead, nor one in a git
            // work tree (the CLI's git status is taken at the claim).
            for _ in 0..<2 { #expect(try await turn(a, env: ["PREWARM_TEST_CLAIMABLE": "token"]) == a) }
            try await settled()
            #expect(try await daemon.pool("c").claimedAhead == 0)
            let repository = try TestDaemon.makeTemporaryDirectory()
            try FileManager.default.createDirectory(atPath: repository + "/.git", withIntermediateDirectories: false)
            try FileManager.default.createDirectory(atPath: repository + "/src", withIntermediateDirectories: false)
            for _ in 0..<3 { #expect(try await turn(repository + "/src") == repository + "/src") }
            try await settled()
            pool = try await daemon.pool("c")
            #expect(pool.claimedAhead == 0 && pool.claimAheadDiscarded == 0, "\(pool)")

            for _ in 0..<2 { #expect(try await turn(a) == a) }
            try await waitUntil("a spare claimed ahead is idle", timeout: .seconds(20)) { try await daemon.pool("c").claimedAhead >= 1 }
            #expect(try await turn(a) == a)
            pool = try await daemon.pool("c")
            #expect(pool.claimAheadHits == 1 && pool.claimAheadDiscarded == 0, "\(pool)")

            // Another directory's turns, four at once: each in its own directory, never on A's spare.
            try await settled()
            let cwds = try await withThrowingTaskGroup(of: String?.self) { group in
                for _ in 0..<4 { group.addTask { try await turn(b) } }
                return try await group.reduce(into: [String?]()) { $0.append($1) }
            }
            #expect(cwds == Array(repeating: b, count: 4))
            // (Two B turns in a row make B the plan: a later one may get a spare claimed for B.)
            pool = try await daemon.pool("c")
            #expect(pool.served == 12, "a spare discarded at the hand-off is not a turn served: \(pool)")

            // What the CLI read at the claim changed: the spare is discarded, the turn served.
            for _ in 0..<2 { #expect(try await turn(a) == a) }
            try await waitUntil("a spare claimed ahead is idle", timeout: .seconds(20)) { try await daemon.pool("c").claimedAhead >= 1 }
            try await settled()
            let discarded = try await daemon.pool("c").claimAheadDiscarded
            try "Answer in French.".write(toFile: a + "/CLAUDE.md", atomically: false, encoding: .utf8)
            #expect(try await turn(a) == a)
            pool = try await daemon.pool("c")
            #expect(pool.claimAheadDiscarded > discarded, "\(pool)")
            #expect(pool.failing == false && pool.startFailures == 0, "\(pool)")
        }

        /// A client that leaves as its turn starts on a spare claimed ahead (its input written
        /// at the hand-off): the process is killed at once, never handed to anyone else, and
        /// the pool claims its replacement ahead again.
        @Test func aClientLeavingASpareClaimedAheadGetsItKilled() async throws {
            let daemon = try await TestDaemon(pools: Self.pool("claim_ahead = true\nargs = [\"--hang-turn\"]"))
            let cwd = try TestDaemon.makeTemporaryDirectory()
            let body = try JSONSerialization.data(withJSONObject: ["prompt": "hello", "session": ["cwd": cwd]])
            struct Abort: Error {}
            @Sendable func abandonedTurn() async throws -> Int32 {
                var pid: Int32 = 0
                do {
                    _ = try await daemon.client.stream(
                        .POST, "/v1/pools/c/turns", headers: [("Content-Type", "application/json")], body: ByteBuffer(bytes: body)
                    ) { head in
                        pid = Int32(head.headers.first(name: "Prewarm-Pid") ?? "") ?? 0
                        throw Abort()  // gone as soon as the turn has its process
                    } onBody: { _ in }
                } catch is Abort {}
                #expect(pid > 0)
                return pid
            }
            for _ in 0..<2 { _ = try await abandonedTurn() }
            try await waitUntil("a spare claimed ahead is idle", timeout: .seconds(20)) { try await daemon.pool("c").claimedAhead >= 1 }
            let pid = try await abandonedTurn()
            try await waitUntil("the abandoned process is gone", timeout: .seconds(5)) { !isAlive(pid) }
            let pool = try await daemon.pool("c")
            #expect(pool.claimAheadHits == 1 && !pool.pids.contains(Int(pid)), "\(pool)")
            try await waitUntil("the pool has its spares again, claimed ahead", timeout: .seconds(20)) {
                let pool = try await daemon.pool("c")
                return pool.idle == 2 && pool.busy == 0 && pool.claimedAhead >= 1
            }
        }

        /// A bad JSON turn is refused before anything starts, saying what is wrong.
        @Test func badJSONTurn() async throws {
            let daemon = try await TestDaemon(pools: Self.pool())
            let response = try await daemon.client.request(
                .POST, "/v1/pools/c/turns", headers: [("Content-Type", "application/json")], body: ByteBuffer(string: #"{"session":{"cwd":"rel"}}"#)
            )
            #expect(response.status == 400)
            #expect(response.bodyString.contains("prompt"))
        }
    }
}
