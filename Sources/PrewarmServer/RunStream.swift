#if canImport(Glibc)
import Glibc
#endif
import AsyncAlgorithms
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOConcurrencyHelpers
import PrewarmCore

/// Drop-in runs: `POST /v1/runs` with `Connection: Upgrade`, `Upgrade: prewarm-stream` and
/// the run in `Prewarm-Run` (base64 JSON `{"argv", "cwd", "env", "cli"}`), from
/// `prewarm-claude`. The run is admitted like a two-way turn (a spare of the pool that
/// serves its command line, claimed with its session; else a cold start in its fingerprint
/// pool), then answered 101, and from then on both sides speak frames, because a run
/// carries more than one byte stream: stdout and stderr apart, the CLI's exit status, and
/// signals after stdin has ended.
///
/// A frame is one type byte, a 4-byte big-endian length and that many bytes:
/// - client to daemon: `i` stdin bytes; `e` the end of stdin (the process's stdin closes,
///   the run goes on); `s` a signal (one byte: SIGTERM, SIGINT, SIGHUP or SIGQUIT),
///   forwarded to the process (the CLI writes its transcript on the way out);
/// - daemon to client: `o` stdout bytes; `e` stderr bytes; `x` the end: a 4-byte big-endian
///   exit status (128+N for a process killed by signal N), then a one-line reason when the
///   daemon ended the run (timeout, drain).
/// The client closing the connection kills the process at once, as for a turn.
enum RunFrame {
    static let stdin = UInt8(ascii: "i")
    static let stdinEnd = UInt8(ascii: "e")
    static let signal = UInt8(ascii: "s")
    static let stdout = UInt8(ascii: "o")
    static let stderr = UInt8(ascii: "e")
    static let exit = UInt8(ascii: "x")
    /// The largest frame a client may send (prewarm-claude sends 64 KiB at most).
    static let maxInbound = 1 << 20
    /// The signals a client may forward: the ones an SDK's `close()` and a terminal send.
    static let forwardedSignals: Set<Int32> = [SIGTERM, SIGINT, SIGHUP, SIGQUIT]

    static func make(_ type: UInt8, _ payload: ByteBuffer) -> ByteBuffer {
        var payload = payload
        var frame = ByteBuffer()
        frame.reserveCapacity(5 + payload.readableBytes)
        frame.writeInteger(type)
        frame.writeInteger(UInt32(payload.readableBytes))
        frame.writeBuffer(&payload)
        return frame
    }

    static func exit(status: Int32, reason: String?) -> ByteBuffer {
        var payload = ByteBuffer()
        payload.writeInteger(status)
        if let reason { payload.writeString(reason) }
        return make(Self.exit, payload)
    }

    /// What a client sent: complete frames are taken off `buffer`.
    enum Inbound: Equatable {
        case stdin(ByteBuffer)
        case stdinEnd
        case signal(Int32)
    }

    struct ProtocolError: Error, CustomStringConvertible {
        let description: String
    }

    static func next(_ buffer: inout ByteBuffer) throws(ProtocolError) -> Inbound? {
        guard buffer.readableBytes >= 5,
            let type = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
            let length = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt32.self)
        else { return nil }
        guard Int(length) <= maxInbound else { throw ProtocolError(description: "a frame of \(length) bytes (at most \(maxInbound))") }
        guard buffer.readableBytes >= 5 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 5)
        let payload = buffer.readSlice(length: Int(length))!
        switch type {
        case stdin: return .stdin(payload)
        case stdinEnd: return .stdinEnd
        case signal:
            guard length == 1, let number = payload.getInteger(at: payload.readerIndex, as: UInt8.self) else {
                throw ProtocolError(description: "a signal frame must hold one byte")
            }
            return .signal(Int32(number))
        default:
            throw ProtocolError(description: "an unknown frame type \(type)")
        }
    }
}

/// Admission of drop-in runs, before the 101.
final class RunAdmission: Sendable {
    let broker: Broker
    let connections: Connections

    init(broker: Broker, connections: Connections) {
        self.broker = broker
        self.connections = connections
    }

    static let runHeader = HTTPField.Name("Prewarm-Run")!

    /// Runs are the daemon's own uid's only: its CLI would run as the daemon's user, with the
    /// daemon's rights, on the caller's files.
    @discardableResult
    func authorize(_ channel: any Channel) async throws(PrewarmError) -> UInt32? {
        let caller = await connections.of(channel)?.uid
        if broker.draining {
            throw PrewarmError(.draining, "the daemon is shutting down; run the CLI yourself or retry after the restart")
        }
        guard caller == getuid() else {
            throw PrewarmError(.runNotServed, "the daemon serves drop-in runs of its own uid (\(getuid())) only, not uid \(caller.map(String.init) ?? "unknown")")
        }
        return caller
    }

    func admit(_ request: Request, context: PrewarmRequestContext, into slot: StreamSlot) async throws(PrewarmError) -> Response {
        let arrived = ContinuousClock.now
        let arrivedAt = Date()
        let channel = context.channel
        let caller = try await authorize(channel)
        guard let header = request.headers[Self.runHeader] else {
            throw PrewarmError(.badRequest, "POST /v1/runs needs the run in Prewarm-Run: base64 JSON {\"argv\", \"cwd\", \"env\"}")
        }
        var run = try RunDescription.decode(header: header)
        // An operand without --print is the interactive CLI given a first prompt, or a
        // subcommand (`claude mcp list`): nothing a spare does. The drop-in runs the real CLI
        // (it has read nothing of its stdin yet).
        let line = ClaudeCommandLine(run.argv)
        let printing = line.options.contains { $0.name == "--print" }
        if !line.operands.isEmpty, !printing {
            throw PrewarmError(.runNotServed, "an operand without --print (\(line.operands.first ?? "")...: the interactive CLI or a subcommand) is the real CLI's to run")
        }
        // Print mode (`claude -p PROMPT`): served by a stream-json spare given the prompt as a
        // user message; what the CLI refuses or does otherwise stays the real CLI's.
        var print: PrintRun?
        if printing {
            guard let parsed = PrintRun.parse(line, stdinIsTerminal: false) else {
                throw PrewarmError(.runNotServed, "a print-mode command line that the real CLI answers itself (see PrintRun)")
            }
            print = parsed
            run.argv = parsed.spareArguments
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: run.cwd, isDirectory: &isDirectory), isDirectory.boolValue,
            access(run.cwd, R_OK | X_OK) == 0
        else {
            throw PrewarmError(.runNotServed, "the daemon cannot enter the run's directory \(run.cwd)")
        }
        let route = try broker.route(run)
        let pool: Pool
        let plan: TurnResponder.Plan
        var model: String?
        var filter = RunOutputFilter.Rules()
        switch route {
        case .spare(let serving, let matched, let own):
            pool = serving
            model = matched.model
            filter = matched.filter
            // The conversion drops partial messages itself, leaving every other byte alone.
            if print != nil { filter.dropPartialMessages = false }
            if matched.claimed {
                plan = TurnResponder.Plan(
                    claim: TurnResponder.ClaimPlan(
                        session: matched.session, cwd: run.cwd, directories: nil, sdkMcpServers: matched.sdkMcpServers,
                        claimAhead: serving.config.claude?.claimAhead ?? false
                    ),
                    fallback: .cold(own)  // a refused claim (project settings, a start file changed...): the same run, cold
                )
            } else {
                plan = TurnResponder.Plan()
            }
        case .cold(let serving, let config, _):
            pool = serving
            plan = TurnResponder.Plan(launch: .cold(config))
        case .resume(let serving, let key, let config):
            pool = serving
            plan = TurnResponder.Plan(launch: .resume(key, cold: config))
        }
        // What a resume spare of the run's session would copy, once the run is over. A print
        // run leaves one only if it resumed a session itself: `claude -p` callers that never
        // resume (API wrappers, scripts) would pay a CLI's boot per run for nothing, and a
        // conversation (the Laravel SDK's ->resume($id)) has one from its first resumed turn.
        let resumed: Bool = if case .resume = route { true } else { false }
        let resume = print == nil || resumed ? ResumeSource(run: run, config: route.ownConfig) : nil
        let config = pool.config
        let turnID = RequestID.accepted(request.headers[.xRequestID]) ?? TurnResponder.makeTurnID()
        let input = AsyncChannel<ByteBuffer>()
        let record = TurnContext(
            broker: broker, pool: pool, turnID: turnID, arrived: arrived, arrivedAt: arrivedAt, caller: caller, twoWay: true, logger: context.logger
        )
        // After a claim, `set_model` (its answer is the daemon's, filtered out); then the caller's bytes.
        let leading = model.map { ByteBuffer(string: SessionSettings.setModelRequest(id: "\(RunOutputFilter.ownRequestPrefix)model-\(turnID)", model: $0)) }
        let turn: Turn
        let lease: Lease
        do {
            (turn, lease) = try await TurnResponder.acquire(record, plan: plan, channel: channel, connections: connections) { claim, directory in
                Turn(
                    id: turnID, input: leading ?? ByteBuffer(), closeStdin: false, timeout: config.dropInTimeout, claim: claim,
                    dropLeadingChatter: true, inputStream: input, ownedDirectory: directory, untilExit: true, forwardsErrors: true,
                    resume: resume
                )
            }
        } catch {
            input.finish()
            throw error
        }
        if let via = run.via { pool.countRun(via: via) }
        return slot.answer(
            StreamAdmission.Admitted(
                pool: pool.name, turn: turn, lease: lease, input: input, outcomeLine: false,
                headers: StreamAdmission.Admitted.headers(turnID: turnID, lease: lease) + [("Prewarm-Pool", pool.name)],
                record: record, run: filter, print: print
            )
        )
    }
}

/// A drop-in run after the 101: frames both ways until the process is gone.
struct RunStream {
    let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
    let admitted: StreamAdmission.Admitted
    let rules: RunOutputFilter.Rules
    let logger: Logger

    private enum Piece: Sendable {
        case stdout(ByteBuffer)
        case stderr(ByteBuffer)
    }

    func run() async {
        let (turn, lease, input, logger, rules) = (admitted.turn, admitted.lease, admitted.input, logger, rules)
        let arrived = admitted.record.arrived
        // Why the client's side ended the run early, set before its process is killed.
        let ended = NIOLockedValueBox<ClientEnd?>(nil)
        let print = admitted.print
        await admitted.serve(channel) { inbound, outbound, counts in
            try await withThrowingTaskGroup(of: Int.self) { group in
                group.addTask {
                    await Self.readClient(inbound, input: input, lease: lease, turn: turn, print: print, ended: ended, logger: logger)
                }
                var filter = RunOutputFilter(rules: rules)
                var conversion = print?.conversion()
                // A run's turn forwards stderr (RunAdmission makes it so); a finished channel otherwise.
                let errors = turn.errors ?? AsyncChannel<ByteBuffer>()
                if turn.errors == nil { errors.finish() }
                for await piece in merge(turn.output.map { Piece.stdout($0) }, errors.map { Piece.stderr($0) }) {
                    let frame: ByteBuffer
                    switch piece {
                    case .stdout(let chunk):
                        var kept = filter.filter(chunk)
                        if let printed = conversion?.consume(Array(kept.readableBytesView)) { kept = ByteBuffer(bytes: printed) }
                        // A print run's turn is over at its result: the spare's stdin ends, so it exits.
                        if conversion?.sawResult == true { input.finish() }
                        guard kept.readableBytes > 0 else { continue }
                        if counts.firstByte == nil { counts.firstByte = arrived.duration(to: .now) }
                        counts.bytesOut += kept.readableBytes
                        frame = RunFrame.make(RunFrame.stdout, kept)
                    case .stderr(let chunk):
                        frame = RunFrame.make(RunFrame.stderr, chunk)
                    }
                    try await outbound.write(frame)
                }
                var rest = filter.finish()
                if let printed = conversion?.consume(Array(rest.readableBytesView)) { rest = ByteBuffer(bytes: printed) }
                if rest.readableBytes > 0 { try await outbound.write(RunFrame.make(RunFrame.stdout, rest)) }
                var (status, reason) = Self.exitStatus(await turn.result())
                let end = ended.withLockedValue { $0 }
                if end == .noInput {
                    // Neither a prompt nor stdin: what the CLI says, as it says it.
                    try await outbound.write(RunFrame.make(RunFrame.stderr, ByteBuffer(string: PrintRun.noInputError)))
                    (status, reason) = (1, nil)
                } else if let end = conversion?.finish(exitStatus: status > 128 ? nil : status, signal: status > 128 ? status - 128 : nil) {
                    // What the CLI prints last in this output format, and its exit status.
                    if !end.stdout.isEmpty { try await outbound.write(RunFrame.make(RunFrame.stdout, ByteBuffer(bytes: end.stdout))) }
                    if !end.stderr.isEmpty { try await outbound.write(RunFrame.make(RunFrame.stderr, ByteBuffer(bytes: end.stderr))) }
                    status = end.status
                }
                if case .protocolViolation(let broken) = end {
                    // Killed for it: never a success, whatever the process managed to do first
                    // (its stdin's end can reach it before the kill does).
                    status = status == 0 ? 128 + SIGKILL : status
                    reason = "the run was ended: its client broke the protocol (\(broken))"
                }
                try await outbound.write(RunFrame.exit(status: status, reason: reason))
                group.cancelAll()
                input.finish()
                counts.bytesIn = (try? await group.next()) ?? 0
            }
        }
    }

    /// The client's frames: stdin to the process (as fast as it reads), its end, signals. A
    /// client that closes the connection, or sends what is not a frame, ends the run: the
    /// process is killed.
    private static func readClient(
        _ inbound: NIOAsyncChannelInboundStream<ByteBuffer>, input: AsyncChannel<ByteBuffer>, lease: Lease, turn: Turn,
        print: PrintRun?, ended: NIOLockedValueBox<ClientEnd?>, logger: Logger
    ) async -> Int {
        var count = 0
        var buffer = ByteBuffer()
        var stdinOpen = true
        // A print run's stdin, read to its end as the CLI reads it (then the prompt's message).
        var printed: [UInt8] = []
        do {
            for try await var chunk in inbound {
                buffer.writeBuffer(&chunk)
                while let frame = try RunFrame.next(&buffer) {
                    switch frame {
                    case .stdin(let bytes):
                        guard stdinOpen else { throw RunFrame.ProtocolError(description: "stdin bytes after its end") }
                        count += bytes.readableBytes
                        if print != nil {
                            guard printed.count + bytes.readableBytes <= Self.maxPrintInput else {
                                throw RunFrame.ProtocolError(description: "a print run's stdin over \(Self.maxPrintInput >> 20) MiB")
                            }
                            printed += bytes.readableBytesView
                        } else {
                            await input.send(bytes)
                        }
                    case .stdinEnd:
                        stdinOpen = false
                        if let print {
                            guard let message = print.message(stdin: String(decoding: printed, as: UTF8.self)) else {
                                ended.withLockedValue { $0 = .noInput }
                                if !turn.isFinished { lease.clientGone() }
                                input.finish()
                                return count
                            }
                            printed = []
                            await input.send(ByteBuffer(bytes: PrintRun.userLine(message)))
                            // The spare's stdin stays open until its result (the output side
                            // closes it): a SIGINT mid-answer then ends the turn as print mode
                            // does, with the interrupted turn's `user` and `result` lines and
                            // exit 0. With its stdin at its end, the CLI may exit before them.
                        } else {
                            input.finish()
                        }
                    case .signal(let number):
                        if RunFrame.forwardedSignals.contains(number) {
                            lease.signal(number)
                        } else {
                            logger.debug("a run's client asked for a signal that is not forwarded", metadata: ["signal": "\(number)"])
                        }
                    }
                    if Task.isCancelled { return count }
                }
                buffer.discardReadBytes()
            }
        } catch let error as RunFrame.ProtocolError {
            logger.debug("a run's client broke the protocol; its process is killed", metadata: ["error": "\(error)"])
            ended.withLockedValue { $0 = .protocolViolation(error.description) }
            // Killed before its stdin closes: the process must not take the end of its input
            // for the caller's and finish as if all went well.
            if !turn.isFinished { lease.clientGone() }
        } catch {
            logger.debug("a run's connection failed; its process is killed", metadata: ["error": "\(error)"])
        }
        // The connection's end (or garbage): the run is over for its client.
        if !Task.isCancelled, !turn.isFinished { lease.clientGone() }
        input.finish()
        return count
    }

    /// How the client's side ended a run before its process did.
    enum ClientEnd: Equatable, Sendable {
        /// Frames that are not the protocol's: the process is killed, the status never 0.
        case protocolViolation(String)
        /// A print run given neither a prompt nor stdin: the CLI's own error, exit 1.
        case noInput
    }

    /// The most stdin a print run's prompt may hold (the CLI reads it whole, as this does):
    /// far beyond any model's context, and bounded, since it is held in the daemon.
    static let maxPrintInput = 16 << 20

    /// The status `prewarm-claude` exits with, and a reason when the daemon ended the run.
    static func exitStatus(_ result: TurnResult) -> (Int32, String?) {
        switch result.outcome {
        case .completed: (result.exitStatus ?? 0, nil)
        case .timeout: (124, result.detail)
        case .killed: (result.exitStatus ?? 128 + SIGKILL, result.detail)
        case .exited, .error: (result.exitStatus ?? 1, result.detail)
        }
    }
}
