import Foundation
import Testing

@testable import PrewarmCore

/// Which runs a resume spare serves: the same command line by meaning, the same session,
/// directory, host environment and CLI; never a run that means something else.
@Suite("Resume keys")
struct ResumeKeyTests {
    static let sdk = ["--output-format", "stream-json", "--verbose", "--system-prompt", "", "--input-format", "stream-json"]
    static let env = ["CLAUDE_CONFIG_DIR": "/c", "ANTHROPIC_API_KEY": "k", "PATH": "/bin", "TERM": "x"]

    static func run(_ argv: [String], cwd: String = "/p", env: [String: String] = env) -> RunDescription {
        RunDescription(argv: argv, cwd: cwd, env: env)
    }

    @Test func everySpellingOfTheResumeIsOneKey() throws {
        let spare = try #require(ResumeKey(after: Self.run(Self.sdk), session: "S", executable: "/cli"))
        for resume in [["--resume=S"], ["--resume", "S"], ["-r", "S"]] {
            let key = try #require(ResumeKey(run: Self.run(Self.sdk + resume), executable: "/cli"), "\(resume)")
            #expect(key == spare, "\(resume)")
        }
        // A run that itself resumed keys its spare the same way.
        #expect(ResumeKey(after: Self.run(Self.sdk + ["--resume=S0"]), session: "S", executable: "/cli") == spare)
        // What is not the host's environment does not matter; what is, does.
        var other = Self.env
        other["TERM"] = "dumb"
        #expect(ResumeKey(run: Self.run(Self.sdk + ["--resume=S"], env: other), executable: "/cli") == spare)
        other["ANTHROPIC_API_KEY"] = "k2"
        #expect(ResumeKey(run: Self.run(Self.sdk + ["--resume=S"], env: other), executable: "/cli") != spare)
    }

    @Test func whatChangesTheRunChangesTheKey() throws {
        let spare = try #require(ResumeKey(after: Self.run(Self.sdk), session: "S", executable: "/cli"))
        let differing: [RunDescription] = [
            Self.run(Self.sdk + ["--resume=T"]),
            Self.run(Self.sdk + ["--resume=S"], cwd: "/q"),
            Self.run(Self.sdk + ["--resume=S", "--fork-session"]),
            Self.run(Self.sdk + ["--resume=S", "--resume-session-at=u1"]),
            Self.run(Self.sdk + ["--resume=S", "--model", "m"]),
        ]
        for run in differing {
            #expect(ResumeKey(run: run, executable: "/cli") != spare, "\(run.argv)")
        }
        #expect(ResumeKey(run: Self.run(Self.sdk + ["--resume=S"]), executable: "/other") != spare)
        // Not resumes, or not servable by a spare started in advance.
        #expect(ResumeKey(run: Self.run(Self.sdk), executable: "/cli") == nil)
        #expect(ResumeKey(run: Self.run(Self.sdk + ["--continue"]), executable: "/cli") == nil)
        #expect(ResumeKey(run: Self.run(["-p", "hello", "--resume=S"]), executable: "/cli") == nil)
    }

    /// A resume spare holds the token of the run it was started after: a run with another
    /// token (or none) is never served by it; the key holds a digest, never the token.
    @Test func anotherTokenIsAnotherKey() throws {
        var a = Self.env
        a["CLAUDE_CODE_OAUTH_TOKEN"] = "token-A"
        let spare = try #require(ResumeKey(after: Self.run(Self.sdk, env: a), session: "S", executable: "/cli"))
        #expect(ResumeKey(run: Self.run(Self.sdk + ["-r", "S"], env: a), executable: "/cli") == spare)
        var b = Self.env
        b["CLAUDE_CODE_OAUTH_TOKEN"] = "token-B"
        #expect(ResumeKey(run: Self.run(Self.sdk + ["-r", "S"], env: b), executable: "/cli") != spare)
        #expect(ResumeKey(run: Self.run(Self.sdk + ["-r", "S"]), executable: "/cli") != spare)
        #expect(!"\(spare)".contains("token-A"))
    }

    @Test func theSpareStartsWithTheRunsOwnCommandLine() {
        #expect(
            ResumeKey.spareArguments(from: Self.sdk + ["-r", "OLD", "--model", "m"], session: "S")
                == ["--output-format", "stream-json", "--verbose", "--system-prompt", "", "--input-format", "stream-json", "--model", "m", "--resume=S"]
        )
    }
}
