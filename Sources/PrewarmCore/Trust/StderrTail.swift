#if canImport(Glibc)
import Glibc
#endif

/// A CLI's stderr tail travels in failure reasons ("...; stderr: TAIL"): it can hold paths,
/// tokens a misconfigured CLI printed, anything. It is shown in full only to the daemon's
/// own uid and root (and in the daemon's log); everyone else sees the reason without it.
public enum StderrTail {
    static let marker = "; stderr: "
    static let withheld = "; stderr: (shown only to the daemon's uid and root)"

    /// `text` without its stderr tail.
    public static func redacted(_ text: String) -> String {
        guard let range = text.range(of: marker) else { return text }
        return String(text[..<range.lowerBound]) + withheld
    }

    /// Whether a peer of uid `uid` may read stderr tails.
    public static func mayRead(uid: UInt32?) -> Bool {
        guard let uid else { return false }
        return uid == 0 || uid == getuid()
    }
}
