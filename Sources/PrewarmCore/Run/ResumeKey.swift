import Crypto
import Foundation

/// What a resume spare is for: a run that resumes session S with a given command line,
/// environment and directory. Two runs with equal keys can be served by the same resume spare
/// (started with that command line and `--resume=S`, in that directory, with that
/// environment): the spare cannot be claimed, so nothing about it can change at hand-off.
///
/// The key compares the command line by meaning (`--resume S`, `--resume=S` and `-r S` are one
/// resume), keeps the options that change what a resume means (`--fork-session`,
/// `--resume-session-at`, `--resume-drops-turn`) so they are served only by a spare started
/// with the same ones, and takes the environment's host part (HostEnvironment): the spare
/// keeps the daemon's values of the rest, as any spare does.
public struct ResumeKey: Sendable, Hashable {
    public let session: String
    public let cwd: String
    /// The options other than the resume itself, normalized, in a stable order.
    let options: [String]
    let environment: [String: String]
    /// The claimable variables the spare starts with (`CLAUDE_CODE_OAUTH_TOKEN`...), by the
    /// SHA-256 of their values: a run with another token is never served by a process that
    /// holds this one, and the key never holds a token itself.
    let credentials: [String: String]
    private(set) var executable: String

    /// Whether a run of this key writes on in its session's transcript: not with
    /// `--fork-session` (the fork is a new session; S's transcript stays as it was). Only such
    /// a run makes the session's other resume spares stale.
    public var continuesSession: Bool { !forks }
    private let forks: Bool

    /// The same key for another CLI (the pool's, when the run names none).
    public func with(executable: String) -> ResumeKey {
        var key = self
        key.executable = executable
        return key
    }

    /// Options a resume spare is started with whatever the caller gave (the resume is its own).
    static let resumeOptions: Set<String> = ["--resume"]
    /// Options that make a run something other than "resume S and go on".
    static let notResumable: Set<String> = ["--continue", "--session-id", "--await-initialize", "--await-claim", "--print"]

    /// The key of a run that resumes a session; nil when it resumes none, or in a way no
    /// spare started in advance can serve (a prompt on the command line, `--continue`...).
    public init?(run: RunDescription, executable: String) {
        let line = ClaudeCommandLine(run.argv)
        guard line.unknown.isEmpty, line.operands.isEmpty,
            !line.options.contains(where: { Self.notResumable.contains($0.name) }),
            let session = line.last("--resume"), !session.isEmpty
        else { return nil }
        self.init(session: session, line: line, cwd: run.cwd, env: run.env, executable: executable)
    }

    /// The key a resume spare for `session` is started with, after a run with `run`'s command
    /// line ended; nil when that command line cannot be resumed by a spare.
    public init?(after run: RunDescription, session: String, executable: String) {
        let line = ClaudeCommandLine(run.argv)
        guard line.unknown.isEmpty, line.operands.isEmpty,
            !line.options.contains(where: { Self.notResumable.contains($0.name) }),
            !session.isEmpty
        else { return nil }
        self.init(session: session, line: line, cwd: run.cwd, env: run.env, executable: executable)
    }

    private init(session: String, line: ClaudeCommandLine, cwd: String, env: [String: String], executable: String) {
        self.session = session
        self.cwd = cwd
        self.executable = executable
        environment = HostEnvironment.of(env)
        forks = line.has("--fork-session")
        credentials = env.filter { HostEnvironment.claimable.contains($0.key) }.mapValues {
            SHA256.hash(data: Array($0.utf8)).map { String(format: "%02x", $0) }.joined()
        }
        // By name, each name's values in the order given (a list's order is meaning: a rule
        // quoted in a message, a server merged last), the names in a stable order.
        var byName: [String: [String]] = [:]
        for option in line.options where !Self.resumeOptions.contains(option.name) {
            byName[option.name, default: []] += RunShape.normalized(option)
        }
        self.options = byName.keys.sorted().map { name in
            // A boolean given twice is given (as in RunShape's host part).
            let values = ClaudeCommandLine.kinds[name] == .boolean || byName[name]!.allSatisfy(\.isEmpty) ? [""] : byName[name]!
            return ([name] + values).map { "\($0.utf8.count):\($0)" }.joined()
        }
    }

    /// The arguments a resume spare starts with: the run's own, its resume (if any) replaced
    /// by `--resume=S` (the equals form: an optional value binds only that way).
    public static func spareArguments(from argv: [String], session: String) -> [String] {
        let line = ClaudeCommandLine(argv)
        var arguments: [String] = []
        for option in line.options where !resumeOptions.contains(option.name) {
            arguments += option.words
        }
        return arguments + ["--resume=\(session)"]
    }
}
