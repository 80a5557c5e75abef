/// What a print-mode caller (`claude -p PROMPT [--output-format text|json|stream-json]
/// [--verbose] [--include-partial-messages] ...`) gets from a spare that ran the prompt in
/// stream-json mode (`--output-format stream-json --verbose --input-format stream-json`, the
/// prompt as one user message, then stdin closed): the bytes and the exit status the CLI itself
/// would have written and exited with in print mode. Pure: the spare's stdout bytes in (any
/// chunking), the caller's stdout bytes out; at the end, the spare's exit in, the caller's
/// remaining stdout, its stderr and its exit status out.
///
/// The rules, recorded from the real CLI (2.1.332, `Tests/PrewarmTests/Fixtures/print/`) and read
/// in its print-mode code (the text printer, `runHeadless`'s end):
/// - stream-json (with `--verbose`): the spare's lines as they are; without
///   `--include-partial-messages`, minus `stream_event` lines and `system/status` "requesting"
///   lines, and `result` lines without `begun_message_ids` (a spare started with the flag
///   serves a caller without it). Control frames (the daemon's own) are never the caller's.
/// - json: at the end, the last message, which must be the `result`, as its line, without
///   `model_usage_since_last_result` (print mode's json never has it), and a newline. With
///   `--verbose`: every message line (the CLI's `n9` filter: no control frames, no
///   `stream_event`, none of the host-only `system` subtypes) as one JSON array on one line;
///   `system/init` without the `lifecycle_wakeup_source_v1` capability (only a stream-json
///   output advertises it).
/// - text: at each turn's `result`, `result` and a newline (none added if it ends with one) on
///   success, or a fixed text with no newline: `Execution error`, `Error: Reached max turns
///   (N)`, `Error: Exceeded USD budget (X)` (N and X as given on the command line, as
///   JavaScript prints numbers), `Error: ` and the first error for
///   `error_max_structured_output_retries`. An empty successful result is not printed at the
///   turn's end; at exit it is (a newline) if nothing else was. A second result is set apart
///   by a blank line.
/// - text and json: no `result` as the last message → `Error: No messages returned from query`
///   on stderr and exit 1.
/// - Exit status: the spare's (stream-json spare and print-mode CLI exit alike: 0 on success,
///   1 after an error result, 0 after SIGINT — which ends the turn with an
///   `error_during_execution` result); killed by signal N: 128 + N.
/// - Anything the spare writes that is not a JSON line (none was seen) reaches the caller as
///   written, a last line without its newline included.
public struct PrintConversion: Sendable {
    public enum Format: String, Sendable {
        case text, json
        case streamJSON = "stream-json"
    }

    /// The caller's limits as its CLI prints them in text mode (JavaScript number text:
    /// `--max-budget-usd 0.00000001` prints `1e-8`). See `PrintRun.javaScriptNumber`.
    public struct Limits: Sendable, Equatable {
        public var maxTurns: String?
        public var maxBudgetUSD: String?

        public init(maxTurns: String? = nil, maxBudgetUSD: String? = nil) {
            self.maxTurns = maxTurns
            self.maxBudgetUSD = maxBudgetUSD
        }
    }

    public let format: Format
    public let verbose: Bool
    public let partialMessages: Bool
    public let limits: Limits
    /// The caller's stdout and stderr are terminals (text mode cleans what it prints for a
    /// terminal, and copies an error to a terminal stderr when stdout is not one).
    public let stdoutIsTerminal: Bool
    public let stderrIsTerminal: Bool

    private var pending: [UInt8] = []
    private var stderr: [UInt8] = []
    /// Index of the last message line that counts as the run's last message (`Fs` in the CLI).
    private var lastMessage: Message?
    private var lineNumber = 0
    // json --verbose: the messages so far, as they will be printed.
    private var messages: [[UInt8]] = []
    // text: the printer's state.
    private var printed = 0
    private var lastPrinted: Int?
    private var endsWithNewline = true
    /// The spare's `result` line has come: its turn is over (its stdin may close).
    public private(set) var sawResult = false

    struct Message: Sendable {
        var line: Int
        var bytes: [UInt8]
        var value: JSONText
    }

    public init(
        format: Format, verbose: Bool, partialMessages: Bool, limits: Limits = Limits(), stdoutIsTerminal: Bool = false,
        stderrIsTerminal: Bool = false
    ) {
        self.format = format
        self.verbose = verbose
        self.partialMessages = partialMessages
        self.limits = limits
        self.stdoutIsTerminal = stdoutIsTerminal
        self.stderrIsTerminal = stderrIsTerminal
    }

    /// Spare stdout bytes in (any chunking); caller stdout bytes out (possibly empty).
    public mutating func consume(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var start = 0
        while let newline = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) {
            if pending.isEmpty {
                line(Array(bytes[start...newline]), into: &out)
            } else {
                pending += bytes[start...newline]
                let whole = pending
                pending = []
                line(whole, into: &out)
            }
            start = newline + 1
        }
        pending += bytes[start...]
        return out
    }

    /// The spare's end: its exit status (nil if killed) or the signal that killed it; the
    /// caller's remaining stdout, its stderr and its exit status.
    public mutating func finish(exitStatus: Int32?, signal: Int32?) -> (stdout: [UInt8], stderr: [UInt8], status: Int32) {
        var out: [UInt8] = []
        if !pending.isEmpty {
            let last = pending
            pending = []
            line(last, into: &out)
        }
        if let signal {
            // The caller's CLI would have been killed with it: nothing more is written.
            return (out, stderr, 128 + signal)
        }
        var status = exitStatus ?? 1
        guard format != .streamJSON else { return (out, stderr, status) }
        guard let last = lastMessage, last.value["type"]?.string == "result" else {
            if status == 0 {
                // With a non-zero exit the spare's own stderr says why; the CLI would have
                // stopped there too.
                stderr += Array("Error: No messages returned from query\n".utf8)
                status = 1
            }
            return (out, stderr, status)
        }
        switch format {
        case .json where verbose:
            out += [UInt8(ascii: "[")]
            for (index, message) in messages.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                out += message
            }
            out += Array("]\n".utf8)
        case .json:
            out += Self.jsonResult(last.bytes, last.value) + [UInt8(ascii: "\n")]
        default:
            if last.line != lastPrinted, printed == 0 || !Self.isEmptySuccess(last.value) {
                print(last, into: &out)
            }
        }
        return (out, stderr, status)
    }

    // MARK: - Lines

    private mutating func line(_ bytes: [UInt8], into out: inout [UInt8]) {
        lineNumber += 1
        let hasNewline = bytes.last == UInt8(ascii: "\n")
        let body = hasNewline ? Array(bytes.dropLast()) : bytes
        guard let value = JSONText.parse(body), case .object = value else {
            // Not a message: written by the process as it is, unless it is a message cut short
            // (the process died mid-line), which only a stream-json caller would have seen.
            if format == .streamJSON || body.first != UInt8(ascii: "{") { out += bytes }
            return
        }
        let type = value["type"]?.string
        let subtype = value["subtype"]?.string
        if type == "result" { sawResult = true }
        if type == "control_request" || type == "control_response" || type == "control_cancel_request" { return }
        var body2 = body
        if !partialMessages {
            if type == "stream_event" { return }
            if type == "system", subtype == "status", value["status"]?.string == "requesting" { return }
            if type == "result", value["begun_message_ids"] != nil {
                body2 = value.removingMember("begun_message_ids", from: body)
            }
        }
        switch format {
        case .streamJSON:
            out += body2
            if hasNewline { out.append(UInt8(ascii: "\n")) }
            return
        case .json, .text:
            break
        }
        guard Self.isMessage(type: type, subtype: subtype) else { return }
        let edited = body2 == body ? value : (JSONText.parse(body2) ?? value)
        if !(type == "system" && (subtype == "informational" || subtype == "api_retry")) {
            lastMessage = Message(line: lineNumber, bytes: body2, value: edited)
        }
        if format == .json {
            if verbose { messages.append(Self.jsonMessage(body2, edited)) }
            return
        }
        if type == "result", !Self.isEmptySuccess(edited), edited["terminal_reason"]?.string != "tool_deferred_unavailable" {
            print(Message(line: lineNumber, bytes: body2, value: edited), into: &out)
        }
    }

    /// The CLI's `n9`: what print mode counts as a message (json's list, the last message).
    static func isMessage(type: String?, subtype: String?) -> Bool {
        if type == "stream_event" || type?.hasPrefix("control_") == true { return false }
        if type == "system", let subtype, hostOnlySystemSubtypes.contains(subtype) { return false }
        return true
    }

    static let hostOnlySystemSubtypes: Set<String> = [
        "session_state_changed", "permission_denied", "task_notification", "task_started", "task_updated", "task_progress",
        "background_tasks_changed", "feedback_draft_queued", "control_request_progress", "notification", "post_turn_summary",
        "task_summary", "session_metadata", "hook_started", "hook_progress", "hook_response", "commands_changed",
        "elicitation_complete", "files_persisted", "mirror_error", "code_change_published", "tool_host_result", "peer_message_hold",
        "ui_invalidate", "ui_log", "ui_toast", "ui_notify", "ui_notify_cancel", "ui_status", "ui_panes", "ui_placed", "ui_scroll",
        "ui_focus", "permission_check_status", "vcs_state_changed", "shell_cwd", "dev_intent", "task_list_statuses",
        "session_title_changed", "turn_preempted", "per_turn_effort_changed", "instruction_size_warning", "file_attachments_missing",
    ]

    /// A result line as print mode's json writes it.
    static func jsonResult(_ bytes: [UInt8], _ value: JSONText) -> [UInt8] {
        value.removingMember("model_usage_since_last_result", from: bytes)
    }

    /// A message line as print mode's `json --verbose` list holds it.
    static func jsonMessage(_ bytes: [UInt8], _ value: JSONText) -> [UInt8] {
        switch (value["type"]?.string, value["subtype"]?.string) {
        case ("result", _):
            return jsonResult(bytes, value)
        case ("system", "init"):
            guard case .object(let members) = value, let capabilities = members.first(where: { $0.key == "capabilities" }),
                case .array(let elements) = capabilities.value,
                let index = elements.firstIndex(where: { $0.value.string == "lifecycle_wakeup_source_v1" })
            else { return bytes }
            return JSONText.removing(at: index, ranges: elements.map(\.range), from: bytes)
        default:
            return bytes
        }
    }

    static func isEmptySuccess(_ result: JSONText) -> Bool {
        result["subtype"]?.string == "success" && (result["result"]?.string ?? "").allSatisfy(\.isWhitespace)
    }

    // MARK: - Text

    /// The CLI's text printer: one result.
    private mutating func print(_ message: Message, into out: inout [UInt8]) {
        let result = message.value
        let subtype = result["subtype"]?.string
        var text: String
        switch subtype {
        case "success":
            text = result["result"]?.string ?? ""
            if !text.hasSuffix("\n") { text += "\n" }
        case "error_during_execution":
            text = "Execution error"
        case "error_max_turns":
            text = "Error: Reached max turns (\(limits.maxTurns ?? "undefined"))"
        case "error_max_budget_usd":
            text = "Error: Exceeded USD budget (\(limits.maxBudgetUSD ?? "undefined"))"
        case "error_max_structured_output_retries":
            var first: String?
            if case .array(let errors)? = result["errors"] { first = errors.first?.value.string }
            text = "Error: " + (first ?? "Failed to provide valid structured output after maximum retries")
        default:
            return  // a subtype this CLI's printer does not know prints nothing useful
        }
        let shown = stdoutIsTerminal ? Self.terminalText(text) : text
        let separator = printed == 0 ? "" : endsWithNewline ? "\n" : "\n\n"
        if result["is_error"]?.bool == true, stderrIsTerminal, !stdoutIsTerminal {
            let copy = subtype == "success" ? (result["result"]?.string ?? "") : text
            var trimmed = Substring(Self.terminalText(copy))
            while let last = trimmed.last, last.isWhitespace { trimmed = trimmed.dropLast() }
            stderr += Array((trimmed + "\n").utf8)
        }
        out += Array((separator + shown).utf8)
        lastPrinted = message.line
        printed += 1
        endsWithNewline = shown.hasSuffix("\n")
    }

    /// What the CLI prints to a terminal: CR LF and lone CR as LF, C0 and C1 controls but tab
    /// and LF removed, SGR sequences (`ESC [ digits ; : m`) kept.
    static func terminalText(_ text: String) -> String {
        var scalars = Array(text.unicodeScalars)
        var normalized: [Unicode.Scalar] = []
        normalized.reserveCapacity(scalars.count)
        var index = 0
        while index < scalars.count {
            if scalars[index] == "\r" {
                normalized.append("\n")
                if index + 1 < scalars.count, scalars[index + 1] == "\n" { index += 1 }
            } else {
                normalized.append(scalars[index])
            }
            index += 1
        }
        scalars = normalized
        var out = String.UnicodeScalarView()
        index = 0
        while index < scalars.count {
            let scalar = scalars[index]
            let value = scalar.value
            let control = (value <= 0x08) || (0x0B...0x1F).contains(value) || (0x7F...0x9F).contains(value)
            if control, !(scalar == "\u{1B}" && Self.isSGR(scalars, at: index)) {
                index += 1
                continue
            }
            out.append(scalar)
            index += 1
        }
        return String(out)
    }

    static func isSGR(_ scalars: [Unicode.Scalar], at index: Int) -> Bool {
        guard index + 1 < scalars.count, scalars[index + 1] == "[" else { return false }
        var next = index + 2
        while next < scalars.count, ("0"..."9").contains(scalars[next]) || scalars[next] == ";" || scalars[next] == ":" { next += 1 }
        return next < scalars.count && scalars[next] == "m"
    }
}
