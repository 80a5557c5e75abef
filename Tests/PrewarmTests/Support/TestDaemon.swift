import Foundation
import NIOCore
import PrewarmClient
import PrewarmCore
import PrewarmServer

#if canImport(Glibc)
import Glibc
#endif

/// A real `prewarm serve` process on a real Unix socket, with a configuration of the test's.
final class TestDaemon: @unchecked Sendable {
    /// The directory holding the built executables (`prewarm`, `prewarm-fake-agent`), which is
    /// also where the test bundle runs from.
    static let buildDirectory: String = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (exe as NSString).deletingLastPathComponent
    }()

    static var prewarm: String { buildDirectory + "/prewarm" }
    static var fakeAgent: String { buildDirectory + "/prewarm-fake-agent" }

    let directory: String
    let socket: String
    let process: Process
    let client: UnixHTTPClient
    let logPath: String
    /// The configuration file (tests rewrite it and send SIGHUP).
    let configPath: String

    /// Starts a daemon with `pools` (TOML `[[pool]]` tables; `FAKE` stands for the fake agent's
    /// path) and waits until it answers `/healthz`.
    /// With `cgroup`, the daemon starts inside that cgroup directory (its children follow).
    init(
        pools: String, top: String = "", waitForIdle: Bool = true, cgroup: String? = nil, directory: String? = nil,
        environment extra: [String: String] = [:], unset: Set<String> = []
    ) async throws {
        self.directory = try directory ?? Self.makeTemporaryDirectory()
        let directory = self.directory
        socket = directory + "/prewarm.sock"
        logPath = directory + "/daemon.log"
        let config = directory + "/prewarm.toml"
        configPath = config
        try Self.configText(pools: pools, top: top).write(toFile: config, atomically: true, encoding: .utf8)
        process = Process()
        if let cgroup {
            // The shell joins the cgroup, then becomes the daemon (same pid).
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "echo $$ > \"$0/cgroup.procs\" && exec \"$1\" serve --config \"$2\" --socket \"$3\"", cgroup, Self.prewarm, config, socket]
        } else {
            process.executableURL = URL(fileURLWithPath: Self.prewarm)
            process.arguments = ["serve", "--config", config, "--socket", socket]
        }
        // Pools' state (a claude pool's CLAUDE_CONFIG_DIR and parking directory) stays in the test's directory.
        var environment = ProcessInfo.processInfo.environment
        environment["XDG_STATE_HOME"] = directory + "/state"
        environment.merge(extra) { _, new in new }
        for name in unset { environment[name] = nil }
        process.environment = environment
        if !FileManager.default.fileExists(atPath: logPath) {
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        }
        let log = FileHandle(forWritingAtPath: logPath)!
        log.seekToEndOfFile()
        process.standardError = log
        process.standardOutput = log
        try process.run()
        client = UnixHTTPClient(socketPath: socket)
        try await waitUntil("the daemon answers /healthz", timeout: .seconds(20)) {
            (try? await self.client.request(.GET, "/healthz"))?.status == 200
        }
        if waitForIdle {
            try await waitUntil("every pool has its spares", timeout: .seconds(30)) {
                (try? await self.pools())?.allSatisfy { $0.idle >= $0.effectiveSpares } ?? false
            }
        }
    }

    /// The configuration file's text: `top`, then `pools` with `FAKE` replaced.
    static func configText(pools: String, top: String = "") -> String {
        top + "\n" + pools.replacingOccurrences(of: "FAKE", with: fakeAgent)
    }

    /// Replaces the configuration file (atomically, as an editor or a deploy does).
    func rewriteConfig(pools: String, top: String = "") throws {
        try Self.configText(pools: pools, top: top).write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    static func makeTemporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "prewarm-test-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    func pools() async throws -> [PoolStatus] {
        let response = try await client.request(.GET, "/v1/pools")
        return try JSONDecoder().decode(PoolList.self, from: Data(response.body.readableBytesView)).pools
    }

    func memory() async throws -> MemoryStatus {
        let response = try await client.request(.GET, "/v1/memory")
        return try JSONDecoder().decode(MemoryStatus.self, from: Data(response.body.readableBytesView))
    }

    func pool(_ name: String) async throws -> PoolStatus {
        try await pools().first { $0.name == name }!
    }

    /// One turn with the fake agent's default user line.
    func turn(_ pool: String, body: String = TestDaemon.userLine, headers: [(String, String)] = []) async throws -> UnixHTTPClient.Response {
        try await client.request(.POST, "/v1/pools/\(pool)/turns", headers: headers, body: ByteBuffer(string: body))
    }

    static let userLine = #"{"type":"user","message":{"role":"user","content":"hello"},"parent_tool_use_id":null,"session_id":"default"}"#

    func signal(_ signal: Int32) {
        kill(process.processIdentifier, signal)
    }

    /// Waits for the daemon to exit; returns its exit status.
    func waitForExit(timeout: Duration = .seconds(60)) async throws -> Int32 {
        try await waitUntil("the daemon exits", timeout: timeout) { !self.process.isRunning }
        return process.terminationStatus
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
    }
}

struct TimeoutError: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out waiting until \(what)" }
}

/// Polls `condition` every 20 ms until it holds. For states the daemon reaches with no event
/// a test could wait on (a process gone from /proc, a pool refilled).
func waitUntil(_ what: String, timeout: Duration, _ condition: @Sendable () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw TimeoutError(what: what)
}

/// Reads a value every 20 ms until `done` holds for it or `timeout` passes; returns the last
/// reading either way (for a test to show what it saw).
func poll<T: Sendable>(timeout: Duration, _ read: @Sendable () async throws -> T, until done: (T) -> Bool) async throws -> T {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while true {
        let value = try await read()
        if done(value) || ContinuousClock.now >= deadline { return value }
        try await Task.sleep(for: .milliseconds(20))
    }
}

/// Processes that are alive (not zombies) in the given process groups, read from /proc.
func livingMembers(ofGroups groups: Set<Int32>) -> [Int32] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    var members: [Int32] = []
    for entry in entries {
        guard let pid = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8) else { continue }
        // pid (comm) state ppid pgrp ...; comm may hold spaces, so split after the last ')'.
        guard let close = stat.lastIndex(of: ")") else { continue }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 2, let group = Int32(fields[2]) else { continue }
        if groups.contains(group) && fields[0] != "Z" { members.append(pid) }
    }
    return members
}

func isAlive(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
    return stat[stat.index(after: close)...].split(separator: " ").first != "Z"
}

/// The JSON lines of a turn's body.
func jsonLines(_ response: UnixHTTPClient.Response) -> [[String: Any]] {
    response.bodyString.split(separator: "\n").compactMap {
        try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
    }
}
