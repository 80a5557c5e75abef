import Foundation
import NIOCore
import Testing

@testable import PrewarmCore

#if canImport(Glibc)
import Glibc
#endif

extension LiveDaemons {
    /// Resume spares end to end: the official Python SDK's `query(resume=...)` through
    /// `prewarm-claude`, its bundled real CLI, the fake model (each answer says how many user
    /// turns it received: the whole conversation, or not).
    @Suite("Resume spares (Python SDK)", .serialized, .enabled(if: SDKEnvironment.available, "needs the claude-agent-sdk virtualenv (.ci/run makes it)"))
    struct ResumeSpareSDKTests {
        /// The children of a process we started (from /proc).
        static func children(of pid: pid_t) -> [pid_t] {
            let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
            return text.split(separator: " ").compactMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }

        static func harness(ttl: Int = 600, maxProcesses: Int = 4, resume: Bool = true, universal: Int = 0) async throws -> SDKDropInTests.Harness {
            try await SDKDropInTests.Harness.start(
                extra: """
                    resume_spares = \(resume)
                    resume_spare_ttl_s = \(ttl)
                    max_processes = \(maxProcesses)
                    universal_spares = \(universal)
                    """
            )
        }

        static func turns(in query: [String: Any]) -> Int? {
            guard let text = (query["texts"] as? [String])?.first, let range = text.range(of: #"\[user turns: (\d+)\]"#, options: .regularExpression) else { return nil }
            return Int(text[range].dropFirst("[user turns: ".count).dropLast())
        }

        /// Waits until the pool holds a ready resume spare (the event is the spare's readiness,
        /// seen in the pool's status).
        static func resumeSpareReady(_ daemon: TestDaemon) async throws {
            try await waitUntil("a resume spare is ready", timeout: .seconds(90)) { try await daemon.pool("sdk").resumeReady == 1 }
        }

        /// A resume spare holds the claimable variables of the run it was started after: a
        /// resume of the same session by a caller with another (CLAUDE_CODE_HOST_SESSION_ID
        /// here, a token's kin) is not served by it, and still sees the whole conversation;
        /// the same caller's next resume is. (Before: B was served warm by a process holding A's.)
        @Test func anotherCallersResumeIsNotServedByTheSpare() async throws {
            let harness = try await Self.harness()
            let daemon = harness.daemon
            let first = try harness.queries("turn", ["Remember the word pear."], env: ["PREWARM_TEST_HOST_SESSION": "caller-a"])
            let session = try #require(first.first?["session_id"] as? String)
            try await Self.resumeSpareReady(daemon)
            let other = try harness.queries("turn", ["Turn 2: what was the word?", session], env: ["PREWARM_TEST_HOST_SESSION": "caller-b"])
            #expect(Self.turns(in: other[0]) == 2, "\(other)")
            var pool = try await daemon.pool("sdk")
            #expect(pool.resumeHits == 0 && pool.resumeMisses == 1, "\(pool)")
            try await Self.resumeSpareReady(daemon)
            let same = try harness.queries("turn", ["Turn 3: what was the word?", session], env: ["PREWARM_TEST_HOST_SESSION": "caller-b"])
            #expect(Self.turns(in: same[0]) == 3, "\(same)")
            pool = try await daemon.pool("sdk")
            #expect(pool.resumeHits == 1, "\(pool)")
        }

        /// One fresh query, then resumed ones: each resumed turn is a resume hit and sees every
        /// earlier turn; a turn continued behind the daemon's back (the CLI run directly, as
        /// another host would) makes the spare stale: that turn runs cold with the whole
        /// context; a client that kills its run leaves no spare behind for it.
        @Test func aConversationResumesWarm() async throws {
            let harness = try await Self.harness()
            let daemon = harness.daemon
            let first = try harness.queries("turn", ["Remember the word apple."])
            let session = try #require(first.first?["session_id"] as? String)
            #expect(Self.turns(in: first[0]) == 1)
            for turn in 2...4 {
                try await Self.resumeSpareReady(daemon)
                let resumed = try harness.queries("turn", ["Turn \(turn): what was the word?", session])
                #expect(resumed.first?["session_id"] as? String == session)
                #expect(Self.turns(in: resumed[0]) == turn, "\(resumed)")
            }
            var pool = try await daemon.pool("sdk")
            #expect(pool.resumeHits == 3 && pool.resumeMisses == 0 && pool.cold == 0, "\(pool)")

            // Another process continues the session (the real CLI, no daemon): the spare held
            // for it loaded an older transcript.
            try await Self.resumeSpareReady(daemon)
            let elsewhere = try harness.queries("turn", ["Turn 5, elsewhere.", session], socket: daemon.directory + "/no-daemon.sock")
            #expect(Self.turns(in: elsewhere[0]) == 5)
            let stale = try harness.queries("turn", ["Turn 6: still there?", session])
            #expect(Self.turns(in: stale[0]) == 6, "the cold turn has the whole context: \(stale)")
            pool = try await daemon.pool("sdk")
            #expect(pool.resumeStale == 1 && pool.resumeMisses == 1 && pool.cold == 1 && pool.resumeHits == 3, "\(pool)")

            // The pool's own spares need the room (max_processes 4, held now: one idle spare and
            // one resume spare; four spares asked for): the resume spare goes, no spare is shed.
            try await Self.resumeSpareReady(daemon)
            let patched = try await daemon.client.request(.PATCH, "/v1/pools/sdk", body: ByteBuffer(string: #"{"spares": 4}"#))
            #expect(patched.status == 200)
            try await waitUntil("the resume spare makes room", timeout: .seconds(60)) { try await daemon.pool("sdk").resumeEvicted == 1 }
            try await waitUntil("the pool's spares are there", timeout: .seconds(90)) { try await daemon.pool("sdk").idle == 4 }
            pool = try await daemon.pool("sdk")
            #expect(pool.resumeHeld == 0 && pool.shed == 0, "\(pool)")
            // Back to one spare: the next resume is a miss (its spare is gone), with its context.
            _ = try await daemon.client.request(.PATCH, "/v1/pools/sdk", body: ByteBuffer(string: #"{"spares": 1}"#))
            let missed = try harness.queries("turn", ["Turn 7.", session])
            #expect(Self.turns(in: missed[0]) == 7)
            #expect(try await daemon.pool("sdk").resumeMisses == 2)
        }

        /// A resume spare older than its TTL is gone; the turn then runs cold, with its context.
        @Test func aSpareOlderThanItsTTLIsGone() async throws {
            let harness = try await Self.harness(ttl: 1)
            let daemon = harness.daemon
            let first = try harness.queries("turn", ["Remember the word pear."])
            let session = try #require(first.first?["session_id"] as? String)
            let transcript = try #require(SessionTranscript.path(sessionID: session, cwd: harness.project, env: ["CLAUDE_CONFIG_DIR": harness.configDirectory]))
            let before = try #require(FileIdentity(path: transcript))
            try await waitUntil("the resume spare expires", timeout: .seconds(90)) {
                let pool = try await daemon.pool("sdk")
                return pool.resumeExpired == 1 && pool.resumeHeld == 0
            }
            // The expired spare wrote nothing to the transcript (it only touched its mtime loading it).
            let after = try #require(FileIdentity(path: transcript))
            #expect(after.sameContents(as: before), "the expired spare appended to the transcript")
            let resumed = try harness.queries("turn", ["And now?", session])
            #expect(Self.turns(in: resumed[0]) == 2)
            let pool = try await daemon.pool("sdk")
            #expect(pool.resumeHits == 0 && pool.resumeMisses == 1 && pool.cold == 1, "\(pool)")
        }

        /// Garbage and departures: a resume of a session that does not exist runs cold and fails
        /// as the CLI fails it (no spare made for it); a run whose client is killed mid-turn
        /// leaves no resume spare for its session.
        @Test func bogusSessionsAndKilledClientsMakeNoSpare() async throws {
            let harness = try await Self.harness()
            let daemon = harness.daemon
            let bogus = UUID().uuidString.lowercased()
            let environment = harness.environment(socket: daemon.socket)
            let (_, out, _) = try SDKEnvironment.run(SDKEnvironment.python!, [SDKEnvironment.driver, "turn", "Hello?", bogus], environment: environment)
            #expect(out.contains("error") || out.contains("\"is_error\": true"), "the CLI refuses an unknown session: \(out)")
            var pool = try await daemon.pool("sdk")
            #expect(pool.resumeMisses == 1 && pool.resumeHeld == 0, "\(pool)")

            // A real session; its next run's client is killed while the model answers slowly.
            let first = try harness.queries("turn", ["Remember the word plum."])
            let session = try #require(first.first?["session_id"] as? String)
            try await Self.resumeSpareReady(daemon)
            let driver = Process()
            driver.executableURL = URL(fileURLWithPath: SDKEnvironment.python!)
            driver.arguments = [SDKEnvironment.driver, "turn", "PREWARM_SLOW please", session]
            driver.environment = environment
            try driver.run()
            defer {
                kill(driver.processIdentifier, SIGKILL)
                driver.waitUntilExit()
            }
            try await waitUntil("the resumed run is busy", timeout: .seconds(60)) { try await daemon.pool("sdk").busy == 1 }
            // The SDK's child, prewarm-claude, dies mid-turn: its connection closes.
            let dropIn = try #require(Self.children(of: driver.processIdentifier).first, "the SDK's prewarm-claude")
            kill(dropIn, SIGKILL)
            try await waitUntil("its process is gone", timeout: .seconds(60)) { try await daemon.pool("sdk").busy == 0 }
            pool = try await daemon.pool("sdk")
            #expect(pool.resumeHits == 1 && pool.resumeHeld == 0, "a killed run leaves no spare: \(pool)")
        }

        /// Through the API (`session.resume`), with spares the pool initializes: a turn's
        /// session gets a resume spare, the next turn takes it warm with the whole conversation;
        /// one that expires leaves the session's transcript as it was (it is killed: a resuming
        /// CLI let exit unused may append metadata, docs/claude-cli.md §7).
        @Test func theAPIsResumedTurnsToo() async throws {
            let outside = NSTemporaryDirectory() + "prewarm-outside-" + UUID().uuidString.prefix(8)
            let model = try RealClaudeTests.FakeModel(outside: outside)
            let directory = try TestDaemon.makeTemporaryDirectory()
            let project = directory + "/project"
            try FileManager.default.createDirectory(atPath: project, withIntermediateDirectories: true)
            func pool(_ name: String, ttl: Int) -> String {
                """
                [[pool]]
                name = "\(name)"
                kind = "claude"
                command = "\(SDKEnvironment.cli!)"
                spares = 1
                config_dir = "\(directory)/claude-config"
                resume_spares = true
                resume_spare_ttl_s = \(ttl)
                env = { ANTHROPIC_BASE_URL = "http://127.0.0.1:\(model.port)", ANTHROPIC_API_KEY = "sk-fake" }
                [pool.ready]
                timeout_s = 120

                """
            }
            let daemon = try await TestDaemon(pools: pool("api", ttl: 600) + pool("brief", ttl: 1), directory: directory)
            func turn(_ pool: String, _ prompt: String, resume: String? = nil) async throws -> (start: String?, session: String?, turns: Int?) {
                var session: [String: Any] = ["cwd": project]
                if let resume { session["resume"] = resume }
                let body = try JSONSerialization.data(withJSONObject: ["prompt": prompt, "session": session])
                let response = try await daemon.client.request(
                    .POST, "/v1/pools/\(pool)/turns", headers: [("Content-Type", "application/json")], body: ByteBuffer(bytes: body)
                )
                #expect(response.status == 200, "\(response.bodyString)")
                let result = response.bodyString.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
                    .last { $0["type"] as? String == "result" }
                let text = result?["result"] as? String ?? ""
                let turns = text.range(of: #"\[user turns: (\d+)\]"#, options: .regularExpression).flatMap { Int(text[$0].dropFirst("[user turns: ".count).dropLast()) }
                return (response.headers.first(name: "Prewarm-Start"), result?["session_id"] as? String, turns)
            }
            let first = try await turn("api", "Remember the word kiwi.")
            let session = try #require(first.session)
            try await waitUntil("a resume spare is ready", timeout: .seconds(90)) { try await daemon.pool("api").resumeReady == 1 }
            let second = try await turn("api", "And the word?", resume: session)
            #expect(second.start == "warm" && second.session == session && second.turns == 2, "\(second)")
            #expect(try await daemon.pool("api").resumeHits == 1)

            // The brief pool's spare expires: the transcript stays as it was.
            let other = try await turn("brief", "Remember the word lime.")
            let otherSession = try #require(other.session)
            let transcript = try #require(SessionTranscript.path(sessionID: otherSession, cwd: project, env: ["CLAUDE_CONFIG_DIR": directory + "/claude-config"]))
            // Its spare is asked for once the turn's process is gone (the transcript complete).
            try await waitUntil("the brief pool's resume spare starts", timeout: .seconds(90)) { try await daemon.pool("brief").resumeHeld == 1 }
            let before = try #require(FileIdentity(path: transcript))
            try await waitUntil("the resume spare expires", timeout: .seconds(90)) {
                let pool = try await daemon.pool("brief")
                return pool.resumeExpired == 1 && pool.resumeHeld == 0
            }
            let after = try #require(FileIdentity(path: transcript))
            #expect(after.sameContents(as: before), "the expired spare appended to the transcript")
        }

        /// Universal spares (`--bg-spare`, CLI 2.1.332): with no resume spare, a resumed turn
        /// takes a parked CLI, which gets the run's command line, directory and environment in
        /// its claim line: still cold, but with the CLI's modules loaded; it sees the whole
        /// conversation.
        @Test func aResumeMissTakesAUniversalSpare() async throws {
            let harness = try await Self.harness(resume: false, universal: 1)
            let daemon = harness.daemon
            try await waitUntil("a universal spare is parked", timeout: .seconds(90)) { try await daemon.pool("sdk").universalIdle == 1 }
            #expect(try await daemon.pool("sdk").universal == "on")
            let first = try harness.queries("turn", ["Remember the word fig."])
            let session = try #require(first.first?["session_id"] as? String)
            for turn in 2...3 {
                try await waitUntil("a universal spare is parked", timeout: .seconds(90)) { try await daemon.pool("sdk").universalIdle == 1 }
                let resumed = try harness.queries("turn", ["Turn \(turn)?", session])
                #expect(resumed.first?["session_id"] as? String == session)
                #expect(Self.turns(in: resumed[0]) == turn, "\(resumed)")
            }
            let pool = try await daemon.pool("sdk")
            #expect(pool.universalHits == 2 && pool.cold == 2 && pool.resumeMisses == 2 && pool.resumeHits == 0, "\(pool)")
        }
    }
}

extension LiveDaemons {
    /// A CLI without `--bg-spare` (the fake agent refuses unknown options): the pool says so and
    /// keeps none; its runs start cold as before.
    @Suite("Universal spares, unsupported", .serialized)
    struct UniversalSpareUnsupportedTests {
        @Test func aCLIWithoutTheModeKeepsNone() async throws {
            let daemon = try await TestDaemon(pools: RunTests.pool(extra: "universal_spares = 2"))
            let pool = try await daemon.pool("c")
            #expect(pool.universal == "unsupported" && pool.universalIdle == 0 && pool.startFailures == 0, "\(pool)")
            let project = try TestDaemon.makeTemporaryDirectory()
            let run = try RunTests.DropIn(RunTests.sdkFlags + ["--resume", UUID().uuidString.lowercased()], environment: RunTests.environment(daemon), cwd: project)
            run.write(RunTests.userLine)
            run.closeInput()
            let (status, _, err) = run.finish()
            #expect(status == 0, "\(err)")
            let after = try await daemon.pool("c")
            #expect(after.cold == 1 && after.universalHits == 0, "\(after)")
        }
    }
}
