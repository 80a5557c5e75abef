#if canImport(Glibc)
import Glibc
#endif
import Hummingbird
import NIOCore
import PrewarmCore
import Synchronization

/// The uid, gid and pid of the process at the other end of a connection (SO_PEERCRED).
typealias PeerCredentials = SocketPeer

extension SocketPeer {
    /// Reads the peer's credentials from the kernel; nil when the channel is not a Unix socket.
    static func of(_ channel: any Channel) async -> SocketPeer? {
        try? await read(channel)?.get()
    }

    /// The kernel's answer, as a future (completed at once on the channel's event loop). The
    /// value is `struct ucred` itself: SocketPeer has its layout (pid, uid, gid, 32 bits each).
    static func read(_ channel: any Channel) -> EventLoopFuture<SocketPeer>? {
        guard let provider = channel as? any SocketOptionProvider else { return nil }
        return provider.unsafeGetSocketOption(level: NIOBSDSocket.OptionLevel(rawValue: SOL_SOCKET), name: NIOBSDSocket.Option(rawValue: SO_PEERCRED))
    }
}

/// Every open connection of the API: its peer, read once when the connection is accepted (a
/// connection's SO_PEERCRED never changes, so a turn finds its caller with a lookup instead
/// of a trip through the channel's event loop), and the turns watching for its close.
///
/// Who may connect is decided here, at accept, before a byte of a request is read: with
/// `allowed_uids`, only the daemon's uid, root and those uids; and a uid other than the
/// daemon's and root holds at most `max_connections_per_uid` connections at once, so nobody
/// who can reach the socket can use up the daemon's descriptors.
///
/// One close callback per connection, registered when it is set up; a turn subscribes for
/// as long as it runs (`watch`) and leaves (`leave`), so a keep-alive connection that serves
/// a thousand turns holds nothing of the ones that are over.
final class Connections: Sendable {
    private struct Entry {
        var peer: PeerCredentials?
        var watchers: [UInt64: @Sendable () -> Void] = [:]
    }

    private struct State {
        var entries: [ObjectIdentifier: Entry] = [:]
        var perUID: [UInt32: Int] = [:]
    }

    private let state = Mutex(State())
    private let nextToken = Atomic<UInt64>(1)
    /// nil: every uid the socket's mode lets in.
    let allowed: Set<UInt32>?
    let maxPerUID: Int

    init(allowedUIDs: [UInt32] = [], maxPerUID: Int = 256) {
        self.allowed = allowedUIDs.isEmpty ? nil : Set(allowedUIDs).union([getuid(), 0])
        self.maxPerUID = maxPerUID
    }

    /// A subscription to a connection's close.
    struct Watch: Sendable {
        fileprivate let key: ObjectIdentifier
        fileprivate let token: UInt64
    }

    /// Decides a new connection (called on its event loop, when it is accepted): nil when it
    /// is served, and then it is registered (at close it tells every turn watching it, then is
    /// forgotten); else the refusal to answer before closing it.
    func admit(_ channel: any Channel, peer: PeerCredentials?) -> PrewarmError? {
        guard let peer else {
            return PrewarmError(.forbidden, "the peer's credentials cannot be read (SO_PEERCRED); connect through the Unix socket")
        }
        if let allowed, !allowed.contains(peer.uid) {
            return PrewarmError(.forbidden, "uid \(peer.uid) is not allowed to use this daemon; add it to allowed_uids in the configuration")
        }
        let key = ObjectIdentifier(channel)
        let counted = peer.uid != 0 && peer.uid != getuid()
        let admitted = state.withLock { state -> Bool in
            if counted {
                guard state.perUID[peer.uid, default: 0] < maxPerUID else { return false }
                state.perUID[peer.uid, default: 0] += 1
            }
            state.entries[key] = Entry(peer: peer)
            return true
        }
        guard admitted else {
            return PrewarmError(
                .tooManyConnections,
                "uid \(peer.uid) holds \(maxPerUID) connections to this daemon already (max_connections_per_uid); close some, or raise the limit",
                retryAfter: 1
            )
        }
        channel.closeFuture.whenComplete { _ in
            let watchers = self.state.withLock { state in
                if counted {
                    state.perUID[peer.uid, default: 1] -= 1
                    if state.perUID[peer.uid] == 0 { state.perUID[peer.uid] = nil }
                }
                return state.entries.removeValue(forKey: key)?.watchers.values
            }
            for watcher in watchers.map(Array.init) ?? [] { watcher() }
        }
        return nil
    }

    /// The connection's peer; read from the kernel if it was not remembered.
    func of(_ channel: any Channel) async -> PeerCredentials? {
        if let known = state.withLock({ $0.entries[ObjectIdentifier(channel)]?.peer }) { return known }
        return await PeerCredentials.of(channel)
    }

    /// Calls `onClose` once if the connection closes before `leave`; at once if it is closed
    /// already.
    func watch(_ channel: any Channel, onClose: @escaping @Sendable () -> Void) -> Watch {
        let key = ObjectIdentifier(channel)
        let token = nextToken.wrappingAdd(1, ordering: .relaxed).oldValue
        let registered = state.withLock { state -> Bool in
            guard state.entries[key] != nil else { return false }
            state.entries[key]?.watchers[token] = onClose
            return true
        }
        if !registered {
            if channel.isActive {
                // Not set up through `admit` (cannot happen on the API's channels).
                channel.closeFuture.whenComplete { _ in onClose() }
            } else {
                onClose()
            }
        }
        return Watch(key: key, token: token)
    }

    /// Ends a subscription; its closure is released.
    func leave(_ watch: Watch) {
        state.withLock { _ = $0.entries[watch.key]?.watchers.removeValue(forKey: watch.token) }
    }
}
