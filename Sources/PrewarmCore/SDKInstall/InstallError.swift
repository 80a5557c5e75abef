#if canImport(Glibc)
import Glibc
#endif

/// Why `prewarm sdk install`, `uninstall` or `status` could not do what was asked: a kind
/// (which is the exit status, sysexits(3)), a message naming the path and what to do, and the
/// errno behind it if any.
public struct InstallError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// 69 (EX_UNAVAILABLE): the interpreter cannot be run.
        case interpreterUnavailable
        /// 73 (EX_CANTCREAT): a file cannot be made there (a read-only filesystem, a `claude`
        /// of someone else's in the way).
        case cannotCreate
        /// 77 (EX_NOPERM): the user may not change that directory, or it is shared and that
        /// was not asked for.
        case permissionDenied
        /// 78 (EX_CONFIG): not something to install into (no SDK, not the official SDK, no
        /// bundled CLI, an install whose original CLI is gone).
        case notInstallable

        public var exitStatus: Int32 {
            switch self {
            case .interpreterUnavailable: 69
            case .cannotCreate: 73
            case .permissionDenied: 77
            case .notInstallable: 78
            }
        }
    }

    public var kind: Kind
    public var message: String
    public var errno: Int32?

    public init(_ kind: Kind, _ message: String, errno: Int32? = nil) {
        self.kind = kind
        self.message = message
        self.errno = errno
    }

    public var description: String { message }

    /// A failed system call on `path`, as the right kind: permission (EACCES, EPERM) and
    /// read-only filesystems (EROFS) say so and what to do; anything else says the errno.
    static func failed(_ call: String, _ path: String, errno code: Int32, advice: String) -> InstallError {
        let reason = String(cString: strerror(code))
        switch code {
        case EACCES, EPERM:
            return InstallError(.permissionDenied, "\(call) \(path): \(reason) (uid \(getuid())); \(advice)", errno: code)
        case EROFS:
            return InstallError(.cannotCreate, "\(call) \(path): the filesystem is read-only; \(advice)", errno: code)
        default:
            return InstallError(.cannotCreate, "\(call) \(path): \(reason)", errno: code)
        }
    }
}
