import Foundation
import Testing

@testable import PrewarmCore

/// `--bg-spare` support, probed as a pool does: the SDK's bundled CLI has it, a CLI without it
/// (the fake agent) does not.
@Suite("Universal spares: the probe")
struct UniversalSpareProbeTests {
    @Test(.enabled(if: SDKEnvironment.available, "needs the claude-agent-sdk virtualenv (.ci/run makes it)"))
    func theBundledCLIParks() async throws {
        // A HOME and a root of its own: nothing shared with the suite's other CLIs.
        let directory = try TestDaemon.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let environment = ["PATH": "/usr/bin:/bin", "HOME": directory]
        let problem = await ClaudeProbe.bgSpareProblem(executable: SDKEnvironment.cli!, environment: environment, root: directory + "/bg")
        #expect(problem == nil, "\(problem ?? "")")
    }

    @Test func aCLIWithoutTheModeDoesNot() async throws {
        let directory = try TestDaemon.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(await !ClaudeProbe.knowsBgSpare(executable: TestDaemon.fakeAgent, environment: ["PATH": "/usr/bin:/bin"], root: directory + "/bg"))
    }

    @Test func environmentsSentAsTheyAre() {
        #expect(UniversalSpare.accepts(environment: ["PATH": "/bin", "_X1": "a b"]))
        #expect(!UniversalSpare.accepts(environment: ["1X": "a"]))
        #expect(!UniversalSpare.accepts(environment: ["A-B": "a"]))
        #expect(!UniversalSpare.accepts(environment: ["A": "a\u{0}b"]))
    }
}
