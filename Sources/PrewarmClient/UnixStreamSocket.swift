import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A blocking Unix-socket connection, for `prewarm turn --interactive`: after the upgrade to
/// `prewarm-stream` the connection is a plain byte stream, and the CLI's stdin and stdout are
/// copied to and from it by two threads.
public final class UnixStreamSocket: @unchecked Sendable {
    private let fd: Int32
    private var pending: [UInt8] = []

    public init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw UnixHTTPClient.ClientError.unreachable(path: path, reason: String(cString: strerror(errno))) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            throw UnixHTTPClient.ClientError.unreachable(path: path, reason: "the path is too long for a Unix socket")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw UnixHTTPClient.ClientError.unreachable(path: path, reason: reason)
        }
        if let problem = DaemonPeer.problem(fd: fd, path: path, environment: ProcessInfo.processInfo.environment) {
            close(fd)
            throw UnixHTTPClient.ClientError.untrusted(problem)
        }
    }

    deinit { close(fd) }

    /// Writes all of `bytes`; false when the connection is gone.
    @discardableResult
    public func write(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return false }
            offset += written
        }
        return true
    }

    /// Up to 64 KiB, blocking; empty at end of stream. Bytes left over from `readHead` first.
    public func read() -> [UInt8] {
        if !pending.isEmpty {
            defer { pending.removeAll() }
            return pending
        }
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 && errno == EINTR { continue }
            return count > 0 ? Array(chunk[..<count]) : []
        }
    }

    /// The response head (status line and headers), up to the blank line; nil if the
    /// connection ends first.
    public func readHead() -> String? {
        var buffer: [UInt8] = []
        while true {
            if buffer.count >= 4, let end = (0...(buffer.count - 4)).first(where: { buffer[$0..<($0 + 4)].elementsEqual([13, 10, 13, 10]) }) {
                pending = Array(buffer[(end + 4)...])
                return String(decoding: buffer[..<end], as: UTF8.self)
            }
            let chunk = read()
            guard !chunk.isEmpty else { return nil }
            buffer += chunk
        }
    }

    /// Makes reads give up (return empty) after `seconds` without data.
    public func setReceiveTimeout(_ seconds: Double) {
        var value = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Writes what the socket takes now without blocking; the count written, 0 when full,
    /// -1 when the connection is gone.
    public func writeNow(_ bytes: [UInt8]) -> Int {
        let written = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
        if written < 0 { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1 }
        return written
    }

    /// Closes the connection at once (the daemon sees the client gone).
    public func closeNow() {
        shutdown(fd, Int32(SHUT_RDWR))
    }

    /// Closes the writing side: the daemon closes the process's stdin.
    public func shutdownWrite() {
        shutdown(fd, Int32(SHUT_WR))
    }
}
