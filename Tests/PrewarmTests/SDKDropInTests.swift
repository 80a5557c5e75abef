import Foundation
import Testing

@testable import PrewarmCore

#if canImport(Glibc)
import Glibc
#endif

/// The official Python Agent SDK from PyPI (`claude-agent-sdk`, in a virtualenv that
/// `.ci/run` makes: `${XDG_CACHE_HOME:-~/.cache}/prewarm/venv-sdk`, or `$PREWARM_SDK_PYTHON`),
/// its bundled real CLI, and the fake model on loopback.
enum SDKEnvironment {
    static let python: String? = {
        let environment = ProcessInfo.processInfo.environment
        let cacheHome = environment["XDG_CACHE_HOME"].flatMap { $0.hasPrefix("/") ? $0 : nil } ?? NSHomeDirectory() + "/.cache"
        let candidate = environment["PREWARM_SDK_PYTHON"] ?? cacheHome + "/prewarm/venv-sdk/bin/python"
        guard FileManager.default.isExecutableFile(atPath: candidate) else { return nil }
        return candidate
    }()

    /// The SDK's bundled CLI: what `query()` runs without a `cli_path`.
    static let cli: String? = {
        guard let python else { return nil }
        let script = "import claude_agent_sdk, os; print(os.path.join(os.path.dirname(claude_agent_sdk.__file__), '_bundled', 'claude'))"
        guard let out = try? run(python, ["-c", script], environment: ProcessInfo.processInfo.environment).out else { return nil }
        let path = out.trimmingCharacters(in: .whitespacesAndNewlines)
        return FileManager.default.isExecutableFile(atPath: path) ? path : nil
    }()

    static var available: Bool { cli != nil }

    static let driver = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Support/sdk_dropin.py").path

    /// Runs a command to its end; stderr goes to a file beside, read after.
    static func run(_ executable: String, _ arguments: [String], environment: [String: String]) throws -> (status: Int32, out: String, err: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        let output = Pipe()
        let errorPath = NSTemporaryDirectory() + "prewarm-sdk-stderr-" + UUID().uuidString.prefix(8)
        _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: errorPath) }
        process.standardOutput = output
        process.standardError = FileHandle(forWritingAtPath: errorPath)
        try process.run()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let err = (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? ""
        return (process.terminationStatus, String(decoding: out, as: UTF8.self), err)
    }
}

extension LiveDaemons {
    /// Existing SDK code, changed by one path (`cli_path` = prewarm-claude), gets warm runs,
    /// and keeps what the SDK does for it: `can_use_tool`, hooks, in-process MCP tools,
    /// resumed sessions, another model.
    @Suite("Python SDK through prewarm-claude", .serialized, .enabled(if: SDKEnvironment.available, "needs the claude-agent-sdk virtualenv (.ci/run makes it)"))
    struct SDKDropInTests {
        struct Harness {
            let daemon: TestDaemon
            let model: RealClaudeTests.FakeModel
            let project: String
            let configDirectory: String
            let outside: String

            /// One scenario of the driver; its queries as the SDK's user code saw them.
            /// The driver's environment.
            func environment(socket: String) -> [String: String] {
                [
                    "PATH": "/usr/bin:/bin", "HOME": daemon.directory, "PREWARM_SOCKET": socket,
                    "PREWARM_CLAUDE_CLI": SDKEnvironment.cli!, "PREWARM_TEST_DROP_IN": DropInTests.dropIn, "PREWARM_TEST_PROJECT": project,
                    "PREWARM_TEST_MODEL_URL": "http://127.0.0.1:\(model.port)", "PREWARM_TEST_CONFIG_DIR": configDirectory,
                ]
            }

            func queries(_ scenario: String, _ arguments: [String] = [], socket: String? = nil, env: [String: String] = [:]) throws -> [[String: Any]] {
                let environment = environment(socket: socket ?? daemon.socket).merging(env) { _, new in new }
                let (status, out, err) = try SDKEnvironment.run(SDKEnvironment.python!, [SDKEnvironment.driver, scenario] + arguments, environment: environment)
                #expect(status == 0, "the driver failed: \(out) \(err.suffix(2000))")
                let lines = out.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
                for line in lines {
                    #expect(line["error"] == nil, "\(scenario): \(line["error"] ?? "")")
                    #expect(line["is_error"] as? Bool == false, "\(scenario): \(line)")
                }
                return lines
            }

            /// A fake model, a project, and a daemon whose configuration `pools` makes from the
            /// model's port and the config directory; the daemon's `environment` and `unset` too.
            static func start(
                environment: [String: String] = [:], unset: Set<String> = [], pools: (_ port: Int, _ configDirectory: String) throws -> String
            ) async throws -> Harness {
                let outside = NSTemporaryDirectory() + "prewarm-outside-" + UUID().uuidString.prefix(8)
                let model = try RealClaudeTests.FakeModel(outside: outside)
                let directory = try TestDaemon.makeTemporaryDirectory()
                let configDirectory = directory + "/claude-config"
                let project = directory + "/project"
                try FileManager.default.createDirectory(atPath: project, withIntermediateDirectories: true)
                let daemon = try await TestDaemon(
                    pools: try pools(model.port, configDirectory), directory: directory,
                    environment: environment.mapValues { $0.replacingOccurrences(of: "MODEL_PORT", with: "\(model.port)") }, unset: unset
                )
                return Harness(daemon: daemon, model: model, project: project, configDirectory: configDirectory, outside: outside)
            }

            /// `extra`: more keys of the `sdk` pool.
            static func start(extra: String = "") async throws -> Harness {
                // The SDK's default command line; the SDK's credentials, model address and config dir.
                try await start { port, configDirectory in
                    """
                        [[pool]]
                        name = "sdk"
                        kind = "claude"
                        command = "\(SDKEnvironment.cli!)"
                        spares = 1
                        initialize = false
                        base_args = ["--output-format", "stream-json", "--verbose", "--input-format", "stream-json"]
                        config_dir = "\(configDirectory)"
                        env = { ANTHROPIC_BASE_URL = "http://127.0.0.1:\(port)", ANTHROPIC_API_KEY = "sk-fake", CLAUDE_CODE_SDK_READS_SESSION_STATE = "1" }
                        \(extra)
                        [pool.ready]
                        timeout_s = 120

                        [fingerprint_pools]
                        spares = 1

                        """
                }
            }
        }

        @Test func existingSDKCodeRunsWarm() async throws {
            let harness = try await Harness.start()
            let daemon = harness.daemon

            // Plain queries a second apart: warm from the configured pool.
            let plain = try harness.queries("plain", ["3"])
            #expect(plain.count == 3)
            #expect(plain.allSatisfy { ($0["texts"] as? [String])?.first?.contains("[user turns: 1]") == true })
            // The transcript is where the CLI's rule puts it (resume spares check it before they serve).
            for query in plain {
                let session = try #require(query["session_id"] as? String)
                let transcript = try #require(SessionTranscript.path(sessionID: session, cwd: harness.project, env: ["CLAUDE_CONFIG_DIR": harness.configDirectory]))
                #expect(FileManager.default.fileExists(atPath: transcript), "\(transcript)")
            }
            let afterPlain = try await daemon.pool("sdk")
            #expect(afterPlain.warm >= 2 && afterPlain.warm + afterPlain.waited == 3 && afterPlain.cold == 0, "\(afterPlain)")

            // Another model: still warm (set_model after the claim), and the model answered is that one.
            let model = try harness.queries("model", ["claude-sonnet-4-5"])
            #expect((model.first?["models"] as? [String])?.allSatisfy { $0 == "claude-sonnet-4-5" } == true, "\(model)")
            #expect(try await daemon.pool("sdk").served == 4)

            // An agent defined in code (a one-time field of initialize) reaches the warm spare:
            // the SDK's initialize is its first.
            let agents = try harness.queries("agents")
            #expect((agents.first?["agents"] as? [String])?.contains("prewarm-reviewer") == true, "\(agents)")
            let afterAgents = try await daemon.pool("sdk")
            #expect(afterAgents.served == 5 && afterAgents.cold == 0, "\(afterAgents)")

            // An in-process SDK MCP tool (allowed by --allowedTools, a host option: a fingerprint
            // pool), called in each query; the second one takes the first spare its pool starts, the server named in the claim.
            let before = Set(try await daemon.pools().compactMap { $0.fingerprint == nil ? nil : $0.name })
            let mcp = try harness.queries("mcp")
            #expect(mcp.count == 2)
            #expect(mcp.allSatisfy { ($0["calls"] as? [[String: Int]]) == [["a": 2, "b": 3]] }, "\(mcp)")
            let mcpPool = try await daemon.pools().filter { $0.fingerprint != nil && !before.contains($0.name) }
            // The second run of the fingerprint starts the pool's spares and takes the first.
            #expect(mcpPool.count == 1 && mcpPool.first?.cold == 1 && mcpPool.first?.waited == 1, "\(mcpPool)")
            #expect(mcpPool.first?.fingerprint?.contains("--allowedTools") == true)

            // A resumed session sees the earlier turn (cold: a claimed spare cannot resume).
            let resumed = try harness.queries("resume")
            #expect(resumed.count == 2)
            #expect(resumed.last?["session_id"] as? String == resumed.first?["session_id"] as? String)
            #expect((resumed.last?["texts"] as? [String])?.first?.contains("[user turns: 2]") == true, "\(resumed)")
            #expect(try await daemon.pool("sdk").cold == 1)  // the resume

            // can_use_tool and a PreToolUse hook, both in Python, both asked for the model's tool call.
            // (can_use_tool adds --permission-prompt-tool stdio: a fingerprint pool of its own.)
            let tools = try harness.queries("tools")
            #expect((tools.first?["asked"] as? [String]) == ["Bash"], "\(tools)")
            #expect((tools.first?["hooked"] as? [String]) == ["Bash"], "\(tools)")
            #expect(FileManager.default.fileExists(atPath: harness.outside), "the allowed tool ran")
            try? FileManager.default.removeItem(atPath: harness.outside)

            // Another --mcp-config (an external server): cold, then the first spare of its
            // fingerprint pool (started by that second run).
            let existing = Set(try await daemon.pools().compactMap { $0.fingerprint == nil ? nil : $0.name })
            let external = try harness.queries("external-mcp")
            #expect(external.count == 2)
            let made = try await daemon.pools().filter { $0.fingerprint != nil && !existing.contains($0.name) }
            #expect(made.count == 1, "\(made.map(\.name))")
            #expect(made.first?.cold == 1 && made.first?.waited == 1, "\(made)")

            // No daemon: the same code runs the real CLI itself.
            let fallback = try harness.queries("plain", ["1"], socket: daemon.directory + "/no-daemon.sock")
            #expect(fallback.count == 1)
        }
    }
}
