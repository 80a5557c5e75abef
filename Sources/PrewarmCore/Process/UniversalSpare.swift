#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A universal spare's side of CLI 2.1.332's `--bg-spare SOCKET` (docs/claude-cli.md §8): the
/// CLI loads its modules, listens on SOCKET, and runs its `main()` with the command line,
/// directory and environment of the first line a client sends it that carries its token.
///
/// Written by hand: the mode is the CLI's own, internal and undocumented; no package speaks
/// it. Blocking socket calls, a few per claim, run off the cooperative pool.
public enum UniversalSpare {
    /// The variable that arms the spare's token (the CLI deletes it from its environment).
    static let authVariable = "CLAUDE_BG_CLAIM_AUTH"
    /// A client's `connect()` fails on longer paths (sun_path is 108 bytes with its NUL),
    /// though the CLI binds them.
    static let maxSocketPath = 107

    /// Where a daemon's spares' 0700 directories go: `bg` in its state directory (checked
    /// like every directory that holds a secret, TrustedDirectory), a short path so the
    /// socket's fits.
    public static func root(stateDirectory: String) -> String { stateDirectory + "/bg" }

    /// Where a spare listens: `socket` in a fresh 0700 directory of its own, and its token.
    public struct Endpoint: Sendable, Equatable {
        public let directory: String
        public let socket: String
        public let token: String
    }

    static func makeEndpoint(root: String) throws(PrewarmError) -> Endpoint {
        let directory = try PrivateDirectory.make(under: root, prefix: "u")
        let socket = directory + "/s"
        guard socket.utf8.count <= maxSocketPath else {
            _ = PrivateDirectory.remove(directory)
            throw PrewarmError(.internal, "a universal spare's socket path is too long: \(socket)")
        }
        return Endpoint(directory: directory, socket: socket, token: makeToken())
    }

    static func makeToken() -> String {
        (0..<4).map { _ in String(UInt64.random(in: 0...UInt64.max), radix: 16) }.joined()
    }

    static func isListening(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFSOCK
    }

    /// Gone or a zombie.
    static func hasExited(_ pid: pid_t) -> Bool {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = text.lastIndex(of: ")") else { return true }
        let state = text[text.index(after: close)...].trimmingCharacters(in: .whitespaces).first
        return state == "Z" || state == "X"
    }

    /// Whether a run can be sent to a spare as it is: every variable name a POSIX one and no
    /// value with a NUL (the CLI drops such variables, silently).
    public static func accepts(environment: [String: String]) -> Bool {
        environment.allSatisfy { name, value in
            guard let first = name.utf8.first, first == UInt8(ascii: "_") || isLetter(first) else { return false }
            return name.utf8.allSatisfy { $0 == UInt8(ascii: "_") || isLetter($0) || (0x30...0x39).contains($0) } && !value.utf8.contains(0)
        }
    }

    private static func isLetter(_ byte: UInt8) -> Bool { (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) }

    public struct ClaimFailure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Sends the claim line (`cwd`, `env`, `argv`, `auth`) and waits for the spare to take it:
    /// it removes its socket when it does (there is no answer on the connection). Waits for the
    /// socket to appear first (it listens about 0.1 s after its spawn).
    ///
    /// The line carries the turn's credentials: it is written only once SO_PEERCRED on the
    /// connection shows the listener is the spare itself (`pid`) and of the daemon's uid.
    static func claim(
        _ endpoint: Endpoint, pid: pid_t, cwd: String, env: [String: String], argv: [String], timeout: Duration = .seconds(5)
    ) throws(ClaimFailure) {
        let object: [String: Any] = ["cwd": cwd, "env": env, "argv": argv, "auth": endpoint.token]
        guard var line = try? JSONSerialization.data(withJSONObject: object) else { throw ClaimFailure(description: "the claim line cannot be encoded") }
        line.append(UInt8(ascii: "\n"))
        let deadline = ContinuousClock.now.advanced(by: timeout)
        let fd = try connect(endpoint.socket, until: deadline)
        defer { close(fd) }
        guard let peer = SocketPeer.of(fd) else {
            throw ClaimFailure(description: "the spare's socket's peer cannot be read (SO_PEERCRED): \(String(cString: strerror(errno)))")
        }
        guard peer.pid == pid, peer.uid == getuid() else {
            throw ClaimFailure(
                description: "\(endpoint.socket) is served by pid \(peer.pid) of uid \(peer.uid), not by the spare (pid \(pid), uid \(getuid())); nothing was sent"
            )
        }
        var offset = 0
        while offset < line.count {
            let written = line.withUnsafeBytes { write(fd, $0.baseAddress! + offset, line.count - offset) }
            guard written > 0 else {
                if written < 0 && errno == EINTR { continue }
                throw ClaimFailure(description: "writing the claim line failed: \(String(cString: strerror(errno)))")
            }
            offset += written
        }
        while ContinuousClock.now < deadline {
            if !isListening(endpoint.socket) { return }
            usleep(5_000)
        }
        throw ClaimFailure(description: "the spare did not take the claim line within \(timeout.components.seconds) s")
    }

    private static func connect(_ path: String, until deadline: ContinuousClock.Instant) throws(ClaimFailure) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count <= maxSocketPath else { throw ClaimFailure(description: "socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in bytes.enumerated() { buffer[index] = byte }
        }
        while true {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw ClaimFailure(description: "socket(): \(String(cString: strerror(errno)))") }
            let result = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if result == 0 { return fd }
            let error = errno
            close(fd)
            guard (error == ENOENT || error == ECONNREFUSED || error == EINTR), ContinuousClock.now < deadline else {
                throw ClaimFailure(description: "cannot reach the spare's socket: \(String(cString: strerror(error)))")
            }
            usleep(20_000)
        }
    }
}
