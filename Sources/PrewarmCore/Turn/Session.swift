import Foundation

/// A turn's session settings for the Claude Code CLI: where it runs and how it behaves.
/// Applied to a parked spare at hand-off by a `claim_session` control request, or given as
/// flags to a process started for the turn.
public struct SessionSettings: Sendable, Equatable, Codable {
    public var cwd: String?
    public var permissionMode: String?
    public var systemPrompt: String?
    public var appendSystemPrompt: String?
    public var additionalDirectories: [String]?
    /// Environment for the session; a claim may only set the CLI's allow-listed keys.
    public var env: [String: String]?
    /// A session to resume: never on a claimed spare (the CLI refuses), always a cold start.
    public var resume: String?

    enum CodingKeys: String, CodingKey {
        case cwd
        case permissionMode = "permission_mode"
        case systemPrompt = "system_prompt"
        case appendSystemPrompt = "append_system_prompt"
        case additionalDirectories = "additional_directories"
        case env, resume
    }

    public init(
        cwd: String? = nil, permissionMode: String? = nil, systemPrompt: String? = nil, appendSystemPrompt: String? = nil,
        additionalDirectories: [String]? = nil, env: [String: String]? = nil, resume: String? = nil
    ) {
        self.cwd = cwd
        self.permissionMode = permissionMode
        self.systemPrompt = systemPrompt
        self.appendSystemPrompt = appendSystemPrompt
        self.additionalDirectories = additionalDirectories
        self.env = env
        self.resume = resume
    }

    /// These settings, with `defaults` where these say nothing.
    public func over(_ defaults: SessionSettings) -> SessionSettings {
        SessionSettings(
            cwd: cwd ?? defaults.cwd,
            permissionMode: permissionMode ?? defaults.permissionMode,
            systemPrompt: systemPrompt ?? defaults.systemPrompt,
            appendSystemPrompt: appendSystemPrompt ?? defaults.appendSystemPrompt,
            additionalDirectories: additionalDirectories ?? defaults.additionalDirectories,
            env: env ?? defaults.env,
            resume: resume ?? defaults.resume
        )
    }

    /// What a client may get wrong, said before anything starts.
    public func validate() throws(PrewarmError) {
        if let cwd, !cwd.hasPrefix("/") {
            throw PrewarmError(.badJSON, "session.cwd must be an absolute path, not \"\(cwd)\"")
        }
        for directory in additionalDirectories ?? [] where !directory.hasPrefix("/") {
            throw PrewarmError(.badJSON, "session.additional_directories must hold absolute paths, not \"\(directory)\"")
        }
        for key in (env ?? [:]).keys where key.range(of: "^[A-Za-z_][A-Za-z0-9_]*$", options: .regularExpression) == nil {
            throw PrewarmError(.badJSON, "session.env: \"\(key)\" is not an environment variable name")
        }
        if let mode = permissionMode, !Self.permissionModes.contains(mode) {
            throw PrewarmError(.badJSON, "session.permission_mode must be one of \(Self.permissionModes.sorted().joined(separator: ", ")), not \"\(mode)\"")
        }
    }

    public static let permissionModes: Set<String> = ["default", "acceptEdits", "auto", "bypassPermissions", "plan", "dontAsk"]

    /// The `claim_session` control request that binds a parked spare to this session in
    /// `cwd` (the CLI requires one: the session's, the pool's, or one made for the turn).
    public func claimRequest(id: String, cwd: String, sdkMcpServers: [String]? = nil) -> String {
        var request: [String: Any] = ["subtype": "claim_session", "cwd": cwd]
        if let sdkMcpServers { request["sdk_mcp_servers"] = sdkMcpServers }
        if let permissionMode { request["permission_mode"] = permissionMode }
        if let systemPrompt { request["system_prompt"] = [systemPrompt] }  // the CLI takes a list of strings
        if let appendSystemPrompt { request["append_system_prompt"] = appendSystemPrompt }
        if let additionalDirectories { request["additional_directories"] = additionalDirectories }
        if let env, !env.isEmpty { request["env"] = env }
        return Self.line(["type": "control_request", "request_id": id, "request": request])
    }

    /// A `set_model` control request (after a claim: the CLI refuses it before).
    public static func setModelRequest(id: String, model: String) -> String {
        line(["type": "control_request", "request_id": id, "request": ["subtype": "set_model", "model": model] as [String: Any]])
    }

    /// The CLI's flags for these settings, for a process started for one turn.
    public var arguments: [String] {
        var arguments: [String] = []
        if let permissionMode { arguments += ["--permission-mode", permissionMode] }
        if let systemPrompt { arguments += ["--system-prompt", systemPrompt] }
        if let appendSystemPrompt { arguments += ["--append-system-prompt", appendSystemPrompt] }
        for directory in additionalDirectories ?? [] { arguments += ["--add-dir", directory] }
        if let resume { arguments.append("--resume=\(resume)") }
        return arguments
    }

    /// A stream-json user message.
    public static func userLine(prompt: String) -> String {
        line([
            "type": "user", "message": ["role": "user", "content": prompt] as [String: Any], "parent_tool_use_id": NSNull(),
            "session_id": "default",
        ])
    }

    static func line(_ object: [String: Any]) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}

/// `POST /v1/pools/{name}/turns` with `Content-Type: application/json` on a claude pool.
public struct ClaudeTurnRequest: Sendable, Decodable {
    public var prompt: String
    public var session: SessionSettings?

    /// Reads and checks a request body; the error says what is wrong and how to fix it.
    public static func parse(_ data: Data) throws(PrewarmError) -> ClaudeTurnRequest {
        let request: ClaudeTurnRequest
        do {
            request = try JSONDecoder().decode(ClaudeTurnRequest.self, from: data)
        } catch let DecodingError.keyNotFound(key, _) {
            throw PrewarmError(.badJSON, "the body needs \"\(key.stringValue)\": {\"prompt\": \"...\", \"session\": {\"cwd\": \"/abs/dir\"}}")
        } catch let DecodingError.typeMismatch(_, context) {
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw PrewarmError(.badJSON, "\(path.isEmpty ? "the body" : path) has the wrong type: \(context.debugDescription)")
        } catch {
            throw PrewarmError(.badJSON, "the body must be a JSON object {\"prompt\": \"...\", \"session\": {...}}")
        }
        try request.session?.validate()
        return request
    }
}

/// What the CLI answered to a claim.
public enum ClaimOutcome: Sendable, Equatable {
    case accepted(sessionID: String?)
    /// The reason token that starts the CLI's error (`cwd_not_found`, `busy`...), and its message.
    case refused(reason: String, message: String)

    /// Reads a control_response line for `requestID`; nil if the line is something else.
    static func parse(line: Data, requestID: String) -> ClaimOutcome? {
        guard let object = try? JSONSerialization.jsonObject(with: line) as? [String: Any],
            object["type"] as? String == "control_response",
            let response = object["response"] as? [String: Any],
            response["request_id"] as? String == requestID
        else { return nil }
        if response["subtype"] as? String == "success" {
            let inner = response["response"] as? [String: Any]
            return .accepted(sessionID: inner?["session_id"] as? String)
        }
        let message = (response["error"] as? String) ?? "\(response)"
        // The first word, without trailing punctuation: "env_key_not_claimable:KEY" stays whole.
        let word = message.split(separator: " ").first.map(String.init) ?? "refused"
        let reason = String(word.reversed().drop(while: { ":,.;".contains($0) }).reversed())
        return .refused(reason: reason, message: message)
    }
}
