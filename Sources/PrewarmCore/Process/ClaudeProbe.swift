import Foundation
import Subprocess

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// Asks a Claude Code CLI what it supports, once, when its pool starts.
enum ClaudeProbe {
    /// Whether `executable --await-claim --version` succeeds: a CLI that does not know the
    /// flag refuses it as an unknown option.
    static func knowsAwaitClaim(executable: String, environment: [String: String]) async -> Bool {
        let env = Dictionary(uniqueKeysWithValues: environment.map { (Environment.Key(stringLiteral: $0.key), $0.value) })
        do {
            let result = try await withThrowingTaskGroup(of: Bool?.self) { group in
                group.addTask {
                    let outcome = try await Subprocess.run(
                        .path(FilePath(executable)), arguments: ["--await-claim", "--version"], environment: .custom(env),
                        output: .discarded, error: .discarded
                    )
                    return outcome.terminationStatus.isSuccess
                }
                group.addTask {
                    try await Task.sleep(for: .seconds(20))
                    return nil
                }
                let first = try await group.next() ?? nil
                group.cancelAll()
                return first
            }
            // No answer in 20 s: assume it does (a failing start-up will say more).
            return result ?? true
        } catch {
            return true
        }
    }
}

extension ClaudeProbe {
    /// Whether `executable --bg-spare SOCKET` parks: it listens on SOCKET (in a fresh 0700
    /// directory, with a claim token) within 10 s. A CLI without the mode exits at once with
    /// an unknown option. The parked process is killed and its directory removed. Returns nil
    /// when it does, else why not.
    static func bgSpareProblem(executable: String, environment: [String: String], root: String) async -> String? {
        let directory: String
        do throws(PrewarmError) {
            directory = try PrivateDirectory.make(under: root, prefix: "probe")
        } catch {
            return error.message
        }
        defer { _ = PrivateDirectory.remove(directory) }
        let socket = directory + "/s"
        var env = environment
        env[UniversalSpare.authVariable] = UniversalSpare.makeToken()
        let key = Dictionary(uniqueKeysWithValues: env.map { (Environment.Key(stringLiteral: $0.key), $0.value) })
        do {
            return try await Subprocess.run(
                .path(FilePath(executable)), arguments: ["--bg-spare", socket], environment: .custom(key), workingDirectory: FilePath(directory),
                input: .none, output: .discarded, error: .discarded
            ) { execution -> String? in
                let pid = execution.processIdentifier.value
                defer { kill(pid, SIGKILL) }
                let deadline = ContinuousClock.now.advanced(by: .seconds(10))
                while ContinuousClock.now < deadline {
                    if UniversalSpare.isListening(socket) { return nil }
                    // An exited CLI (an unknown option) is a zombie until reaped: kill(pid, 0) still
                    // succeeds, so its end is read from /proc.
                    if UniversalSpare.hasExited(pid) { return "it exited at once (no such mode)" }
                    try? await Task.sleep(for: .milliseconds(20))
                }
                // This task may have been woken long after the CLI listened (the cooperative
                // pool's threads busy with blocking work): one last look before saying no.
                if UniversalSpare.isListening(socket) { return nil }
                return "it did not listen on its socket within 10 s"
            }.closureResult
        } catch {
            return "it could not be started: \(error)"
        }
    }

    static func knowsBgSpare(executable: String, environment: [String: String], root: String) async -> Bool {
        await bgSpareProblem(executable: executable, environment: environment, root: root) == nil
    }
}
