#if canImport(Glibc)
import Glibc
#endif
import Hummingbird
import NIOCore
import PrewarmCore
import Synchronization

/// The uid, gid and pid of the process at the other end of a Unix socket (SO_PEERCRED).
public struct PeerCredentials: Sendable, Equatable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    /// Reads the peer's credentials from the kernel; nil when the channel is not a Unix socket.
    static func of(_ channel: any Channel) async -> PeerCredentials? {
        try? await read(channel)?.get()
    }

    /// The kernel's answer, as a future (completed at once on the channel's event loop).
    fileprivate static func read(_ channel: any Channel) -> EventLoopFuture<PeerCredentials>? {
        guard let provider = channel as? any SocketOptionProvider else { return nil }
        let credentials: EventLoopFuture<UCred> = provider.unsafeGetSocketOption(
            level: NIOBSDSocket.OptionLevel(rawValue: SOL_SOCKET),
            name: NIOBSDSocket.Option(rawValue: SO_PEERCRED)
        )
        return credentials.map { PeerCredentials(pid: $0.pid, uid: $0.uid, gid: $0.gid) }
    }
}

/// The peer of every open connection, read once when the connection is set up: a
/// connection's SO_PEERCRED never changes, and a turn (its allowed_uids check, its rate
/// limit, its journal row) then finds its caller with a lookup instead of a trip through the
/// channel's event loop.
final class ConnectionPeers: Sendable {
    private let peers = Mutex<[ObjectIdentifier: PeerCredentials]>([:])

    /// Reads the peer of a new connection (called on its event loop) and forgets it at close.
    func remember(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        PeerCredentials.read(channel)?.whenSuccess { peer in self.peers.withLock { $0[key] = peer } }
        channel.closeFuture.whenComplete { _ in _ = self.peers.withLock { $0.removeValue(forKey: key) } }
    }

    /// The connection's peer; read from the kernel if it was not remembered.
    func of(_ channel: any Channel) async -> PeerCredentials? {
        if let known = peers.withLock({ $0[ObjectIdentifier(channel)] }) { return known }
        return await PeerCredentials.of(channel)
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
    let peers: ConnectionPeers

    init(allowedUIDs: [UInt32], peers: ConnectionPeers) {
        self.allowed = Set(allowedUIDs).union([getuid(), 0])
        self.peers = peers
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        try await authorize(context.channel)
        return try await next(request, context)
    }

    /// Refuses a peer whose uid is not allowed (also used for two-way turns' upgrades).
    func authorize(_ channel: any Channel) async throws(PrewarmError) {
        guard let peer = await peers.of(channel) else {
            throw PrewarmError(.forbidden, "the peer's credentials cannot be read (SO_PEERCRED); connect through the Unix socket")
        }
        guard allowed.contains(peer.uid) else {
            throw PrewarmError(.forbidden, "uid \(peer.uid) is not allowed to use this daemon; add it to allowed_uids in the configuration")
        }
    }
}
