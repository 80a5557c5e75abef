import Foundation
import Testing

@testable import PrewarmCore

@Suite("Configuration")
struct ConfigurationTests {
    let loader = ConfigurationLoader(executableDirectory: "/nonexistent", environment: ["PATH": "/usr/bin:/bin"], cpus: 2)

    static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// The built-in defaults are config/prewarm.toml, byte for byte.
    @Test func builtInDefaultsEqualTheFile() throws {
        let file = try String(contentsOfFile: Self.repositoryRoot + "/config/prewarm.toml", encoding: .utf8)
        #expect(file == DefaultConfiguration.toml)
        let config = try loader.parse(DefaultConfiguration.toml, origin: "built-in", baseDirectory: "/tmp")
        #expect(config.pools.map(\.name) == ["demo"])
        #expect(config.pools[0].spares == 2)
        #expect(config.pools[0].maxProcesses == 10)
        #expect(config.pools[0].ready.expect == #""type":"control_response""#)
    }

    func parse(_ text: String) throws(ConfigError) -> Configuration {
        try loader.parse(text, origin: "/etc/prewarm.toml", baseDirectory: "/etc")
    }

    /// Defaults of a minimal pool are those the README lists.
    @Test func poolDefaults() throws {
        let config = try parse(
            """
            [[pool]]
            name = "p"
            command = "./bin/agent"
            [pool.turn]
            end = "result"
            """
        )
        let pool = config.pools[0]
        #expect(pool.executable == "/etc/bin/agent")  // relative to the file's directory
        #expect(pool.spares == 2 && pool.maxProcesses == 10 && pool.maxStarting == 1)
        #expect(pool.whenEmpty == .wait && pool.waitTimeout == .milliseconds(10000) && pool.maxWaiting == 64)
        #expect(pool.turnTimeout == .seconds(600) && pool.maxIdle == .seconds(3600) && pool.maxRequestBytes == 1_048_576)
        #expect(pool.ready.timeout == .seconds(30) && pool.turn.closeStdin == false)
        #expect(config.drainTimeout == .seconds(30) && config.allowedUIDs.isEmpty)
        #expect(pool.spareBytes == 300 << 20 && pool.turnBytes == 500 << 20)
        #expect(config.memory == MemoryConfig(reserve: 256 << 20, highWatermark: 0.9, lowWatermark: 0.8, limit: nil, enforce: true))
    }

    /// The trust keys: their defaults, their values, and a caller_env name of the fixed deny
    /// list or an unknown permission mode refused at load with the key.
    @Test func trustSettings() throws {
        let claude = """
            [[pool]]
            name = "c"
            kind = "claude"
            command = "/bin/claude"
            """
        let defaults = try parse(claude)
        #expect(defaults.maxConnectionsPerUID == 256 && defaults.strictModes)
        #expect(defaults.pools[0].callerPolicy == CallerPolicy())
        #expect(defaults.pools[0].universalRoot == defaults.stateDirectory + "/bg")
        let set = try parse(
            "max_connections_per_uid = 8\nstrict_modes = false\n" + claude
                + "\ncaller_env = [\"CLAUDE_CODE_OAUTH_TOKEN\"]\ncaller_roots = [\"work\"]\ncaller_permission_modes = [\"plan\"]\n"
        )
        #expect(set.maxConnectionsPerUID == 8 && !set.strictModes)
        #expect(set.pools[0].callerPolicy == CallerPolicy(env: ["CLAUDE_CODE_OAUTH_TOKEN"], roots: ["/etc/work"], permissionModes: ["plan"]))
        for (line, key) in [
            ("caller_env = [\"LD_PRELOAD\"]", "caller_env"), ("caller_env = [\"HTTPS_PROXY\"]", "caller_env"),
            ("caller_permission_modes = [\"yolo\"]", "caller_permission_modes"),
        ] {
            #expect(throws: ConfigError.self) { try parse(claude + "\n" + line + "\n") }
            do {
                _ = try parse(claude + "\n" + line + "\n")
            } catch {
                #expect("\(error)".contains(key), "\(error)")
            }
        }
        #expect(throws: ConfigError.self) { try parse("max_connections_per_uid = 0\n" + claude) }
    }

    /// `[memory]` and the per-pool estimates; max_starting defaults to half the CPUs.
    @Test func memorySettings() throws {
        let eightCPUs = ConfigurationLoader(executableDirectory: nil, environment: [:], cpus: 8)
        let config = try eightCPUs.parse(
            """
            [memory]
            reserve_mib = 128
            high_watermark = 0.95
            low_watermark = 0.85
            limit_mib = 2048
            enforce = false
            [[pool]]
            name = "p"
            command = "/bin/x"
            spare_mib = 200
            turn_mib = 400
            [pool.turn]
            end = "r"
            """,
            origin: "t", baseDirectory: "/"
        )
        #expect(config.memory == MemoryConfig(reserve: 128 << 20, highWatermark: 0.95, lowWatermark: 0.85, limit: 2048 << 20, enforce: false))
        #expect(config.pools[0].spareBytes == 200 << 20 && config.pools[0].turnBytes == 400 << 20)
        #expect(config.pools[0].maxStarting == 4)
    }

    /// `[journal]`, `metrics_listen` and `max_turns_per_minute`; the journal's default path
    /// is in the state directory.
    @Test func operatorSettings() throws {
        let state = ConfigurationLoader(executableDirectory: nil, environment: ["XDG_STATE_HOME": "/srv/state"], cpus: 2)
        let pool = "[[pool]]\nname = \"p\"\ncommand = \"/bin/x\"\nmax_turns_per_minute = 30\n[pool.turn]\nend = \"r\"\n"
        let defaults = try state.parse(pool, origin: "t", baseDirectory: "/etc/prewarm")
        #expect(defaults.journal == JournalConfig(enabled: true, path: "/srv/state/prewarm/journal.sqlite", maxAge: .seconds(30 * 86_400), maxRows: 1_000_000))
        #expect(defaults.metricsListen == nil)
        #expect(defaults.pools[0].maxTurnsPerMinute == 30)
        #expect(defaults.pools[0].spareNice == 10)
        #expect(try state.parse(pool.replacingOccurrences(of: "max_turns", with: "spare_nice = 0\nmax_turns"), origin: "t", baseDirectory: "/").pools[0].spareNice == 0)
        #expect {
            try state.parse(pool.replacingOccurrences(of: "max_turns", with: "spare_nice = 20\nmax_turns"), origin: "t", baseDirectory: "/")
        } throws: { error in
            (error as! ConfigError).key == "pool.p.spare_nice"
        }
        let set = try state.parse(
            "metrics_listen = \":9464\"\n[journal]\npath = \"j.sqlite\"\nmax_age_days = 0.5\nmax_rows = 10\nenabled = false\n" + pool,
            origin: "t", baseDirectory: "/etc/prewarm"
        )
        #expect(set.journal == JournalConfig(enabled: false, path: "/etc/prewarm/j.sqlite", maxAge: .seconds(43_200), maxRows: 10))
        #expect(set.metricsListen == MetricsListen(host: "127.0.0.1", port: 9464))
        #expect(set.metricsListen?.isLoopback == true)
        #expect(MetricsListen.parse("0.0.0.0:9464") == MetricsListen(host: "0.0.0.0", port: 9464))
        #expect(MetricsListen.parse("[::1]:80") == MetricsListen(host: "::1", port: 80))
        #expect(MetricsListen.parse("9464") == MetricsListen(host: "127.0.0.1", port: 9464))
        #expect(MetricsListen.parse("host:99999") == nil)
        #expect(MetricsListen.parse("a b:1") == nil)
        #expect {
            try state.parse("metrics_listen = \"here\"\n" + pool, origin: "t", baseDirectory: "/")
        } throws: { error in
            (error as! ConfigError).key == "metrics_listen"
        }
        #expect {
            try state.parse("[journal]\nmax_age_days = 0\n" + pool, origin: "t", baseDirectory: "/")
        } throws: { error in
            let error = error as! ConfigError
            return error.key == "journal.max_age_days" && error.message.contains("expected days from")
        }
    }

    /// Bad `[memory]` values are refused with what is expected.
    @Test(arguments: [
        ("high_watermark = 1.5", "memory.high_watermark", "at most 1"),
        ("low_watermark = 0.95", "memory.low_watermark", "below high_watermark"),
        ("reserve_mib = -1", "memory.reserve_mib", "from 0"),
        ("limitmib = 3", "memory.limitmib", "unknown key"),
    ])
    func badMemoryValueRefused(line: String, key: String, expected: String) {
        let text = "[memory]\n\(line)\n[[pool]]\nname = \"p\"\ncommand = \"x\"\n[pool.turn]\nend = \"r\"\n"
        #expect {
            try parse(text)
        } throws: { error in
            let error = error as! ConfigError
            return error.key == key && error.message.contains(expected)
        }
    }

    /// Unknown keys are refused, naming the file and the key.
    @Test func unknownKeyRefused() {
        #expect {
            try parse(
                """
                [[pool]]
                name = "p"
                command = "x"
                sparez = 3
                """
            )
        } throws: { error in
            let error = error as! ConfigError
            return error.file == "/etc/prewarm.toml" && error.key == "pool.p.sparez" && error.message.contains("unknown key")
        }
    }

    /// Bad values are refused with what is expected.
    @Test(arguments: [
        ("spares = -1", "pool.p.spares", "from 0"),
        ("spares = \"two\"", "pool.p.spares", "expected an integer"),
        ("when_empty = \"maybe\"", "pool.p.when_empty", "\"start\", \"wait\" or \"reject\""),
        ("max_processes = 1\nspares = 3", "pool.p.max_processes", "below spares"),
    ])
    func badValueRefused(line: String, key: String, expected: String) {
        let text = "[[pool]]\nname = \"p\"\ncommand = \"x\"\n\(line)\n[pool.turn]\nend = \"r\"\n"
        #expect {
            try parse(text)
        } throws: { error in
            let error = error as! ConfigError
            return error.key == key && error.message.contains(expected)
        }
    }

    /// Broken TOML is refused with its line.
    @Test func brokenTOML() {
        #expect {
            try parse("[[pool]\nname = ")
        } throws: { error in
            (error as! ConfigError).message.contains("line")
        }
    }

    /// A pool needs a way to end its turns.
    @Test func turnEndRequired() {
        #expect(throws: ConfigError.self) {
            try parse("[[pool]]\nname = \"p\"\ncommand = \"x\"\n")
        }
    }

    /// config/claude.toml: a claude pool with the CLI's flags, handshake, end of turn,
    /// environment and parking directory filled in.
    @Test func claudeConfiguration() throws {
        let loader = ConfigurationLoader(executableDirectory: nil, environment: ["PATH": "/usr/bin", "XDG_STATE_HOME": "/var/state"], cpus: 2)
        let config = try loader.load(path: Self.repositoryRoot + "/config/claude.toml")
        let pool = try #require(config.pool(named: "claude"))
        #expect(pool.kind == .claude)
        let claude = try #require(pool.claude)
        #expect(claude.claim && !claude.claimFallback)
        #expect(pool.args.contains("--await-claim") && pool.args.contains("--include-partial-messages"))
        #expect(pool.args.starts(with: ["--output-format", "stream-json"]))
        #expect(pool.turn.endType == "result" && pool.turn.marker == #""type":"result""#)
        #expect(pool.ready.expect == #""type":"control_response""#)
        #expect(pool.env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1")
        #expect(pool.env["CLAUDE_CONFIG_DIR"] == "/var/state/prewarm/claude/claude-config")
        #expect(pool.cwd == "/var/state/prewarm/claude/parking")
        #expect(claude.session.permissionMode == "default")
        // A turn with its own session, started cold: bound by flags, no --await-claim.
        let cold = pool.forSession(SessionSettings(cwd: "/srv/work", permissionMode: "plan", resume: "abc"))
        #expect(!cold.args.contains("--await-claim"))
        #expect(cold.args.contains("--resume=abc") && cold.args.contains("plan") && cold.cwd == "/srv/work")
    }

    /// Session settings from a request are checked before anything starts.
    @Test func sessionValidation() throws {
        #expect(throws: PrewarmError.self) { try ClaudeTurnRequest.parse(Data(#"{"prompt":"x","session":{"cwd":"relative"}}"#.utf8)) }
        #expect(throws: PrewarmError.self) { try ClaudeTurnRequest.parse(Data(#"{"session":{}}"#.utf8)) }
        #expect(throws: PrewarmError.self) { try ClaudeTurnRequest.parse(Data(#"{"prompt":"x","session":{"permission_mode":"yolo"}}"#.utf8)) }
        let request = try ClaudeTurnRequest.parse(Data(#"{"prompt":"hi","session":{"cwd":"/w","env":{"FOO":"1"}}}"#.utf8))
        let claim = request.session!.claimRequest(id: "c1", cwd: "/w")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(claim.utf8)) as? [String: Any])
        #expect(object["type"] as? String == "control_request" && object["request_id"] as? String == "c1")
        let inner = try #require(object["request"] as? [String: Any])
        #expect(inner["subtype"] as? String == "claim_session" && inner["cwd"] as? String == "/w")
        #expect(ClaimOutcome.parse(line: Data(#"{"type":"control_response","response":{"subtype":"error","request_id":"c1","error":"cwd_not_found: /w does not exist"}}"#.utf8), requestID: "c1") == .refused(reason: "cwd_not_found", message: "cwd_not_found: /w does not exist"))
        #expect(ClaimOutcome.parse(line: Data(#"{"type":"control_response","response":{"subtype":"success","request_id":"c2"}}"#.utf8), requestID: "c1") == nil)
    }
}
