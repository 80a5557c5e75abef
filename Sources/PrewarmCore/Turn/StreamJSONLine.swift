import Foundation

/// The top-level `type` and `subtype` of one stream-json line: what decides a turn's end
/// (`end_type`), the CLI's chatter, and a benchmark's first token. One parser for all of
/// them; nested objects and strings never count.
public struct StreamJSONLine: Sendable, Equatable, Decodable {
    public var type: String?
    public var subtype: String?
    /// The CLI's session (a `result` line's, for resume spares).
    public var sessionID: String?

    enum CodingKeys: String, CodingKey {
        case type, subtype
        case sessionID = "session_id"
    }

    /// Parses a line (with or without its newline); nil when it is not a JSON object.
    public static func parse<Bytes: Sequence>(_ line: Bytes) -> StreamJSONLine? where Bytes.Element == UInt8 {
        try? JSONDecoder().decode(StreamJSONLine.self, from: Data(line))
    }

    /// `{"type":"system","subtype":"ui_invalidate"}`: the CLI writes it on its own, outside
    /// any turn.
    public var isChatter: Bool { type == "system" && subtype == "ui_invalidate" }
}
