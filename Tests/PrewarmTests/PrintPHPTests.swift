import Foundation
import Testing

@testable import PrewarmCore

extension LiveDaemons {
    /// A real PHP client spawning `prewarm-claude` as its CLI (`CLAUDE_AGENT_CLI_PATH`): the
    /// Laravel SDK's command line run by Debian's `php-cli` and Symfony Process, buffered and
    /// streamed, resumed, and stopped mid-answer; warm from a pool of the real CLI; and with no
    /// daemon, the real CLI through the fallback.
    @Suite(
        "Print mode from PHP (Symfony Process)", .serialized,
        .enabled(if: SDKEnvironment.available && ExternalTool.onPath("php") != nil
            && FileManager.default.fileExists(atPath: "/usr/share/php/Symfony/Component/Process/autoload.php"),
            "needs the claude-agent-sdk virtualenv, php-cli and php-symfony-process (.ci/run installs them)")
    )
    struct PrintPHPTests {
        static let driver = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Support/laravel_print.php").path

        static func php(_ arguments: [String], harness: SDKDropInTests.Harness, socket: String) throws -> [String: Any] {
            let environment = [
                "PATH": "/usr/bin:/bin", "HOME": harness.daemon.directory, "PREWARM_SOCKET": socket, "PREWARM_CLAUDE_CLI": SDKEnvironment.cli!,
                "PREWARM_TEST_CLI": DropInTests.dropIn, "PREWARM_TEST_PROJECT": harness.project,
                "ANTHROPIC_BASE_URL": "http://127.0.0.1:\(harness.model.port)", "ANTHROPIC_API_KEY": "sk-fake",
                "CLAUDE_CONFIG_DIR": harness.configDirectory,
            ]
            let (status, out, err) = try SDKEnvironment.run(ExternalTool.onPath("php") ?? "php", [driver] + arguments, environment: environment)
            #expect(status == 0, "php: \(out) \(err)")
            return (try? JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]) ?? ["php": out + err]
        }

        @Test func theLaravelShapesAreServedWarm() async throws {
            let harness = try await SDKDropInTests.Harness.start()
            let daemon = harness.daemon
            var session: String?
            for (index, mode) in ["run", "stream", "resume"].enumerated() {
                try await waitUntil("the pool's spare is idle", timeout: .seconds(60)) { try await daemon.pool("sdk").idle >= 1 }
                let arguments = mode == "resume" ? ["run", "And now?", session ?? ""] : [mode, "Say hello."]
                let answer = try Self.php(arguments, harness: harness, socket: daemon.socket)
                let types = answer["types"] as? [String] ?? []
                #expect(answer["status"] as? Int == 0 && types.first == "system" && types.contains("result"), "\(mode): \(answer)")
                #expect((answer["partial"] as? String)?.isEmpty == true, "\(mode): every line whole")
                let result = answer["result"] as? String ?? ""
                #expect(result.contains(mode == "resume" ? "[user turns: 2]" : "[user turns: 1]"), "\(mode): \(answer)")
                session = session ?? answer["session_id"] as? String
                if mode != "resume" {
                    let pool = try await daemon.pool("sdk")
                    #expect(pool.warm == index + 1, "\(mode) was served warm: \(pool)")
                }
            }
            // stop(): SIGINT mid-answer, forwarded; the run ends, nothing is left running.
            // Its exit status is the one the CLI alone gives to the same stop() (the fallback
            // with no daemon is the CLI alone). Symfony's stop() sends SIGTERM first, the
            // signal it is given only after its timeout.
            // SIGINT itself ("interrupt") the same way.
            // The fake model answers PREWARM_SLOW after a minute: the signal comes mid-answer.
            for mode in ["stop", "interrupt"] {
                let served = try await daemon.pool("sdk").served
                let stopped = try Self.php([mode, "Say hello PREWARM_SLOW"], harness: harness, socket: daemon.socket)
                try await waitUntil("the stopped run is over in the daemon", timeout: .seconds(20)) { try await daemon.pool("sdk").busy == 0 }
                #expect(try await daemon.pool("sdk").served == served + 1, "\(mode) went through the daemon")
                let stoppedAlone = try Self.php([mode, "Say hello PREWARM_SLOW"], harness: harness, socket: daemon.directory + "/no-daemon.sock")
                #expect(
                    stopped["status"] is Int && stopped["status"] as? Int == stoppedAlone["status"] as? Int
                        && stopped["stderr"] as? String == stoppedAlone["stderr"] as? String,
                    "\(mode): \(stopped) against the CLI alone: \(stoppedAlone)"
                )
                // The same lines: after a SIGINT mid-answer, the interrupted turn's `user` and
                // `result` (the spare's stdin is open until its result, as the CLI's own is).
                #expect(stopped["types"] as? [String] == stoppedAlone["types"] as? [String], "\(mode): \(stopped) against the CLI alone: \(stoppedAlone)")
                if mode == "interrupt" { #expect((stopped["types"] as? [String])?.contains("result") == true, "\(stopped)") }
            }
            // No daemon: the real CLI, through the fallback.
            let alone = try Self.php(["run", "Say hello."], harness: harness, socket: daemon.directory + "/no-daemon.sock")
            #expect(alone["status"] as? Int == 0 && (alone["result"] as? String)?.contains("[user turns: 1]") == true, "\(alone)")
        }
    }
}
