/// A client's `X-Request-Id`, kept only when it is a plain token: `[A-Za-z0-9._:-]{1,128}`.
/// Anything else (spaces, `=`, quotes, control characters, too long) is dropped and the
/// daemon's own id used instead, so a client can never write fields of its own into a log
/// line or a journal row.
public enum RequestID {
    public static let maxLength = 128

    /// `header` if it is a plain token, else nil.
    public static func accepted(_ header: String?) -> String? {
        guard let header, !header.isEmpty, header.utf8.count <= maxLength else { return nil }
        return header.utf8.allSatisfy(isAllowed) ? header : nil
    }

    static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: ":"), UInt8(ascii: "-"): true
        default: false
        }
    }
}
