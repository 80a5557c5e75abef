import Foundation
import NIOCore
import Testing

@testable import PrewarmCore

#if canImport(Glibc)
import Glibc
#endif

/// Spares claimed ahead (`claim_ahead`), without processes: which claims may be made ahead and
/// what a turn must share with one (`AheadClaim`), what the CLI read at the claim
/// (`ClaimStamp`), when a pool claims ahead (`ClaimAheadPlanner`), and a claimed-ahead
/// process's life (`ProcessLifecycle`). The live test is in `ClaudePoolTests`.
@Suite("Claim ahead")
struct ClaimAheadTests {
    func session(_ fill: (inout SessionSettings) -> Void = { _ in }) -> SessionSettings {
        var session = SessionSettings()
        session.permissionMode = "default"
        fill(&session)
        return session
    }

    /// A spare claimed ahead serves only a turn of the same uid with the same claim, byte for
    /// byte; claims with credentials, in-process MCP servers or a resume are never made ahead.
    @Test func theKeyIsTheUIDAndTheWholeClaim() throws {
        let base = try #require(AheadClaim.make(session: session(), cwd: "/srv/app", sdkMcpServers: nil, caller: 1000))
        #expect(AheadClaim.make(session: session(), cwd: "/srv/app", sdkMcpServers: nil, caller: 1000) == base)
        #expect(base.line.contains(#""request_id":"prewarm-ahead""#) && base.line.contains(#""cwd":"/srv/app""#))
        let others: [AheadClaim?] = [
            AheadClaim.make(session: session(), cwd: "/srv/app", sdkMcpServers: nil, caller: 1001),
            AheadClaim.make(session: session(), cwd: "/srv/app2", sdkMcpServers: nil, caller: 1000),
            AheadClaim.make(session: session { $0.permissionMode = "acceptEdits" }, cwd: "/srv/app", sdkMcpServers: nil, caller: 1000),
            AheadClaim.make(session: session { $0.systemPrompt = "You are terse." }, cwd: "/srv/app", sdkMcpServers: nil, caller: 1000),
            AheadClaim.make(session: session { $0.appendSystemPrompt = "x" }, cwd: "/srv/app", sdkMcpServers: nil, caller: 1000),
            AheadClaim.make(session: session { $0.additionalDirectories = ["/srv/data"] }, cwd: "/srv/app", sdkMcpServers: nil, caller: 1000),
        ]
        for other in others {
            let other = try #require(other)
            #expect(other.key != base.key, "\(other.line)")
        }
        #expect(AheadClaim.make(session: session { $0.env = ["CLAUDE_CODE_OAUTH_TOKEN": "secret"] }, cwd: "/srv/app", sdkMcpServers: nil, caller: 1000) == nil)
        #expect(AheadClaim.make(session: session(), cwd: "/srv/app", sdkMcpServers: ["tools"], caller: 1000) == nil)
        #expect(AheadClaim.make(session: session { $0.resume = "0e5d8a4c" }, cwd: "/srv/app", sdkMcpServers: nil, caller: 1000) == nil)
        #expect(AheadClaim.make(session: session(), cwd: "/srv/app", sdkMcpServers: nil, caller: nil) == nil)
        // An empty env or MCP list is no credential and no server.
        #expect(AheadClaim.make(session: session { $0.env = [:] }, cwd: "/srv/app", sdkMcpServers: [], caller: 1000) == base)
    }

    /// Whatever the CLI reads at a claim changes the stamp: CLAUDE.md and AGENTS.md here and in
    /// a parent, the project's settings, a skill's file, the config directory's settings and
    /// the project's memory. A git work tree anywhere above has no stamp.
    @Test func theStampSeesWhatTheCLIReads() throws {
        let root = try TestDaemon.makeTemporaryDirectory()
        let cwd = root + "/parent/app"
        let config = root + "/config"
        try FileManager.default.createDirectory(atPath: cwd + "/.claude/skills/greet", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: config, withIntermediateDirectories: true)
        func stamp() throws -> ClaimStamp { try #require(ClaimStamp.take(cwd: cwd, configDirectory: config)) }
        var last = try stamp()
        #expect(try stamp() == last, "nothing changed")
        let changes: [(String, () throws -> Void)] = [
            ("CLAUDE.md here", { try "be brief".write(toFile: cwd + "/CLAUDE.md", atomically: false, encoding: .utf8) }),
            ("CLAUDE.md edited in place", { try "be briefer".write(toFile: cwd + "/CLAUDE.md", atomically: false, encoding: .utf8) }),
            ("AGENTS.md in a parent", { try "x".write(toFile: root + "/parent/AGENTS.md", atomically: false, encoding: .utf8) }),
            ("project settings", { try "{}".write(toFile: cwd + "/.claude/settings.json", atomically: false, encoding: .utf8) }),
            ("a skill", { try "---\nname: greet\n---".write(toFile: cwd + "/.claude/skills/greet/SKILL.md", atomically: false, encoding: .utf8) }),
            ("user settings", { try "{}".write(toFile: config + "/settings.json", atomically: false, encoding: .utf8) }),
            ("memory", {
                let slug = String(cwd.map { $0.isLetter || $0.isNumber ? $0 : "-" })
                try FileManager.default.createDirectory(atPath: config + "/projects/\(slug)/memory", withIntermediateDirectories: true)
                try "remember".write(toFile: config + "/projects/\(slug)/memory/MEMORY.md", atomically: false, encoding: .utf8)
            }),
            (".mcp.json", { try "{}".write(toFile: cwd + "/.mcp.json", atomically: false, encoding: .utf8) }),
        ]
        for (what, change) in changes {
            // Same size and mtime second are not enough to hide an edit (nanoseconds, ctime).
            try change()
            let now = try stamp()
            #expect(now != last, "\(what) changed the stamp")
            last = now
        }
        // A file made in the directory (the agent's own work) is not what the CLI read.
        try "output".write(toFile: cwd + "/notes.txt", atomically: false, encoding: .utf8)
        #expect(try stamp() == last, "a file the CLI does not read changes nothing")
        // The directory's name now leads elsewhere (a swapped link): another directory.
        let link = root + "/link"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: cwd)
        let before = try #require(ClaimStamp.take(cwd: link, configDirectory: config))
        try FileManager.default.createDirectory(atPath: root + "/elsewhere", withIntermediateDirectories: true)
        try FileManager.default.removeItem(atPath: link)
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: root + "/elsewhere")
        #expect(ClaimStamp.take(cwd: link, configDirectory: config) != before, "a swapped link changed the stamp")
        // A flood of entries to watch (another user's skills directory): no stamp, read no further.
        let flood = try TestDaemon.makeTemporaryDirectory()
        try FileManager.default.createDirectory(atPath: flood + "/.claude/skills", withIntermediateDirectories: true)
        for index in 0..<(ClaimStamp.maxEntries + 10) {
            FileManager.default.createFile(atPath: flood + "/.claude/skills/s\(index)", contents: nil)
        }
        #expect(ClaimStamp.take(cwd: flood, configDirectory: config) == nil, "too much to watch: never claimed ahead")
        try FileManager.default.createDirectory(atPath: root + "/parent/.git", withIntermediateDirectories: true)
        #expect(ClaimStamp.take(cwd: cwd, configDirectory: config) == nil, "a git work tree above: never claimed ahead")
    }

    /// A pool claims ahead only after two turns in a row made the same claim, and stops at the
    /// first turn that makes another, or one that may not be made ahead.
    @Test func thePlanIsTwoTurnsInARow() throws {
        let a = try #require(AheadClaim.make(session: session(), cwd: "/a", sdkMcpServers: nil, caller: 1))
        let b = try #require(AheadClaim.make(session: session(), cwd: "/b", sdkMcpServers: nil, caller: 1))
        var planner = ClaimAheadPlanner()
        planner.turnArrived(a)
        #expect(planner.plan == nil)
        planner.turnArrived(a)
        #expect(planner.plan == a)
        planner.turnArrived(a)
        #expect(planner.plan == a)
        planner.turnArrived(b)
        #expect(planner.plan == nil)
        planner.turnArrived(a)
        #expect(planner.plan == nil)
        planner.turnArrived(a)
        planner.turnArrived(nil)
        #expect(planner.plan == nil, "a claim with credentials ends the plan")
        planner.turnArrived(a)
        #expect(planner.plan == nil)
    }

    /// A spare claimed ahead: its claim goes in once it is ready, it is idle once the CLI
    /// accepts it (a refusal is a failed start-up), and a turn's input goes in at once with
    /// the claim's answer settled, no second claim written.
    @Test func aClaimedAheadProcessWritesTheTurnAtOnce() {
        var m = ProcessLifecycle(readyTimeout: .seconds(30))
        #expect(m.handle(.readyToClaimAhead).count == 1)
        #expect(m.phase == .starting)
        #expect(m.handle(.aheadClaimAnswered(.accepted(sessionID: "s"))).count == 1)
        #expect(m.phase == .idle)
        let turn = Turn(id: "t", input: ByteBuffer(string: "{}\n"), closeStdin: false, timeout: nil, claim: Turn.Claim(id: "c", line: "{}"))
        let actions = m.handle(.claim(turn))
        #expect(m.phase == .busy)
        #expect(actions.contains { if case .writeInput = $0 { true } else { false } })
        #expect(actions.contains { if case .settleClaim(_, .accepted(sessionID: "s")) = $0 { true } else { false } })
        #expect(!actions.contains { if case .writeClaim = $0 { true } else { false } })

        var refused = ProcessLifecycle(readyTimeout: .seconds(30))
        _ = refused.handle(.readyToClaimAhead)
        let ending = refused.handle(.aheadClaimAnswered(.refused(reason: "cwd_not_found", message: "cwd_not_found: /x")))
        #expect(refused.phase == .ended)
        #expect(ending.contains { if case .stop(.startFailed) = $0 { true } else { false } })
    }
}
