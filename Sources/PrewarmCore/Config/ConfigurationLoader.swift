import Foundation
import TOMLKit

/// Reads and checks `prewarm.toml`. Unknown keys and bad values are refused with a message
/// naming the file, the key and what is expected; nothing is half-applied.
public struct ConfigurationLoader: Sendable {
    /// Where a bare `command` is looked for first: the directory of the `prewarm` executable.
    public var executableDirectory: String?
    /// The daemon's environment (for PATH lookups and `pass_env` checks).
    public var environment: [String: String]
    /// CPUs the daemon may use (affinity and cgroup quota); the default `max_starting` is
    /// half of them, at least 1.
    public var cpus: Int

    public init(
        executableDirectory: String?,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        cpus: Int = Cgroup.cpu().effective
    ) {
        self.executableDirectory = executableDirectory
        self.environment = environment
        self.cpus = cpus
    }

    /// The default `max_starting`: max(1, cpus / 2).
    public var defaultMaxStarting: Int { max(1, cpus / 2) }

    /// The file `serve` reads without `--config`: `config/prewarm.toml` in the working
    /// directory if it exists, else the built-in defaults.
    public func loadDefault(workingDirectory: String = FileManager.default.currentDirectoryPath) throws(ConfigError) -> Configuration {
        let path = (workingDirectory as NSString).appendingPathComponent("config/prewarm.toml")
        if FileManager.default.fileExists(atPath: path) {
            return try load(path: path)
        }
        return try parse(DefaultConfiguration.toml, origin: "built-in defaults", baseDirectory: workingDirectory)
    }

    /// `--config PATH` if given, else the default lookup.
    public func load(path: String?) throws(ConfigError) -> Configuration {
        guard let path else { return try loadDefault() }
        let absolute = Self.absolute(path, base: FileManager.default.currentDirectoryPath)
        let text: String
        do {
            text = try String(contentsOfFile: absolute, encoding: .utf8)
        } catch {
            throw ConfigError(file: absolute, key: nil, message: "cannot read the file (\(Self.describe(error))); check the path given to --config")
        }
        return try parse(text, origin: absolute, baseDirectory: (absolute as NSString).deletingLastPathComponent)
    }

    /// Parses a TOML document; relative paths in it are resolved against `baseDirectory`.
    public func parse(_ text: String, origin: String, baseDirectory: String) throws(ConfigError) -> Configuration {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigError(
                file: origin,
                key: nil,
                message: "not valid TOML at line \(error.source.begin.line), column \(error.source.begin.column): \(error.description)"
            )
        } catch {
            throw ConfigError(file: origin, key: nil, message: "not valid TOML: \(error)")
        }
        var reader = TableReader(table: table, path: "", origin: origin)
        var config = Configuration(pools: [], origin: origin)
        config.stateDirectory = stateDirectory
        config.fingerprintPools.maxStarting = defaultMaxStarting
        config.socket = try reader.string("socket").map { Self.absolute($0, base: baseDirectory) }
        config.socketGroup = try reader.string("socket_group")
        config.allowedUIDs = try reader.intArray("allowed_uids", range: 0...Int(UInt32.max)).map { UInt32($0) }
        config.maxConnectionsPerUID = try reader.int("max_connections_per_uid", range: 1...1_000_000) ?? 256
        config.strictModes = try reader.bool("strict_modes") ?? true
        config.drainTimeout = try reader.seconds("drain_timeout_s", range: 0...86_400) ?? .seconds(30)
        let idle = try reader.seconds("idle_timeout_s", range: 0...86_400) ?? .seconds(60)
        config.idleTimeout = idle == .zero ? nil : idle
        if let memoryTable = try reader.table("memory") {
            config.memory = try parseMemory(memoryTable, origin: origin)
        }
        config.journal = JournalConfig(path: stateDirectory + "/journal.sqlite")
        if let journalTable = try reader.table("journal") {
            config.journal = try parseJournal(journalTable, origin: origin, baseDirectory: baseDirectory)
        }
        if let listen = try reader.string("metrics_listen") {
            guard let address = MetricsListen.parse(listen) else {
                throw ConfigError(
                    file: origin,
                    key: "metrics_listen",
                    message: "\"\(listen)\" is not an address; use \"127.0.0.1:9464\", \":9464\" (loopback) or \"0.0.0.0:9464\" (every interface)"
                )
            }
            config.metricsListen = address
        }
        if let fingerprintTable = try reader.table("fingerprint_pools") {
            var fingerprint = TableReader(table: fingerprintTable, path: "fingerprint_pools.", origin: origin)
            config.fingerprintPools.enabled = try fingerprint.bool("enabled") ?? true
            config.fingerprintPools.spares = try fingerprint.int("spares", range: 0...64) ?? 2
            config.fingerprintPools.idleTTL = try fingerprint.seconds("idle_ttl_s", range: 1...31_536_000) ?? .seconds(600)
            config.fingerprintPools.maxPools = try fingerprint.int("max_pools", range: 1...256) ?? 8
            config.fingerprintPools.dropInTimeout = try fingerprint.seconds("drop_in_timeout_s", range: 1...604_800)
            config.fingerprintPools.resumeSpares = try Self.resumeSpares(&fingerprint)
            config.fingerprintPools.maxNewPoolsPerMinute = try fingerprint.int("max_new_pools_per_minute", range: 0...10_000) ?? 10
            config.fingerprintPools.spareBytes = try fingerprint.int("spare_mib", range: 1...1_048_576).map { $0 << 20 } ?? config.fingerprintPools.spareBytes
            config.fingerprintPools.turnBytes = try fingerprint.int("turn_mib", range: 1...1_048_576).map { $0 << 20 } ?? config.fingerprintPools.turnBytes
            config.fingerprintPools.maxProcesses = try fingerprint.int("max_processes", range: 1...10_000)
            config.fingerprintPools.waitTimeout = try fingerprint.milliseconds("wait_timeout_ms", range: 0...3_600_000)
            config.fingerprintPools.maxWaiting = try fingerprint.int("max_waiting", range: 0...1_000_000)
            config.fingerprintPools.replaceAfter = try fingerprint.milliseconds("replace_after_ms", range: 0...600_000).flatMap { $0 > .zero ? $0 : nil }
            try fingerprint.refuseUnknownKeys()
        }
        let poolTables = try reader.tableArray("pool")
        try reader.refuseUnknownKeys()

        var names = Set<String>()
        for (index, poolTable) in poolTables.enumerated() {
            var pool = try parsePool(poolTable, index: index, origin: origin, baseDirectory: baseDirectory)
            guard names.insert(pool.name).inserted else {
                throw ConfigError(file: origin, key: "pool[\(index)].name", message: "the pool name \"\(pool.name)\" is used twice; names must be unique")
            }
            pool.executable = resolveCommand(pool.command, baseDirectory: baseDirectory)
            // An SDK's bundled CLI that `prewarm sdk install` replaced: the CLI is claude.real.
            if let real = CLIReplacement.realCLI(installedAt: pool.executable) {
                pool.installedAt = pool.executable
                pool.executable = real
            }
            if isDropIn(pool.executable) {
                throw ConfigError(
                    file: origin, key: "pool[\(index)].command",
                    message: "\(pool.executable) is prewarm-claude, the drop-in that hands runs to this daemon: a pool of it would call itself; set command to the real Claude Code CLI"
                )
            }
            config.pools.append(pool)
        }
        if config.pools.isEmpty {
            throw ConfigError(file: origin, key: "pool", message: "no [[pool]] is defined; add at least one [[pool]] with a name and a command")
        }
        return config
    }

    private func parseMemory(_ table: TOMLTable, origin: String) throws(ConfigError) -> MemoryConfig {
        var reader = TableReader(table: table, path: "memory.", origin: origin)
        var memory = MemoryConfig()
        memory.reserve = try reader.int("reserve_mib", range: 0...16_777_216).map { $0 << 20 } ?? memory.reserve
        memory.highWatermark = try reader.fraction("high_watermark") ?? memory.highWatermark
        memory.lowWatermark = try reader.fraction("low_watermark") ?? memory.lowWatermark
        memory.limit = try reader.int("limit_mib", range: 1...16_777_216).map { $0 << 20 }
        memory.enforce = try reader.bool("enforce") ?? true
        try reader.refuseUnknownKeys()
        guard memory.lowWatermark < memory.highWatermark else {
            throw ConfigError(
                file: origin,
                key: "memory.low_watermark",
                message: "low_watermark (\(memory.lowWatermark)) must be below high_watermark (\(memory.highWatermark)), so the pool does not flap"
            )
        }
        return memory
    }

    private func parseJournal(_ table: TOMLTable, origin: String, baseDirectory: String) throws(ConfigError) -> JournalConfig {
        var reader = TableReader(table: table, path: "journal.", origin: origin)
        var journal = JournalConfig(path: stateDirectory + "/journal.sqlite")
        journal.enabled = try reader.bool("enabled") ?? true
        journal.path = try reader.string("path").map { Self.absolute($0, base: baseDirectory) } ?? journal.path
        if let days = try reader.number("max_age_days", range: 0.001...36_500, unit: "days") {
            journal.maxAge = .milliseconds(Int64((days * 86_400_000).rounded()))
        }
        journal.maxRows = try reader.int("max_rows", range: 1...1_000_000_000) ?? journal.maxRows
        try reader.refuseUnknownKeys()
        return journal
    }

    private func parsePool(_ table: TOMLTable, index: Int, origin: String, baseDirectory: String) throws(ConfigError) -> PoolConfig {
        var reader = TableReader(table: table, path: "pool[\(index)].", origin: origin)
        let name = try reader.requiredString("name")
        guard name.range(of: "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", options: .regularExpression) != nil else {
            throw ConfigError(
                file: origin,
                key: "pool[\(index)].name",
                message: "\"\(name)\" is not a valid pool name; use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        }
        reader.path = "pool.\(name)."
        var kind = PoolConfig.Kind.command
        if let value = try reader.string("kind") {
            guard let known = PoolConfig.Kind(rawValue: value) else {
                throw ConfigError(file: origin, key: "\(reader.path)kind", message: "expected \"command\" or \"claude\", found \"\(value)\"")
            }
            kind = known
        }
        let command = kind == .claude ? (try reader.string("command") ?? "claude") : try reader.requiredString("command")
        var pool = PoolConfig(name: name, command: command, executable: command)
        pool.kind = kind
        pool.args = try reader.stringArray("args")
        pool.env = try reader.stringTable("env")
        pool.passEnv = try reader.stringArray("pass_env")
        for key in pool.env.keys.sorted() + pool.passEnv where !Self.isEnvironmentName(key) {
            throw ConfigError(file: origin, key: "\(reader.path)env", message: "\"\(key)\" is not a valid environment variable name")
        }
        pool.cwd = try reader.string("cwd").map { Self.absolute($0, base: baseDirectory) }
        try parseSizing(&reader, into: &pool, origin: origin)
        pool.maxProcessesSetting = try reader.int("max_processes", range: 1...10_000)
        pool.maxStarting = try reader.int("max_starting", range: 1...10_000) ?? defaultMaxStarting
        pool.spareNice = try reader.int("spare_nice", range: 0...19) ?? pool.spareNice
        pool.replaceAfter = try reader.milliseconds("replace_after_ms", range: 0...600_000).flatMap { $0 > .zero ? $0 : nil }
        pool.spareBytes = try reader.int("spare_mib", range: 1...1_048_576).map { $0 << 20 } ?? pool.spareBytes
        pool.turnBytes = try reader.int("turn_mib", range: 1...1_048_576).map { $0 << 20 } ?? pool.turnBytes
        if let whenEmpty = try reader.string("when_empty") {
            guard let value = WhenEmpty(rawValue: whenEmpty) else {
                throw ConfigError(file: origin, key: "\(reader.path)when_empty", message: "expected \"start\", \"wait\" or \"reject\", found \"\(whenEmpty)\"")
            }
            pool.whenEmpty = value
        }
        // A pool that serves runs has no deadline and no count of waiting turns unless the
        // operator sets one: a run waits in order, refused only for memory.
        pool.waitTimeout = try reader.milliseconds("wait_timeout_ms", range: 0...3_600_000) ?? (pool.servesRuns ? nil : .milliseconds(10000))
        pool.maxWaiting = try reader.int("max_waiting", range: 0...1_000_000) ?? (pool.servesRuns ? nil : 64)
        pool.turnTimeout = try reader.seconds("turn_timeout_s", range: 1...604_800) ?? .seconds(600)
        pool.dropInTimeout = try reader.seconds("drop_in_timeout_s", range: 1...604_800)
        pool.maxIdle = try reader.seconds("max_idle_s", range: 1...31_536_000) ?? .seconds(3600)
        pool.maxRequestBytes = try reader.int("max_request_bytes", range: 1...1_073_741_824) ?? 1_048_576
        pool.maxTurnsPerMinute = try reader.int("max_turns_per_minute", range: 1...1_000_000)
        if pool.maxProcesses < pool.spares {
            throw ConfigError(
                file: origin,
                key: "\(reader.path)max_processes",
                message: pool.autoSizing == nil
                    ? "max_processes (\(pool.maxProcesses)) is below spares (\(pool.spares)); raise max_processes or lower spares"
                    : "max_processes (\(pool.maxProcesses)) is below min_spares (\(pool.spares)); raise max_processes or lower min_spares"
            )
        }
        if let maxSpares = pool.autoSizing?.maxSpares, maxSpares > pool.maxProcesses {
            throw ConfigError(
                file: origin,
                key: "\(reader.path)max_spares",
                message: "max_spares (\(maxSpares)) is above max_processes (\(pool.maxProcesses)); raise max_processes or lower max_spares"
            )
        }

        if let readyTable = try reader.table("ready") {
            var ready = TableReader(table: readyTable, path: "\(reader.path)ready.", origin: origin)
            pool.ready.send = try ready.string("send")
            pool.ready.expect = try ready.string("expect")
            pool.ready.timeout = try ready.seconds("timeout_s", range: 1...86_400) ?? .seconds(30)
            try ready.refuseUnknownKeys()
        }
        if let turnTable = try reader.table("turn") {
            var turn = TableReader(table: turnTable, path: "\(reader.path)turn.", origin: origin)
            pool.turn.end = try turn.string("end")
            pool.turn.endType = try turn.string("end_type")
            pool.turn.closeStdin = try turn.bool("close_stdin") ?? false
            if let input = try turn.string("input") {
                guard let format = PoolConfig.InputFormat(rawValue: input) else {
                    throw ConfigError(file: origin, key: "\(turn.path)input", message: "expected \"ndjson\" or \"raw\", found \"\(input)\"")
                }
                pool.turn.input = format
            }
            try turn.refuseUnknownKeys()
        }
        if kind == .claude {
            try applyClaudeDefaults(to: &pool, reader: &reader, origin: origin, baseDirectory: baseDirectory)
        }
        try reader.refuseUnknownKeys()
        if pool.turn.end == nil && pool.turn.endType == nil && !pool.turn.closeStdin {
            throw ConfigError(
                file: origin,
                key: "\(reader.path)turn.end",
                message: "a pool needs [pool.turn] end (the substring of a turn's last line), end_type (the top-level JSON type of its last line) or close_stdin = true (the turn ends when the process exits)"
            )
        }
        return pool
    }

    /// `spares`: a number, or `"auto"` with `min_spares`, `max_spares`, `target_miss`,
    /// `auto_window_s`, `auto_every_s` and `auto_hold_s` (refused with a fixed size).
    private func parseSizing(_ reader: inout TableReader, into pool: inout PoolConfig, origin: String) throws(ConfigError) {
        let autoKeys = ["min_spares", "max_spares", "target_miss", "auto_window_s", "auto_every_s", "auto_hold_s"]
        guard try reader.isWord("spares", "auto") else {
            pool.spares = try reader.int("spares", range: 0...10_000, orWord: "auto") ?? 2
            for key in autoKeys where reader.has(key) {
                throw ConfigError(
                    file: origin, key: "\(reader.path)\(key)",
                    message: "\(key) applies only to a pool that sizes itself; set spares = \"auto\", or remove \(key)"
                )
            }
            return
        }
        var auto = AutoSizing()
        pool.spares = try reader.int("min_spares", range: 0...10_000) ?? AutoSizing.defaultMinSpares
        auto.maxSpares = try reader.int("max_spares", range: 1...10_000)
        if let maxSpares = auto.maxSpares, pool.spares > maxSpares {
            throw ConfigError(
                file: origin, key: "\(reader.path)min_spares",
                message: "min_spares (\(pool.spares)) is above max_spares (\(maxSpares)); lower min_spares or raise max_spares"
            )
        }
        if let miss = try reader.number("target_miss", range: 0...1, unit: "a fraction") {
            guard miss > 0 && miss < 1 else {
                throw ConfigError(
                    file: origin, key: "\(reader.path)target_miss",
                    message: "expected a fraction above 0 and below 1 (the share of turns that may find no idle spare, such as 0.01), found \(miss)"
                )
            }
            auto.targetMiss = miss
        }
        auto.window = try reader.seconds("auto_window_s", range: 1...86_400) ?? auto.window
        auto.every = try reader.seconds("auto_every_s", range: 0.1...3_600) ?? auto.every
        auto.hold = try reader.seconds("auto_hold_s", range: 0...86_400) ?? auto.hold
        if auto.every > auto.window {
            throw ConfigError(
                file: origin, key: "\(reader.path)auto_every_s",
                message: "auto_every_s (\(auto.every.milliseconds / 1000)) is above auto_window_s (\(auto.window.milliseconds / 1000)): each replay would miss turns; lower auto_every_s or raise auto_window_s"
            )
        }
        pool.autoSizing = auto
    }

    /// `kind = "claude"`: the CLI's flags, handshake, end of turn and environment, and the
    /// claim settings, unless the file says otherwise.
    private func applyClaudeDefaults(to pool: inout PoolConfig, reader: inout TableReader, origin: String, baseDirectory: String) throws(ConfigError) {
        let state = stateDirectory + "/" + pool.name
        var claude = PoolConfig.ClaudeSettings(
            claim: try reader.bool("claim") ?? true,
            claimFallback: try reader.bool("claim_fallback") ?? false,
            configDirectory: try reader.string("config_dir").map { Self.absolute($0, base: baseDirectory) } ?? state + "/claude-config",
            parkingDirectory: try reader.string("parking_dir").map { Self.absolute($0, base: baseDirectory) } ?? state + "/parking"
        )
        claude.claimAhead = try reader.bool("claim_ahead") ?? false
        if claude.claimAhead && !claude.claim {
            throw ConfigError(
                file: origin, key: "\(reader.path)claim_ahead",
                message: "claim_ahead claims spares before their turns come, which needs claim = true; remove claim_ahead or set claim = true"
            )
        }
        if let sessionTable = try reader.table("session") {
            var session = TableReader(table: sessionTable, path: "\(reader.path)session.", origin: origin)
            claude.session.cwd = try session.string("cwd").map { Self.absolute($0, base: baseDirectory) }
            claude.session.permissionMode = try session.string("permission_mode")
            claude.session.systemPrompt = try session.string("system_prompt")
            claude.session.appendSystemPrompt = try session.string("append_system_prompt")
            let directories = try session.stringArray("additional_directories").map { Self.absolute($0, base: baseDirectory) }
            claude.session.additionalDirectories = directories.isEmpty ? nil : directories
            let env = try session.stringTable("env")
            claude.session.env = env.isEmpty ? nil : env
            try session.refuseUnknownKeys()
            do {
                try claude.session.validate()
            } catch {
                throw ConfigError(file: origin, key: "\(reader.path)session", message: error.message)
            }
        }
        claude.defaultCwd = claude.session.cwd ?? pool.cwd
        pool.privateDirectories = PoolConfig.PrivateDirectories(
            root: try reader.string("turn_dirs").map { Self.absolute($0, base: baseDirectory) } ?? state + "/turns",
            keep: try reader.bool("keep_turn_dirs") ?? false
        )
        claude.extraArguments = pool.args
        claude.initialize = try reader.bool("initialize") ?? true
        pool.resumeSpares = try Self.resumeSpares(&reader)
        pool.callerPolicy = try Self.callerPolicy(&reader, baseDirectory: baseDirectory)
        pool.universalSpares = try reader.int("universal_spares", range: 0...64) ?? 0
        pool.universalRoot = UniversalSpare.root(stateDirectory: stateDirectory)
        if reader.has("base_args") {
            claude.baseArguments = try reader.stringArray("base_args")
        }
        pool.args = claude.arguments(for: claude.claim ? nil : claude.session)
        if pool.ready.send == nil && pool.ready.expect == nil {
            if claude.initialize {
                pool.ready.send = PoolConfig.ClaudeSettings.initialize
                pool.ready.expect = #""type":"control_response""#
            } else {
                pool.ready.send = PoolConfig.ClaudeSettings.versionProbe
                pool.ready.expect = #""request_id":"prewarm-ready""#
            }
        }
        if pool.turn.end == nil && pool.turn.endType == nil && !pool.turn.closeStdin {
            pool.turn.endType = "result"
        }
        pool.env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = pool.env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] ?? "1"
        pool.env["CLAUDE_CONFIG_DIR"] = claude.configDirectory
        // Parked spares wait in the parking directory; unclaimed ones start where their turns
        // run: the pool's directory, else one of their own.
        pool.cwd = claude.claim ? claude.parkingDirectory : claude.defaultCwd
        pool.claude = claude
    }

    /// `caller_env`, `caller_roots`, `caller_permission_modes`: what callers of another uid may
    /// ask of a turn (CallerPolicy); names of the fixed deny list are refused here too.
    private static func callerPolicy(_ reader: inout TableReader, baseDirectory: String) throws(ConfigError) -> CallerPolicy {
        let env = try reader.stringArray("caller_env")
        if let denied = env.first(where: CallerPolicy.isDenied) {
            throw reader.error("caller_env", "\(denied) is never set by callers of another uid (LD_*, BUN_*, PATH, HOME, NODE_OPTIONS, CLAUDE_CONFIG_DIR, ANTHROPIC_BASE_URL, *_PROXY, NODE_EXTRA_CA_CERTS, SSL_CERT_*); remove it")
        }
        let modes = try reader.stringArray("caller_permission_modes")
        if let unknown = modes.first(where: { !SessionSettings.permissionModes.contains($0) }) {
            throw reader.error("caller_permission_modes", "\(unknown) is not a permission mode (\(SessionSettings.permissionModes.sorted().joined(separator: ", ")))")
        }
        let roots = try reader.stringArray("caller_roots").map { absolute($0, base: baseDirectory) }
        return CallerPolicy(env: Set(env), roots: roots, permissionModes: Set(modes))
    }

    /// Where pools keep their state (a claude pool's CLAUDE_CONFIG_DIR and parking
    /// directory, the journal): `$XDG_STATE_HOME/prewarm`, else `/var/lib/prewarm` for root,
    /// else `~/.local/state/prewarm`.
    public var stateDirectory: String {
        if let state = environment["XDG_STATE_HOME"], state.hasPrefix("/") { return state + "/prewarm" }
        if getuid() == 0 { return "/var/lib/prewarm" }
        return (environment["HOME"] ?? NSHomeDirectory()) + "/.local/state/prewarm"
    }

    /// Whether `executable` is `prewarm-claude` (by name, or the same file as the one next to
    /// `prewarm`, under any name).
    func isDropIn(_ executable: String) -> Bool {
        if (executable as NSString).lastPathComponent == "prewarm-claude" { return true }
        guard let executableDirectory, let dropIn = FileIdentity(path: executableDirectory + "/prewarm-claude"),
            let target = FileIdentity(path: executable)
        else { return false }
        return dropIn.stamp.sameFile(as: target.stamp)
    }

    /// A command with a slash is a path (relative to the file's directory); a bare name is
    /// looked for next to the `prewarm` executable, then on PATH. An unresolved command is
    /// kept as written: its start-ups fail with "command not found", shown in the status.
    public func resolveCommand(_ command: String, baseDirectory: String) -> String {
        if command.contains("/") {
            return Self.absolute(command, base: baseDirectory)
        }
        var candidates: [String] = []
        if let executableDirectory { candidates.append(executableDirectory) }
        candidates += (environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":").map(String.init)
        for directory in candidates where !directory.isEmpty {
            let path = (directory as NSString).appendingPathComponent(command)
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return command
    }

    static func absolute(_ path: String, base: String) -> String {
        let expanded = (path as NSString).expandingTildeInPath
        if expanded.hasPrefix("/") { return (expanded as NSString).standardizingPath }
        return ((base as NSString).appendingPathComponent(expanded) as NSString).standardizingPath
    }

    static func isEnvironmentName(_ name: String) -> Bool {
        name.range(of: "^[A-Za-z_][A-Za-z0-9_]*$", options: .regularExpression) != nil
    }

    static func describe(_ error: any Error) -> String {
        (error as NSError).localizedFailureReason ?? (error as NSError).localizedDescription
    }
}

/// Reads typed values out of one TOML table and remembers which keys were read, so unknown
/// keys can be refused.
private struct TableReader {
    let table: TOMLTable
    var path: String
    let origin: String
    private var known: Set<String> = []

    init(table: TOMLTable, path: String, origin: String) {
        self.table = table
        self.path = path
        self.origin = origin
    }

    func error(_ key: String, _ message: String) -> ConfigError {
        ConfigError(file: origin, key: path + key, message: message)
    }

    private func found(_ value: any TOMLValueConvertible) -> String {
        "a \(value.type)"
    }

    mutating func value(_ key: String) -> (any TOMLValueConvertible)? {
        known.insert(key)
        return table[key]
    }

    mutating func string(_ key: String) throws(ConfigError) -> String? {
        guard let value = value(key) else { return nil }
        guard let string = value.string else { throw error(key, "expected a string, found \(found(value))") }
        return string
    }

    mutating func requiredString(_ key: String) throws(ConfigError) -> String {
        guard let string = try string(key) else { throw error(key, "is required") }
        guard !string.isEmpty else { throw error(key, "must not be empty") }
        return string
    }

    mutating func bool(_ key: String) throws(ConfigError) -> Bool? {
        guard let value = value(key) else { return nil }
        guard let bool = value.bool else { throw error(key, "expected true or false, found \(found(value))") }
        return bool
    }

    /// An integer within `range`; with `word`, the message says that word is taken too.
    mutating func int(_ key: String, range: ClosedRange<Int>, orWord word: String? = nil) throws(ConfigError) -> Int? {
        guard let value = value(key) else { return nil }
        let expected = "an integer from \(range.lowerBound) to \(range.upperBound)" + (word.map { " or \"\($0)\"" } ?? "")
        guard value.type == .int, let int = value.int else {
            if word != nil, let string = value.string { throw error(key, "expected \(expected), found \"\(string)\"") }
            throw error(key, word == nil ? "expected an integer, found \(found(value))" : "expected \(expected), found \(found(value))")
        }
        guard range.contains(int) else { throw error(key, "expected \(expected), found \(int)") }
        return int
    }

    /// Whether the key holds that word (a string); reading it counts as reading the key.
    mutating func isWord(_ key: String, _ word: String) throws(ConfigError) -> Bool {
        value(key)?.string == word
    }

    /// Whether the table has the key (without reading it).
    func has(_ key: String) -> Bool {
        table[key] != nil
    }

    /// A number of seconds, integer or decimal.
    mutating func seconds(_ key: String, range: ClosedRange<Double>) throws(ConfigError) -> Duration? {
        try number(key, range: range, unit: "seconds").map { .milliseconds(Int64(($0 * 1000).rounded())) }
    }

    /// A number (integer or not) within `range`, of `unit` (for the message).
    mutating func number(_ key: String, range: ClosedRange<Double>, unit: String) throws(ConfigError) -> Double? {
        guard let value = value(key) else { return nil }
        let number: Double
        if value.type == .int, let int = value.int {
            number = Double(int)
        } else if value.type == .double, let double = value.double {
            number = double
        } else {
            throw error(key, "expected a number of \(unit), found \(found(value))")
        }
        guard range.contains(number) else {
            throw error(key, "expected \(unit) from \(plain(range.lowerBound)) to \(plain(range.upperBound)), found \(plain(number))")
        }
        return number
    }

    private func plain(_ number: Double) -> String {
        number == number.rounded() && abs(number) < 1e15 ? String(Int(number)) : String(number)
    }

    /// A fraction above 0 and at most 1.
    mutating func fraction(_ key: String) throws(ConfigError) -> Double? {
        guard let value = value(key) else { return nil }
        let number: Double
        if value.type == .double, let double = value.double {
            number = double
        } else if value.type == .int, let int = value.int {
            number = Double(int)
        } else {
            throw error(key, "expected a fraction such as 0.9, found \(found(value))")
        }
        guard number > 0, number <= 1 else { throw error(key, "expected a fraction above 0 and at most 1, found \(number)") }
        return number
    }

    mutating func milliseconds(_ key: String, range: ClosedRange<Int>) throws(ConfigError) -> Duration? {
        try int(key, range: range).map { .milliseconds($0) }
    }

    mutating func stringArray(_ key: String) throws(ConfigError) -> [String] {
        guard let value = value(key) else { return [] }
        guard let array = value.array else { throw error(key, "expected an array of strings, found \(found(value))") }
        var result: [String] = []
        for (index, element) in array.enumerated() {
            guard let string = element.string else {
                throw error("\(key)[\(index)]", "expected a string, found \(found(element))")
            }
            result.append(string)
        }
        return result
    }

    mutating func intArray(_ key: String, range: ClosedRange<Int>) throws(ConfigError) -> [Int] {
        guard let value = value(key) else { return [] }
        guard let array = value.array else { throw error(key, "expected an array of integers, found \(found(value))") }
        var result: [Int] = []
        for (index, element) in array.enumerated() {
            guard element.type == .int, let int = element.int, range.contains(int) else {
                throw error("\(key)[\(index)]", "expected an integer from \(range.lowerBound) to \(range.upperBound)")
            }
            result.append(int)
        }
        return result
    }

    mutating func stringTable(_ key: String) throws(ConfigError) -> [String: String] {
        guard let value = value(key) else { return [:] }
        guard let table = value.table else { throw error(key, "expected a table of strings, found \(found(value))") }
        var result: [String: String] = [:]
        for name in table.keys {
            guard let string = table[name]?.string else {
                throw error("\(key).\(name)", "expected a string")
            }
            result[name] = string
        }
        return result
    }

    mutating func table(_ key: String) throws(ConfigError) -> TOMLTable? {
        guard let value = value(key) else { return nil }
        guard let table = value.table else { throw error(key, "expected a table ([\(path)\(key)]), found \(found(value))") }
        return table
    }

    mutating func tableArray(_ key: String) throws(ConfigError) -> [TOMLTable] {
        guard let value = value(key) else { return [] }
        guard let array = value.array else { throw error(key, "expected an array of tables ([[\(key)]]), found \(found(value))") }
        var result: [TOMLTable] = []
        for (index, element) in array.enumerated() {
            guard let table = element.table else { throw error("\(key)[\(index)]", "expected a table, found \(found(element))") }
            result.append(table)
        }
        return result
    }

    func refuseUnknownKeys() throws(ConfigError) {
        for key in table.keys.sorted() where !known.contains(key) {
            throw error(key, "unknown key; check its spelling against the configuration reference in README.md")
        }
    }
}

/// A configuration that cannot be used: where, which key, and what is expected.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public var file: String
    public var key: String?
    public var message: String

    public init(file: String, key: String?, message: String) {
        self.file = file
        self.key = key
        self.message = message
    }

    public var description: String {
        if let key { return "\(file): \(key): \(message)" }
        return "\(file): \(message)"
    }
}

extension ConfigurationLoader {
    /// `resume_spares`, `resume_spare_ttl_s`, `max_resume_spares` (read even when off, so a
    /// TTL set ahead of turning them on is not refused as unknown).
    fileprivate static func resumeSpares(_ reader: inout TableReader) throws(ConfigError) -> ResumeSpareSettings? {
        let on = try reader.bool("resume_spares") ?? false
        let ttl = try reader.seconds("resume_spare_ttl_s", range: 1...86_400) ?? .seconds(600)
        let maxHeld = try reader.int("max_resume_spares", range: 0...256) ?? 4
        return on ? ResumeSpareSettings(ttl: ttl, maxHeld: maxHeld) : nil
    }
}
