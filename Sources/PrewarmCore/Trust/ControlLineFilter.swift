import Foundation

/// The stream-json a two-way turn's client of another uid writes, line by line, without its
/// `control_request` lines: those (`set_permission_mode`, `initialize` with hooks,
/// `apply_flag_settings`...) would change the session past the checks its turn passed
/// (CallerPolicy). User messages and `control_response` lines (answers to the CLI's
/// `can_use_tool` and hooks) go through untouched, byte for byte.
///
/// Pure: bytes in, the bytes to forward out. A line longer than `maxLine` is dropped whole
/// (the CLI could not take it either).
public struct ControlLineFilter: Sendable {
    private var pending: [UInt8] = []
    private var overlong = false
    let maxLine: Int
    /// Lines dropped so far.
    public private(set) var dropped = 0

    public init(maxLine: Int = 1 << 20) {
        self.maxLine = maxLine
    }

    /// The complete lines of `bytes` (with what came before) that may go on.
    public mutating func forward(_ bytes: some Sequence<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        for byte in bytes {
            if byte == UInt8(ascii: "\n") {
                if !overlong, !Self.isHeldBack(pending) {
                    out += pending
                    out.append(byte)
                } else {
                    dropped += 1
                }
                pending.removeAll(keepingCapacity: true)
                overlong = false
                continue
            }
            guard !overlong else { continue }
            pending.append(byte)
            if pending.count > maxLine {
                overlong = true
                pending.removeAll()
            }
        }
        return out
    }

    /// The end of the stream: a last line without its newline, if it may go on.
    public mutating func finish() -> [UInt8] {
        defer { pending.removeAll() }
        guard !overlong, !pending.isEmpty, !Self.isHeldBack(pending) else { return [] }
        return pending
    }

    /// Anything but a user message or a control response is held back: a line that is not a
    /// JSON object too (the CLI would refuse it; and no parser's reading of it can carry a
    /// request through), but for blank lines. Duplicate keys are read as the CLI reads them
    /// (the last wins, in Foundation as in JSON.parse).
    static func isHeldBack(_ line: [UInt8]) -> Bool {
        if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") || $0 == UInt8(ascii: "\r") }) { return false }
        guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else { return true }
        return (object["type"] as? String) != "user" && (object["type"] as? String) != "control_response"
    }
}
