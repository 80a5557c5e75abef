/// The daemon's configuration, as read from `prewarm.toml` (or the built-in defaults).
public struct Configuration: Sendable, Equatable {
    /// The socket path from the file (`socket`); the command line and environment come first.
    public var socket: String?
    /// Group that may use the socket (mode 0660).
    public var socketGroup: String?
    /// With entries, the socket is 0666 and peers are checked by SO_PEERCRED.
    public var allowedUIDs: [UInt32]
    /// `max_connections_per_uid`: connections one uid other than the daemon's and root may
    /// hold at once (a stranger cannot use up the daemon's descriptors).
    public var maxConnectionsPerUID = 256
    /// `strict_modes`: the directories that hold the socket and the spares' files are checked
    /// like OpenSSH's StrictModes (TrustedDirectory); false only where every user of them is
    /// trusted (a pod's shared emptyDir).
    public var strictModes = true
    /// How long busy turns may run on after SIGTERM.
    public var drainTimeout: Duration
    /// `idle_timeout_s`: a connection idle between requests, or stuck in an incomplete one,
    /// is closed after this (never one with a turn in progress); nil: never.
    public var idleTimeout: Duration? = .seconds(60)
    /// `[memory]`: the budget the pools are sized from.
    public var memory: MemoryConfig
    /// `[journal]`: the SQLite record of turns and start-ups.
    public var journal: JournalConfig
    /// `metrics_listen`: a loopback TCP address serving `/metrics` only (off when nil).
    public var metricsListen: MetricsListen?
    /// `[fingerprint_pools]`: pools made on demand for drop-in runs no pool serves.
    public var fingerprintPools = FingerprintPools()
    /// Where pools keep their state (`$XDG_STATE_HOME/prewarm`...): fingerprint pools' too.
    public var stateDirectory: String = "/tmp/prewarm-state"
    public var pools: [PoolConfig]
    /// Where the configuration came from, for messages ("built-in defaults" or a path).
    public var origin: String

    public init(
        socket: String? = nil,
        socketGroup: String? = nil,
        allowedUIDs: [UInt32] = [],
        drainTimeout: Duration = .seconds(30),
        memory: MemoryConfig = MemoryConfig(),
        journal: JournalConfig = JournalConfig(path: "journal.sqlite"),
        metricsListen: MetricsListen? = nil,
        pools: [PoolConfig],
        origin: String
    ) {
        self.memory = memory
        self.journal = journal
        self.metricsListen = metricsListen
        self.socket = socket
        self.socketGroup = socketGroup
        self.allowedUIDs = allowedUIDs
        self.drainTimeout = drainTimeout
        self.pools = pools
        self.origin = origin
    }

    public func pool(named name: String) -> PoolConfig? {
        pools.first { $0.name == name }
    }
}

/// `[fingerprint_pools]`: a drop-in run that no configured pool serves runs cold and, when
/// `enabled`, makes a pool for its command line and environment, so the next one is warm.
public struct FingerprintPools: Sendable, Equatable {
    public var enabled: Bool
    public var spares: Int
    /// A fingerprint pool with no run for this long is removed.
    public var idleTTL: Duration
    /// At most this many; a new one replaces the one unused the longest.
    public var maxPools: Int
    /// Their `drop_in_timeout_s`.
    public var dropInTimeout: Duration?
    /// Their `max_starting` (the default's: half the CPUs).
    public var maxStarting = 1
    /// Their `resume_spares`, `resume_spare_ttl_s`, `max_resume_spares`; nil: off.
    public var resumeSpares: ResumeSpareSettings?
    /// At most this many fingerprint pools start spares in a minute (`max_new_pools_per_minute`):
    /// command lines that change on every run make pools that keep cold runs' counts only.
    public var maxNewPoolsPerMinute = 10
    /// Their `spare_mib`, `turn_mib` (memory estimates until measured).
    public var spareBytes = 300 << 20
    public var turnBytes = 500 << 20
    /// Their `max_processes`, `wait_timeout_ms`, `max_waiting`; nil: none (memory decides).
    public var maxProcesses: Int?
    public var waitTimeout: Duration?
    public var maxWaiting: Int?
    /// Their `replace_after_ms`; nil: replacements start at once.
    public var replaceAfter: Duration?

    public init(
        enabled: Bool = true, spares: Int = 2, idleTTL: Duration = .seconds(600), maxPools: Int = 8, maxStarting: Int = 1, dropInTimeout: Duration? = nil
    ) {
        self.maxStarting = maxStarting
        self.enabled = enabled
        self.spares = spares
        self.idleTTL = idleTTL
        self.maxPools = maxPools
        self.dropInTimeout = dropInTimeout
    }
}

/// The configured pool a fingerprint pool's runs came nearest to, and what differed.
public struct NearestPool: Sendable, Equatable, Codable {
    public var pool: String
    public var differences: [String]

    public init(pool: String, differences: [String]) {
        self.pool = pool
        self.differences = differences
    }

    enum CodingKeys: String, CodingKey {
        case pool
        case differences = "names"
    }
}

/// `[memory]`: how much of the cgroup's memory the pools may use, and when to back off.
public struct MemoryConfig: Sendable, Equatable {
    /// Kept free for everything that is not a pool's process (`reserve_mib`).
    public var reserve: Int
    /// Fraction of the limit above which start-ups stop and idle spares are shed.
    public var highWatermark: Double
    /// Fraction of the limit below which start-ups resume.
    public var lowWatermark: Double
    /// A limit for hosts without a cgroup limit (`limit_mib`); the lower of it and the
    /// cgroup's limit applies.
    public var limit: Int?
    /// With false, memory is measured and reported but nothing is refused or shed.
    public var enforce: Bool

    public init(reserve: Int = 256 << 20, highWatermark: Double = 0.9, lowWatermark: Double = 0.8, limit: Int? = nil, enforce: Bool = true) {
        self.reserve = reserve
        self.highWatermark = highWatermark
        self.lowWatermark = lowWatermark
        self.limit = limit
        self.enforce = enforce
    }
}

/// `[journal]`: every turn and every start-up, in SQLite, for `stats` and `advise`.
public struct JournalConfig: Sendable, Equatable {
    public var enabled: Bool
    /// The database file (`path`); default `$XDG_STATE_HOME/prewarm/journal.sqlite`.
    public var path: String
    /// Rows older than this are deleted as the daemon runs (`max_age_days`).
    public var maxAge: Duration
    /// At most this many rows per table are kept, the newest (`max_rows`).
    public var maxRows: Int

    public init(enabled: Bool = true, path: String, maxAge: Duration = .seconds(30 * 86_400), maxRows: Int = 1_000_000) {
        self.enabled = enabled
        self.path = path
        self.maxAge = maxAge
        self.maxRows = maxRows
    }
}

/// `metrics_listen = "HOST:PORT"` (or `":PORT"`, loopback): Prometheus scrapes over TCP.
public struct MetricsListen: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// True for 127.0.0.0/8, ::1 and localhost.
    public var isLoopback: Bool { host == "localhost" || host == "::1" || host.hasPrefix("127.") }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Parses `HOST:PORT`, `[V6]:PORT`, `:PORT` or `PORT`; nil when it is none of these.
    public static func parse(_ text: String) -> MetricsListen? {
        var host = "127.0.0.1"
        var portText = Substring(text)
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
        } else if let colon = text.lastIndex(of: ":") {
            let name = text[..<colon]
            if !name.isEmpty { host = String(name) }
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, !host.contains(" "), let port = Int(portText), (0...65_535).contains(port) else { return nil }
        return MetricsListen(host: host, port: port)
    }
}

/// One `[[pool]]`: a command, how to tell it is ready, how a turn ends, and how many to keep.
public struct PoolConfig: Sendable, Equatable {
    public var name: String
    /// The command as written in the file.
    public var command: String
    /// The resolved absolute path of the executable.
    public var executable: String
    public var args: [String]
    public var env: [String: String]
    /// Names of the daemon's environment variables passed through (for secrets).
    public var passEnv: [String]
    public var cwd: String?
    /// With no `cwd`, each process runs in a fresh directory of its own (0700) made under
    /// this one, removed when the process is gone (unless `keep`): no two turns ever share a
    /// working directory. Set for claude pools.
    public var privateDirectories: PrivateDirectories?

    public struct PrivateDirectories: Sendable, Equatable {
        public var root: String
        public var keep: Bool

        public init(root: String, keep: Bool = false) {
            self.root = root
            self.keep = keep
        }
    }
    /// Idle spares to keep; with `autoSizing`, the floor (`min_spares`).
    public var spares: Int
    /// `spares = "auto"`: the pool sizes itself within `spares` and `max_spares`; nil: fixed.
    public var autoSizing: AutoSizing?
    /// `nil` means the default: for a pool that serves runs (kind "claude", fingerprint
    /// pools) none but memory (`unlimitedProcesses`); else spares + 8, which follows the
    /// spares on a resize, for an auto pool max_spares + 8, or `AutoSizing.defaultMaxProcesses`.
    public var maxProcessesSetting: Int?
    public var maxStarting: Int
    /// Spares boot this much lower in CPU priority (nice) than the daemon and its turns, until
    /// a turn takes one or waits for it (`spare_nice`; 0: the same). See `StartupPriority`.
    public var spareNice: Int = 10
    /// `replace_after_ms`: replacements of spares that turns took wait for those turns to
    /// end, at most this long (a waiting turn starts them at once); nil: at once.
    public var replaceAfter: Duration?
    /// Starting estimates of one process's memory, until measured (`spare_mib`, `turn_mib`).
    public var spareBytes: Int
    public var turnBytes: Int
    public var whenEmpty: WhenEmpty
    /// The longest a turn waits for a process (`wait_timeout_ms`); nil: no deadline (a pool
    /// that serves runs, where the operator set none: a run waits in order, refused only for
    /// memory).
    public var waitTimeout: Duration?
    /// The most turns waiting at once (`max_waiting`); nil: no count (memory decides).
    public var maxWaiting: Int?
    public var turnTimeout: Duration
    /// A drop-in run's limit (`drop_in_timeout_s`); nil: none (it lasts as long as its CLI).
    public var dropInTimeout: Duration?
    public var maxIdle: Duration
    public var maxRequestBytes: Int
    /// At most this many turns a minute per caller uid (`max_turns_per_minute`); nil: no limit.
    public var maxTurnsPerMinute: Int?
    public var ready: Readiness
    public var turn: TurnEnd
    /// `kind`: a generic command, or the Claude Code CLI (with its defaults and claims).
    public var kind: Kind = .command
    /// For `kind = "claude"`.
    public var claude: ClaudeSettings?
    /// A pool the daemon made for drop-in runs: what distinguishes it (option and variable
    /// names, never values). nil for the pools of the file.
    public var fingerprint: [String]?
    /// A fingerprint pool: the configured pool nearest to its runs, and what differs from
    /// it (option and variable names, never values; `RunMatcher.differences`).
    public var nearest: NearestPool?
    /// A fingerprint pool's own state directory (`<state>/fingerprint/NAME`), removed with it.
    public var fingerprintDirectory: String?
    /// The command as configured when `prewarm sdk install` replaced it with the drop-in
    /// (an SDK's `_bundled/claude`): `executable` is then its `claude.real`. nil otherwise.
    public var installedAt: String?
    /// `resume_spares` (claude pools): when a turn of a session ends, a process resuming it
    /// is started for its next turn, kept `resume_spare_ttl_s`, at most `max_resume_spares`.
    public var resumeSpares: ResumeSpareSettings?
    /// `caller_env`, `caller_roots`, `caller_permission_modes` (claude pools): what callers of
    /// another uid may ask of a turn's session (CallerPolicy).
    public var callerPolicy = CallerPolicy()
    /// A process started with these settings is killed at once when retired unused, not
    /// let exit on its stdin's end (a resume spare: a resuming CLI that exits writes to its
    /// session's transcript). Set by the pool, not a configuration key.
    public var retireAtOnce = false
    /// This process is claimed ahead with this claim once ready (a spare of a `claim_ahead`
    /// pool, set by the pool as it starts one).
    public var aheadClaim: AheadClaim?
    /// `universal_spares` (claude pools): CLIs parked with `--bg-spare` for turns no spare
    /// serves; 0 when off, or when the CLI does not support the mode (`universalSupported`).
    public var universalSpares = 0
    /// Whether the CLI knows `--bg-spare` (found out when the pool starts).
    public var universalSupported = true
    /// Where universal spares' sockets go (`UniversalSpare.root`, in the state directory).
    public var universalRoot = "/var/lib/prewarm/bg"

    public enum Kind: String, Sendable, Equatable, CaseIterable {
        case command, claude
    }

    /// A Claude Code CLI pool: the default session, and whether spares are claimed.
    public struct ClaudeSettings: Sendable, Equatable {
        /// Spares start with `--await-claim` in `parkingDirectory` and each turn's session is
        /// applied at hand-off by a `claim_session` request.
        public var claim: Bool
        /// A refused claim falls back to a cold start with the same settings (else 409).
        public var claimFallback: Bool
        /// The pool's session; a turn's own settings go over it.
        public var session: SessionSettings
        /// `CLAUDE_CONFIG_DIR` of the pool's processes.
        public var configDirectory: String
        /// Where claimed spares wait: an empty directory of their own, for parked spares only.
        public var parkingDirectory: String
        /// The working directory of a turn that names none: `[pool.session] cwd`, else the
        /// pool's `cwd`; nil: a fresh directory of the turn's own (`privateDirectories`).
        public var defaultCwd: String?
        /// `args` as written in the file (after the CLI's own flags).
        public var extraArguments: [String] = []
        /// The CLI knows `--await-claim` (found out when the pool starts).
        public var claimSupported = true
        /// The pool sends its spares an `initialize` (`initialize`, default true). False: a
        /// spare is ready when it answers `get_binary_version`, and a drop-in run's own
        /// `initialize` is the process's first, so every field of it applies.
        public var initialize = true
        /// The CLI's stream-json flags, before `args` (`base_args`).
        public var baseArguments = Self.streamArguments
        /// `claim_ahead`: a pool whose turns repeat one claim has its next spares claimed with
        /// it as they start (`AheadClaim`).
        public var claimAhead = false

        public init(claim: Bool = true, claimFallback: Bool = false, session: SessionSettings = SessionSettings(), configDirectory: String, parkingDirectory: String) {
            self.claim = claim
            self.claimFallback = claimFallback
            self.session = session
            self.configDirectory = configDirectory
            self.parkingDirectory = parkingDirectory
        }

        /// The CLI's stream-json flags (partial messages, so first tokens stream; permission
        /// prompts over stdio, so an upstream can answer them).
        public static let streamArguments = [
            "--output-format", "stream-json", "--verbose", "--input-format", "stream-json", "--include-partial-messages",
            "--permission-prompt-tool", "stdio",
        ]
        /// The CLI's arguments for a pool process: parked (`--await-claim`), or bound to a
        /// session from the start.
        public func arguments(for session: SessionSettings?) -> [String] {
            if let session { return baseArguments + session.arguments + extraArguments }
            return baseArguments + ["--await-claim"] + extraArguments
        }

        public static let initialize =
            #"{"type":"control_request","request_id":"prewarm-init","request":{"subtype":"initialize","hooks":null}}"#
        /// Readiness without an `initialize`: the CLI answers this once it has booted.
        public static let versionProbe =
            #"{"type":"control_request","request_id":"prewarm-ready","request":{"subtype":"get_binary_version"}}"#
    }

    public struct Readiness: Sendable, Equatable {
        /// A line written to stdin at start-up.
        public var send: String?
        /// A substring that a stdout line must contain; without it, a spawned process is ready.
        public var expect: String?
        public var timeout: Duration

        public init(send: String? = nil, expect: String? = nil, timeout: Duration = .seconds(30)) {
            self.send = send
            self.expect = expect
            self.timeout = timeout
        }
    }

    public struct TurnEnd: Sendable, Equatable {
        /// A substring; the stdout line containing it is the turn's last.
        public var end: String?
        /// A JSON type: the stdout line whose top-level `type` is this is the turn's last
        /// (the line is parsed, since the substring can appear inside tool output).
        public var endType: String?
        /// Close stdin right after the request, for CLIs that read to EOF.
        public var closeStdin: Bool
        /// How the request body is checked: `ndjson` (every line JSON) or `raw`.
        public var input: InputFormat

        public init(end: String? = nil, endType: String? = nil, closeStdin: Bool = false, input: InputFormat = .ndjson) {
            self.end = end
            self.endType = endType
            self.closeStdin = closeStdin
            self.input = input
        }

        /// The substring a candidate last line contains: `end`, else `"type":"<end_type>"`.
        public var marker: String? {
            end ?? endType.map { #""type":"\#($0)""# }
        }
    }

    public enum InputFormat: String, Sendable, Equatable, CaseIterable {
        case ndjson, raw
    }

    public init(
        name: String,
        command: String,
        executable: String,
        args: [String] = [],
        env: [String: String] = [:],
        passEnv: [String] = [],
        cwd: String? = nil,
        spares: Int = 2,
        maxProcesses: Int? = nil,
        maxStarting: Int = 1,
        spareBytes: Int = 300 << 20,
        turnBytes: Int = 500 << 20,
        whenEmpty: WhenEmpty = .wait,
        waitTimeout: Duration? = .milliseconds(10000),
        maxWaiting: Int? = 64,
        turnTimeout: Duration = .seconds(600),
        maxIdle: Duration = .seconds(3600),
        maxRequestBytes: Int = 1_048_576,
        ready: Readiness = Readiness(),
        turn: TurnEnd = TurnEnd()
    ) {
        self.name = name
        self.command = command
        self.executable = executable
        self.args = args
        self.env = env
        self.passEnv = passEnv
        self.cwd = cwd
        self.spares = spares
        self.maxProcessesSetting = maxProcesses
        self.maxStarting = maxStarting
        self.spareBytes = spareBytes
        self.turnBytes = turnBytes
        self.whenEmpty = whenEmpty
        self.waitTimeout = waitTimeout
        self.maxWaiting = maxWaiting
        self.turnTimeout = turnTimeout
        self.maxIdle = maxIdle
        self.maxRequestBytes = maxRequestBytes
        self.ready = ready
        self.turn = turn
    }

    /// A claude pool's settings for a process started for one turn with `session`: its cwd,
    /// its flags (`--resume` included), its environment.
    public func forSession(_ session: SessionSettings) -> PoolConfig {
        guard let claude else { return self }
        var config = self
        config.args = claude.arguments(for: session)
        // No directory named: a fresh one of the process's own (privateDirectories).
        config.cwd = session.cwd ?? claude.defaultCwd
        for (key, value) in session.env ?? [:] { config.env[key] = value }
        return config
    }

    /// Whether a spare of this claude pool (started without a claim) serves `session`.
    public func sparesServe(_ session: SessionSettings) -> Bool {
        guard let claude else { return true }
        return session.resume == nil && session == claude.session
    }

    /// The child's environment: only the pool's `env`, its `pass_env` names, PATH, HOME and
    /// LANG from the daemon's; never NOTIFY_SOCKET (it is the daemon's, for systemd).
    public func childEnvironment(from daemon: [String: String]) -> [String: String] {
        var result: [String: String] = [:]
        for name in ["PATH", "HOME", "LANG"] + passEnv where name != "NOTIFY_SOCKET" {
            if let value = daemon[name] { result[name] = value }
        }
        for (name, value) in env where name != "NOTIFY_SOCKET" {
            result[name] = value
        }
        return result
    }

    /// spares + starting + busy at most (PHP-FPM's `pm.max_children`). A pool that serves
    /// runs (a claude pool, a fingerprint pool) holds a run's process for as long as its
    /// session lasts, minutes: a count would refuse sessions memory has room for, so unless
    /// the operator sets one only the memory budget limits it.
    public var maxProcesses: Int {
        if let maxProcessesSetting { return maxProcessesSetting }
        if servesRuns { return Self.unlimitedProcesses }
        guard let autoSizing else { return spares + 8 }
        return autoSizing.maxSpares.map { $0 + 8 } ?? AutoSizing.defaultMaxProcesses
    }

    /// A claude pool (configured or a fingerprint pool): it serves drop-in runs and
    /// long-lived sessions, limited by memory rather than by counts.
    public var servesRuns: Bool { kind == .claude }

    /// `max_processes` where none is set on a pool that serves runs: more than memory ever
    /// allows, so memory is the limit.
    public static let unlimitedProcesses = 1 << 20

    /// The state machine's view of this pool.
    public var machineSettings: PoolStateMachine.Settings {
        PoolStateMachine.Settings(
            spares: spares,
            maxProcesses: maxProcesses,
            maxStarting: maxStarting,
            whenEmpty: whenEmpty,
            maxWaiting: maxWaiting ?? Int.max,
            waitTimeout: waitTimeout,
            maxIdle: maxIdle,
            autoSizing: autoSizing,
            resume: resumeSpares,
            universalSpares: universalSupported ? universalSpares : 0,
            replaceAfter: replaceAfter
        )
    }
}

extension Configuration {
    /// The directories that hold the daemon's secrets or its spares' files, each with what it
    /// is for: the state directory, and each claude pool's configuration, parking and turn
    /// directories and its universal spares' root. Checked (and made) before the daemon
    /// serves, and again before a reload is taken (TrustedDirectory).
    public var trustedDirectories: [(path: String, purpose: String)] {
        var result: [(String, String)] = [(stateDirectory, "the state directory ($XDG_STATE_HOME/prewarm, /var/lib/prewarm for root)")]
        for pool in pools {
            guard let claude = pool.claude else { continue }
            result.append((claude.configDirectory, "pool \(pool.name)'s CLAUDE_CONFIG_DIR (config_dir)"))
            if claude.claim { result.append((claude.parkingDirectory, "pool \(pool.name)'s parking directory (parking_dir)")) }
            if let root = pool.privateDirectories?.root { result.append((root, "pool \(pool.name)'s turn directories (turn_dirs)")) }
            if pool.universalSpares > 0 { result.append((pool.universalRoot, "pool \(pool.name)'s universal spares' sockets")) }
        }
        var seen = Set<String>()
        return result.filter { seen.insert($0.0).inserted }
    }

    /// Makes and checks every trusted directory; the first that fails is the error.
    public func prepareTrustedDirectories() throws(PrewarmError) {
        for (path, purpose) in trustedDirectories {
            try TrustedDirectory.prepare(path, purpose: purpose)
        }
    }
}
