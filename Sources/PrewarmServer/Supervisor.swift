#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import PrewarmCore
import ServiceLifecycle
import UnixSignals

/// The daemon's conversation with its supervisor: systemd's readiness protocol (READY=1 once
/// every pool has an idle spare or is failing, RELOADING=1 around a reload, STOPPING=1 at
/// shutdown, STATUS= lines), and SIGHUP, which reloads the configuration.
struct Supervisor: Service {
    let broker: Broker
    let notifier: SystemdNotifier
    let reload: (@Sendable () throws -> Configuration)?
    let logger: Logger

    /// How often readiness is checked until it is reached.
    static let readinessInterval: Duration = .milliseconds(100)

    func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        await withDiscardingTaskGroup { group in
            group.addTask {
                await waitUntilReady()
                notifier.send(["READY=1", "STATUS=serving: every pool has a spare or is failing", "MAINPID=\(getpid())"])
                logger.info("ready: every pool has an idle spare or is failing")
            }
            group.addTask {
                await cancelWhenGracefulShutdown {
                    for await _ in hangups {
                        await reloadNow()
                    }
                }
            }
            try? await gracefulShutdown()
            notifier.send(["STOPPING=1", "STATUS=draining"])
            group.cancelAll()
        }
    }

    private func waitUntilReady() async {
        while !Task.isCancelled && !broker.ready {
            try? await Task.sleep(for: Self.readinessInterval)
        }
    }

    /// Reads the configuration again and applies it; a file that does not load keeps the
    /// running configuration, and the log says why.
    func reloadNow() async {
        guard let reload else {
            logger.warning("SIGHUP: nothing to reload from (the daemon runs on a configuration it was given); ignored")
            return
        }
        notifier.send(["RELOADING=1", "STATUS=reloading", "MONOTONIC_USEC=\(SystemdNotifier.monotonicMicroseconds())"])
        defer { notifier.send(["READY=1", "STATUS=serving"]) }
        let configuration: Configuration
        do {
            configuration = try reload()
            try configuration.prepareTrustedDirectories()
        } catch {
            logger.error("reload refused: the configuration does not load; the running one is kept", metadata: ["error": "\(error)"])
            return
        }
        let report = await broker.reload(configuration)
        var metadata: Logger.Metadata = ["config": "\(configuration.origin)"]
        for (key, names) in [
            ("pools.added", report.added), ("pools.removed", report.removed), ("pools.changed", report.changed),
            ("pools.size_restored", report.sizesRestored), ("needs_restart", report.needsRestart),
        ] where !names.isEmpty {
            metadata[key] = "\(names.joined(separator: ","))"
        }
        var message = "configuration reloaded"
        if !report.sizesRestored.isEmpty {
            message += "; sizes set at run time (PATCH, prewarm resize) are replaced by the file's"
        }
        if !report.needsRestart.isEmpty {
            message += "; some changed settings take a restart and are not applied"
        }
        logger.notice("\(message)", metadata: metadata)
    }
}

/// sd_notify(3), written by hand: one datagram to `$NOTIFY_SOCKET` (libsystemd is not
/// something a Swift package links on every host, and the protocol is one sendto).
struct SystemdNotifier: Sendable {
    let path: String?

    init(environment: [String: String]) {
        path = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Sends `NAME=value` lines; does nothing outside systemd.
    func send(_ lines: [String]) {
        guard let path, path.hasPrefix("/") || path.hasPrefix("@") else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }  // an abstract socket
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes.first == 0 ? 0 : 1))
        let message = Array((lines.joined(separator: "\n") + "\n").utf8)
        _ = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                message.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, address, length) }
            }
        }
    }

    static func monotonicMicroseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
    }
}
