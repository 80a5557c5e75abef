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
