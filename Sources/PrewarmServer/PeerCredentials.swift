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

/// Every open connection of the API: its peer, read once when the connection is set up (a
/// connection's SO_PEERCRED never changes, so a turn finds its caller with a lookup instead
/// of a trip through the channel's event loop), and the turns watching for its close.
///
/// One close callback per connection, registered when it is set up; a turn subscribes for
/// as long as it runs (`watch`) and leaves (`leave`), so a keep-alive connection that serves
/// a thousand turns holds nothing of the ones that are over.
final class Connections: Sendable {
    private struct Entry {
        var peer: PeerCredentials?
        var watchers: [UInt64: @Sendable () -> Void] = [:]
    }

    private let entries = Mutex<[ObjectIdentifier: Entry]>([:])
    private let nextToken = Atomic<UInt64>(1)

    /// A subscription to a connection's close.
    struct Watch: Sendable {
        fileprivate let key: ObjectIdentifier
        fileprivate let token: UInt64
    }

    /// Registers a new connection (called on its event loop): reads its peer, and at close
    /// tells every turn watching it, then forgets it.
    func remember(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        entries.withLock { $0[key] = Entry() }
        PeerCredentials.read(channel)?.whenSuccess { peer in self.entries.withLock { $0[key]?.peer = peer } }
        channel.closeFuture.whenComplete { _ in
            let watchers = self.entries.withLock { $0.removeValue(forKey: key)?.watchers.values }
            for watcher in watchers.map(Array.init) ?? [] { watcher() }
        }
    }

    /// The connection's peer; read from the kernel if it was not remembered.
    func of(_ channel: any Channel) async -> PeerCredentials? {
        if let known = entries.withLock({ $0[ObjectIdentifier(channel)]?.peer }) { return known }
        return await PeerCredentials.of(channel)
    }

    /// Calls `onClose` once if the connection closes before `leave`; at once if it is closed
    /// already.
    func watch(_ channel: any Channel, onClose: @escaping @Sendable () -> Void) -> Watch {
        let key = ObjectIdentifier(channel)
        let token = nextToken.wrappingAdd(1, ordering: .relaxed).oldValue
        let registered = entries.withLock { entries -> Bool in
            guard entries[key] != nil else { return false }
            entries[key]?.watchers[token] = onClose
            return true
        }
        if !registered {
            if channel.isActive {
                // Not set up through `remember` (cannot happen on the API's channels).
                channel.closeFuture.whenComplete { _ in onClose() }
            } else {
                onClose()
            }
        }
        return Watch(key: key, token: token)
    }

    /// Ends a subscription; its closure is released.
    func leave(_ watch: Watch) {
        entries.withLock { _ = $0[watch.key]?.watchers.removeValue(forKey: watch.token) }
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
    let connections: Connections

    init(allowedUIDs: [UInt32], connections: Connections) {
        self.allowed = Set(allowedUIDs).union([getuid(), 0])
        self.connections = connections
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        try await authorize(context.channel)
        return try await next(request, context)
    }

    /// Refuses a peer whose uid is not allowed (also used for two-way turns' upgrades).
    func authorize(_ channel: any Channel) async throws(PrewarmError) {
        guard let peer = await connections.of(channel) else {
            throw PrewarmError(.forbidden, "the peer's credentials cannot be read (SO_PEERCRED); connect through the Unix socket")
        }
        guard allowed.contains(peer.uid) else {
            throw PrewarmError(.forbidden, "uid \(peer.uid) is not allowed to use this daemon; add it to allowed_uids in the configuration")
        }
    }
}
