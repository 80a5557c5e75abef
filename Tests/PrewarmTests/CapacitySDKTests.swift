import Foundation
import Testing

@testable import PrewarmCore

#if canImport(Glibc)
import Glibc
#endif

extension LiveDaemons {
    /// The shipped `config/claude-sdk.toml` under the official Python SDK and its real CLI:
    /// memory, not a count of processes, decides how many long-lived sessions a pool takes,
    /// and a run description as large as a command line is served warm.
    @Suite("Capacity by memory with the Python SDK", .serialized, .enabled(if: SDKEnvironment.available, "needs the claude-agent-sdk virtualenv (.ci/run makes it)"))
    struct CapacitySDKTests {
        /// `config/claude-sdk.toml` as shipped, with the test's CLI, its config directory, and
        /// `limit_mib`/`turn_mib` set so that `turns` processes fit.
        static func shippedConfiguration(cli: String, configDirectory: String, turns: Int) throws -> String {
            var text = try String(contentsOfFile: ConfigurationTests.repositoryRoot + "/config/claude-sdk.toml", encoding: .utf8)
            let turnMiB = 300
            let limit = (turns + 8) * turnMiB + 1024
            text = text.replacingOccurrences(of: "[memory]\n", with: "[memory]\nlimit_mib = \(limit)\n")
            text = text.replacingOccurrences(of: "command = \"claude\"\n", with: "command = \"\(cli)\"\nconfig_dir = \"\(configDirectory)\"\n")
            text = text.replacingOccurrences(of: "turn_mib = 500\n", with: "turn_mib = \(turnMiB)\n")
            text = text.replacingOccurrences(of: "[fingerprint_pools]\n", with: "[fingerprint_pools]\nturn_mib = \(turnMiB)\n")
            #expect(text.contains("limit_mib = \(limit)") && text.contains(cli) && text.contains("[fingerprint_pools]\nturn_mib"), "the shipped file changed shape")
            return text
        }

        static func start(turns: Int) async throws -> (SDKDropInTests.Harness, TestDaemon) {
            // The daemon has what the shipped pool passes on (pass_env): the model's address and
            // key. What a host may set machine-wide it has none of here, like the callers of
            // `queries` (whose environment is the test's).
            let harness = try await SDKDropInTests.Harness.start(
                environment: ["ANTHROPIC_BASE_URL": "http://127.0.0.1:MODEL_PORT", "ANTHROPIC_API_KEY": "sk-fake"],
                unset: Set(ProcessInfo.processInfo.environment.keys.filter { HostEnvironment.counts($0) && !$0.hasPrefix("ANTHROPIC_") })
            ) { _, configDirectory in
                try shippedConfiguration(cli: SDKEnvironment.cli!, configDirectory: configDirectory, turns: turns)
            }
            return (harness, harness.daemon)
        }

        /// Sixteen `ClaudeSDKClient` sessions and sixteen `query()` callers at once, three queries
        /// each, whose environments hold CA-bundle variables the daemon lacks: their runs go to
        /// a fingerprint pool, which takes all of them, memory allowing (before: 8 of 16 sessions
        /// got exit 75 at the fingerprint pool's `spares + 8` processes). The log and the pool's
        /// status name the variables that sent them there.
        @Test func thirtyTwoCallersAtOnceAllComplete() async throws {
            let (harness, daemon) = try await Self.start(turns: 32)
            let hostVariables = [
                "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt", "SSL_CERT_DIR": "/etc/ssl/certs",
                "NODE_EXTRA_CA_CERTS": "/etc/ssl/certs/ca-certificates.crt",
            ]
            let started = ContinuousClock.now
            let lines = try harness.queries("crowd", ["16", "16", "3"], env: hostVariables)
            print("32 SDK callers, 3 queries each, took \(started.duration(to: .now))")
            #expect(lines.count == 96, "every query answered: \(lines.count)")
            for index in 0..<16 {
                let session = lines.filter { $0["kind"] as? String == "session" && $0["index"] as? Int == index }
                #expect(session.count == 3, "session \(index): \(session)")
                // One process for the whole session: the third query sees the two before it.
                #expect(Set(session.compactMap { $0["session_id"] as? String }).count == 1, "session \(index): \(session)")
                let last = session.first { $0["step"] as? Int == 2 }
                #expect((last?["texts"] as? [String])?.first?.contains("[user turns: 3]") == true, "session \(index): \(String(describing: last))")
                let caller = lines.filter { $0["kind"] as? String == "query" && $0["index"] as? Int == index }
                #expect(caller.count == 3 && caller.allSatisfy { ($0["texts"] as? [String])?.isEmpty == false }, "caller \(index): \(caller)")
            }
            let pools = try await daemon.pools()
            let fingerprint = try #require(pools.first { $0.fingerprint != nil }, "\(pools.map(\.name))")
            #expect(pools.allSatisfy { $0.rejected == 0 }, "none refused: \(pools.map { ($0.name, $0.rejected) })")
            #expect(fingerprint.served == 16 + 48, "\(fingerprint)")
            let differs = try #require(fingerprint.differsFrom)
            #expect(differs.pool == "sdk" && differs.differences == ["$NODE_EXTRA_CA_CERTS", "$SSL_CERT_DIR", "$SSL_CERT_FILE"], "\(differs)")
            let log = try String(contentsOfFile: daemon.logPath, encoding: .utf8)
            let line = try #require(log.split(separator: "\n").first { $0.contains("a drop-in run goes to a fingerprint pool") })
            #expect(line.contains("$NODE_EXTRA_CA_CERTS $SSL_CERT_DIR $SSL_CERT_FILE") && line.contains("run.nearest_pool=sdk"), "\(line)")
            #expect(!log.contains("/etc/ssl/certs"), "names, never values")
        }

        /// A 100 KiB `--system-prompt` (the SDK puts it on the command line) is served warm:
        /// the run description is as large as the command line the CLI would have been given
        /// (before: 431 from the 16 KiB header field limit, and the real CLI ran cold).
        @Test func aLongSystemPromptIsServedWarm() async throws {
            let (harness, daemon) = try await Self.start(turns: 4)
            let queries = try harness.queries("long-prompt", ["102400", "3"])
            #expect(queries.count == 3)
            #expect(queries.allSatisfy { ($0["texts"] as? [String])?.isEmpty == false }, "\(queries)")
            let sdk = try await daemon.pool("sdk")
            #expect(sdk.served == 3 && sdk.cold == 0 && sdk.warm >= 2, "served warm from the second run at the latest: \(sdk)")
            #expect(try await daemon.pools().allSatisfy { $0.fingerprint == nil }, "no fingerprint pool: the prompt is claimed")
        }
    }
}
