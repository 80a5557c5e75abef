#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// The check every client of the daemon makes before it sends a request: the process
/// listening on the socket (SO_PEERCRED) is of the caller's uid, root, or the uid named by
/// `PREWARM_DAEMON_UID` (a number or a user name: a dedicated-user daemon's). Anything else
/// may be someone else's socket, made first at the path to catch what callers send.
public enum DaemonPeer {
    /// The uids a daemon may run as, for this caller.
    public static func expectedUIDs(environment: [String: String]) -> Set<UInt32> {
        var uids: Set<UInt32> = [getuid(), 0]
        if let named = environment["PREWARM_DAEMON_UID"], !named.isEmpty {
            if let number = UInt32(named) {
                uids.insert(number)
            } else if let entry = getpwnam(named) {
                uids.insert(entry.pointee.pw_uid)
            }
        }
        return uids
    }

    /// Why the daemon at `path`, of uid `uid` (pid `pid`), is not one to talk to; nil when it is.
    public static func problem(path: String, pid: Int32, uid: UInt32?, expected: Set<UInt32>) -> String? {
        guard let uid else { return "cannot tell who listens on \(path) (SO_PEERCRED); nothing was sent" }
        guard !expected.contains(uid) else { return nil }
        return "\(path) is served by pid \(pid) of uid \(uid), not by a daemon of uid \(expected.sorted().map(String.init).joined(separator: " or ")); "
            + "nothing was sent. If the daemon runs as another user on purpose, set PREWARM_DAEMON_UID to it"
    }

    /// The check on a blocking socket.
    static func problem(fd: Int32, path: String, environment: [String: String]) -> String? {
        var credentials = Credentials()
        var length = socklen_t(MemoryLayout<Credentials>.size)
        let read = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0
        return problem(path: path, pid: credentials.pid, uid: read ? credentials.uid : nil, expected: expectedUIDs(environment: environment))
    }

    /// The check on a connected NIO channel.
    static func problem(channel: any Channel, path: String, environment: [String: String]) async -> String? {
        guard let provider = channel as? any SocketOptionProvider else { return problem(path: path, pid: 0, uid: nil, expected: []) }
        let credentials: Credentials? = try? await provider.unsafeGetSocketOption(
            level: NIOBSDSocket.OptionLevel(rawValue: SOL_SOCKET), name: NIOBSDSocket.Option(rawValue: SO_PEERCRED)
        ).get()
        return problem(path: path, pid: credentials?.pid ?? 0, uid: credentials?.uid, expected: expectedUIDs(environment: environment))
    }

    /// `struct ucred`, which Glibc's module does not export without _GNU_SOURCE.
    struct Credentials: Sendable {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
    }
}
