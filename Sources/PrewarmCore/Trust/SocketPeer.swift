#if canImport(Glibc)
import Glibc
#endif

/// The process at the other end of a connected Unix socket, from the kernel (SO_PEERCRED):
/// for a client, the process that called `listen()` on the path it reached. What a client
/// checks before it sends anything secret.
public struct SocketPeer: Sendable, Equatable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    public init(pid: Int32, uid: UInt32, gid: UInt32) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }

    /// The peer of the connected socket `fd`; nil (errno set) when it cannot be read.
    public static func of(_ fd: Int32) -> SocketPeer? {
        // struct ucred (pid, uid, gid), which Glibc's module does not export without _GNU_SOURCE.
        var credentials: (Int32, UInt32, UInt32) = (0, 0, 0)
        var length = socklen_t(MemoryLayout.size(ofValue: credentials))
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0, Int(length) == MemoryLayout.size(ofValue: credentials) else {
            return nil
        }
        return SocketPeer(pid: credentials.0, uid: credentials.1, gid: credentials.2)
    }
}
