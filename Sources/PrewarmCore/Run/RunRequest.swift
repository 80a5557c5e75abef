import Foundation

/// What `prewarm-claude` sends the daemon: the CLI's command line as the SDK gave it, the
/// caller's working directory and environment, and the real CLI it would run otherwise.
/// It travels base64-encoded JSON in the `Prewarm-Run` header of `POST /v1/runs` (the
/// upgrade request can carry no body).
public struct RunDescription: Sendable, Codable, Equatable {
    /// The arguments after the executable's name.
    public var argv: [String]
    public var cwd: String
    public var env: [String: String]
    /// The real CLI the caller would run without Prewarm (its fallback), if it has one.
    public var cli: String?
    /// How prewarm-claude came to be run in the CLI's place: `sdk-install` (started as an
    /// SDK's bundled CLI, `prewarm sdk install`), `path-install` (as `claude` from a PATH
    /// directory); nil when named by its own name. Counted per pool (`runs_via`); any other
    /// value is dropped at decoding.
    public var via: String?

    /// The values of `via` the daemon counts.
    public static let viaValues: Set<String> = ["sdk-install", "path-install"]

    public init(argv: [String], cwd: String, env: [String: String], cli: String? = nil, via: String? = nil) {
        self.argv = argv
        self.cwd = cwd
        self.env = env
        self.cli = cli
        self.via = via
    }

    /// Reads the header's value; the error says what is wrong.
    public static func decode(header: String) throws(PrewarmError) -> RunDescription {
        guard let data = Data(base64Encoded: header) else {
            throw PrewarmError(.badRequest, "Prewarm-Run must be base64-encoded JSON {\"argv\": [...], \"cwd\": \"/abs\", \"env\": {...}}")
        }
        var description: RunDescription
        do {
            description = try JSONDecoder().decode(RunDescription.self, from: data)
        } catch {
            throw PrewarmError(.badRequest, "Prewarm-Run is not a run description {\"argv\": [...], \"cwd\": \"/abs\", \"env\": {...}}: \(error)")
        }
        guard description.cwd.hasPrefix("/") else {
            throw PrewarmError(.badRequest, "Prewarm-Run: cwd must be an absolute path, not \"\(description.cwd)\"")
        }
        if let via = description.via, !viaValues.contains(via) { description.via = nil }
        return description
    }

    public func encodedHeader() -> String {
        let data = (try? JSONEncoder().encode(self)) ?? Data()
        return data.base64EncodedString()
    }
}

/// A Claude command line taken apart the way a spare can be matched to it: the part fixed
/// when a process starts (host), the part a claim and control requests can apply at hand-off
/// (session), and what no spare can serve (cold reasons). docs/claude-cli.md §2.2.
public struct RunShape: Sendable, Equatable {
    /// The host options, by canonical name, with values normalized for comparison (tool
    /// lists as sorted sets, JSON with sorted keys); `--include-partial-messages` is apart.
    public var host: [String: [String]] = [:]
    /// The host options' words, in the caller's order: a fingerprint pool starts its spares
    /// with them.
    public var hostWords: [String] = []
    /// `--include-partial-messages`.
    public var partialMessages = false
    /// The session flags given (`--system-prompt`...): a claim can set them, not unset them.
    public var sessionFlags: Set<String> = []
    public var session = SessionSettings()
    /// `--model`: `set_model` right after the claim.
    public var model: String?
    /// `--mcp-config` naming only the SDK's in-process servers: the claim's `sdk_mcp_servers`.
    public var sdkMcpServers: [String]?
    /// Why no spare can serve it (a resume, a prompt on the command line...); empty: it can.
    public var coldReasons: [String] = []

    /// Options a claim or a control request applies at hand-off.
    public static let sessionOptions: Set<String> = [
        "--system-prompt", "--append-system-prompt", "--permission-mode", "--add-dir", "--model", "--mcp-config",
    ]
    /// Options no spare can serve: the claim refuses a resume, and the rest change what the
    /// process is from its first instant.
    static let coldOptions: [String: String] = [
        "--resume": "it resumes a session (--resume)", "--continue": "it continues a session (--continue)",
        "--fork-session": "--fork-session", "--resume-session-at": "--resume-session-at", "--resume-drops-turn": "--resume-drops-turn",
        "--session-id": "it names its session id (--session-id)", "--await-initialize": "--await-initialize",
        "--await-claim": "--await-claim", "--sdk-url": "--sdk-url", "--teleport": "--teleport", "--remote": "--remote",
        "--from-pr": "--from-pr", "--worktree": "--worktree", "--cloud": "--cloud", "--help": "--help", "--version": "--version",
        "--bg-spare": "--bg-spare", "--preload": "--preload", "--init-only": "--init-only", "--maintenance": "--maintenance",
    ]
    /// Options whose values are tool lists a caller may spell as one comma-joined word or many
    /// (split by `toolList`, the CLI's own rule). `--betas` is not one: each word is a header.
    static let listOptions: Set<String> = ["--allowedTools", "--disallowedTools", "--tools"]
    /// Options whose values the CLI reads as JSON (when they parse: else a path).
    static let jsonOptions: Set<String> = ["--mcp-config", "--settings", "--json-schema", "--agents"]

    public init() {}

    /// Takes `arguments` apart; `cwd` is the caller's, `env` its environment.
    public init(arguments: [String], cwd: String?, env: [String: String]) {
        let line = ClaudeCommandLine(arguments)
        if !line.unknown.isEmpty { coldReasons.append("options the CLI does not know: \(line.unknown.joined(separator: " "))") }
        if !line.operands.isEmpty { coldReasons.append("it carries its prompt on the command line") }
        session.cwd = cwd
        for option in line.options {
            if let reason = Self.coldOptions[option.name] {
                coldReasons.append(reason)
                continue
            }
            if option.name == "--include-partial-messages" {
                partialMessages = true
                continue
            }
            if option.name == "--mcp-config", let value = option.value, let names = Self.sdkServerNames(value) {
                sdkMcpServers = (sdkMcpServers ?? []) + names
                sessionFlags.insert(option.name)
                continue
            }
            if Self.sessionOptions.contains(option.name), option.name != "--mcp-config" {
                sessionFlags.insert(option.name)
                let value = option.value ?? ""
                switch option.name {
                case "--system-prompt": session.systemPrompt = value
                case "--append-system-prompt": session.appendSystemPrompt = value
                case "--permission-mode": session.permissionMode = value
                case "--add-dir": session.additionalDirectories = (session.additionalDirectories ?? []) + [value]
                case "--model": model = value
                default: break
                }
                continue
            }
            hostWords += option.words
            host[option.name, default: []] += Self.normalized(option)
        }
        for (name, values) in host where ClaudeCommandLine.kinds[name] == .boolean || values.allSatisfy(\.isEmpty) {
            host[name] = [""]  // a boolean given twice is given
        }
        if session.permissionMode == "bypassPermissions", !host.keys.contains("--dangerously-skip-permissions") {
            // A claim may set bypassPermissions only on a process started allowing it.
            host["--allow-dangerously-skip-permissions"] = [""]
            if !hostWords.contains("--allow-dangerously-skip-permissions") { hostWords.append("--allow-dangerously-skip-permissions") }
        }
        let claimable = env.filter { HostEnvironment.claimable.contains($0.key) }
        session.env = claimable.isEmpty ? nil : claimable
    }

    /// The values of one option, as the CLI reads them: two spellings normalize alike only
    /// where the CLI reads them alike (docs/claude-cli.md §9).
    ///
    /// - Tool lists: split by the CLI's rule (`toolList`), each rule's text kept, in order.
    /// - JSON values: the same text without the white space between tokens (the CLI parses
    ///   them; key order is kept: `--settings`' temporary file and `--mcp-config`'s merge
    ///   follow it). A value that is not JSON (a path) is kept as it is.
    /// - Everything else, as written.
    static func normalized(_ option: ClaudeCommandLine.Option) -> [String] {
        guard let value = option.value else { return [""] }
        if listOptions.contains(option.name) { return toolList(value) }
        if jsonOptions.contains(option.name), let compact = compactJSON(value) { return [compact] }
        return [value]
    }

    /// The CLI's split of a tool-list word (its `Qf`, 2.1.332): a comma or a space (U+0020
    /// only) ends a rule unless inside parentheses (a flag, not a depth: `(` sets it, `)`
    /// clears it, escapes are not looked at); each rule trimmed; empty ones dropped; order
    /// and duplicates kept.
    public static func toolList(_ word: String) -> [String] {
        var rules: [String] = []
        var current = ""
        var inside = false
        func end() {
            let rule = current.trimmingCharacters(in: .whitespacesAndNewlines)
            if !rule.isEmpty { rules.append(rule) }
            current = ""
        }
        for character in word {
            switch character {
            case "(":
                inside = true
                current.append(character)
            case ")":
                inside = false
                current.append(character)
            case ",", " ":
                if inside { current.append(character) } else { end() }
            default:
                // Leading white space of a rule is dropped (as the CLI's `r||s.trim()`).
                if !current.isEmpty || !character.isWhitespace { current.append(character) }
            }
        }
        end()
        return rules
    }

    /// `text` without white space between JSON tokens (strings untouched), if it is JSON;
    /// nil if it is not (the CLI then reads a path).
    public static func compactJSON(_ text: String) -> String? {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard (try? JSONSerialization.jsonObject(with: Data(trimmed.utf8), options: [.fragmentsAllowed])) != nil else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(trimmed.utf8.count)
        var inString = false
        var escaped = false
        for byte in trimmed.utf8 {
            if inString {
                out.append(byte)
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r"): continue
            case UInt8(ascii: "\""):
                inString = true
                out.append(byte)
            default: out.append(byte)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The server names of an `--mcp-config` that holds only the SDK's in-process servers
    /// (`{"mcpServers": {"calc": {"type": "sdk", ...}}}`); nil when it holds any other, or
    /// is a path.
    static func sdkServerNames(_ value: String) -> [String]? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(value.utf8)) as? [String: Any],
            object.count == 1, let servers = object["mcpServers"] as? [String: Any], !servers.isEmpty
        else { return nil }
        for server in servers.values {
            guard (server as? [String: Any])?["type"] as? String == "sdk" else { return nil }
        }
        return servers.keys.sorted()
    }

    /// The host options that distinguish it, names only (no values: they may be secrets).
    public var hostSummary: [String] {
        host.keys.sorted() + (partialMessages ? ["--include-partial-messages"] : [])
    }
}

/// Which environment variables decide what a CLI process is (README, "Use it from your SDK
/// code"). Counted: the CLI's own families and the model's transport; everything else
/// (`PATH`, `HOME`, `PWD`, `TERM`, `TRACEPARENT`...) is ignored and the spare keeps the
/// daemon's value: the CLI's tools see the spare's environment, not the caller's.
public enum HostEnvironment {
    static let prefixes = ["ANTHROPIC_", "CLAUDE_", "AWS_", "GOOGLE_", "VERTEX_", "AZURE_", "OTEL_", "DISABLE_", "ENABLE_", "MCP_"]
    static let names: Set<String> = [
        "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR", "MAX_THINKING_TOKENS", "API_TIMEOUT_MS", "CLOUD_ML_REGION",
        "NODE_OPTIONS", "USE_BUILTIN_RIPGREP", "NO_PROXY", "no_proxy",
    ]
    /// A claim sets these (allow-listed by the CLI's `claim_session`).
    public static let claimable: Set<String> = ["CLAUDE_CODE_OAUTH_TOKEN", "CLAUDE_CODE_SESSION_ACCESS_TOKEN", "CLAUDE_CODE_HOST_SESSION_ID"]
    /// The SDKs' markers and the daemon's own: they change telemetry, headers and the
    /// transcript's `entrypoint` field, never an answer, and are constant per SDK install.
    static let ignored: Set<String> = [
        "CLAUDE_CODE_ENTRYPOINT", "CLAUDE_AGENT_SDK_VERSION", "CLAUDE_AGENT_SDK_CLIENT_APP", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
        "CLAUDECODE", "CLAUDE_CODE_SDK_READS_SESSION_STATE",
    ]
    /// Makes the CLI emit `session_state_changed` frames (`sdk_host_only`), which the
    /// Python SDK waits for before it closes stdin.
    public static let readsSessionState = "CLAUDE_CODE_SDK_READS_SESSION_STATE"

    /// Whether `name` decides what a process is (`extra`: a pool's own `env` and `pass_env`).
    static func counts(_ name: String, extra: Set<String> = []) -> Bool {
        if ignored.contains(name) || claimable.contains(name) || name.hasPrefix("PREWARM_") { return false }
        if extra.contains(name) || names.contains(name) { return true }
        if name.hasSuffix("_PROXY") || name.hasSuffix("_proxy") { return true }
        return prefixes.contains { name.hasPrefix($0) }
    }

    /// The counted part of `env`; an unset `CLAUDE_CONFIG_DIR` is `$HOME/.claude`.
    public static func of(_ env: [String: String], extra: Set<String> = []) -> [String: String] {
        var result = env.filter { counts($0.key, extra: extra) }
        if result["CLAUDE_CONFIG_DIR"] == nil, let home = env["HOME"] { result["CLAUDE_CONFIG_DIR"] = home + "/.claude" }
        return result
    }

    /// What of a caller's environment the daemon reads to route and start a run: the host
    /// variables (by prefix, suffix or name), the claimable ones, the SDKs' markers, `HOME`
    /// (an unset `CLAUDE_CONFIG_DIR` is `$HOME/.claude`) and `extra` (the pools' own `env`
    /// and `pass_env` names). `prewarm-claude` sends only these (`GET /v1/runs/environment`):
    /// the rest of the caller's environment never leaves its process.
    public static func routing(extra: Set<String>) -> RunEnvironment {
        RunEnvironment(
            names: names.union(claimable).union(ignored).union(extra).union(["HOME"]).subtracting(["NOTIFY_SOCKET"]).sorted(),
            prefixes: prefixes, suffixes: ["_PROXY", "_proxy"]
        )
    }

    /// Whether the caller's environment asks for session-state frames.
    static func wantsSessionState(_ env: [String: String]) -> Bool {
        env.contains { $0.key.uppercased() == readsSessionState && !$0.value.isEmpty && $0.value != "0" }
    }
}

/// `GET /v1/runs/environment`: the variables a run description carries, by name, prefix or
/// suffix (HostEnvironment.routing).
public struct RunEnvironment: Codable, Sendable, Equatable {
    public var names: [String]
    public var prefixes: [String]
    public var suffixes: [String]

    /// Whether a variable of this name is sent.
    public func sends(_ name: String) -> Bool {
        names.contains(name) || prefixes.contains { name.hasPrefix($0) } || suffixes.contains { name.hasSuffix($0) }
    }
}
