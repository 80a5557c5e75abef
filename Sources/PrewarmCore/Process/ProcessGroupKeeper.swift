#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOPosix
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
/// The keeper is supervised: its stdout is a second pipe that only it holds open, so its
/// death is an end-of-file the daemon sees at once. The daemon then logs it, starts a new
/// keeper, and hands it every live group before any new process is spawned (`available()`
/// holds spawns while no keeper is there). The daemon keeps the list of live groups for that.
///
/// Why not PR_SET_PDEATHSIG: it fires when the *thread* that forked the child exits, not the
/// process, and Swift's worker threads come and go, so idle spares would die at random.
public final class ProcessGroupKeeper: Service, Sendable {
    private let executable: String
    private let logger: Logger
    private let state = Mutex(State())

    private struct State {
        /// Every live process group of the daemon's children.
        var groups = Set<pid_t>()
        /// The write end of the live keeper's pipe; -1 while there is none.
        var writeEnd: CInt = -1
        var keeperPID: pid_t?
        var restarts = 0
        /// Spawns waiting for a keeper to be there.
        var waiting: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter: UInt64 = 0
        /// Shut down: nothing waits for a keeper any more.
        var stopped = false
    }

    /// The keeper as status and metrics show it.
    public struct Status: Sendable, Codable, Equatable {
        public var pid: Int?
        /// Keepers started again after the previous one died.
        public var restarts: Int
        /// Process groups it is told of now.
        public var groups: Int
    }

    /// - Parameter executable: the `prewarm` executable, run as `prewarm keeper`.
    public init(executable: String, logger: Logger) {
        self.executable = executable
        self.logger = logger
    }

    public var status: Status {
        state.withLock { Status(pid: $0.keeperPID.map(Int.init), restarts: $0.restarts, groups: $0.groups.count) }
    }

    /// Registers a child's process group; call it right after the spawn.
    public func track(processGroup: pid_t) {
        state.withLock { state in
            state.groups.insert(processGroup)
            Self.send("+\(processGroup)\n", to: state.writeEnd)
        }
    }

    /// Forgets a process group once it has been killed.
    public func untrack(processGroup: pid_t) {
        state.withLock { state in
            state.groups.remove(processGroup)
            Self.send("-\(processGroup)\n", to: state.writeEnd)
        }
    }

    private static func send(_ line: String, to fd: CInt) {
        guard fd >= 0 else { return }
        // Lines are far below PIPE_BUF, so each write is atomic. A dead keeper's pipe
        // fails with EPIPE (SIGPIPE is ignored): its successor gets the whole list.
        _ = line.withCString { write(fd, $0, strlen($0)) }
    }

    /// Returns once a keeper is there to be told of a new process group (at once, nearly
    /// always); spawns wait here while a dead keeper is being replaced.
    public func available() async {
        let id = state.withLock { state -> UInt64? in
            guard state.writeEnd < 0, !state.stopped else { return nil }
            state.nextWaiter += 1
            return state.nextWaiter
        }
        guard let id else { return }
        logger.debug("a spawn waits for the keeper")
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = state.withLock { state -> Bool in
                    if state.writeEnd >= 0 || state.stopped || Task.isCancelled { return true }
                    state.waiting[id] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiting.removeValue(forKey: id) }?.resume()
        }
    }

    public func run() async throws {
        defer { stop() }
        var delay: Duration = .milliseconds(50)
        while true {
            let ended: Ending
            do {
                ended = try await runOneKeeper()
            } catch {
                logger.error("cannot start the keeper; retrying", metadata: ["error": "\(error)", "retry_ms": "\(delay.wholeMilliseconds)"])
                ended = .died
            }
            guard case .died = ended else { return }
            // A keeper that keeps dying is restarted less and less often (never slower than 5 s).
            try? await Task.sleep(for: delay)
            if Task.isCancelled || Task.isShuttingDownGracefully { return }
            delay = min(delay * 2, .seconds(5))
        }
    }

    private enum Ending { case stopped, died }

    /// Runs one keeper until the daemon's shutdown (then closes its pipe: it kills what is
    /// left) or its death.
    private func runOneKeeper() async throws -> Ending {
        var commands: [CInt] = [-1, -1]
        var alive: [CInt] = [-1, -1]
        guard makePipe(&commands) else {
            throw PrewarmError(.internal, "cannot create the keeper pipe: \(String(cString: strerror(errno)))")
        }
        guard makePipe(&alive) else {
            Glibc.close(commands[0])
            Glibc.close(commands[1])
            throw PrewarmError(.internal, "cannot create the keeper pipe: \(String(cString: strerror(errno)))")
        }
        var options = PlatformOptions()
        options.processGroupID = 0
        let result = try await Subprocess.run(
            .path(FilePath(executable)),
            arguments: ["keeper"],
            platformOptions: options,
            input: .fileDescriptor(FileDescriptor(rawValue: commands[0]), closeAfterSpawningProcess: true),
            output: .fileDescriptor(FileDescriptor(rawValue: alive[1]), closeAfterSpawningProcess: true),
            error: .fileDescriptor(.standardError, closeAfterSpawningProcess: false)
        ) { execution -> Ending in
            let pid = execution.processIdentifier.value
            // Take over: the new keeper learns every live group, then new ones as they come.
            let (restarted, groups, waiting) = state.withLock { state in
                for group in state.groups { Self.send("+\(group)\n", to: commands[1]) }
                state.writeEnd = commands[1]
                state.keeperPID = pid
                defer { state.waiting.removeAll() }
                return (state.restarts > 0, state.groups.count, Array(state.waiting.values))
            }
            for spawn in waiting { spawn.resume() }
            if restarted {
                logger.notice("a new keeper took over", metadata: ["process.pid": "\(pid)", "keeper.groups": "\(groups)"])
            } else {
                logger.debug("keeper started", metadata: ["process.pid": "\(pid)"])
            }
            let ending = await Self.untilShutdownOrEOF(alive[0])
            state.withLock { state in
                Glibc.close(state.writeEnd)
                state.writeEnd = -1
                state.keeperPID = nil
                if case .died = ending { state.restarts += 1 }
            }
            if case .died = ending {
                logger.error(
                    "the keeper died; starting a new one before anything else is spawned",
                    metadata: ["process.pid": "\(pid)", "keeper.groups": "\(groups)"]
                )
            }
            return ending
        }
        return result.closureResult
    }

    /// Waits for the daemon's graceful shutdown or the keeper's end (end-of-file on `fd`,
    /// whose write end only the keeper holds). Takes ownership of `fd`.
    private static func untilShutdownOrEOF(_ fd: CInt) async -> Ending {
        let eof: NIOAsyncChannel<ByteBuffer, Never>
        do {
            eof = try await NIOPipeBootstrap(group: MultiThreadedEventLoopGroup.singleton).takingOwnershipOfDescriptor(input: fd) { channel in
                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, Never>(wrappingChannelSynchronously: channel) }
            }
        } catch {
            Glibc.close(fd)
            try? await gracefulShutdown()
            return .stopped
        }
        return await withTaskGroup(of: Ending.self) { group in
            group.addTask {
                try? await gracefulShutdown()
                return .stopped
            }
            group.addTask {
                try? await eof.executeThenClose { inbound, _ in
                    for try await _ in inbound {}
                }
                return Task.isCancelled ? .stopped : .died
            }
            let first = await group.next() ?? .stopped
            group.cancelAll()
            return first
        }
    }

    /// No keeper will come any more: spawns stop waiting for one.
    private func stop() {
        let waiting = state.withLock { state in
            state.stopped = true
            defer { state.waiting.removeAll() }
            return Array(state.waiting.values)
        }
        for spawn in waiting { spawn.resume() }
    }

    /// Closes the daemon's end: the keeper kills what is left and exits.
    public func close() {
        state.withLock { state in
            if state.writeEnd >= 0 { Glibc.close(state.writeEnd) }
            state.writeEnd = -1
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
