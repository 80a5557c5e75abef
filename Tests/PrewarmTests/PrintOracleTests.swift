import Foundation
import Testing

@testable import PrewarmCore

extension LiveDaemons {
    /// The real CLI as oracle: the same `claude -p` command lines through the SDK's bundled
    /// CLI alone and through `prewarm-claude` served by a warm stream-json spare of that CLI,
    /// both against the fake model. Text byte-equal; json and stream-json with the same lines,
    /// keys, key order and types (values that differ run to run excepted, by name); the same
    /// exit status and stderr.
    @Suite("Print mode against the real CLI", .serialized, .enabled(if: SDKEnvironment.available, "needs the claude-agent-sdk virtualenv (.ci/run makes it)"))
    struct PrintOracleTests {
        /// One run to its end in `cwd` (the fake model's answers and the CLI's are UTF-8).
        static func run(_ executable: String, _ arguments: [String], environment: [String: String], cwd: String, stdin: String) throws -> (status: Int32, out: [UInt8], err: String) {
            let (status, out, err) = try DropInTests.run(arguments, environment: environment, stdin: stdin, as: executable, cwd: cwd)
            return (status, Array(out.utf8), err)
        }

        @Test func printModeMatchesTheRealCLI() async throws {
            // One resume spare at most: the newest session's (the print runs' below).
            // Spares claimed ahead as the shipped configuration has them: most runs below make one claim.
            let harness = try await SDKDropInTests.Harness.start(extra: "resume_spares = true\nmax_resume_spares = 1\nclaim_ahead = true")
            let daemon = harness.daemon
            let cli = SDKEnvironment.cli!
            let environment = [
                "PATH": "/usr/bin:/bin", "HOME": daemon.directory, "ANTHROPIC_BASE_URL": "http://127.0.0.1:\(harness.model.port)",
                "ANTHROPIC_API_KEY": "sk-fake", "CLAUDE_CONFIG_DIR": harness.configDirectory,
                // What a claude pool's spares run with unless its `env` says otherwise (the
                // daemon's: no telemetry), which `system/init` shows; the CLI alone gets it too.
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            ]
            let through = environment.merging(["PREWARM_SOCKET": daemon.socket, "PREWARM_CLAUDE_CLI": cli]) { $1 }
            let cases: [(arguments: [String], stdin: String, format: PrintConversion.Format, verbose: Bool, warm: Bool)] = [
                (["-p", "Say hello."], "", .text, false, true),
                (["-p", "Say hello.", "--output-format", "json"], "", .json, false, true),
                (["--output-format", "stream-json", "--verbose", "-p", "Say hello."], "", .streamJSON, true, true),
                (["-p", "--output-format", "json", "--verbose"], "Say hello from stdin.\n", .json, true, true),
                (["-p", "Read this.", "--output-format", "text"], "Context on stdin.\n", .text, false, true),
                // A tool call with one turn allowed: the CLI's error text, no newline, exit 1
                // (--max-turns is a host option: its fingerprint pool's first run is cold).
                (["-p", "PREWARM_TOOL_USE now", "--max-turns", "1"], "", .text, false, false),
            ]
            var served = 0
            for test in cases {
                try await waitUntil("the pool's spare is idle", timeout: .seconds(60)) { try await daemon.pool("sdk").idle >= 1 }
                let alone = try Self.run(cli, test.arguments, environment: environment, cwd: harness.project, stdin: test.stdin)
                let warm = try Self.run(DropInTests.dropIn, test.arguments, environment: through, cwd: harness.project, stdin: test.stdin)
                let label = test.arguments.joined(separator: " ")
                #expect(warm.status == alone.status, "\(label): exit \(warm.status) != \(alone.status); \(warm.err)")
                #expect(warm.err == alone.err, "\(label): stderr \(warm.err.debugDescription) != \(alone.err.debugDescription)")
                let differences = OutputComparison.differences(warm.out, alone.out, format: test.format, verbose: test.verbose)
                #expect(differences.isEmpty, "\(label): \(differences)\nthrough: \(String(decoding: warm.out, as: UTF8.self))\nalone: \(String(decoding: alone.out, as: UTF8.self))")
                if test.warm {
                    served += 1
                    let pool = try await daemon.pool("sdk")
                    #expect(pool.served == served && pool.warm == served, "\(label) was served warm: \(pool)")
                }
            }

            // `--json-schema` (structured_output) and `--max-budget-usd` (its error result) are
            // host options: each has a fingerprint pool, whose spares start at its second run;
            // the third is warm, and all three print what the CLI alone prints.
            let schema = #"{"type":"object","properties":{"answer":{"type":"string"},"count":{"type":"integer"}},"required":["answer","count"]}"#
            for (option, arguments) in [
                ("--json-schema", ["-p", "Say hello", "--output-format", "json", "--json-schema", schema]),
                ("--max-budget-usd", ["-p", "Say hello", "--output-format", "json", "--max-budget-usd", "0.00000001"]),
            ] {
                for attempt in 1...3 {
                    if attempt == 3 {
                        try await waitUntil("\(option)'s fingerprint pool has a spare", timeout: .seconds(60)) {
                            try await daemon.pools().contains { ($0.fingerprint ?? []).contains(option) && $0.idle >= 1 }
                        }
                    }
                    let alone = try Self.run(cli, arguments, environment: environment, cwd: harness.project, stdin: "")
                    let daemonRun = try Self.run(DropInTests.dropIn, arguments, environment: through, cwd: harness.project, stdin: "")
                    #expect(daemonRun.status == alone.status && daemonRun.err == alone.err, "\(option) \(attempt): exit \(daemonRun.status), \(daemonRun.err.debugDescription); alone \(alone.status), \(alone.err.debugDescription)")
                    let differences = OutputComparison.differences(daemonRun.out, alone.out, format: .json, verbose: false)
                    #expect(differences.isEmpty, "\(option) \(attempt): \(differences)\nthrough: \(String(decoding: daemonRun.out, as: UTF8.self))\nalone: \(String(decoding: alone.out, as: UTF8.self))")
                }
                let pool = try await daemon.pools().first { ($0.fingerprint ?? []).contains(option) }
                #expect(pool?.served == 3 && pool?.warm == 1, "\(option): the third run was warm: \(String(describing: pool))")
            }

            // `--resume S -p PROMPT` (the Laravel SDK's ->resume($id)): served by the resume
            // spare its session's last run left (started in stream-json, given the prompt),
            // with the session's whole context.
            try await waitUntil("the pool's spare is idle", timeout: .seconds(60)) { try await daemon.pool("sdk").idle >= 1 }
            let first = try Self.run(DropInTests.dropIn, ["-p", "Remember this.", "--output-format", "json"], environment: through, cwd: harness.project, stdin: "")
            let object = try JSONSerialization.jsonObject(with: Data(first.out)) as? [String: Any]
            let session = try #require(object?["session_id"] as? String, "\(String(decoding: first.out, as: UTF8.self))")
            // The first print run started the session: it left no resume spare (callers that
            // never resume pay nothing); the first resume runs cold and leaves one.
            for (turns, prompt) in [(2, "And now?"), (3, "Once more?"), (4, "And again?")] {
                try await waitUntil("the session's resume spare is ready", timeout: .seconds(60)) {
                    let pool = try await daemon.pool("sdk")
                    return pool.busy == 0 && (turns == 2 ? pool.resumeHeld == 0 : pool.resumeHits == turns - 3 && pool.resumeReady == 1)
                }
                let resumed = try Self.run(DropInTests.dropIn, ["--resume", session, "-p", prompt], environment: through, cwd: harness.project, stdin: "")
                let text = String(decoding: resumed.out, as: UTF8.self)
                #expect(resumed.status == 0 && text.contains("[user turns: \(turns)]") && text.hasSuffix("\n"), "\(turns): \(text.debugDescription) \(resumed.err)")
                let pool = try await daemon.pool("sdk")
                #expect(pool.resumeHits == max(0, turns - 2) && pool.resumeMisses == 1, "turn \(turns): \(pool.resumeHits) hits, \(pool.resumeMisses) misses")
            }
            try? FileManager.default.removeItem(atPath: harness.outside)
        }
    }
}
