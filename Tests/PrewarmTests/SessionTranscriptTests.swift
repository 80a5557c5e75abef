import Foundation
import Testing

@testable import PrewarmCore

/// The CLI's transcript path rule, checked against names the Python SDK's own helper
/// (`claude_agent_sdk._internal.sessions._sanitize_path`, 0.2.189) gives for the same paths,
/// and against a transcript the real CLI wrote (docs/claude-cli.md §4).
@Suite("Session transcripts")
struct SessionTranscriptTests {
    @Test func projectDirectoryNames() {
        #expect(SessionTranscript.projectDirectoryName("/tmp/i13r/exp/proj") == "-tmp-i13r-exp-proj")
        #expect(SessionTranscript.projectDirectoryName("/home/user/my project.v2") == "-home-user-my-project-v2")
        let long = "/srv/" + String(repeating: "a", count: 120) + "/" + String(repeating: "b", count: 120) + "/ü"
        #expect(
            SessionTranscript.projectDirectoryName(long)
                == "-srv-" + String(repeating: "a", count: 120) + "-" + String(repeating: "b", count: 74) + "-8detu3"
        )
    }

    @Test func thePathFollowsTheConfigHome() throws {
        let directory = try TestDaemon.makeTemporaryDirectory()
        let real = SessionTranscript.realPath(directory)!
        let name = SessionTranscript.projectDirectoryName(real)
        #expect(SessionTranscript.path(sessionID: "s1", cwd: directory, env: ["CLAUDE_CONFIG_DIR": "/c"]) == "/c/projects/\(name)/s1.jsonl")
        #expect(SessionTranscript.path(sessionID: "s1", cwd: directory, env: ["HOME": "/h"]) == "/h/.claude/projects/\(name)/s1.jsonl")
        #expect(
            SessionTranscript.path(sessionID: "s1", cwd: directory, env: ["CLAUDE_CONFIG_DIR": "/c", "CLAUDE_CODE_PROJECT_DIR_NAME": "mine"])
                == "/c/projects/mine/s1.jsonl"
        )
        #expect(SessionTranscript.path(sessionID: "s1", cwd: directory, env: [:]) == nil)
    }
}
