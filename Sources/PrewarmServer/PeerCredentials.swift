#if canImport(Glibc)
import Glibc
#endif
import Hummingbird
import NIOCore
import PrewarmCore

/// The uid, gid and pid of the process at the other end of a Unix socket (SO_PEERCRED).
public struct PeerCredentials: Sendable, Equatable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    /// Reads the peer's credentials from the kernel; nil when the channel is not a Unix socket.
    static func of(_ channel: any Channel) async -> PeerCredentials? {
        guard let provider = channel as? any SocketOptionProvider else { return nil }
        do {
            let credentials: UCred = try await provider.unsafeGetSocketOption(
                level: NIOBSDSocket.OptionLevel(rawValue: SOL_SOCKET),
                name: NIOBSDSocket.Option(rawValue: SO_PEERCRED)
            ).get()
            return PeerCredentials(pid: credentials.pid, uid: credentials.uid, gid: credentials.gid)
        } catch {
            return nil
        }
    }
}

/// `struct ucred` of <sys/socket.h>, which Glibc's Swift module does not export
/// (it needs _GNU_SOURCE): pid, uid, gid, 32 bits each.
private struct UCred {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}

/// With `allowed_uids` set, only the daemon's own uid, root and those uids are served;
/// others get 403 `forbidden`.
struct PeerAuthorizationMiddleware: RouterMiddleware {
    typealias Context = PrewarmRequestContext
    let allowed: Set<UInt32>

    init(allowedUIDs: [UInt32]) {
        self.allowed = Set(allowedUIDs).union([getuid(), 0])
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        try await authorize(context.channel)
        return try await next(request, context)
    }

    /// Refuses a peer whose uid is not allowed (also used for two-way turns' upgrades).
    func authorize(_ channel: any Channel) async throws(PrewarmError) {
        guard let peer = await PeerCredentials.of(channel) else {
            throw PrewarmError(.forbidden, "the peer's credentials cannot be read (SO_PEERCRED); connect through the Unix socket")
        }
        guard allowed.contains(peer.uid) else {
            throw PrewarmError(.forbidden, "uid \(peer.uid) is not allowed to use this daemon; add it to allowed_uids in the configuration")
        }
    }
}
