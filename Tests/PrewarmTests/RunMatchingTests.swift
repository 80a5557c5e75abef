import Foundation
import NIOCore
import Testing

@testable import PrewarmCore

/// The pure part of drop-in runs: the CLI's flag grammar, a run's host and session parts,
/// which pool serves it, and what of a spare's output its caller must not see.
@Suite("Run matching")
struct RunMatchingTests {
    static let sdk = ["--output-format", "stream-json", "--verbose", "--system-prompt", "", "--input-format", "stream-json"]
    static let env = ["HOME": "/home/u", "PATH": "/usr/bin", "ANTHROPIC_API_KEY": "k", "CLAUDE_CONFIG_DIR": "/c", "TERM": "xterm"]

    @Test func theGrammarReadsEverySpelling() {
        let line = ClaudeCommandLine([
            "--model=opus", "--allowed-tools", "Read,Bash", "Write", "--resume", "--verbose", "-pc", "--system-prompt", "-x", "--add-dir", "a", "b", "prompt?",
        ])
        #expect(line.last("--model") == "opus")
        #expect(line.values("--allowedTools") == ["Read,Bash", "Write"], "variadic: values while they are not options")
        #expect(line.has("--resume") && line.values("--resume").isEmpty, "an optional value is not taken from an option")
        #expect(line.has("--print") && line.has("--continue"), "short booleans combine")
        #expect(line.last("--system-prompt") == "-x", "a required value takes the next word, whatever it is")
        #expect(line.values("--add-dir") == ["a", "b", "prompt?"], "a variadic swallows a later operand, as the CLI does")
        #expect(ClaudeCommandLine(["--resume=abc", "--", "--not-an-option"]).operands == ["--not-an-option"])
        #expect(ClaudeCommandLine(["--verbose=1", "--no-such-flag"]).unknown == ["--verbose=1", "--no-such-flag"])
    }

    @Test func theSameMeaningIsTheSameHost() {
        let a = RunShape(arguments: ["--allowedTools", "Read,Bash", "--permission-prompt-tool", "stdio", "--verbose"], cwd: "/p", env: [:])
        let b = RunShape(arguments: ["--verbose", "--permission-prompt-tool=stdio", "--allowed-tools", "Read", "--allowedTools", "Bash"], cwd: "/q", env: [:])
        #expect(a.host == b.host)
        let c = RunShape(arguments: ["--mcp-config", #"{"mcpServers": {"x": {"type": "stdio", "command": "a b"}}}"#], cwd: nil, env: [:])
        let d = RunShape(arguments: ["--mcp-config", #" {"mcpServers":{"x":{"type":"stdio","command":"a b"}}}"#], cwd: nil, env: [:])
        #expect(c.host == d.host, "JSON compared without the white space between tokens")
    }

    /// Rules are split as the CLI splits them (commas and spaces outside parentheses), their
    /// text kept, in their order; JSON keys in their order (the CLI's merge and temporary
    /// files follow it). (Before: every comma and space split and the rules were sorted, so
    /// two different deny lists were one fingerprint.)
    @Test func rulesAreReadAsTheCLIReadsThem() {
        #expect(RunShape.toolList("Bash(git push:*),Read") == ["Bash(git push:*)", "Read"])
        #expect(RunShape.toolList(" Bash(a,b) Edit ,, ") == ["Bash(a,b)", "Edit"])
        #expect(RunShape.toolList("Bash(echo (a) b)") == ["Bash(echo (a)", "b)"], "a flag, not a depth: the CLI's own quirk")
        #expect(RunShape.toolList("Read\tWrite") == ["Read\tWrite"], "only U+0020 splits")
        let a = RunShape(arguments: ["--disallowedTools", "Bash(rm push:*),Bash(git -rf:*)"], cwd: nil, env: [:])
        let b = RunShape(arguments: ["--disallowedTools", "Bash(rm -rf:*),Bash(git push:*)"], cwd: nil, env: [:])
        #expect(a.host != b.host)
        let sorted = RunShape(arguments: ["--allowedTools", "Bash,Read"], cwd: nil, env: [:])
        #expect(sorted.host != RunShape(arguments: ["--allowedTools", "Read,Bash"], cwd: nil, env: [:]).host)
        let c = RunShape(arguments: ["--mcp-config", #"{"mcpServers":{"x":{"type":"stdio","command":"a"}}}"#], cwd: nil, env: [:])
        let d = RunShape(arguments: ["--mcp-config", #"{"mcpServers":{"x":{"command":"a","type":"stdio"}}}"#], cwd: nil, env: [:])
        #expect(c.host != d.host)
        #expect(RunShape(arguments: ["--betas", "a,b"], cwd: nil, env: [:]).host["--betas"] == ["a,b"], "a beta header is one word")
        #expect(RunShape.compactJSON("not json") == nil)
    }

    @Test func sessionPartsAndColdReasons() {
        let shape = RunShape(
            arguments: Self.sdk + ["--model", "m", "--permission-mode", "acceptEdits", "--add-dir", "/x", "--mcp-config", #"{"mcpServers": {"calc": {"type": "sdk", "name": "calc"}}}"#],
            cwd: "/p", env: ["CLAUDE_CODE_OAUTH_TOKEN": "t"]
        )
        #expect(shape.coldReasons.isEmpty)
        #expect(shape.session.systemPrompt == "" && shape.session.permissionMode == "acceptEdits" && shape.session.additionalDirectories == ["/x"])
        #expect(shape.model == "m" && shape.sdkMcpServers == ["calc"])
        #expect(shape.session.env == ["CLAUDE_CODE_OAUTH_TOKEN": "t"], "claimable variables travel in the claim")
        #expect(Set(shape.host.keys) == ["--output-format", "--verbose", "--input-format"])
        for cold in [["--resume=abc"], ["-c"], ["--session-id=x"], ["--fork-session"], ["-p", "say hi"], ["--await-initialize"], ["--bogus"]] {
            #expect(!RunShape(arguments: Self.sdk + cold, cwd: "/p", env: [:]).coldReasons.isEmpty, "\(cold)")
        }
    }

    static func profile(
        args: [String], claim: Bool = true, env: [String: String] = ["ANTHROPIC_API_KEY": "k"], cwd: String? = nil, initialize: Bool = false
    ) -> RunProfile {
        var config = PoolConfig(name: "p", command: "/bin/true", executable: "/bin/true", env: env)
        var claude = PoolConfig.ClaudeSettings(claim: claim, configDirectory: "/c", parkingDirectory: "/park")
        claude.initialize = initialize
        claude.baseArguments = args
        claude.defaultCwd = cwd
        claude.session.cwd = cwd
        config.claude = claude
        config.kind = .claude
        config.args = claude.arguments(for: claim ? nil : claude.session)
        config.env["CLAUDE_CONFIG_DIR"] = "/c"
        config.env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
        return RunProfile(config: config, daemonEnvironment: ["PATH": "/bin", "HOME": "/daemon"])!
    }

    @Test func aClaimedPoolServesEverySessionOfItsHost() throws {
        let profile = Self.profile(args: ["--output-format", "stream-json", "--verbose", "--input-format", "stream-json", "--include-partial-messages"])
        let shape = RunShape(arguments: Self.sdk + ["--model", "other"], cwd: "/p", env: Self.env)
        let plan = try RunMatcher.plan(shape, env: Self.env, cli: nil, on: profile).get()
        #expect(plan.claimed && plan.model == "other" && plan.session.cwd == "/p")
        #expect(plan.filter == RunOutputFilter.Rules(dropPartialMessages: true, dropSessionState: false), "a superset flag the daemon takes away")
        // What the spare cannot take away: another host variable, another option, partial messages wanted.
        var otherKey = Self.env
        otherKey["ANTHROPIC_API_KEY"] = "other"
        #expect(throws: RunMatcher.Mismatch.self) { try RunMatcher.plan(shape, env: otherKey, cli: nil, on: profile).get() }
        var noConfig = Self.env
        noConfig["CLAUDE_CONFIG_DIR"] = nil  // then $HOME/.claude, not the pool's
        #expect(throws: RunMatcher.Mismatch.self) { try RunMatcher.plan(shape, env: noConfig, cli: nil, on: profile).get() }
        let tool = RunShape(arguments: Self.sdk + ["--permission-prompt-tool", "stdio"], cwd: "/p", env: Self.env)
        #expect(throws: RunMatcher.Mismatch.self) { try RunMatcher.plan(tool, env: Self.env, cli: nil, on: profile).get() }
        let plain = Self.profile(args: ["--output-format", "stream-json", "--verbose", "--input-format", "stream-json"])
        let partial = RunShape(arguments: Self.sdk + ["--include-partial-messages"], cwd: "/p", env: Self.env)
        #expect(throws: RunMatcher.Mismatch.self) { try RunMatcher.plan(partial, env: Self.env, cli: nil, on: plain).get() }
        // Variables that are not the host's are ignored: PATH, HOME (but for the config dir), TERM, the SDK's markers.
        var ignored = Self.env
        ignored["TERM"] = "dumb"
        ignored["TRACEPARENT"] = "00-abc"
        ignored["CLAUDE_CODE_ENTRYPOINT"] = "sdk-py"
        #expect((try? RunMatcher.plan(shape, env: ignored, cli: nil, on: profile).get()) != nil)
        // A pool that initializes its spares: the run's initialize would be a repeat, applied in part.
        let initialized = Self.profile(args: ["--output-format", "stream-json", "--verbose", "--input-format", "stream-json"], initialize: true)
        #expect(throws: RunMatcher.Mismatch.self) { try RunMatcher.plan(shape, env: Self.env, cli: nil, on: initialized).get() }
        // The caller wants session-state frames the spares do not write.
        ignored["CLAUDE_CODE_SDK_READS_SESSION_STATE"] = "1"
        #expect(throws: RunMatcher.Mismatch.self) { try RunMatcher.plan(shape, env: ignored, cli: nil, on: profile).get() }
    }

    @Test func anUnclaimedPoolServesOnlyItsOwnSession() throws {
        let args = ["--output-format", "stream-json", "--verbose", "--input-format", "stream-json"]
        let profile = Self.profile(args: args, claim: false, cwd: "/p")
        let same = RunShape(arguments: args, cwd: "/p", env: Self.env)
        #expect(try RunMatcher.plan(same, env: Self.env, cli: nil, on: profile).get().claimed == false)
        let elsewhere = RunShape(arguments: args, cwd: "/q", env: Self.env)
        #expect(throws: RunMatcher.Mismatch.self) { try RunMatcher.plan(elsewhere, env: Self.env, cli: nil, on: profile).get() }
        let prompt = RunShape(arguments: args + ["--system-prompt", "x"], cwd: "/p", env: Self.env)
        #expect(throws: RunMatcher.Mismatch.self) { try RunMatcher.plan(prompt, env: Self.env, cli: nil, on: profile).get() }
    }

    @Test func fingerprintsNameHostPartsNotSessions() {
        let a = RunShape(arguments: Self.sdk + ["--model", "x"], cwd: "/a", env: Self.env)
        let b = RunShape(arguments: Self.sdk, cwd: "/b", env: Self.env)
        let c = RunShape(arguments: Self.sdk + ["--max-turns", "3"], cwd: "/a", env: Self.env)
        let fa = RunMatcher.fingerprint(a, env: Self.env, executable: "/cli")
        #expect(fa == RunMatcher.fingerprint(b, env: Self.env, executable: "/cli"))
        #expect(fa != RunMatcher.fingerprint(c, env: Self.env, executable: "/cli"))
        #expect(fa != RunMatcher.fingerprint(a, env: Self.env, executable: "/other"))
        let key = RunMatcher.fingerprintKey(fa)
        #expect(key.range(of: "^[0-9a-f]{64}$", options: .regularExpression) != nil)
        #expect(key != RunMatcher.fingerprintKey(RunMatcher.fingerprint(c, env: Self.env, executable: "/cli")))
        let name = RunMatcher.poolName(key: key)
        #expect(name.range(of: "^fp-[0-9a-f]{32}$", options: .regularExpression) != nil)
        #expect(!c.hostSummary.joined().contains("3"), "names, never values")
    }

    static func filtered(_ lines: [String], _ rules: RunOutputFilter.Rules, chunk: Int = 7) -> String {
        var filter = RunOutputFilter(rules: rules)
        let text = lines.joined(separator: "\n") + "\n"
        var out = ""
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let piece = ByteBuffer(bytes: bytes.prefix(chunk))
            bytes = bytes.dropFirst(chunk)
            out += String(buffer: filter.filter(piece))
        }
        return out + String(buffer: filter.finish())
    }

    @Test func theFilterTakesAwayWhatTheCallerDidNotAskFor() throws {
        let lines = [
            #"{"type":"stream_event","event":{}}"#,
            #"{"type":"system","subtype":"status","status":"requesting"}"#,
            #"{"type":"system","subtype":"session_state_changed","state":"idle","sdk_host_only":true}"#,
            #"{"type":"control_response","response":{"subtype":"success","request_id":"prewarm-model-t1","response":{}}}"#,
            #"{"type":"assistant","message":{"content":"stream_event is just a word here"}}"#,
            #"{"type":"result","begun_message_ids":["m"],"result":"ok"}"#,
        ]
        let all = Self.filtered(lines, RunOutputFilter.Rules(dropPartialMessages: true, dropSessionState: true))
        let kept = all.split(separator: "\n").map(String.init)
        #expect(kept.count == 2, "\(kept)")
        #expect(kept[0] == lines[4])
        let result = try JSONSerialization.jsonObject(with: Data(kept[1].utf8)) as? [String: Any]
        #expect(result?["begun_message_ids"] == nil && result?["result"] as? String == "ok")
        // No rule: only the daemon's own answers go.
        let none = Self.filtered(lines, RunOutputFilter.Rules())
        #expect(none.split(separator: "\n").count == 5)
        // A line longer than the filter holds passes through whole, never held.
        let long = "{\"type\":\"assistant\",\"text\":\"" + String(repeating: "x", count: 3 << 20) + "\"}"
        #expect(Self.filtered([long], RunOutputFilter.Rules(dropPartialMessages: true), chunk: 1 << 16) == long + "\n")
    }
}

extension RunMatchingTests {
    /// config/claude-sdk.toml: its pool serves the Python SDK's default `query()` warm (the
    /// command line recorded from SDK 0.2.189, docs/claude-cli.md §1.2), with the SDK's
    /// environment; with can_use_tool (`--permission-prompt-tool stdio`) it does not.
    @Test func theSDKConfigurationServesTheSDKsDefaultQuery() throws {
        let daemon = ["PATH": "/usr/bin", "HOME": "/srv", "XDG_STATE_HOME": "/var/state", "ANTHROPIC_API_KEY": "k", "ANTHROPIC_BASE_URL": "http://m"]
        let loader = ConfigurationLoader(executableDirectory: nil, environment: daemon, cpus: 2)
        let config = try loader.load(path: ConfigurationTests.repositoryRoot + "/config/claude-sdk.toml")
        var pool = try #require(config.pool(named: "sdk"))
        #expect(pool.ready.send == PoolConfig.ClaudeSettings.versionProbe, "spares are not initialized by the pool")
        var fingerprintPools = FingerprintPools(enabled: true, spares: 2, idleTTL: .seconds(600), maxPools: 8, maxStarting: 1)
        fingerprintPools.resumeSpares = ResumeSpareSettings(ttl: .seconds(600), maxHeld: 4)
        fingerprintPools.replaceAfter = .seconds(2)
        #expect(config.fingerprintPools == fingerprintPools)
        #expect(pool.replaceAfter == .seconds(2), "a burst's replacements wait for its runs")
        #expect(pool.resumeSpares == ResumeSpareSettings(ttl: .seconds(600), maxHeld: 4), "the next turn of a session starts warm")
        pool.claude?.configDirectory = "/home/app/.claude"
        pool.env["CLAUDE_CONFIG_DIR"] = "/home/app/.claude"
        let profile = try #require(RunProfile(config: pool, daemonEnvironment: daemon))
        // What the SDK spawns: its argv, and the app's environment plus the SDK's markers.
        let argv = ["--output-format", "stream-json", "--verbose", "--system-prompt", "", "--input-format", "stream-json"]
        let env = [
            "HOME": "/home/app", "PATH": "/app/bin", "ANTHROPIC_API_KEY": "k", "ANTHROPIC_BASE_URL": "http://m", "CLAUDE_CODE_ENTRYPOINT": "sdk-py",
            "CLAUDE_AGENT_SDK_VERSION": "0.2.189", "CLAUDE_CODE_SDK_READS_SESSION_STATE": "1", "PWD": "/srv/p",
        ]
        let plan = try RunMatcher.plan(RunShape(arguments: argv, cwd: "/srv/p", env: env), env: env, cli: nil, on: profile).get()
        #expect(plan.claimed && plan.session.systemPrompt == "" && plan.filter == RunOutputFilter.Rules())
        let withTool = RunShape(arguments: argv + ["--permission-prompt-tool", "stdio"], cwd: "/srv/p", env: env)
        #expect(throws: RunMatcher.Mismatch.self) { try RunMatcher.plan(withTool, env: env, cli: nil, on: profile).get() }
    }
}
