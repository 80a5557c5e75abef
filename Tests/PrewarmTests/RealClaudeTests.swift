import Foundation
import NIOCore
import PrewarmClient
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension LiveDaemons {
    /// The real Claude Code CLI (2.1.327, from the PyPI wheel `claude-agent-sdk` 0.2.184) in a
    /// claude pool, against `prewarm-fake-model` on loopback: no network beyond fetching the
    /// wheel once into `${XDG_CACHE_HOME:-$HOME/.cache}/prewarm/`. Skips, saying why, when the
    /// wheel cannot be had.
    @Suite("Real Claude CLI", .serialized)
    struct RealClaudeTests {
        static let version = "0.2.184"

        /// The CLI's path, fetched and unpacked on first use; nil (with the reason printed) when
        /// it cannot be had.
        static func cli() -> String? {
            let environment = ProcessInfo.processInfo.environment
            let cacheHome = environment["XDG_CACHE_HOME"].flatMap { $0.hasPrefix("/") ? $0 : nil } ?? NSHomeDirectory() + "/.cache"
            let cache = cacheHome + "/prewarm"
            let cli = cache + "/claude-agent-sdk-\(version)/claude"
            if FileManager.default.isExecutableFile(atPath: cli) { return cli }
            try? FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
            let script = """
                import glob, os, subprocess, sys, zipfile
                cache, version, target = sys.argv[1], sys.argv[2], sys.argv[3]
                wheels = glob.glob(os.path.join(cache, f"claude_agent_sdk-{version}-*.whl"))
                if not wheels:
                    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                                        f"claude-agent-sdk=={version}", "-d", cache], capture_output=True, text=True, timeout=900)
                    if r.returncode != 0:
                        sys.exit("pip download failed: " + (r.stderr.strip().splitlines() or ["?"])[-1])
                    wheels = glob.glob(os.path.join(cache, f"claude_agent_sdk-{version}-*.whl"))
                if not wheels:
                    sys.exit("no wheel for this platform")
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with zipfile.ZipFile(wheels[0]) as z:
                    with z.open("claude_agent_sdk/_bundled/claude") as src, open(target + ".part", "wb") as dst:
                        while chunk := src.read(1 << 20):
                            dst.write(chunk)
                os.chmod(target + ".part", 0o755)
                os.rename(target + ".part", target)
                """
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", "-c", script, cache, version, cli]
            let errors = Pipe()
            process.standardError = errors
            process.standardOutput = FileHandle.nullDevice
            do {
                try process.run()
            } catch {
                print("SKIPPED: the real Claude CLI test needs python3 to fetch the wheel: \(error)")
                return nil
            }
            let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            guard process.terminationStatus == 0, FileManager.default.isExecutableFile(atPath: cli) else {
                print("SKIPPED: the real Claude CLI could not be had from PyPI (claude-agent-sdk==\(version)): \(message.trimmingCharacters(in: .whitespacesAndNewlines))")
                return nil
            }
            return cli
        }

        /// `prewarm-fake-model` on a port of the OS's choosing; it asks for a tool (a command
        /// outside the session's directory, which the CLI does not approve by itself) when a
        /// prompt says PREWARM_TOOL_USE.
        final class FakeModel {
            let process = Process()
            let port: Int

            init(outside: String) throws {
                process.executableURL = URL(fileURLWithPath: TestDaemon.buildDirectory + "/prewarm-fake-model")
                process.arguments = ["--port", "0", "--ttft-ms", "20", "--tool-input", #"{"command":"touch \#(outside)","description":"Touch a file"}"#]
                let output = Pipe()
                process.standardOutput = output
                process.standardError = FileHandle.nullDevice
                try process.run()
                var line: [UInt8] = []
                while true {
                    let byte = output.fileHandleForReading.readData(ofLength: 1)
                    if byte.isEmpty || byte.first == UInt8(ascii: "\n") { break }
                    line += byte
                }
                let object = try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any]
                port = object?["port"] as? Int ?? 0
            }

            deinit {
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            }
        }

        @Test func claimedColdAndTwoWayTurns() async throws {
            guard let cli = Self.cli() else { return }
            let outside = NSTemporaryDirectory() + "prewarm-outside-" + UUID().uuidString.prefix(8)
            let model = try FakeModel(outside: outside)
            #expect(model.port > 0)
            let daemon = try await TestDaemon(
                pools: """
                    [[pool]]
                    name = "c"
                    kind = "claude"
                    command = "\(cli)"
                    spares = 1
                    when_empty = "start"
                    turn_timeout_s = 120
                    env = { ANTHROPIC_BASE_URL = "http://127.0.0.1:\(model.port)", ANTHROPIC_API_KEY = "sk-fake" }
                    [pool.ready]
                    timeout_s = 120
                    [pool.session]
                    permission_mode = "default"

                    """
            )
            #expect(try await daemon.pool("c").claim == "on", "the CLI knows --await-claim")

            // A claimed warm turn in a directory of its own.
            let project = try TestDaemon.makeTemporaryDirectory()
            let warm = try await ClaudePoolTests.jsonTurn(daemon, prompt: "Say hello.", session: ["cwd": project])
            #expect(warm.status == 200, "\(warm.bodyString)")
            #expect(warm.headers.first(name: "Prewarm-Start") == "warm")
            let lines = jsonLines(warm)
            let initLine = lines.first { $0["type"] as? String == "system" && $0["subtype"] as? String == "init" }
            #expect(initLine?["cwd"] as? String == project, "system/init reports the claimed cwd")
            #expect(lines.contains { $0["type"] as? String == "stream_event" }, "partial messages stream")
            #expect(lines.last?["type"] as? String == "result", "the body ends with the result line")
            #expect(!lines.contains { $0["subtype"] as? String == "ui_invalidate" })
            #expect(warm.trailers?.first(name: "Prewarm-Outcome") == "completed")

            // A cold turn: resuming that session starts a process for it (--resume).
            let session = try #require(initLine?["session_id"] as? String)
            let cold = try await ClaudePoolTests.jsonTurn(daemon, prompt: "Again.", session: ["cwd": project, "resume": session])
            #expect(cold.status == 200, "\(cold.bodyString)")
            #expect(cold.headers.first(name: "Prewarm-Start") == "cold")
            #expect(jsonLines(cold).last?["type"] as? String == "result")

            // A two-way turn: the CLI asks can_use_tool mid-turn, the client allows it, the turn completes.
            try await waitUntil("a spare is parked again", timeout: .seconds(60)) { try await daemon.pool("c").idle == 1 }
            let socket = try RawSocket(path: daemon.socket)
            try socket.send(TwoWayTests.request(pool: "c"))
            let head = try #require(socket.readHead())
            guard head.hasPrefix("HTTP/1.1 101") else {
                Issue.record("the upgrade was refused: \(head) \(socket.readAll())")
                return
            }
            try socket.send(#"{"type":"user","message":{"role":"user","content":"PREWARM_TOOL_USE now"},"parent_tool_use_id":null,"session_id":"default"}"# + "\n")
            var asked = false
            var outcome: String?
            var types: [String] = []
            while let line = socket.readLine() {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { continue }
                types.append(object["type"] as? String ?? "?")
                if object["type"] as? String == "control_request", let request = object["request"] as? [String: Any],
                    request["subtype"] as? String == "can_use_tool"
                {
                    asked = true
                    let id = object["request_id"] as? String ?? ""
                    try socket.send(
                        #"{"type":"control_response","response":{"subtype":"success","request_id":"\#(id)","response":{"behavior":"allow"}}}"# + "\n"
                    )
                }
                if object["type"] as? String == "prewarm_outcome" { outcome = object["outcome"] as? String }
            }
            #expect(asked, "the CLI asked for the tool's permission: \(types)")
            #expect(types.contains("result"))
            #expect(outcome == "completed")
            #expect(FileManager.default.fileExists(atPath: outside), "the allowed tool ran")
            try? FileManager.default.removeItem(atPath: outside)
        }
    }
}
