#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Hummingbird
import Logging
import Metrics
import NIOCore
import Prometheus
import PrewarmCore
import ServiceLifecycle
import UnixSignals

/// `prewarm serve`: the keeper, the broker and the HTTP server on the Unix socket, as one
/// service group. On SIGTERM/SIGINT the broker drains first (new turns get 503 `draining`,
/// busy turns finish within `drain_timeout_s`), then the server stops, the socket file is
/// removed, and the keeper, last, kills whatever might be left.
public struct Daemon: Sendable {
    public let configuration: Configuration
    public let socketPath: String
    /// The `prewarm` executable, run as `prewarm keeper`; nil runs without a keeper.
    public let keeperExecutable: String?
    /// Reads the configuration again (SIGHUP); nil: reloads are refused.
    public let reload: (@Sendable () throws -> Configuration)?
    /// Bootstraps swift-metrics onto the daemon's Prometheus registry (once per process: the
    /// `serve` command does it).
    public let bootstrapMetrics: Bool
    public let logger: Logger

    public init(
        configuration: Configuration,
        socketPath: String,
        keeperExecutable: String?,
        reload: (@Sendable () throws -> Configuration)? = nil,
        bootstrapMetrics: Bool = false,
        logger: Logger
    ) {
        self.bootstrapMetrics = bootstrapMetrics
        self.configuration = configuration
        self.socketPath = socketPath
        self.keeperExecutable = keeperExecutable
        self.reload = reload
        self.logger = logger
    }

    public func run() async throws {
        signal(SIGPIPE, SIG_IGN)  // children get default dispositions back at spawn
        let logger = self.logger
        let shared = configuration.socketGroup != nil || !configuration.allowedUIDs.isEmpty
        TrustedDirectory.strictModes.store(configuration.strictModes, ordering: .relaxed)
        if !configuration.strictModes {
            logger.warning("strict_modes = false: the owners and modes of the socket's and the spares' directories are not checked")
        }
        try SocketFile.prepare(path: socketPath, shared: shared)
        try configuration.prepareTrustedDirectories()
        let descriptors = DescriptorLimit.raise()
        logger.debug("file descriptors", metadata: ["descriptors.limit": "\(descriptors)"])
        if getuid() == 0 && shared {
            logger.warning(
                "the daemon runs as root and socket_group/allowed_uids let other users reach it: they can run CLIs as root; run it as a dedicated user (config/systemd/prewarm.service)",
                metadata: ["socket.group": "\(configuration.socketGroup ?? "-")", "allowed_uids": "\(configuration.allowedUIDs.map(String.init).joined(separator: ","))"]
            )
        }
        // Bound under a name nobody knows, given its mode and group, then linked into place:
        // the socket never accepts at its path with the umask's mode.
        let bindPath = SocketFile.temporaryPath(for: socketPath)
        let keeper = keeperExecutable.map { ProcessGroupKeeper(executable: $0, logger: logger) }
        let registry = PrometheusCollectorRegistry()
        if bootstrapMetrics {
            // Metrics recorded through the swift-metrics API (Hummingbird's HTTP metrics among
            // them) land on /metrics next to the daemon's own.
            MetricsSystem.bootstrap(MetricsBridge(registry: registry))
        }
        let broker = Broker(
            configuration: configuration, keeper: keeper, environment: ProcessInfo.processInfo.environment,
            metrics: BrokerMetrics(registry: registry), logger: logger
        )
        let api = API(broker: broker)
        let router = api.makeRouter(httpMetrics: bootstrapMetrics)
        let configuration = self.configuration
        let socketPath = self.socketPath
        let notifier = SystemdNotifier(environment: ProcessInfo.processInfo.environment)
        let app = Application(
            router: router,
            server: api.server(router: router),
            configuration: .init(address: .unixDomainSocket(path: bindPath), serverName: nil),
            onServerRunning: { _ in
                do {
                    try SocketFile.applyPermissions(path: bindPath, group: configuration.socketGroup, open: !configuration.allowedUIDs.isEmpty)
                    try SocketFile.publish(bindPath, at: socketPath)
                    logger.info("serving", metadata: ["socket.path": "\(socketPath)", "pools": "\(configuration.pools.map(\.name).joined(separator: ","))"])
                } catch {
                    logger.critical("the socket cannot be put in place; stopping", metadata: ["error": "\(error)"])
                    kill(getpid(), SIGTERM)
                }
            },
            logger: logger
        )
        var services: [any Service] = []
        if let keeper { services.append(keeper) }
        services += [app, broker]
        if let listen = configuration.metricsListen {
            if !listen.isLoopback {
                logger.warning("metrics_listen is not a loopback address: /metrics is reachable from the network", metadata: ["metrics.listen": "\(listen)"])
            }
            services.append(
                Application(
                    router: api.makeMetricsRouter(),
                    configuration: .init(address: .hostname(listen.host, port: listen.port), serverName: nil),
                    onServerRunning: { channel in
                        logger.info("serving /metrics", metadata: ["metrics.listen": "\(channel.localAddress.map { "\($0)" } ?? "\(listen)")"])
                    },
                    logger: logger
                )
            )
        }
        services.append(Supervisor(broker: broker, notifier: notifier, reload: reload, logger: logger))
        let group = ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup) },
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        defer {
            SocketFile.remove(path: bindPath)
            SocketFile.remove(path: socketPath)
        }
        try await group.run()
        logger.info("stopped")
    }
}

/// The socket file: stale ones replaced, live ones refused, permissions set.
enum SocketFile {
    /// Makes and checks the socket's directory (TrustedDirectory: 0700, or 0711 when `shared`
    /// lets other users reach the socket); refuses a socket a live daemon answers on; removes a
    /// stale one.
    static func prepare(path: String, shared: Bool) throws {
        guard path.hasPrefix("/") else {
            throw PrewarmError(.unsafePath, "the socket path must be absolute, not \"\(path)\"; give --socket an absolute path")
        }
        let directory = (path as NSString).deletingLastPathComponent
        try TrustedDirectory.prepare(
            directory.isEmpty ? "/" : directory, mode: shared ? 0o711 : 0o700,
            purpose: "the daemon's socket (--socket, $PREWARM_SOCKET, socket, $XDG_RUNTIME_DIR)"
        )
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw PrewarmError(.internal, "\(path) exists and is not a socket; remove it or choose another --socket")
        }
        if isLive(path: path) {
            throw PrewarmError(.internal, "another daemon is serving on \(path); stop it first, or give this one another --socket")
        }
        unlink(path)
    }

    /// Where the daemon binds before it publishes the socket: a random name in the same
    /// directory, no longer than the socket's path where it can be (sun_path's 108 bytes).
    static func temporaryPath(for path: String) -> String {
        let directory = (path as NSString).deletingLastPathComponent
        let random = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        return directory + "/.prewarm-" + random.prefix(max(8, path.utf8.count - directory.utf8.count - 10))
    }

    /// Puts the bound socket at `path`: a hard link (never replacing what another daemon put
    /// there since `prepare`), then the temporary name goes.
    static func publish(_ bound: String, at path: String) throws {
        guard link(bound, path) == 0 else {
            let reason = String(cString: strerror(errno))
            throw PrewarmError(.internal, "cannot put the socket at \(path): \(reason); another daemon may have started there")
        }
        unlink(bound)
    }

    /// True when something accepts connections on the socket.
    static func isLive(path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.utf8.count < capacity else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path.utf8)
            raw[path.utf8.count] = 0
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return result == 0
    }

    /// 0600 by default; 0660 and the group with `socket_group`; 0666 with `allowed_uids`
    /// (SO_PEERCRED decides then).
    static func applyPermissions(path: String, group: String?, open: Bool) throws {
        var mode: mode_t = 0o600
        if let group {
            let gid: gid_t
            if let number = gid_t(group) {
                gid = number
            } else if let entry = getgrnam(group) {
                gid = entry.pointee.gr_gid
            } else {
                throw PrewarmError(.internal, "socket_group \"\(group)\" is not a group on this host")
            }
            guard chown(path, uid_t.max, gid) == 0 else {
                throw PrewarmError(.internal, "cannot give \(path) to group \(group): \(String(cString: strerror(errno)))")
            }
            mode = 0o660
        }
        if open { mode = 0o666 }
        guard chmod(path, mode) == 0 else {
            throw PrewarmError(.internal, "cannot chmod \(path): \(String(cString: strerror(errno)))")
        }
    }

    static func remove(path: String) {
        var info = stat()
        if lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFSOCK {
            unlink(path)
        }
    }
}

/// Where the socket is: `--socket`, else `$PREWARM_SOCKET`, else `socket` in the
/// configuration, else `$XDG_RUNTIME_DIR/prewarm.sock`, else `/tmp/prewarm-$UID/prewarm.sock`
/// (in a directory the daemon makes and checks: a socket straight in /tmp could be made
/// first by anyone).
public enum SocketPath {
    public static func resolve(flag: String?, environment: [String: String], configured: String?) -> String {
        // A relative path is the working directory's (its directory is checked like any).
        let absolute = { (path: String) in path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path }
        if let flag, !flag.isEmpty { return absolute(flag) }
        if let value = environment["PREWARM_SOCKET"], !value.isEmpty { return absolute(value) }
        if let configured, !configured.isEmpty { return configured }
        return defaultPath(environment: environment)
    }

    /// `$XDG_RUNTIME_DIR/prewarm.sock`, else `/tmp/prewarm-$UID/prewarm.sock`.
    public static func defaultPath(environment: [String: String], uid: uid_t = getuid()) -> String {
        if let runtime = environment["XDG_RUNTIME_DIR"], !runtime.isEmpty { return runtime + "/prewarm.sock" }
        return "/tmp/prewarm-\(uid)/prewarm.sock"
    }
}
