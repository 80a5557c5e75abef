#if canImport(Glibc)
import Glibc
#endif
import Logging
import ServiceLifecycle
import Subprocess
import Synchronization
import SystemPackage

/// Makes sure no child outlives the daemon, however the daemon ends (even SIGKILL).
///
/// A small keeper process (`prewarm keeper`) is started with the daemon. It holds the read
/// end of a pipe whose write end only the daemon holds (close-on-exec, and every child is
/// spawned with all other descriptors closed). The daemon tells it each child's process group
/// as the child starts (`+PGID`) and when the group is gone (`-PGID`). When the pipe reaches
/// end-of-file, because the daemon exited or was killed, the keeper kills every group it
/// still knows, then exits.
///
/// Why not PR_SET_PDEATHSIG: it fires when the *thread* that forked the child exits, not the
/// process, and Swift's worker threads come and go, so idle spares would die at random.
public final class ProcessGroupKeeper: Service, Sendable {
    private let executable: String
    private let logger: Logger
    /// The daemon's end of the pipe; -1 once closed.
    private let writeEnd: Mutex<CInt>
    private let readEnd: Mutex<CInt>

    /// - Parameter executable: the `prewarm` executable, run as `prewarm keeper`.
    public init(executable: String, logger: Logger) throws {
        var fds: [CInt] = [-1, -1]
        guard makePipe(&fds) else {
            throw PrewarmError(.internal, "cannot create the keeper pipe: \(String(cString: strerror(errno)))")
        }
        self.executable = executable
        self.logger = logger
        self.readEnd = Mutex(fds[0])
        self.writeEnd = Mutex(fds[1])
    }

    /// Registers a child's process group; call it right after the spawn.
    public func track(processGroup: pid_t) {
        send("+\(processGroup)\n")
    }

    /// Forgets a process group once it has been killed.
    public func untrack(processGroup: pid_t) {
        send("-\(processGroup)\n")
    }

    private func send(_ line: String) {
        writeEnd.withLock { fd in
            guard fd >= 0 else { return }
            // Lines are far below PIPE_BUF, so each write is atomic.
            _ = line.withCString { write(fd, $0, strlen($0)) }
        }
    }

    public func run() async throws {
        let readFD = readEnd.withLock { fd in
            defer { fd = -1 }
            return fd
        }
        var options = PlatformOptions()
        options.processGroupID = 0
        _ = try await Subprocess.run(
            .path(FilePath(executable)),
            arguments: ["keeper"],
            platformOptions: options,
            input: .fileDescriptor(FileDescriptor(rawValue: readFD), closeAfterSpawningProcess: true),
            output: .discarded,
            error: .fileDescriptor(.standardError, closeAfterSpawningProcess: false)
        ) { execution in
            self.logger.debug("keeper started", metadata: ["process.pid": "\(execution.processIdentifier.value)"])
            // Wait for the end of the daemon's life: graceful shutdown or cancellation.
            try? await gracefulShutdown()
            self.close()
        }
    }

    /// Closes the daemon's end: the keeper kills what is left and exits.
    public func close() {
        writeEnd.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
    }

    // MARK: - The keeper process itself

    /// The body of `prewarm keeper`: reads `+PGID`/`-PGID` lines from stdin until end-of-file,
    /// then kills every group still listed (SIGTERM, then SIGKILL after a second) and returns.
    public static func runKeeper() -> Never {
        // The keeper must outlive its daemon: a Ctrl-C or a TERM meant for the daemon's
        // process group must not take it out before it has done its work.
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        signal(SIGHUP, SIG_IGN)
        signal(SIGPIPE, SIG_IGN)
        var groups = Set<pid_t>()
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(0, &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            pending.append(contentsOf: buffer[0..<count])
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                guard let sign = line.first, let group = pid_t(line.dropFirst()), group > 1 else { continue }
                if sign == "+" { groups.insert(group) } else if sign == "-" { groups.remove(group) }
            }
        }
        for group in groups { kill(-group, SIGTERM) }
        var deadline = 100
        while deadline > 0, groups.contains(where: { kill(-$0, 0) == 0 }) {
            usleep(10_000)
            deadline -= 1
        }
        for group in groups { kill(-group, SIGKILL) }
        exit(0)
    }
}
