import Foundation
import Testing

@testable import PrewarmCore

#if canImport(Glibc)
import Glibc
#endif

/// The test application (`Support/sdk_app.py`: FastAPI, `ClaudeSDKClient` and `query()` with
/// no `cli_path`) in a virtualenv that `.ci/run` makes (`${XDG_CACHE_HOME:-~/.cache}/prewarm/venv-app`:
/// claude-agent-sdk 0.2.189, fastapi, uvicorn; or `$PREWARM_APP_VENV`), and the wheels it was
/// installed from (`.../prewarm/wheels`), for a reinstall without the network.
enum AppEnvironment {
    static let cache: String = {
        let environment = ProcessInfo.processInfo.environment
        return environment["XDG_CACHE_HOME"].flatMap { $0.hasPrefix("/") ? $0 : nil } ?? NSHomeDirectory() + "/.cache"
    }()

    static let venv: String? = {
        let candidate = ProcessInfo.processInfo.environment["PREWARM_APP_VENV"] ?? cache + "/prewarm/venv-app"
        guard FileManager.default.isExecutableFile(atPath: candidate + "/bin/python"),
            let site = try? FileManager.default.contentsOfDirectory(atPath: candidate + "/lib").first.map({ candidate + "/lib/" + $0 + "/site-packages" }),
            FileManager.default.isExecutableFile(atPath: site + "/claude_agent_sdk/_bundled/claude"),
            FileManager.default.fileExists(atPath: site + "/uvicorn"), FileManager.default.fileExists(atPath: site + "/fastapi")
        else { return nil }
        return candidate
    }()

    static let wheels = cache + "/prewarm/wheels"
    static var hasWheels: Bool {
        ((try? FileManager.default.contentsOfDirectory(atPath: wheels)) ?? []).contains { $0.hasPrefix("claude_agent_sdk-0.2.189") }
    }

    static var available: Bool { venv != nil }
    static let missing = "needs the test application's virtualenv (claude-agent-sdk, fastapi, uvicorn: .ci/run makes it)"

    static let support = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Support").path

    /// A private copy of the virtualenv, made of hard links: an install renames over names and
    /// pip writes new files, so nothing of the shared one changes (other tests run its CLI).
    static func privateCopy() throws -> String {
        let directory = try TestDaemon.makeTemporaryDirectory() + "/venv"
        let copy = try runCommand("/bin/cp", ["-a", "-l", venv!, directory])
        guard copy.status == 0 else { throw CocoaError(.fileWriteUnknown, userInfo: ["cp": copy.description]) }
        return directory
    }

    /// `prewarm ARGS` to its end.
    static func prewarm(_ arguments: [String]) throws -> CommandResult {
        try runCommand(TestDaemon.prewarm, arguments + ["--drop-in", TestDaemon.buildDirectory + "/prewarm-claude"])
    }
}

/// The test application, run with uvicorn on a Unix socket; killed when released.
final class TestApplication: @unchecked Sendable {
    let process = Process()
    let socket: String
    let python: String
    private let log = Log()

    /// uvicorn's log, read to its end by a thread of its own (which holds this, not the
    /// application: the application is released, and its process killed, with its test).
    final class Log: @unchecked Sendable {
        let started = DispatchSemaphore(value: 0)
        private let lock = NSLock()
        private var lines: [String] = []

        func append(_ line: String) { lock.withLock { lines.append(line) } }
        var text: String { lock.withLock { lines.joined(separator: "\n") } }
    }

    init(venv: String, environment: [String: String], directory: String) throws {
        python = venv + "/bin/python"
        socket = directory + "/app.sock"
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-m", "uvicorn", "sdk_app:app", "--app-dir", AppEnvironment.support, "--uds", socket, "--no-access-log"]
        process.environment = environment
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // uvicorn says when the application has started.
        let handle = errors.fileHandleForReading
        let log = self.log
        Thread.detachNewThread {
            var pending = Data()
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                pending += chunk
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: pending[..<newline], as: UTF8.self)
                    pending = pending[(newline + 1)...]
                    log.append(line)
                    if line.contains("Application startup complete") { log.started.signal() }
                }
            }
            log.started.signal()
        }
        guard log.started.wait(timeout: .now() + 60) == .success, process.isRunning else {
            throw CocoaError(.executableLoad, userInfo: ["uvicorn": output])
        }
    }

    var output: String { log.text }

    /// `count` requests to `endpoint`, `concurrency` at once: each one's answer.
    func requests(_ endpoint: String, count: Int = 1, concurrency: Int = 1) throws -> [[String: Any]] {
        let result = try runCommand(python, [AppEnvironment.support + "/sdk_app_client.py", socket, endpoint, "\(count)", "\(concurrency)"])
        #expect(result.status == 0, "\(result)")
        return Self.answers(result.out)
    }

    static func answers(_ text: String) -> [[String: Any]] {
        text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
    }
}

extension LiveDaemons {
    /// `prewarm sdk install` under an application that never sets `cli_path`: its requests
    /// are served warm from the second on, whole; after `uninstall` (or a reinstall of the
    /// package) they run the bundled CLI again; with no daemon they still work.
    @Suite("prewarm sdk install under a FastAPI application", .serialized, .enabled(if: AppEnvironment.available, "needs the test application's virtualenv (claude-agent-sdk, fastapi, uvicorn: .ci/run makes it)"))
    struct SDKInstallAppTests {
        /// The whole answer the fake model gives a first user turn.
        static let answer = "Hello word1 word2 word3 word4 [user turns: 1]"

        struct Harness: @unchecked Sendable {
            let venv: String
            let daemon: TestDaemon
            let model: RealClaudeTests.FakeModel
            let app: TestApplication

            var python: String { venv + "/bin/python" }

            static func start() async throws -> Harness {
                let venv = try AppEnvironment.privateCopy()
                let outside = NSTemporaryDirectory() + "prewarm-outside-" + UUID().uuidString.prefix(8)
                let model = try RealClaudeTests.FakeModel(outside: outside)
                let directory = try TestDaemon.makeTemporaryDirectory()
                let project = directory + "/project"
                try FileManager.default.createDirectory(atPath: project, withIntermediateDirectories: true)
                // A pool for the SDK's runs, as config/claude-sdk.toml gives one: the package's own
                // bundled CLI (the daemon follows `prewarm sdk install` to its claude.real), the
                // application's model, key and config directory.
                let python3 = try #require(try FileManager.default.contentsOfDirectory(atPath: venv + "/lib").first { $0.hasPrefix("python3") })
                let sitePackages = venv + "/lib/" + python3 + "/site-packages"
                let daemon = try await TestDaemon(
                    pools: """
                        [[pool]]
                        name = "sdk"
                        kind = "claude"
                        command = "\(sitePackages)/claude_agent_sdk/_bundled/claude"
                        spares = 1
                        initialize = false
                        base_args = ["--output-format", "stream-json", "--verbose", "--input-format", "stream-json"]
                        config_dir = "\(directory)/claude-config"
                        env = { ANTHROPIC_BASE_URL = "http://127.0.0.1:\(model.port)", ANTHROPIC_API_KEY = "sk-fake", CLAUDE_CODE_SDK_READS_SESSION_STATE = "1" }
                        [pool.ready]
                        timeout_s = 120

                        [fingerprint_pools]
                        spares = 1

                        """,
                    directory: directory
                )
                // The operator's environment for the application: the model, its key, the config dir.
                let environment = [
                    "PATH": "/usr/bin:/bin", "HOME": directory, "PREWARM_SOCKET": daemon.socket, "APP_PROJECT": project,
                    // Nothing written into the source tree (sdk_app.py's bytecode).
                    "PYTHONDONTWRITEBYTECODE": "1",
                    "ANTHROPIC_BASE_URL": "http://127.0.0.1:\(model.port)", "ANTHROPIC_API_KEY": "sk-fake",
                    "CLAUDE_CONFIG_DIR": directory + "/claude-config",
                ]
                let app = try TestApplication(venv: venv, environment: environment, directory: directory)
                return Harness(venv: venv, daemon: daemon, model: model, app: app)
            }

            /// The drop-in runs the daemon has counted, by `via`, over every pool.
            func runsVia() async throws -> [String: Int] {
                try await daemon.pools().reduce(into: [:]) { total, pool in total.merge(pool.runsVia) { $0 + $1 } }
            }

            func fingerprintPools() async throws -> [PoolStatus] {
                try await daemon.pools().filter { $0.fingerprint != nil }
            }

            /// Waits until every pool that keeps spares has one idle (the event a warm run needs).
            func sparesReady() async throws {
                try await waitUntil("the pools have their spares", timeout: .seconds(120)) {
                    try await self.daemon.pools().allSatisfy { $0.targetSpares == 0 || $0.idle >= 1 }
                }
            }

            func ask(_ endpoint: String) throws -> [String: Any] {
                let answers = try app.requests(endpoint)
                #expect(answers.count == 1)
                let answer = answers.first ?? [:]
                #expect(answer["status"] as? Int == 200, "\(answer) \(app.output.suffix(2000))")
                #expect(answer["result"] as? String == SDKInstallAppTests.answer, "\(answer)")
                #expect((answer["texts"] as? [String])?.joined() == SDKInstallAppTests.answer, "\(answer)")
                return answer
            }
        }

        @Test func installedSDKRunsWarmUninstallAndReinstallRunCold() async throws {
            let harness = try await Harness.start()
            let daemon = harness.daemon

            // Not installed: the bundled CLI, the daemon sees nothing.
            _ = try harness.ask("/query")
            #expect(try await harness.runsVia().isEmpty)
            #expect(try await harness.fingerprintPools().isEmpty)

            let install = try AppEnvironment.prewarm(["sdk", "install", "--python", harness.python])
            #expect(install.status == 0, "\(install)")
            #expect(install.out.contains("installed: "), "\(install)")

            // The daemon follows the install: the pool's spares run claude.real from now on.
            try await waitUntil("the sdk pool follows the install", timeout: .seconds(60)) {
                let pool = try await daemon.pool("sdk")
                return pool.recycled >= 1 && pool.idle >= 1
            }
            // query(): served by the pool's spares, warm.
            for _ in 0..<3 {
                try await harness.sparesReady()
                _ = try harness.ask("/query")
            }
            let sdk = try await daemon.pool("sdk")
            #expect(sdk.served == 3 && sdk.warm == 3 && sdk.cold == 0, "\(sdk)")
            #expect(try await harness.fingerprintPools().isEmpty, "the application's runs match the pool")
            #expect(try await harness.runsVia() == ["sdk-install": 3])
            let table = try runCommand(TestDaemon.prewarm, ["status", "--socket", daemon.socket])
            #expect(table.out.contains("runs through an installed prewarm-claude (prewarm sdk install): 3 via sdk-install"), "\(table)")
            let metrics = try await daemon.client.request(.GET, "/metrics").bodyString
            #expect(
                metrics.split(separator: "\n").contains { $0.hasPrefix("prewarm_runs_via_total{") && $0.contains(#"via="sdk-install""#) && $0.hasSuffix(" 3") },
                "\(metrics.split(separator: "\n").filter { $0.contains("runs_via") })"
            )

            // ClaudeSDKClient per request: its command line is query()'s, warm too.
            try await harness.sparesReady()
            let before = try await daemon.pool("sdk").warm
            _ = try harness.ask("/client")
            try await harness.sparesReady()
            _ = try harness.ask("/client")
            let pools = try await daemon.pools()
            #expect(try await daemon.pool("sdk").warm - before == 2, "\(pools)")
            #expect(try await harness.runsVia() == ["sdk-install": 5])

            // Uninstalled: the bundled CLI again; the daemon counts nothing more.
            let served = try await daemon.pools().reduce(0) { $0 + $1.served }
            let uninstall = try AppEnvironment.prewarm(["sdk", "uninstall", "--python", harness.python])
            #expect(uninstall.status == 0 && uninstall.out.contains("uninstalled"), "\(uninstall)")
            _ = try harness.ask("/query")
            #expect(try await harness.runsVia() == ["sdk-install": 5])
            #expect(try await daemon.pools().reduce(0) { $0 + $1.served } == served)

            // Installed, then overwritten by a reinstall of the package: status says so, and
            // the application still works, cold (its CLI is the package's own again).
            if AppEnvironment.hasWheels {
                #expect(try AppEnvironment.prewarm(["sdk", "install", "--python", harness.python]).status == 0)
                let pip = try runCommand(
                    harness.python,
                    ["-m", "pip", "install", "-q", "--disable-pip-version-check", "--force-reinstall", "--no-deps", "--no-index", "--find-links", AppEnvironment.wheels,
                     "claude-agent-sdk==0.2.189"]
                )
                #expect(pip.status == 0, "\(pip)")
                let status = try AppEnvironment.prewarm(["sdk", "status", "--python", harness.python, "--json"])
                #expect(status.status == 0)
                #expect(status.out.contains("\"state\" : \"overwritten\""), "\(status)")
                let text = try AppEnvironment.prewarm(["sdk", "status", "--python", harness.python])
                #expect(text.out.contains("start cold") && text.out.contains("prewarm sdk install --python \(harness.python)"), "\(text)")
                _ = try harness.ask("/query")
                #expect(try await harness.runsVia() == ["sdk-install": 5])

                // Installed again over it: through the daemon again.
                let again = try AppEnvironment.prewarm(["sdk", "install", "--python", harness.python])
                #expect(again.status == 0 && again.out.contains("installed again"), "\(again)")
                _ = try harness.ask("/query")
                #expect(try await harness.runsVia() == ["sdk-install": 6])
            } else {
                #expect(try AppEnvironment.prewarm(["sdk", "install", "--python", harness.python]).status == 0)
                Issue.record("no wheels in \(AppEnvironment.wheels) (.ci/run downloads them): the reinstall was not tried")
            }

            // No daemon: the application still works (prewarm-claude runs claude.real).
            daemon.signal(SIGTERM)
            #expect(try await daemon.waitForExit() == 0)
            _ = try harness.ask("/query")
            _ = try harness.ask("/client")
        }

        /// Installs and uninstalls racing a running application under load: every request of
        /// it is answered, whole, throughout.
        @Test func installRacingARunningApplication() async throws {
            let harness = try await Harness.start()
            let stop = harness.daemon.directory + "/stop-load"
            let load = Process()
            load.executableURL = URL(fileURLWithPath: harness.python)
            load.arguments = [AppEnvironment.support + "/sdk_app_client.py", harness.app.socket, "/query", "6", "2", stop]
            let output = harness.daemon.directory + "/load.out"
            _ = FileManager.default.createFile(atPath: output, contents: nil)
            load.standardOutput = FileHandle(forWritingAtPath: output)
            load.standardError = FileHandle.nullDevice
            try load.run()
            var changes: [String] = []
            for _ in 0..<10 {
                let install = try AppEnvironment.prewarm(["sdk", "install", "--python", harness.python])
                changes.append("install \(install.status)")
                let uninstall = try AppEnvironment.prewarm(["sdk", "uninstall", "--python", harness.python])
                changes.append("uninstall \(uninstall.status)")
            }
            #expect(try AppEnvironment.prewarm(["sdk", "install", "--python", harness.python]).status == 0)
            _ = FileManager.default.createFile(atPath: stop, contents: nil)
            load.waitUntilExit()
            #expect(changes.allSatisfy { $0.hasSuffix(" 0") }, "\(changes)")
            let answers = TestApplication.answers((try? String(contentsOfFile: output, encoding: .utf8)) ?? "")
            #expect(answers.count >= 6)
            for answer in answers {
                #expect(answer["status"] as? Int == 200, "\(answer)")
                #expect(answer["result"] as? String == Self.answer, "\(answer)")
            }
            // Some of them went through the daemon (the rest ran the bundled CLI).
            #expect((try await harness.runsVia()["sdk-install"] ?? 0) >= 1)
            // Left installed, and whole.
            let status = try AppEnvironment.prewarm(["sdk", "status", "--python", harness.python, "--json"])
            #expect(status.out.contains("\"state\" : \"installed\""), "\(status)")
            let leftovers = try FileManager.default.contentsOfDirectory(
                atPath: try #require(try PythonSDK.find(python: harness.python).bundledDirectory)
            ).filter { $0.hasPrefix(".claude.prewarm-tmp") }
            #expect(leftovers.isEmpty)
        }
    }
}
