// Agent.swift — the stream-json protocol of prewarm-fake-agent: JSON output,
// the serialized stdout `Writer`, the handling of input lines (initialize
// control requests and user turns) and the idle chatter thread.

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#else
import Darwin
#endif

// MARK: - JSON output

/// A JSON value whose objects keep their keys in the order written, so every
/// output line has a fixed shape with `type` first, like the real CLI's.
enum JSON: ExpressibleByStringInterpolation, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByNilLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    case null
    case bool(Bool)
    case int(Int)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    init(stringLiteral value: String) { self = .string(value) }
    init(integerLiteral value: Int) { self = .int(value) }
    init(booleanLiteral value: Bool) { self = .bool(value) }
    init(nilLiteral: ()) { self = .null }
    init(arrayLiteral elements: JSON...) { self = .array(elements) }
    init(dictionaryLiteral elements: (String, JSON)...) { self = .object(elements) }

    /// An id echoed back from a request: strings and integers are kept, anything else is null.
    init(echoing value: Any?) {
        switch value {
        case let string as String: self = .string(string)
        case let int as Int: self = .int(int)
        default: self = .null
        }
    }

    /// The compact single-line encoding.
    var encoded: String {
        var out = ""
        encode(into: &out)
        return out
    }

    private func encode(into out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let value): out += value ? "true" : "false"
        case .int(let value): out += String(value)
        case .string(let value): JSON.encode(string: value, into: &out)
        case .array(let elements):
            out += "["
            for (index, element) in elements.enumerated() {
                if index > 0 { out += "," }
                element.encode(into: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (index, (key, value)) in members.enumerated() {
                if index > 0 { out += "," }
                JSON.encode(string: key, into: &out)
                out += ":"
                value.encode(into: &out)
            }
            out += "}"
        }
    }

    private static func encode(string: String, into out: inout String) {
        out += "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}

// MARK: - Output

/// Writes `bytes` to `fd` with as few write(2) calls as the kernel allows
/// (one, unless the write is cut short). Returns false with errno set on failure.
func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    bytes.withUnsafeBytes { buffer in
        var offset = 0
        while offset < buffer.count {
            let written = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += written
        }
        return true
    }
}

/// Writes one line to stderr; failures are ignored.
func note(_ message: String) {
    _ = writeAll(STDERR_FILENO, Array((message + "\n").utf8))
}

/// Serializes stdout: every line goes out whole, in one write(2), under a lock
/// shared by the turn code and the chatter thread, so lines never interleave.
/// The same lock guards `turnInProgress`, which silences chatter during turns.
///
/// `@unchecked Sendable`: all mutable state is guarded by `lock`.
final class Writer: @unchecked Sendable {
    private let lock = NSLock()
    private var turnInProgress = false

    /// Writes `value` as one line.
    func send(_ value: JSON) {
        writeLine(Array(value.encoded.utf8))
    }

    /// Writes raw `bytes` as they are, no newline added (a partial last line).
    func writeRaw(_ bytes: [UInt8]) {
        lock.withLock { writeStdout(bytes) }
    }

    /// Writes raw `bytes` plus "\n" as one line (used for the garbage fault).
    func writeLine(_ bytes: [UInt8]) {
        lock.withLock { writeStdout(bytes + [UInt8(ascii: "\n")]) }
    }

    func beginTurn() {
        lock.withLock { turnInProgress = true }
    }

    func endTurn() {
        lock.withLock { turnInProgress = false }
    }

    /// Writes the unrequested idle lines, unless a turn is running.
    func chatter(pid: Int32) {
        lock.withLock {
            guard !turnInProgress else { return }
            let line: JSON = ["type": "system", "subtype": "ui_invalidate", "pid": .int(Int(pid))]
            writeStdout(Array((line.encoded + "\n").utf8))
            note("chatter \(pid)")
        }
    }

    /// A reader that went away ends the program quietly (exit 0); any other
    /// write error is reported and ends it with status 1.
    private func writeStdout(_ bytes: [UInt8]) {
        guard !writeAll(STDOUT_FILENO, bytes) else { return }
        let error = errno
        if error == EPIPE { _exit(0) }
        note("fake-agent: stdout write failed: \(String(cString: strerror(error)))")
        _exit(1)
    }
}

// MARK: - Protocol

/// Handles input lines one at a time on the main thread.
final class Agent {
    private let options: Options
    private let writer: Writer
    private let ballast: MemoryBallast
    private let pid = Int(getpid())
    private let childPID: JSON
    private var sessionID = UUID().uuidString.lowercased()
    private var workingDirectory = FileManager.default.currentDirectoryPath
    private var permissionMode = "default"
    private var turnsServed = 0
    /// With --await-claim: parked until a claim_session request binds it to a session.
    private var claimed = false
    private let parkedAt = monotonicNanoseconds()

    init(options: Options, writer: Writer, ballast: MemoryBallast, childPID: pid_t?) {
        self.options = options
        self.writer = writer
        self.ballast = ballast
        self.childPID = childPID.map { .int(Int($0)) } ?? .null
        if let resume = options.resume { sessionID = resume }
        if let mode = options.permissionMode { permissionMode = mode }
    }

    /// Handles one input line (without its "\n"), received at `receivedAt`
    /// (monotonic nanoseconds). The content is never echoed or logged.
    func handle(line: [UInt8], receivedAt: UInt64, next: () -> [UInt8]? = { nil }) {
        guard line.contains(where: { !isJSONWhitespace($0) }) else { return }
        guard let message = try? JSONSerialization.jsonObject(with: Data(line), options: [.fragmentsAllowed])
        else {
            note("fake-agent: ignoring a non-JSON input line (\(line.count) bytes)")
            return
        }
        guard let object = message as? [String: Any] else { return }
        switch object["type"] as? String {
        case "control_request": answerControlRequest(object)
        case "user":
            if options.awaitClaim && !claimed {
                // As the real CLI: a parked spare serves no turn before its claim.
                note("fake-agent: a user message before claim_session is ignored")
                return
            }
            runTurn(receivedAt: receivedAt, prompt: Self.text(of: object), next: next)
        default: break
        }
    }

    /// The non-JSON lines `--garbage` writes once start-up is done.
    func writeStartupGarbage() {
        writer.writeLine(Array("this is not json {{{".utf8))
        writer.writeLine([UInt8](repeating: UInt8(ascii: "x"), count: 100_000))
    }

    private func isJSONWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D
    }

    // MARK: Control requests

    private func answerControlRequest(_ object: [String: Any]) {
        let requestID = JSON(echoing: object["request_id"])
        let subtype = (object["request"] as? [String: Any])?["subtype"] as? String ?? ""
        let response: JSON
        var claimedNow = false
        if subtype == "initialize" {
            response = [
                "subtype": "success",
                "request_id": requestID,
                "response": [
                    "pid": .int(pid),
                    "commands": [],
                    "output_style": "default",
                    "models": [["value": "fake", "displayName": "Fake"]],
                    "child_pid": childPID,
                ],
            ]
        } else if subtype == "claim_session" {
            (response, claimedNow) = claim(object["request"] as? [String: Any] ?? [:], requestID: requestID)
        } else {
            response = [
                "subtype": "error",
                "request_id": requestID,
                "error": "unsupported subtype: \(subtype)",
            ]
        }
        writer.send(["type": "control_response", "response": response])
        if claimedNow {
            // The real CLI invalidates its UI when claimed: chatter the daemon must drop.
            writer.send(["type": "system", "subtype": "ui_invalidate"])
        }
    }

    /// Environment keys a claim may set (the fake's stand-in for the CLI's allow-list).
    static let claimableEnv: Set<String> = ["CLAUDE_CODE_SESSION_NAME", "PREWARM_TEST_CLAIMABLE"]

    /// claim_session: binds a parked spare to a session (its cwd and permission mode), or
    /// refuses with a reason token first in the message, as the real CLI does.
    private func claim(_ request: [String: Any], requestID: JSON) -> (JSON, Bool) {
        func refuse(_ message: String) -> (JSON, Bool) {
            (["subtype": "error", "request_id": requestID, "error": .string(message)], false)
        }
        guard options.awaitClaim else { return refuse("not_a_spare: this process was not started with --await-claim") }
        guard !claimed else { return refuse("already_claimed: this spare is bound to a session") }
        sleepMilliseconds(options.claimMs)
        guard let cwd = request["cwd"] as? String else {
            return refuse("invalid_request: cwd — Invalid input: expected string, received undefined")
        }
        guard cwd.hasPrefix("/"), FileManager.default.changeCurrentDirectoryPath(cwd) else {
            return refuse("cwd_not_found: \(cwd) does not exist or is not a directory")
        }
        workingDirectory = cwd
        for key in (request["env"] as? [String: Any] ?? [:]).keys.sorted() where !Self.claimableEnv.contains(key) {
            return refuse("env_key_not_claimable:\(key) cannot be set by a claim")
        }
        if let mode = request["permission_mode"] as? String { permissionMode = mode }
        claimed = true
        let parkedMs = Int((monotonicNanoseconds() - parkedAt) / 1_000_000)
        let response: JSON = [
            "subtype": "success",
            "request_id": requestID,
            "response": ["status": "ok", "cwd": .string(workingDirectory), "session_id": .string(sessionID), "parked_ms": .int(parkedMs)],
        ]
        return (response, true)
    }

    // MARK: Turns

    /// The text of a user message (a string, or its text blocks).
    static func text(of object: [String: Any]) -> String {
        let content = (object["message"] as? [String: Any])?["content"]
        if let text = content as? String { return text }
        let blocks = content as? [[String: Any]] ?? []
        return blocks.compactMap { $0["text"] as? String }.joined(separator: " ")
    }

    /// The word in a prompt that makes the fake ask its host for a tool permission, as the
    /// real CLI does with `--permission-prompt-tool stdio`.
    static let toolTrigger = "PREWARM_TOOL_USE"
    static let partialExitTrigger = "PREWARM_PARTIAL_EXIT"
    static let longAnswerTrigger = "PREWARM_LONG_ANSWER"
    static let partialHangTrigger = "PREWARM_PARTIAL_HANG"

    /// Sends a `can_use_tool` control request and reads stdin until the host answers it;
    /// returns whether the tool was allowed (false at end of input).
    private func askPermission(next: () -> [UInt8]?) -> Bool {
        let requestID = "prewarm-fake-tool-\(turnsServed)"
        writer.send([
            "type": "control_request",
            "request_id": .string(requestID),
            "request": ["subtype": "can_use_tool", "tool_name": "Bash", "input": ["command": "echo prewarm"], "permission_suggestions": []],
        ])
        while let line = next() {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
                object["type"] as? String == "control_response",
                let response = object["response"] as? [String: Any],
                response["request_id"] as? String == requestID
            else { continue }
            let answer = response["response"] as? [String: Any]
            return response["subtype"] as? String == "success" && answer?["behavior"] as? String == "allow"
        }
        exit(0)
    }

    private func runTurn(receivedAt: UInt64, prompt: String = "", next: () -> [UInt8]? = { nil }) {
        writer.beginTurn()
        defer { writer.endTurn() }
        turnsServed += 1
        ballast.allocate(mib: options.turnMiB)

        writer.send(systemInitLine())
        // A prompt can ask for the hang too (a caller whose command line must stay the CLI's own).
        if options.hangTurn || prompt.contains("PREWARM_HANG_TURN") { hangForever() }
        // A last line without its newline, then the process's end: its own exit (status 5), or
        // a hang until it is killed. Whatever it wrote must reach the caller whole.
        if prompt.contains(Self.partialExitTrigger) || prompt.contains(Self.partialHangTrigger) {
            writer.writeRaw(Array(#"{"type":"assistant","partial":"no newline"#.utf8))
            if prompt.contains(Self.partialHangTrigger) {
                // Said with a file in its directory, so that a test kills it after the write.
                _ = FileManager.default.createFile(atPath: "prewarm-partial-written-\(pid)", contents: nil)
                hangForever()
            }
            _exit(5)
        }
        if options.garbage { writeTurnGarbage() }

        var text = ""
        if prompt.contains(Self.toolTrigger) {
            let allowed = askPermission(next: next)
            text += allowed ? "tool allowed: prewarm " : "tool denied "
        }
        sleepMilliseconds(options.ttftMs)
        burnCPU(milliseconds: options.ttftCPUMs, clock: CLOCK_THREAD_CPUTIME_ID)
        // A long answer, still being written a few seconds on (a reader that leaves early).
        let long = prompt.contains(Self.longAnswerTrigger)
        for index in 0..<(long ? 3000 : options.tokens) {
            if index > 0 { sleepMilliseconds(long ? 1 : options.tokenMs) }
            let token = "tok\(index) "
            text += token
            writer.send(tokenLine(token))
            if options.crashMidTurn { crashMidTurn() }
        }
        if options.crashMidTurn { crashMidTurn() }  // only reached with --tokens 0

        writer.send(assistantLine(text))
        let durationMs = Int((monotonicNanoseconds() - receivedAt) / 1_000_000)
        writer.send(resultLine(text, durationMs: durationMs))
    }

    private func writeTurnGarbage() {
        writer.writeLine(Array("garbage line: not json <<<".utf8))
        writer.writeLine([0xFF, 0xFE, 0x00])
    }

    private func crashMidTurn() -> Never {
        note("fake-agent: simulated crash mid-turn")
        _exit(3)
    }

    private func systemInitLine() -> JSON {
        [
            "type": "system",
            "subtype": "init",
            "pid": .int(pid),
            "cwd": .string(workingDirectory),
            "session_id": .string(sessionID),
            "permissionMode": .string(permissionMode),
            "model": "fake",
            "tools": [],
            "turns_served": .int(turnsServed),
            "child_pid": childPID,
        ]
    }

    private func tokenLine(_ token: String) -> JSON {
        [
            "type": "stream_event",
            "event": [
                "type": "content_block_delta",
                "index": 0,
                "delta": ["type": "text_delta", "text": .string(token)],
            ],
            "session_id": .string(sessionID),
        ]
    }

    private func assistantLine(_ text: String) -> JSON {
        [
            "type": "assistant",
            "message": [
                "id": "msg_fake_\(turnsServed)",
                "type": "message",
                "role": "assistant",
                "model": "fake",
                "content": [["type": "text", "text": .string(text)]],
            ],
            "session_id": .string(sessionID),
        ]
    }

    private func resultLine(_ text: String, durationMs: Int) -> JSON {
        [
            "type": "result",
            "subtype": "success",
            "is_error": false,
            "pid": .int(pid),
            "turns_served": .int(turnsServed),
            "duration_ms": .int(durationMs),
            "num_turns": 1,
            "result": .string(text),
            "session_id": .string(sessionID),
        ]
    }
}

// MARK: - Chatter

/// Starts a background thread that, every `intervalMs`, writes the idle
/// chatter lines (skipped while a turn is running).
func startChatter(writer: Writer, intervalMs: Int) {
    let pid = getpid()
    Thread.detachNewThread {
        while true {
            sleepMilliseconds(intervalMs)
            writer.chatter(pid: pid)
        }
    }
}
