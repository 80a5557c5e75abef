import Foundation
import NIOCore
import PrewarmClient
import Testing

@testable import PrewarmCore

#if canImport(Glibc)
import Glibc
#endif

extension LiveDaemons {
    /// Drop-in runs through the real `prewarm-claude`, a real daemon and the fake agent as the
    /// CLI: served warm, stdin's end a half-close, exit statuses and signals forwarded, and a
    /// client that leaves, floods garbage or finds no room handled as the README says.
    @Suite("Drop-in runs", .serialized)
    struct RunTests {
        /// The Python SDK's default flags (less `--system-prompt`, which a claim applies).
        static let sdkFlags = ["--output-format", "stream-json", "--verbose", "--input-format", "stream-json"]
        static let userLine = #"{"type":"user","session_id":"","message":{"role":"user","content":"hi"},"parent_tool_use_id":null}"# + "\n"

        /// A claude pool of fake agents whose spares take the SDK's flags.
        static func pool(_ name: String = "c", spares: Int = 1, extra: String = "") -> String {
            """
            [[pool]]
            name = "\(name)"
            kind = "claude"
            command = "FAKE"
            spares = \(spares)
            initialize = false
            base_args = ["--output-format", "stream-json", "--verbose", "--input-format", "stream-json"]
            \(extra)

            """
        }

        /// The caller's environment: what matches the pool `name` of `daemon`.
        static func environment(_ daemon: TestDaemon, pool name: String = "c") -> [String: String] {
            [
                "PATH": "/usr/bin:/bin", "HOME": daemon.directory, "PREWARM_SOCKET": daemon.socket, "PREWARM_CLAUDE_CLI": TestDaemon.fakeAgent,
                "CLAUDE_CONFIG_DIR": daemon.directory + "/state/prewarm/\(name)/claude-config",
            ]
        }

        /// prewarm-claude running, its pipes held by the test.
        final class DropIn: @unchecked Sendable {
            let process = Process()
            let input = Pipe()
            let output = Pipe()
            let errors = Pipe()

            init(_ arguments: [String], environment: [String: String], cwd: String) throws {
                process.executableURL = URL(fileURLWithPath: DropInTests.dropIn)
                process.arguments = arguments
                process.environment = environment
                process.currentDirectoryURL = URL(fileURLWithPath: cwd)
                process.standardInput = input
                process.standardOutput = output
                process.standardError = errors
                try process.run()
            }

            func write(_ text: String) { input.fileHandleForWriting.write(Data(text.utf8)) }
            func closeInput() { try? input.fileHandleForWriting.close() }

            /// Reads stdout until a line contains `text` (nil at its end).
            func readLine(containing text: String) -> String? {
                // A byte at a time with read(2): Foundation's readData(ofLength:) waits for
                // more than it is asked on a pipe.
                let fd = output.fileHandleForReading.fileDescriptor
                var line: [UInt8] = []
                var byte: UInt8 = 0
                while true {
                    let count = Glibc.read(fd, &byte, 1)
                    if count < 0 && errno == EINTR { continue }
                    guard count == 1 else { return nil }
                    if byte == UInt8(ascii: "\n") {
                        let string = String(decoding: line, as: UTF8.self)
                        if string.contains(text) { return string }
                        line = []
                    } else {
                        line.append(byte)
                    }
                }
            }

            /// Everything left, and the exit status.
            func finish() -> (status: Int32, out: String, err: String) {
                let out = output.fileHandleForReading.readDataToEndOfFile()
                let err = errors.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
            }
        }

        @Test func aRunIsServedWarmUntilItsProcessExits() async throws {
            let daemon = try await TestDaemon(pools: Self.pool())
            let project = try TestDaemon.makeTemporaryDirectory()
            let run = try DropIn(Self.sdkFlags + ["--system-prompt", ""], environment: Self.environment(daemon), cwd: project)
            run.write(Self.userLine)
            // The end of stdin is a half-close: the turn goes on to its result, then the CLI exits.
            run.closeInput()
            let (status, out, err) = run.finish()
            #expect(status == 0, "\(err)")
            let lines = out.split(separator: "\n").map(String.init)
            #expect(lines.contains { $0.contains(#""type":"result""#) }, "\(out)")
            #expect(!out.contains("prewarm-ready") && !out.contains("prewarm-claim"), "the daemon's own requests and answers never reach the caller: \(out)")
            #expect(lines.contains { $0.contains(#""subtype":"init""#) && $0.contains(project) }, "the claim bound the spare to the caller's directory")
            let pool = try await daemon.pool("c")
            #expect(pool.warm == 1 && pool.cold == 0)
            try await waitUntil("the run is over in the daemon", timeout: .seconds(10)) { try await daemon.pool("c").busy == 0 }
        }

        /// A command line no pool's spares take (another host option) runs cold and makes a
        /// fingerprint pool; a second such run gives it spares (it takes the first one up),
        /// which serve the next such run warm.
        @Test func anUnmatchedCommandLineMakesAFingerprintPool() async throws {
            let daemon = try await TestDaemon(pools: Self.pool())
            let project = try TestDaemon.makeTemporaryDirectory()
            let arguments = Self.sdkFlags + ["--max-turns", "3"]
            for (index, expected) in ["cold", "waited", "warm"].enumerated() {
                let run = try DropIn(arguments, environment: Self.environment(daemon), cwd: project)
                run.write(Self.userLine)
                run.closeInput()
                let (status, out, err) = run.finish()
                #expect(status == 0, "\(expected): \(err)")
                #expect(out.contains(#""type":"result""#))
                let fingerprint = try #require(try await daemon.pools().first { $0.fingerprint != nil }, "a fingerprint pool was made")
                let counted = ["cold": fingerprint.cold, "waited": fingerprint.waited, "warm": fingerprint.warm]
                #expect(counted[expected] == 1 && fingerprint.served == index + 1, "\(expected): \(fingerprint)")
                #expect(fingerprint.fingerprint?.contains("--max-turns") == true && fingerprint.fingerprint?.contains("$CLAUDE_CONFIG_DIR") == true)
                #expect(fingerprint.fingerprint?.joined().contains("3") == false, "names, never values")
                #expect(fingerprint.differsFrom == NearestPool(pool: "c", differences: ["--max-turns"]), "\(String(describing: fingerprint.differsFrom))")
                if index == 0 {
                    #expect(fingerprint.targetSpares == 0 && fingerprint.idle + fingerprint.starting == 0, "no spares after one run: \(fingerprint)")
                } else {
                    try await waitUntil("the fingerprint pool has a spare", timeout: .seconds(20)) {
                        try await daemon.pool(fingerprint.name).idle >= 1
                    }
                }
            }
            #expect(try await daemon.pool("c").served == 0, "the configured pool's spares do not take --max-turns")
        }

        /// Two deny lists made of the same words in other rules never share a spare: each makes
        /// a fingerprint pool of its own, and neither run is served by the other's process.
        /// (Before: the list was split on every space and sorted, so B was served warm by a
        /// process started with A's rules.)
        @Test func otherPermissionRulesNeverShareASpare() async throws {
            let daemon = try await TestDaemon(pools: Self.pool())
            let project = try TestDaemon.makeTemporaryDirectory()
            var pools: [String] = []
            for rules in ["Bash(rm push:*),Bash(git -rf:*)", "Bash(rm -rf:*),Bash(git push:*)"] {
                let run = try DropIn(Self.sdkFlags + ["--disallowedTools", rules], environment: Self.environment(daemon), cwd: project)
                run.write(Self.userLine)
                run.closeInput()
                let (status, _, err) = run.finish()
                #expect(status == 0, "\(err)")
                let made = try await daemon.pools().filter { $0.fingerprint != nil }
                #expect(made.allSatisfy { $0.warm == 0 }, "a run was served by a spare of other rules: \(made)")
                pools = made.map(\.name)
                #expect(pools.allSatisfy { $0.range(of: "^fp-[0-9a-f]{32}$", options: .regularExpression) != nil }, "\(pools)")
            }
            #expect(pools.count == 2, "\(pools)")
        }

        /// Two host parts whose old 48-bit FNV-1a pool names collide (values found by brute
        /// force for this exact fingerprint: the CLI at /tmp/prewarm-fnv/claude, the SDK's flags,
        /// this CLAUDE_CONFIG_DIR) get two pools: runs are routed by the SHA-256 of the whole
        /// fingerprint, never by a name. (Before: B's run went to A's pool, whose spares hold
        /// A's variables.)
        @Test func collidingNamesNeverShareAPool() async throws {
            let daemon = try await TestDaemon(pools: Self.pool())
            let fixed = "/tmp/prewarm-fnv"
            try FileManager.default.createDirectory(atPath: fixed + "/config", withIntermediateDirectories: true)
            try? FileManager.default.removeItem(atPath: fixed + "/claude")
            try FileManager.default.createSymbolicLink(atPath: fixed + "/claude", withDestinationPath: TestDaemon.fakeAgent)
            let project = try TestDaemon.makeTemporaryDirectory()
            for value in ["t4QjcdzX38r5", "P6p9Ub31YqTi"] {
                let environment = [
                    "PATH": "/usr/bin:/bin", "PREWARM_SOCKET": daemon.socket, "PREWARM_CLAUDE_CLI": fixed + "/claude",
                    "CLAUDE_CONFIG_DIR": fixed + "/config", "VERTEX_COLLIDE": value,
                ]
                let run = try DropIn(Self.sdkFlags, environment: environment, cwd: project)
                run.write(Self.userLine)
                run.closeInput()
                let (status, _, err) = run.finish()
                #expect(status == 0, "\(err)")
            }
            let made = try await daemon.pools().filter { $0.fingerprint != nil }
            #expect(made.count == 2 && made.allSatisfy { $0.warm == 0 && $0.cold == 1 }, "\(made.map { ($0.name, $0.warm, $0.cold) })")
        }

        /// Options the CLI does not know (the fake agent's own) make a run no spare can serve:
        /// it runs cold in the pool of its host part; its exit status is the caller's.
        @Test func exitStatusAndSignalsAreTheProcesss() async throws {
            let daemon = try await TestDaemon(pools: Self.pool())
            let project = try TestDaemon.makeTemporaryDirectory()
            let crash = try DropIn(Self.sdkFlags + ["--crash-mid-turn"], environment: Self.environment(daemon), cwd: project)
            crash.write(Self.userLine)
            let crashed = crash.finish()
            #expect(crashed.status == 3, "the fake agent's own exit status: \(crashed.err)")
            #expect(try await daemon.pool("c").cold == 1)

            // SIGTERM to prewarm-claude reaches the process, which dies of it: 128 + 15.
            let hang = try DropIn(Self.sdkFlags + ["--hang-turn"], environment: Self.environment(daemon), cwd: project)
            hang.write(Self.userLine)
            #expect(hang.readLine(containing: #""subtype":"init""#) != nil)
            kill(hang.process.processIdentifier, SIGTERM)
            let hung = hang.finish()
            #expect(hung.status == 143, "\(hung.err)")
        }

        /// A client that dies mid-run (SIGKILL: nothing forwarded) gets its process killed.
        @Test func aClientKilledMidRunKillsItsProcess() async throws {
            let daemon = try await TestDaemon(pools: Self.pool())
            let project = try TestDaemon.makeTemporaryDirectory()
            let run = try DropIn(Self.sdkFlags + ["--hang-turn"], environment: Self.environment(daemon), cwd: project)
            run.write(Self.userLine)
            let initLine = try #require(run.readLine(containing: #""subtype":"init""#))
            let object = try JSONSerialization.jsonObject(with: Data(initLine.utf8)) as? [String: Any]
            let pid = try #require(object?["pid"] as? Int)
            #expect(isAlive(Int32(pid)))
            kill(run.process.processIdentifier, SIGKILL)
            _ = run.finish()
            try await waitUntil("the run's process is killed", timeout: .seconds(10)) { !isAlive(Int32(pid)) }
        }

        /// After the 101, bytes that are not frames end the run: the process is killed and the
        /// connection closed; the daemon goes on serving.
        @Test func garbageAfterTheUpgradeEndsTheRun() async throws {
            let daemon = try await TestDaemon(pools: Self.pool())
            let project = try TestDaemon.makeTemporaryDirectory()
            let description = RunDescription(argv: Self.sdkFlags, cwd: project, env: Self.environment(daemon), cli: TestDaemon.fakeAgent)
            let socket = try RawSocket(path: daemon.socket)
            try socket.send(
                "POST /v1/runs HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: prewarm-stream\r\nPrewarm-Run: \(description.encodedHeader())\r\nContent-Length: 0\r\n\r\n"
            )
            let head = try #require(socket.readHead())
            #expect(head.hasPrefix("HTTP/1.1 101"), "\(head)")
            let pid = try #require(Int32(head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("prewarm-pid:") }?.split(separator: " ").last ?? ""))
            try socket.send("Z\u{7f}\u{7f}\u{7f}\u{7f}garbage, not a frame")
            _ = socket.readAll()  // the daemon closes the connection
            try await waitUntil("the run's process is killed", timeout: .seconds(10)) { !isAlive(pid) }
            let again = try DropIn(Self.sdkFlags, environment: Self.environment(daemon), cwd: project)
            again.write(Self.userLine)
            again.closeInput()
            #expect(again.finish().status == 0)
        }

        /// A run description that is not one gets 400 and the daemon goes on; a large one (a
        /// 100 KB host variable) is served.
        @Test func badRunDescriptionsAreRefused() async throws {
            let daemon = try await TestDaemon(pools: Self.pool())
            for header in ["!!! not base64", RunDescription(argv: [], cwd: "relative/dir", env: [:]).encodedHeader(), "e30="] {
                let socket = try RawSocket(path: daemon.socket)
                try socket.send("POST /v1/runs HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: prewarm-stream\r\nPrewarm-Run: \(header)\r\nContent-Length: 0\r\n\r\n")
                let answer = socket.readAll()
                #expect(answer.hasPrefix("HTTP/1.1 400") && answer.contains("bad_request"), "\(header): \(answer)")
            }
            // A variable the daemon routes by (a host one) of 100 KB: the run description is
            // as large as the environment execve took, and the daemon serves it (before: 431
            // over the 16 KiB header field limit, and the real CLI ran).
            var environment = Self.environment(daemon)
            environment["ANTHROPIC_TEST_BIG"] = String(repeating: "x", count: 100_000)
            let (status, out, err) = try DropInTests.run(Self.sdkFlags, environment: environment, stdin: Self.userLine)
            #expect(status == 0 && out.contains(#""type":"result""#), "\(err)")
            let made = try await daemon.pools().filter { $0.fingerprint != nil }
            #expect(made.count == 1 && made.first?.served == 1 && made.first?.differsFrom?.differences == ["$ANTHROPIC_TEST_BIG"], "\(made)")
        }

        /// A flood of stdin frames at a process that reads nothing is held back (the daemon reads
        /// the socket only as fast as the process takes its stdin), and a signal the daemon does
        /// not forward (SIGKILL) is ignored; the process dies only when its client leaves.
        @Test func aFloodOfFramesIsHeldBackAndOddSignalsIgnored() async throws {
            let daemon = try await TestDaemon(pools: Self.pool())
            let project = try TestDaemon.makeTemporaryDirectory()
            let before = RequestPathFaultTests.rss(of: daemon)
            let description = RunDescription(argv: Self.sdkFlags + ["--hang-turn"], cwd: project, env: Self.environment(daemon), cli: TestDaemon.fakeAgent)
            let socket = try UnixStreamSocket(path: daemon.socket)
            socket.write(Array(
                "POST /v1/runs HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: prewarm-stream\r\nPrewarm-Run: \(description.encodedHeader())\r\nContent-Length: 0\r\n\r\n".utf8
            ))
            let head = try #require(socket.readHead())
            #expect(head.hasPrefix("HTTP/1.1 101"), "\(head)")
            let pid = try #require(head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("prewarm-pid:") }.flatMap { Int32($0.split(separator: " ").last ?? "") })
            func frame(_ type: Character, _ payload: [UInt8]) -> [UInt8] {
                let n = UInt32(payload.count)
                return [type.asciiValue!, UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + payload
            }
            socket.write(frame("i", Array(Self.userLine.utf8)))
            socket.write(frame("s", [UInt8(SIGKILL)]))
            let chunk = frame("i", [UInt8](repeating: UInt8(ascii: "x"), count: 64 << 10))
            var sent = 0
            var stalled = false
            let deadline = ContinuousClock.now.advanced(by: .seconds(4))
            while sent < 200 << 20, ContinuousClock.now < deadline {
                let written = socket.writeNow(chunk)
                if written < 0 { break }
                if written < chunk.count {
                    // The socket is full (a partial frame is fine: the rest would follow).
                    stalled = true
                    break
                }
                sent += written
            }
            let grown = RequestPathFaultTests.rss(of: daemon) - before
            print("run flood: the client got \(sent >> 10) KiB through before it was held back; the daemon grew by \(grown >> 10) KiB")
            #expect(stalled, "the client was never held back (\(sent >> 20) MiB sent)")
            #expect(grown < 64 << 20, "the daemon grew by \(grown >> 20) MiB")
            #expect(isAlive(pid), "SIGKILL is not a signal a client may forward")
            socket.closeNow()
            try await waitUntil("the flooded run's process is killed", timeout: .seconds(10)) { !isAlive(pid) }
            #expect((try? await daemon.client.request(.GET, "/healthz"))?.status == 200)
        }

        /// No room (here: no spare and `when_empty = "reject"`): exit 75 with the reason, and the
        /// real CLI is not run behind the daemon's back.
        @Test func noRoomIsExit75() async throws {
            let daemon = try await TestDaemon(pools: Self.pool(spares: 0, extra: #"when_empty = "reject""#))
            let project = try TestDaemon.makeTemporaryDirectory()
            let run = try DropIn(Self.sdkFlags, environment: Self.environment(daemon), cwd: project)
            run.write(Self.userLine)
            run.closeInput()
            let (status, out, err) = run.finish()
            #expect(status == 75)
            #expect(err.contains("no room"), "\(err)")
            #expect(out.isEmpty, "the CLI did not run")
        }

        /// A daemon that is draining answers 503: the drop-in runs the real CLI itself, which
        /// gets every byte of stdin (nothing was read before the daemon's answer).
        @Test func aDrainingDaemonFallsBack() async throws {
            let daemon = try await TestDaemon(
                pools: DaemonTests.pool(args: #""--hang-turn""#, spares: 1), top: "drain_timeout_s = 30"
            )
            let busy = Task { try? await daemon.turn("p") }
            try await waitUntil("a turn holds the drain open", timeout: .seconds(10)) { try await daemon.pool("p").busy == 1 }
            kill(daemon.process.processIdentifier, SIGTERM)
            try await waitUntil("the daemon drains", timeout: .seconds(10)) {
                (try? await daemon.client.request(.GET, "/healthz"))?.status == 503
            }
            let cli = try DropInTests.fakeCLI(in: daemon.directory)
            let (status, out, err) = try DropInTests.run(
                ["--verbose"], environment: ["PREWARM_CLAUDE_CLI": cli, "PREWARM_SOCKET": daemon.socket, "PREWARM_TEST_MARK": "m"], stdin: "in\n"
            )
            #expect(status == 7, "\(err)")
            #expect(out.hasSuffix("arg:--verbose\nenv:m\nin\n"))
            kill(daemon.process.processIdentifier, SIGKILL)
            busy.cancel()
        }
    }
}

extension LiveDaemons {
    /// `prewarm-claude` installed as `claude` earlier on PATH never changes what a person
    /// gets: a terminal on stdin or stdout, an operand without `-p` (the interactive CLI given
    /// a first prompt) and a subcommand all run the real CLI, untouched.
    @Suite("Drop-in: what stays the real CLI's", .serialized)
    struct DropInRealCLITests {
        @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/script"), "needs script(1) (util-linux) for a terminal"))
        func aTerminalGetsTheRealCLI() async throws {
            let daemon = try await TestDaemon(pools: RunTests.pool())
            let cli = try DropInTests.fakeCLI(in: daemon.directory)
            var environment = RunTests.environment(daemon)
            environment["PREWARM_CLAUDE_CLI"] = cli
            environment["PREWARM_CLAUDE_DEBUG"] = "1"
            // script(1) gives the command a terminal on stdin and stdout.
            let command = "\(DropInTests.dropIn) --output-format stream-json --verbose --input-format stream-json </dev/null"
            let (_, out, _) = try DropInTests.run(["-q", "-e", "-c", command, "/dev/null"], environment: environment, stdin: "", as: "/usr/bin/script")
            #expect(out.contains("arg:--input-format"), "the real CLI ran: \(out)")
            #expect(out.contains("a terminal on stdout"), "\(out)")
            #expect(try await daemon.pool("c").served == 0)
        }

        @Test func anOperandWithoutPrintGetsTheRealCLI() async throws {
            let daemon = try await TestDaemon(pools: RunTests.pool())
            let cli = try DropInTests.fakeCLI(in: daemon.directory)
            var environment = RunTests.environment(daemon)
            environment["PREWARM_CLAUDE_CLI"] = cli
            environment["PREWARM_TEST_MARK"] = "m"
            for arguments in [["mcp", "list"], ["--model", "opus", "Fix the bug"]] {
                let (status, out, err) = try DropInTests.run(arguments, environment: environment, stdin: "in\n")
                #expect(status == 7, "\(arguments): \(err)")
                #expect(out.hasSuffix(arguments.map { "arg:\($0)\n" }.joined() + "env:m\nin\n"), "the real CLI, argv and stdin untouched: \(out)")
            }
            #expect(try await daemon.pools().allSatisfy { $0.served == 0 && $0.fingerprint == nil })
        }

        /// An argument that is not valid UTF-8 (a Latin-1 file name): the real CLI gets it,
        /// byte for byte (a run description is JSON text, and Swift's String would repair it).
        @Test func anArgumentThatIsNotUTF8GetsTheRealCLI() async throws {
            let daemon = try await TestDaemon(pools: RunTests.pool(spares: 1))
            let cli = daemon.directory + "/hexargs"
            try "#!/bin/sh\nfor a in \"$@\"; do printf '%s' \"$a\" | od -An -tx1 | tr -d ' \\n'; echo; done\n"
                .write(toFile: cli, atomically: true, encoding: .utf8)
            chmod(cli, 0o755)
            var environment = RunTests.environment(daemon)
            environment["PREWARM_CLAUDE_CLI"] = cli
            environment["PREWARM_CLAUDE_DEBUG"] = "1"
            // "caf\xe9" (Latin-1 "café"), made by the shell that runs the drop-in.
            let command = #"exec "$0" -p "$(printf 'caf\351')" --output-format json"#
            let (status, out, err) = try DropInTests.run(["-c", command, DropInTests.dropIn], environment: environment, stdin: "", as: "/bin/sh")
            #expect(status == 0, "\(err)")
            #expect(out == "2d70\n636166e9\n2d2d6f75747075742d666f726d6174\n6a736f6e\n", "the bytes as given: \(out)")
            #expect(err.contains("an argument is not valid UTF-8"), "\(err)")
            #expect(try await daemon.pool("c").served == 0)
        }
    }
}

extension LiveDaemons {
    /// `claude -p` through `prewarm-claude`, served warm by a stream-json spare (the fake
    /// agent): the prompt (operand, stdin, or both) is its user message, and the caller gets
    /// what the CLI prints in that output format, with its exit status.
    @Suite("Drop-in: print mode", .serialized)
    struct PrintModeTests {
        static func run(_ arguments: [String], daemon: TestDaemon, stdin: String = "") throws -> (Int32, String, String) {
            try DropInTests.run(arguments, environment: RunTests.environment(daemon), stdin: stdin)
        }

        @Test func everyOutputFormatIsServedWarm() async throws {
            let daemon = try await TestDaemon(pools: RunTests.pool(spares: 1))
            var served = 0
            for format in ["text", "json", "stream-json"] {
                try await waitUntil("a spare is idle", timeout: .seconds(10)) { try await daemon.pool("c").idle >= 1 }
                var arguments = ["-p", "Say hello", "--output-format", format]
                if format == "stream-json" { arguments.append("--verbose") }
                let (status, out, err) = try Self.run(arguments, daemon: daemon)
                #expect(status == 0, "\(format): \(err)")
                let lines = out.split(separator: "\n", omittingEmptySubsequences: false)
                switch format {
                case "text":
                    #expect(out.hasSuffix("\n") && !out.contains(#""type""#) && !out.isEmpty, "text is the result and a newline: \(out.debugDescription)")
                case "json":
                    #expect(lines.count == 2 && lines[0].hasPrefix(#"{"type":"result""#) && lines[1].isEmpty, "one line, the result: \(out)")
                default:
                    #expect(lines.contains { $0.contains(#""subtype":"init""#) } && lines.contains { $0.hasPrefix(#"{"type":"result""#) }, "\(out)")
                }
                served += 1
                let pool = try await daemon.pool("c")
                #expect(pool.served == served && pool.warm == served, "\(format): \(pool)")
            }
        }

        @Test func thePromptFromStdinAndNoneAtAll() async throws {
            let daemon = try await TestDaemon(pools: RunTests.pool(spares: 1))
            // The whole stdin (1 MiB) is the prompt: the spare's turn sees one user message.
            let big = String(repeating: "x", count: 1 << 20)
            let (status, out, err) = try Self.run(["-p", "--output-format", "json"], daemon: daemon, stdin: big)
            #expect(status == 0 && out.hasPrefix(#"{"type":"result""#), "\(err)")
            // A flood past what a prompt may hold (16 MiB): the run is ended, never a success,
            // and the daemon goes on serving.
            let flood = String(repeating: "y", count: 17 << 20)
            let (flooded, _, floodErr) = try Self.run(["-p", "--output-format", "json"], daemon: daemon, stdin: flood)
            #expect(flooded != 0 && floodErr.contains("16 MiB"), "\(flooded): \(floodErr)")
            try await waitUntil("the flooded run is over", timeout: .seconds(10)) { try await daemon.pool("c").busy == 0 }
            // Neither: the CLI's own error, on stderr, exit 1.
            let (none, noneOut, noneErr) = try Self.run(["-p"], daemon: daemon, stdin: "")
            #expect(none == 1 && noneOut.isEmpty && noneErr == PrintRun.noInputError, "\(none) \(noneErr)")
        }

        /// What the CLI refuses or does otherwise is the real CLI's (here the fake CLI script):
        /// stream-json without --verbose, a forked session, stdin of another format.
        @Test func whatThePrintModeLeavesToTheRealCLI() async throws {
            let daemon = try await TestDaemon(pools: RunTests.pool(spares: 1))
            let cli = try DropInTests.fakeCLI(in: daemon.directory)
            var environment = RunTests.environment(daemon)
            environment["PREWARM_CLAUDE_CLI"] = cli
            for arguments in [["-p", "hi", "--output-format", "stream-json"], ["-p", "hi", "--fork-session", "--resume", "abc"], ["-p", "hi", "--input-format", "stream-json"]] {
                let (status, out, _) = try DropInTests.run(arguments, environment: environment, stdin: "")
                #expect(status == 7 && out.contains("arg:hi"), "\(arguments): \(out)")
            }
            #expect(try await daemon.pool("c").served == 0)
        }

        /// The largest prompt one argument can be (128 KiB, less its terminating NUL) is served
        /// warm; a reader that closes stdout early gets what the CLI gives it: exit 0, nothing
        /// on stderr.
        @Test func aLongPromptAndAReaderThatLeaves() async throws {
            let daemon = try await TestDaemon(pools: RunTests.pool(spares: 1))
            let prompt = String(repeating: "p", count: 128 * 1024 - 1)
            let (status, out, err) = try Self.run(["-p", prompt, "--output-format", "json"], daemon: daemon)
            #expect(status == 0 && out.hasPrefix(#"{"type":"result""#), "\(err)")
            #expect(try await daemon.pool("c").warm == 1)

            try await waitUntil("a spare is idle", timeout: .seconds(10)) { try await daemon.pool("c").idle >= 1 }
            let project = try TestDaemon.makeTemporaryDirectory()
            // An answer still being written when the reader leaves (3000 tokens, 1 ms apart).
            let run = try RunTests.DropIn(["-p", "PREWARM_LONG_ANSWER", "--output-format", "stream-json", "--verbose", "--include-partial-messages"], environment: RunTests.environment(daemon), cwd: project)
            run.closeInput()
            #expect(run.readLine(containing: #""tok1 ""#) != nil)
            try run.output.fileHandleForReading.close()
            let errors = run.errors.fileHandleForReading.readDataToEndOfFile()
            run.process.waitUntilExit()
            #expect(run.process.terminationStatus == 0 && errors.isEmpty, "\(run.process.terminationStatus) \(String(decoding: errors, as: UTF8.self))")
        }

        /// Shell callers find `claude` on PATH (`prewarm sdk install --path-dir`): an API
        /// wrapper's `subprocess.run("claude -p \"$(cat prompt.txt)\" --output-format json",
        /// shell=True)` and a script's `echo ... | claude -p`, served warm.
        @Test func shellCallersWithClaudeOnPath() async throws {
            let daemon = try await TestDaemon(pools: RunTests.pool(spares: 1))
            let bin = daemon.directory + "/bin"
            try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
            chmod(bin, 0o755)
            let install = try runCommand(TestDaemon.prewarm, ["sdk", "install", "--path-dir", bin, "--drop-in", DropInTests.dropIn])
            #expect(install.status == 0, "\(install)")
            let project = try TestDaemon.makeTemporaryDirectory()
            try "Say hello from a file.".write(toFile: project + "/prompt.txt", atomically: true, encoding: .utf8)
            var environment = RunTests.environment(daemon)
            environment["PATH"] = bin + ":/usr/bin:/bin"
            let python = #"import subprocess, sys; r = subprocess.run('claude -p "$(cat prompt.txt)" --output-format json', shell=True, capture_output=True, cwd=sys.argv[1]); sys.stdout.write(r.stdout.decode()); sys.exit(r.returncode)"#
            for (label, executable, arguments) in [
                ("python", "/usr/bin/python3", ["-c", python, project]),
                ("pipe", "/bin/sh", ["-c", "cd '\(project)' && echo 'Say hello from a pipe.' | claude -p --output-format json"]),
            ] {
                try await waitUntil("a spare is idle", timeout: .seconds(10)) { try await daemon.pool("c").idle >= 1 }
                let (status, out, err) = try DropInTests.run(arguments, environment: environment, stdin: "", as: executable)
                #expect(status == 0 && out.hasPrefix(#"{"type":"result""#), "\(label): \(out) \(err)")
            }
            #expect(try await daemon.pool("c").warm == 2)
        }

        /// A last line without its newline reaches the caller byte for byte, with the exit
        /// status, whether the process exits after it or is killed: through a stream-json run
        /// and through a print run's stream-json.
        @Test func aLastLineWithoutNewlineReachesTheCallerWhole() async throws {
            let daemon = try await TestDaemon(pools: RunTests.pool(spares: 1))
            let project = try TestDaemon.makeTemporaryDirectory()
            let partial = #"{"type":"assistant","partial":"no newline"#
            let user = { (prompt: String) in RunTests.userLine.replacingOccurrences(of: #""content":"hi""#, with: #""content":"\#(prompt)""#) }
            // Its own exit after the partial line (status 5).
            let run = try RunTests.DropIn(RunTests.sdkFlags, environment: RunTests.environment(daemon), cwd: project)
            run.write(user("PREWARM_PARTIAL_EXIT"))
            run.closeInput()
            let (status, out, err) = run.finish()
            #expect(status == 5 && out.hasSuffix("\n" + partial), "stream-json run: \(status) \(out.debugDescription) \(err)")
            try await waitUntil("a spare is idle", timeout: .seconds(10)) { try await daemon.pool("c").idle >= 1 }
            let printed = try RunTests.DropIn(["-p", "PREWARM_PARTIAL_EXIT", "--output-format", "stream-json", "--verbose"], environment: RunTests.environment(daemon), cwd: project)
            printed.closeInput()
            let (printStatus, printOut, printErr) = printed.finish()
            #expect(printStatus == 5 && printOut.hasSuffix("\n" + partial), "print run: \(printStatus) \(printOut.debugDescription) \(printErr)")
            // Killed after the partial line (SIGKILL to the process, once it said it wrote
            // it): 137 and the bytes.
            try await waitUntil("a spare is idle", timeout: .seconds(10)) { try await daemon.pool("c").idle >= 1 }
            let killed = try RunTests.DropIn(RunTests.sdkFlags, environment: RunTests.environment(daemon), cwd: project)
            killed.write(user("PREWARM_PARTIAL_HANG"))
            let initLine = try #require(killed.readLine(containing: #""subtype":"init""#))
            let pid = try #require((try JSONSerialization.jsonObject(with: Data(initLine.utf8)) as? [String: Any])?["pid"] as? Int)
            try await waitUntil("the process wrote its partial line", timeout: .seconds(10)) {
                FileManager.default.fileExists(atPath: project + "/prewarm-partial-written-\(pid)")
            }
            kill(Int32(pid), SIGKILL)
            let (killedStatus, rest, killedErr) = killed.finish()
            #expect(killedStatus == 137 && rest == partial, "killed: \(killedStatus) \(rest.debugDescription) \(killedErr)")
        }

        /// The client killed mid-answer: its process is killed.
        @Test func aClientKilledMidAnswerKillsItsProcess() async throws {
            let daemon = try await TestDaemon(pools: RunTests.pool(spares: 1))
            let project = try TestDaemon.makeTemporaryDirectory()
            let run = try RunTests.DropIn(["-p", "PREWARM_HANG_TURN", "--output-format", "stream-json", "--verbose"], environment: RunTests.environment(daemon), cwd: project)
            run.closeInput()
            let initLine = try #require(run.readLine(containing: #""subtype":"init""#))
            let object = try JSONSerialization.jsonObject(with: Data(initLine.utf8)) as? [String: Any]
            let pid = try #require(object?["pid"] as? Int)
            kill(run.process.processIdentifier, SIGKILL)
            _ = run.finish()
            try await waitUntil("the run's process is killed", timeout: .seconds(10)) { !isAlive(Int32(pid)) }
        }
    }
}
