import Foundation
import NIOCore

/// What of a spare's stdout a drop-in run's caller must not see, so a spare started with a
/// superset of the caller's settings answers exactly as the caller's own CLI would
/// (docs/claude-cli.md §2.6, §3):
/// - the answers to the daemon's own control requests (`set_model` after a claim);
/// - without `--include-partial-messages` in the caller's command line: `stream_event`
///   lines, `system/status` lines with `status: "requesting"`, and `begun_message_ids` in
///   `result` lines;
/// - without `CLAUDE_CODE_SDK_READS_SESSION_STATE` in the caller's environment:
///   `system/session_state_changed` lines marked `sdk_host_only`.
///
/// Works on whole lines, cut from the chunks as they come. A line longer than `maxLine`
/// is passed through as it comes, never held: none of the lines above is ever that long.
public struct RunOutputFilter: Sendable {
    public struct Rules: Sendable, Equatable {
        public var dropPartialMessages: Bool
        public var dropSessionState: Bool

        public init(dropPartialMessages: Bool = false, dropSessionState: Bool = false) {
            self.dropPartialMessages = dropPartialMessages
            self.dropSessionState = dropSessionState
        }
    }

    /// The prefix of the daemon's own control requests' ids.
    public static let ownRequestPrefix = "prewarm-"
    static let maxLine = 1 << 20

    let rules: Rules
    private var pending = ByteBuffer()
    /// The current line is over `maxLine`: passed through up to its end.
    private var passingLongLine = false

    public init(rules: Rules) {
        self.rules = rules
    }

    /// What of `chunk` goes to the caller now.
    public mutating func filter(_ chunk: ByteBuffer) -> ByteBuffer {
        var chunk = chunk
        var out = ByteBuffer()
        while chunk.readableBytes > 0 {
            let view = chunk.readableBytesView
            guard let newline = view.firstIndex(of: UInt8(ascii: "\n")) else {
                if passingLongLine {
                    out.writeBuffer(&chunk)
                } else {
                    pending.writeBuffer(&chunk)
                    if pending.readableBytes > Self.maxLine {
                        passingLongLine = true
                        out.writeBuffer(&pending)
                        pending.clear()
                    }
                }
                break
            }
            var piece = chunk.readSlice(length: newline - view.startIndex + 1)!
            if passingLongLine {
                out.writeBuffer(&piece)
                passingLongLine = false
                continue
            }
            pending.writeBuffer(&piece)
            if var kept = keep(pending) { out.writeBuffer(&kept) }
            pending.clear()
        }
        return out
    }

    /// What is left at the end of the output (a last line without its newline).
    public mutating func finish() -> ByteBuffer {
        defer { pending.clear() }
        guard pending.readableBytes > 0 else { return ByteBuffer() }
        return keep(pending) ?? ByteBuffer()
    }

    /// The line as the caller gets it; nil: dropped.
    func keep(_ line: ByteBuffer) -> ByteBuffer? {
        // Cheap tests first: most lines concern no rule.
        let bytes = line.readableBytesView
        let mentions = { (needle: String) in Self.contains(bytes, needle) }
        let candidate =
            mentions(#""request_id":""# + Self.ownRequestPrefix)
            || (rules.dropPartialMessages && (mentions("stream_event") || mentions("requesting") || mentions("begun_message_ids")))
            || (rules.dropSessionState && mentions("session_state_changed"))
        guard candidate, var object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else { return line }
        let type = object["type"] as? String
        let subtype = object["subtype"] as? String
        if type == "control_response", let response = object["response"] as? [String: Any],
            (response["request_id"] as? String)?.hasPrefix(Self.ownRequestPrefix) == true
        {
            return nil
        }
        if rules.dropPartialMessages {
            if type == "stream_event" { return nil }
            if type == "system", subtype == "status", object["status"] as? String == "requesting" { return nil }
            if type == "result", object["begun_message_ids"] != nil {
                object["begun_message_ids"] = nil
                guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes]) else { return line }
                return ByteBuffer(bytes: data + [UInt8(ascii: "\n")])
            }
        }
        if rules.dropSessionState, type == "system", subtype == "session_state_changed", object["sdk_host_only"] as? Bool == true {
            return nil
        }
        return line
    }

    static func contains(_ haystack: ByteBufferView, _ needle: String) -> Bool {
        let needle = Array(needle.utf8)
        guard let first = needle.first, haystack.count >= needle.count else { return false }
        var index = haystack.startIndex
        let end = haystack.endIndex - needle.count
        while index <= end {
            if haystack[index] == first, haystack[index..<index + needle.count].elementsEqual(needle) { return true }
            index += 1
        }
        return false
    }
}
