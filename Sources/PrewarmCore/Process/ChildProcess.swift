#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import NIOCore
import NIOPosix
import AsyncAlgorithms
import Subprocess
import Synchronization
import SystemPackage

/// What a process's owner tells its pool.
protocol ChildProcessDelegate: Sendable {
    /// The process reached readiness after `startup` and is now an idle spare.
    func processReady(_ id: SpareID, pid: pid_t, startup: Duration)
    /// It never became ready: spawn failure, exit or timeout.
    func processStartFailed(_ id: SpareID, reason: String)
    /// It exited on its own after readiness (idle or mid-turn).
    func processExited(_ id: SpareID, reason: String)
    /// Its turn is over (whatever the outcome); it is being retired.
    func processTurnEnded(_ id: SpareID)
    /// The turn's client has its answer; the process is not stopped yet (a last reading).
    /// Not called for a refused claim: no turn ran.
    func processTurnAnswered(_ id: SpareID)
    /// It and its process group are gone; its resources are free.
    func processGone(_ id: SpareID, exit: String)
}

/// One child process, owned for its whole life by the task that runs `run()`.
///
/// Spawning, the process group and reaping are swift-subprocess's; the pipes are handed to
/// SwiftNIO (`NIOPipeBootstrap`), so stdout arrives as `ByteBuffer`s on the same event loops
/// that serve the HTTP connections and goes out to the client without a copy, with NIO's
/// backpressure. swift-subprocess's own output sequences could not give us either.
///
/// Every decision about its life is taken by one `ProcessLifecycle` (a pure state machine) in
/// one loop of its owner task; other tasks only post events to it (a claim too, after a
/// check of the phase the loop last published, so the hand-over waits for no round trip). The stdout pump, a child task of the owner, cuts lines and routes them
/// (nothing, then the turn's output); it owns its routing, and hears of the turn through one
/// hand-over slot. Nothing but its one turn ever writes to its stdin.
final class ChildProcess: Sendable {
    let id: SpareID
    private let config: PoolConfig
    private let environment: [String: String]
    private let keeper: ProcessGroupKeeper?
    private let logger: Logger
    private let events: AsyncStream<ProcessLifecycle.Event>
    private let post: AsyncStream<ProcessLifecycle.Event>.Continuation
    /// The lifecycle's phase as last published by the owner loop (the only writer).
    private let published = Mutex<ProcessLifecycle.Phase>(.starting)
    /// The turn the pump routes stdout to, handed over by the owner loop at the claim.
    private let routed = Mutex<Turn?>(nil)
    let stderr = StderrRing()
    private let pidBox = Mutex<pid_t?>(nil)
    /// The nice offset it runs at over the daemon's (a spare booting beside turns), until a
    /// turn takes it or waits for it: then 0.
    private let niceOffset: Mutex<Int>
    /// The stamp taken as its claim made ahead went in (`config.aheadClaim`).
    private let stampAhead = Mutex<ClaimStamp?>(nil)

    /// How long a retired process gets after its stdin closes, and again after SIGTERM.
    static let retireGrace: Duration = .seconds(1)

    typealias Phase = ProcessLifecycle.Phase
    typealias Ending = ProcessLifecycle.Ending

    var pid: pid_t? { pidBox.withLock { $0 } }
    var currentPhase: Phase { published.withLock { $0 } }

    /// `niceOffset`: how much lower than the daemon's its CPU priority starts (see
    /// `StartupPriority`); 0 for a process a turn already waits for.
    init(id: SpareID, config: PoolConfig, environment: [String: String], keeper: ProcessGroupKeeper?, niceOffset: Int = 0, logger: Logger) {
        self.id = id
        self.niceOffset = Mutex(niceOffset)
        self.config = config
        self.environment = environment
        self.keeper = keeper
        self.logger = logger
        (self.events, self.post) = AsyncStream.makeStream(of: ProcessLifecycle.Event.self)
    }

    // MARK: - Other tasks' side

    /// Binds this idle process to `turn`: false if the owner loop has seen it end (the pool
    /// then takes another). Else the claim goes to the loop, in order with every other
    /// event, and the turn's response starts at once (no round trip on the hand-over's path):
    /// if the process died in the instant between, the loop ends the turn as `exited`.
    func claim(_ turn: Turn) -> Bool {
        guard currentPhase == .idle else { return false }
        raisePriority()
        if case .terminated = post.yield(.claim(turn)) { return false }
        return true
    }

    /// Why this process cannot serve a turn now, from its `/proc/PID/stat` state (a cheap
    /// read): stopped (SIGSTOP, a debugger) or dead and not reaped yet. nil: runnable.
    func notRunnable() -> String? {
        guard let pid else { return "not spawned" }
        guard let fields = ProcessMemory.statFields(path: "/proc/\(pid)/stat"), let state = fields.first?.first else {
            return "gone (no /proc/\(pid)/stat)"
        }
        switch state {
        case "T": return "stopped (state T)"
        case "t": return "stopped by a tracer (state t)"
        case "Z", "X": return "exited (state \(state))"
        default: return nil
        }
    }

    /// Gives it the daemon's CPU priority back, if it ran lower: a turn has it or waits for it.
    func raisePriority() {
        niceOffset.withLock { offset in
            guard offset != 0 else { return }
            offset = 0
            // Not spawned yet: it will not be lowered. Spawned: its group gets the daemon's.
            guard let pid = pidBox.withLock({ $0 }), !StartupPriority.set(processGroup: pid, offset: 0) else { return }
            let error = String(cString: strerror(errno))
            logger.warning("cannot restore a spare's CPU priority", metadata: ["process.pid": "\(pid)", "error": "\(error)"])
        }
    }

    /// Lowers the priority of the group just spawned, unless a turn already wants it.
    private func lowerPriority(pid: pid_t) {
        niceOffset.withLock { offset in
            guard offset != 0 else { return }
            if !StartupPriority.set(processGroup: pid, offset: offset) { offset = 0 }
        }
    }

    /// Sends `signal` to the process (not its group) while it serves its turn: a drop-in
    /// run's client forwards SIGTERM, SIGINT and SIGHUP, which the CLI handles itself (it
    /// writes its transcript on the way out). Under the lock its owner publishes its phase
    /// with, so the pid cannot have been reaped (and reused) in between. False when the turn
    /// is over.
    func signal(_ signal: Int32) -> Bool {
        published.withLock { phase in
            guard phase == .busy || phase == .claiming, let pid = pidBox.withLock({ $0 }) else { return false }
            return kill(pid, signal) == 0
        }
    }

    /// Asks the owner to stop the process (idle spare, start-up, or a drain).
    func retire() { post.yield(.retire) }

    var servedTurn: Turn? { routed.withLock { $0 } }

    var aheadClaim: AheadClaim? { config.aheadClaim }
    var aheadStamp: ClaimStamp? { stampAhead.withLock { $0 } }

    /// The turn's client went away: the process is killed at once.
    func clientGone() { post.yield(.clientGone) }

    // MARK: - The owner

    /// Spawns the process and supervises it until it and its group are gone.
    func run(delegate: any ChildProcessDelegate) async {
        // Nothing is spawned while no keeper could kill it if the daemon died.
        await keeper?.available()
        let started = ContinuousClock.now
        var ending: Ending = .startFailed("not started")
        var status: TerminationStatus?
        var privateDirectory: String?
        do {
            var cwd = config.cwd
            if cwd == nil, let directories = config.privateDirectories {
                privateDirectory = try PrivateDirectory.make(under: directories.root, prefix: "p")
                cwd = privateDirectory
            }
            let pipes = try PipeSet()
            var options = PlatformOptions()
            options.processGroupID = 0  // a group of its own, killed as a group
            do {
                let result = try await Subprocess.run(
                    .path(FilePath(config.executable)),
                    arguments: Arguments(config.args),
                    environment: .custom(childEnvironment()),
                    workingDirectory: cwd.map { FilePath($0) },
                    platformOptions: options,
                    input: .fileDescriptor(FileDescriptor(rawValue: pipes.stdinRead), closeAfterSpawningProcess: true),
                    output: .fileDescriptor(FileDescriptor(rawValue: pipes.stdoutWrite), closeAfterSpawningProcess: true),
                    error: .fileDescriptor(FileDescriptor(rawValue: pipes.stderrWrite), closeAfterSpawningProcess: true)
                ) { execution in
                    let pid = execution.processIdentifier.value
                    self.pidBox.withLock { $0 = pid }
                    self.lowerPriority(pid: pid)
                    self.keeper?.track(processGroup: pid)
                    let ending = await self.supervise(pid: pid, pipes: pipes, started: started, delegate: delegate) { atOnce, stdin in
                        await Self.stop(execution, pid: pid, stdin: stdin, atOnce: atOnce)
                    }
                    // The group is dead; the leader is a zombie until `run` reaps it.
                    self.keeper?.untrack(processGroup: pid)
                    return ending
                }
                ending = result.closureResult
                status = result.terminationStatus
            } catch {
                pipes.closeParentEnds()
                ending = .startFailed(Self.spawnFailure(error, command: config.command, executable: config.executable))
            }
        } catch {
            ending = .startFailed("cannot prepare the process: \(error)")
        }
        published.withLock { $0 = .ended }
        await refuseLateClaims()
        // The group is dead: nothing writes to its directories any more.
        var directories = [privateDirectory]
        if case .turn(let turn, _, _) = ending { directories.append(turn.ownedDirectory) }
        if config.privateDirectories?.keep != true {
            for case let directory? in directories {
                if let failure = PrivateDirectory.remove(directory) {
                    logger.warning("cannot remove a turn's directory", metadata: ["path": "\(directory)", "error": "\(failure)"])
                }
            }
        }
        report(ending, status: status, started: started, delegate: delegate)
        delegate.processGone(id, exit: ending.summary + (status.map { " (\(Self.describe($0)))" } ?? ""))
    }

    /// After the loop: no more messages; a claim that was still on its way ends its turn.
    private func refuseLateClaims() async {
        post.finish()
        for await case .claim(let turn) in events { Self.lateClaim(turn) }
    }

    /// A claim that reached the loop after the process's end: its turn never ran.
    private static func lateClaim(_ turn: Turn) {
        turn.finish(TurnResult(outcome: .exited, detail: "the process ended as the turn took it; retry"))
    }

    private func report(_ ending: Ending, status: TerminationStatus?, started: ContinuousClock.Instant, delegate: some ChildProcessDelegate) {
        let exitStatus = status.map(Self.exitCode)
        switch ending {
        case .startFailed(var reason):
            if let status, !reason.contains("exit") { reason += " (\(Self.describe(status)))" }
            let stderrTail = stderr.lastLines()
            if !stderrTail.isEmpty { reason += "; stderr: \(stderrTail)" }
            logger.warning(
                "start-up failed",
                metadata: [
                    "pool.name": "\(config.name)", "process.pid": "\(pid.map(String.init) ?? "-")",
                    "startup.ms": "\(started.duration(to: .now).wholeMilliseconds)", "startup.outcome": "failed", "reason": "\(reason)",
                ]
            )
            delegate.processStartFailed(id, reason: reason)
        case .retired, .diedIdle:
            break
        case .turn(let turn, let outcome, let detail):
            var result = TurnResult(outcome: outcome, exitStatus: outcome == .completed && !turn.untilExit ? nil : exitStatus, detail: detail)
            if outcome == .exited {
                let stderrTail = stderr.lastLines()
                result.detail = "the process exited before the end of the turn (\(status.map(Self.describe) ?? "unknown status"))"
                    + (stderrTail.isEmpty ? "" : "; stderr: \(stderrTail)")
            }
            turn.finish(result)
        }
    }

    /// Everything between spawn and the death of the group.
    private func supervise(
        pid: pid_t, pipes: PipeSet, started: ContinuousClock.Instant, delegate: some ChildProcessDelegate,
        stop: @escaping @Sendable (_ atOnce: Bool, NIOAsyncChannelOutboundWriter<ByteBuffer>) async -> Void
    ) async -> Ending {
        let channels: (NIOAsyncChannel<ByteBuffer, ByteBuffer>, NIOAsyncChannel<ByteBuffer, Never>)
        do {
            channels = try await pipes.makeChannels()
        } catch {
            kill(-pid, SIGKILL)
            return .startFailed("cannot attach to the process's pipes: \(error)")
        }
        var ending: Ending = .retired
        do {
            try await channels.0.executeThenClose { stdout, stdin in
                try await channels.1.executeThenClose { stderrStream, _ in
                    ending = await withTaskGroup(of: Void.self, returning: Ending.self) { group in
                        let stderrRead = OneShot<Void>()
                        group.addTask {
                            do {
                                for try await chunk in stderrStream {
                                    self.stderr.append(chunk)
                                    // A drop-in run's client gets it too, from the hand-over on.
                                    if let errors = self.routed.withLock({ $0?.errors }) { await errors.send(chunk) }
                                }
                            } catch {}
                            _ = stderrRead.set(())
                        }
                        group.addTask { await self.pumpStdout(stdout) }
                        let ending = await self.lifecycle(pid: pid, stdin: stdin, started: started, group: &group, delegate: delegate)
                        // A resume spare retired unused is killed: let exit, it writes to its transcript.
                        await stop(ending.killAtOnce || (self.config.retireAtOnce && ending.isRetired), stdin)
                        if ending.reportsStderr {
                            // The group is dead: what it wrote last is in the pipe until its end
                            // (a little longer at most, if something else holds the pipe open).
                            group.addTask {
                                try? await Task.sleep(for: .milliseconds(500))
                                _ = stderrRead.set(())
                            }
                            await stderrRead.value()
                        }
                        group.cancelAll()
                        return ending
                    }
                }
            }
        } catch {
            kill(-pid, SIGKILL)
        }
        return ending
    }

    /// The one loop where this process's decisions are taken: every event goes through the
    /// `ProcessLifecycle`, and its actions are performed here.
    private func lifecycle(
        pid: pid_t,
        stdin: NIOAsyncChannelOutboundWriter<ByteBuffer>,
        started: ContinuousClock.Instant,
        group: inout TaskGroup<Void>,
        delegate: some ChildProcessDelegate
    ) async -> Ending {
        let post = self.post
        if let send = config.ready.send {
            do {
                try await stdin.write(ByteBuffer(string: send.hasSuffix("\n") ? send : send + "\n"))
            } catch {
                return .startFailed("cannot write the readiness line to stdin: \(error)")
            }
        }
        // Its timeouts are NIO scheduled tasks, cancelled (and freed) at once when the loop
        // ends: a cancelled Task.sleep would hold its timer until the deadline (600 s for a
        // turn), a little memory for every turn served.
        var timers: [Scheduled<Void>] = []
        defer { for timer in timers { timer.cancel() } }
        let loop = MultiThreadedEventLoopGroup.singleton.any()
        if config.ready.expect == nil {
            post.yield(.ready)
        } else {
            timers.append(loop.scheduleTask(in: TimeAmount(config.ready.timeout)) { post.yield(.readyTimeout) })
        }
        var machine = ProcessLifecycle(readyTimeout: config.ready.timeout)
        for await event in events {
            let actions = machine.handle(event)
            published.withLock { $0 = machine.phase }
            for action in actions {
                switch action {
                case .reportReady:
                    let startup = started.duration(to: .now)
                    logger.info(
                        "start-up ready",
                        metadata: [
                            "pool.name": "\(config.name)", "process.pid": "\(pid)",
                            "startup.ms": "\(startup.wholeMilliseconds)", "startup.outcome": "ready",
                        ]
                    )
                    delegate.processReady(id, pid: pid, startup: startup)
                case .reportDiedIdle:
                    let tail = stderr.lastLines()
                    delegate.processExited(id, reason: "an idle spare exited" + (tail.isEmpty ? "" : "; stderr: \(tail)"))
                case .refuseClaim(let turn):
                    Self.lateClaim(turn)
                case .route(let turn):
                    routed.withLock { $0 = turn }
                case .armTurnTimeout(let timeout):
                    guard let timeout else { break }
                    timers.append(loop.scheduleTask(in: TimeAmount(timeout)) { post.yield(.turnTimeout) })
                case .writeClaim(let turn):
                    guard let claim = turn.claim else { break }
                    group.addTask { await Self.write(claim.line, then: nil, close: false, to: stdin, post: post) }
                case .writeAheadClaim:
                    guard let ahead = config.aheadClaim else { break }
                    // Taken before the CLI reads: whatever changes after it makes the stamps differ.
                    stampAhead.withLock { $0 = ClaimStamp.take(cwd: ahead.cwd, configDirectory: config.claude?.configDirectory) }
                    group.addTask { await Self.write(ByteBuffer(string: ahead.line), then: nil, close: false, to: stdin, post: post) }
                case .writeInput(let turn):
                    group.addTask { await Self.write(turn.input, then: turn.inputStream, close: turn.closeStdin, to: stdin, post: post) }
                case .settleClaim(let turn, let outcome):
                    turn.settleClaim(outcome)
                case .turnEnded:
                    delegate.processTurnEnded(id)
                case .finish(let turn, let result):
                    turn.finish(result)
                case .turnAnswered:
                    delegate.processTurnAnswered(id)
                case .stop(let ending):
                    return ending
                }
            }
        }
        return .retired
    }

    /// Reads stdout for the process's whole life and routes each line segment: looking for
    /// the readiness line, then dropping an idle process's output, then (once the owner hands
    /// it a turn) the turn's output up to its end line. Its observations go to the owner
    /// loop as events.
    private func pumpStdout(_ stdout: NIOAsyncChannelInboundStream<ByteBuffer>) async {
        enum Route {
            /// Looking for the readiness line; nothing is forwarded.
            case starting
            /// Ready, and claimed ahead: looking for the claim's answer.
            case claimingAhead
            /// Unrequested output of an idle process: dropped.
            case idle
            /// Whole lines are inspected before the turn's output starts: the answer to a
            /// claim, and unrequested chatter to drop.
            case leading(Turn, claimAnswered: Bool)
            /// The turn's output.
            case turn(Turn)
            /// After the end-of-turn line (or a refused claim): dropped.
            case ended
        }
        let post = self.post
        var route: Route = config.ready.expect == nil ? .idle : .starting
        var scanner = LineScanner(ready: config.ready.expect, end: config.turn.marker)
        var endCheck = config.turn.endType.map { EndTypeCheck(type: $0) }
        var leadingLine = ByteBuffer()
        do {
            for try await chunk in stdout {
                for var segment in scanner.scan(chunk) {
                    if endCheck != nil {
                        segment.lineHasEnd = endCheck!.confirm(segment)
                        // The session a turn ended in (a `result`'s session_id): its resume spare's.
                        if segment.lineHasEnd, let session = endCheck!.sessionID, let turn = routed.withLock({ $0 }) {
                            turn.ended(inSession: session)
                        }
                    }
                    if case .idle = route, let turn = routed.withLock({ $0 }) {
                        let leading = turn.claim != nil || turn.dropLeadingChatter
                        let answered = turn.claim == nil || config.aheadClaim != nil
                        route = leading ? .leading(turn, claimAnswered: answered) : .turn(turn)
                    }
                    switch route {
                    case .starting:
                        if segment.lineHasReady {
                            route = config.aheadClaim == nil ? .idle : .claimingAhead
                            post.yield(config.aheadClaim == nil ? .ready : .readyToClaimAhead)
                        }
                    case .claimingAhead:
                        var piece = segment.bytes
                        leadingLine.writeBuffer(&piece)
                        guard segment.completesLine else { continue }
                        let line = leadingLine
                        leadingLine = ByteBuffer()
                        guard let outcome = ClaimOutcome.parse(line: Data(line.readableBytesView), requestID: AheadClaim.requestID) else { continue }
                        if case .accepted = outcome { route = .idle } else { route = .ended }
                        post.yield(.aheadClaimAnswered(outcome))
                    case .idle, .ended:
                        continue
                    case .leading(let turn, let claimAnswered):
                        var piece = segment.bytes
                        leadingLine.writeBuffer(&piece)
                        guard segment.completesLine else { continue }
                        let line = leadingLine
                        leadingLine = ByteBuffer()
                        if !claimAnswered {
                            // Everything before the claim's answer is the parked CLI's own.
                            guard let claim = turn.claim,
                                let outcome = ClaimOutcome.parse(line: Data(line.readableBytesView), requestID: claim.id)
                            else { continue }
                            if case .accepted = outcome {
                                route = .leading(turn, claimAnswered: true)
                            } else {
                                route = .ended
                            }
                            post.yield(.claimAnswered(outcome))
                            continue
                        }
                        if line.readableBytes < 4096, StreamJSONLine.parse(line.readableBytesView)?.isChatter == true { continue }
                        route = .turn(turn)
                        await turn.output.send(line)
                        if segment.lineHasEnd && !turn.untilExit {
                            route = .ended
                            post.yield(.turnCompleted)
                        }
                    case .turn(let turn):
                        await turn.output.send(segment.bytes)
                        if segment.lineHasEnd && !turn.untilExit {
                            route = .ended
                            post.yield(.turnCompleted)
                        }
                    }
                }
            }
        } catch {}
        post.yield(.stdoutClosed)
    }

    /// Writes a turn's input to the process: its body, then (a two-way turn) what its client
    /// sends until the client closes its side, which closes stdin. Run in a child task, so
    /// a process that does not read its stdin cannot stall the owner loop (and with it the
    /// turn's timeout and its client's departure).
    private static func write(
        _ input: ByteBuffer, then stream: AsyncChannel<ByteBuffer>?, close: Bool, to stdin: NIOAsyncChannelOutboundWriter<ByteBuffer>,
        post: AsyncStream<ProcessLifecycle.Event>.Continuation
    ) async {
        do {
            if input.readableBytes > 0 { try await stdin.write(input) }
            if let stream {
                for await chunk in stream { try await stdin.write(chunk) }
                stdin.finish()
            } else if close {
                stdin.finish()
            }
        } catch {
            post.yield(.stdinFailed("\(error)"))
        }
    }

    /// Stops the process group: gently (stdin closed; then SIGTERM to the group; then
    /// SIGKILL, a grace period apart) or at once (SIGKILL). The waits end at the leader's
    /// exit, which swift-subprocess reports as an event (pidfd), not by polling.
    private static func stop<I, O, E>(
        _ execution: Execution<I, O, E>, pid: pid_t, stdin: NIOAsyncChannelOutboundWriter<ByteBuffer>, atOnce: Bool
    ) async {
        if atOnce {
            kill(-pid, SIGKILL)
            return
        }
        stdin.finish()
        await execution.teardown(using: [
            // Signal 0 sends nothing: the CLI has its stdin's end to finish on (it writes its
            // transcript on the way out).
            .send(signal: Signal(rawValue: 0), toProcessGroup: false, allowedDurationToNextStep: retireGrace),
            .send(signal: .terminate, toProcessGroup: true, allowedDurationToNextStep: retireGrace),
        ])
        kill(-pid, SIGKILL)  // whatever the leader left behind in its group
    }

    // MARK: - Helpers

    private func childEnvironment() -> [Environment.Key: String] {
        var result: [Environment.Key: String] = [:]
        for (name, value) in config.childEnvironment(from: environment) {
            result[Environment.Key(stringLiteral: name)] = value
        }
        return result
    }

    static func spawnFailure(_ error: any Error, command: String, executable: String) -> String {
        if !executable.hasPrefix("/") {
            return "command not found: \(command) (looked next to the prewarm executable and on PATH)"
        }
        let text = "\(error)"
        if text.contains("ENOENT") || text.contains("No such file") || text.lowercased().contains("not found") {
            return "command not found: \(executable)"
        }
        return "cannot start \(executable): \(text)"
    }

    static func exitCode(_ status: TerminationStatus) -> Int32 {
        switch status {
        case .exited(let code): code
        case .signaled(let signal): 128 + signal
        }
    }

    static func describe(_ status: TerminationStatus) -> String {
        switch status {
        case .exited(let code): "exit status \(code)"
        case .signaled(let signal): "killed by signal \(signal)"
        }
    }

}

/// The three pipes of a child: the child's ends go to the spawn, ours to SwiftNIO.
private struct PipeSet: Sendable {
    let stdinRead: CInt, stdinWrite: CInt
    let stdoutRead: CInt, stdoutWrite: CInt
    let stderrRead: CInt, stderrWrite: CInt

    init() throws {
        var fds = [CInt](repeating: -1, count: 6)
        for index in stride(from: 0, to: 6, by: 2) {
            var pair: [CInt] = [-1, -1]
            guard makePipe(&pair) else {
                let error = errno
                for fd in fds where fd >= 0 { close(fd) }
                throw PrewarmError(.internal, "pipe2 failed: \(String(cString: strerror(error)))")
            }
            fds[index] = pair[0]
            fds[index + 1] = pair[1]
        }
        (stdinRead, stdinWrite, stdoutRead, stdoutWrite, stderrRead, stderrWrite) = (fds[0], fds[1], fds[2], fds[3], fds[4], fds[5])
    }

    func closeParentEnds() {
        close(stdinWrite)
        close(stdoutRead)
        close(stderrRead)
    }

    func makeChannels() async throws -> (NIOAsyncChannel<ByteBuffer, ByteBuffer>, NIOAsyncChannel<ByteBuffer, Never>) {
        let bootstrap = NIOPipeBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        // A small inbound buffer: what a slow client holds back stays in the pipe.
        let configuration = NIOAsyncChannel<ByteBuffer, ByteBuffer>.Configuration(
            backPressureStrategy: .init(lowWatermark: 1, highWatermark: 2),
            isOutboundHalfClosureEnabled: true
        )
        let io = try await bootstrap.takingOwnershipOfDescriptors(input: stdoutRead, output: stdinWrite) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel, configuration: configuration)
            }
        }
        let errors = try await bootstrap.takingOwnershipOfDescriptor(input: stderrRead) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, Never>(wrappingChannelSynchronously: channel)
            }
        }
        return (io, errors)
    }
}

/// pipe(2) with both ends close-on-exec (Glibc's module does not export pipe2).
func makePipe(_ pair: inout [CInt]) -> Bool {
    guard pipe(&pair) == 0 else { return false }
    _ = fcntl(pair[0], F_SETFD, FD_CLOEXEC)
    _ = fcntl(pair[1], F_SETFD, FD_CLOEXEC)
    return true
}
