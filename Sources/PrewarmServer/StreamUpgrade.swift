import Foundation
import HTTPTypes
import Hummingbird
import AsyncAlgorithms
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import PrewarmCore
import Synchronization

/// Two-way turns: `POST /v1/pools/{name}/turns` with `Connection: Upgrade` and
/// `Upgrade: prewarm-stream`. After the same admission as a plain turn the daemon answers
/// 101 Switching Protocols with the same `Prewarm-*` headers; then bytes flow both ways
/// between the client and the process's stdin/stdout until the end of the turn, when the
/// daemon closes the connection (after a `prewarm_outcome` line if the request asked for it
/// with `Prewarm-Outcome-Line: 1`). The client closing its write side closes the process's
/// stdin. This is how an upstream answers the CLI's `can_use_tool`, `hook_callback` or
/// `mcp_message` requests mid-turn; it is what Docker's attach does, and any socket client
/// can use it.
///
/// Hummingbird has no general upgrade hook, so the daemon's connections are set up here as
/// hummingbird-websocket sets up its own: NIO's typed HTTP upgrade handler in front of
/// Hummingbird's HTTP/1 handling, with one upgrader, for `prewarm-stream`, which asks the
/// API's router whether to upgrade: the request goes through the same middleware (errors,
/// peer checks) and the same route as a plain turn, whose handler admits the turn and leaves
/// it in the request context's `StreamSlot`. A connection that does not ask for an upgrade
/// is Hummingbird's as usual. The upgrade must be the connection's first request.
struct PrewarmChannel: HTTPChannelHandler {
    /// What the first request made of the connection.
    enum Connection: Sendable {
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        case stream(NIOAsyncChannel<ByteBuffer, ByteBuffer>, StreamAdmission.Admitted)
    }

    /// The connection, and the future of what its first request makes of it.
    struct Value: ServerChildChannelValue {
        let negotiated: EventLoopFuture<Connection>
        let channel: any Channel
        let upgrader: StreamUpgrader
    }

    let responder: HTTPChannelHandler.Responder
    /// The API's router, asked whether an upgrade request is admitted.
    let upgrades: @Sendable (Request, PrewarmRequestContext) async throws -> Response
    let admission: StreamAdmission

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        // The peer is decided before any handler reads a byte (on the channel's event loop,
        // SO_PEERCRED is read at once): refused, it gets its answer and the connection closes.
        let peer = PeerCredentials.read(channel).map { $0.map(Optional.some).recover { _ in nil } } ?? channel.eventLoop.makeSucceededFuture(nil)
        return peer.flatMap { peer in
            if let refusal = admission.connections.admit(channel, peer: peer) { return refuse(channel, refusal, peer: peer, logger: logger) }
            // Runs are the daemon's own uid's only: only its connections may send a run
            // description as large as a command line (HTTPRequestGuard.runLimits).
            return configure(channel, runHeads: peer?.uid == getuid(), logger: logger)
        }
    }

    /// Answers a refused peer with its error and closes the connection (RefusedConnection: no
    /// HTTP handler is set up, nothing it sends is parsed); what the server gets is a
    /// connection that ended before its first request.
    private func refuse(_ channel: any Channel, _ error: PrewarmError, peer: PeerCredentials?, logger: Logger) -> EventLoopFuture<Value> {
        let body = error.jsonBody
        var head = "HTTP/1.1 \(error.status.code) \(error.status.reasonPhrase)\r\nContent-Type: application/json\r\n"
        if let retryAfter = error.retryAfter { head += "Retry-After: \(retryAfter)\r\n" }
        head += "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        var bytes = ByteBuffer(string: head)
        bytes.writeBytes(body)
        logger.debug("connection refused at accept", metadata: ["peer.uid": "\(peer.map { String($0.uid) } ?? "unknown")", "error": "\(error.code)"])
        do {
            try channel.pipeline.syncOperations.addHandler(RefusedConnection(answer: bytes))
        } catch {
            channel.close(promise: nil)
        }
        let upgrader = StreamUpgrader(admission: admission, upgrades: upgrades, logger: logger)
        return channel.eventLoop.makeSucceededFuture(
            Value(negotiated: channel.eventLoop.makeFailedFuture(error), channel: channel, upgrader: upgrader)
        )
    }

    private func configure(_ channel: any Channel, runHeads: Bool, logger: Logger) -> EventLoopFuture<Value> {
        let idleTimeout = admission.broker.configuration.idleTimeout
        return channel.eventLoop.makeCompletedFuture {
            let upgrader = StreamUpgrader(admission: admission, upgrades: upgrades, logger: logger)
            let upgrade = NIOTypedHTTPServerUpgradeConfiguration<Connection>(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    // Hummingbird's HTTP/1 handling, as its HTTP1Channel sets it up.
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        // Idle between requests, or stuck in one: closed after idle_timeout_s.
                        try channel.pipeline.syncOperations.addHandler(HTTPConnectionStateHandler(idleTimeout: idleTimeout, logger: logger))
                        return .http(try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true)))
                    }
                }
            )
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration(upgradeConfiguration: upgrade)
            configuration.enablePipelining = false  // NIOAsyncChannel serves requests in order
            configuration.enableErrorHandling = false  // HTTPRequestGuard answers malformed requests
            configuration.enableResponseHeaderValidation = false  // HTTP types validate already
            configuration.decoderConfiguration = runHeads ? HTTPRequestGuard.runLimits : HTTPRequestGuard.decoderLimits
            let negotiated = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: configuration)
            // In front of the upgrade handler, so it sees the first request's parse errors too.
            let upgradeHandler = try channel.pipeline.syncOperations.context(handlerType: NIOTypedHTTPServerUpgradeHandler<Connection>.self)
            try channel.pipeline.syncOperations.addHandler(
                HTTPRequestGuard(idleTimeout: idleTimeout.map(TimeAmount.init), runHeads: runHeads),
                position: .before(upgradeHandler.handler)
            )
            return Value(negotiated: negotiated, channel: channel, upgrader: upgrader)
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.negotiated.get() {
            case .http(let channel):
                if let refusal = value.upgrader.refusal {
                    // A refused upgrade: its request was the upgrader's; answer it here.
                    await Self.answer(refusal, on: channel, logger: logger)
                } else {
                    await handleHTTP(asyncChannel: channel, logger: logger)
                }
            case .stream(let channel, let admitted):
                if let rules = admitted.run {
                    await RunStream(channel: channel, admitted: admitted, rules: rules, logger: logger).run()
                } else {
                    await StreamTurn(channel: channel, admitted: admitted, logger: logger).run()
                }
            }
        } catch {
            logger.debug("connection ended before its first request", metadata: ["error": "\(error)"])
            // Ended between the turn's admission and the 101: its client is gone.
            await value.upgrader.abandonAdmitted()
        }
    }
}

extension PrewarmChannel {
    /// The router's answer to a refused upgrade, then the connection closes.
    static func answer(_ refusal: Response, on channel: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, logger: Logger) async {
        do {
            try await channel.executeThenClose { _, outbound in
                var response = refusal
                response.headers[.connection] = "close"
                try await ResponseWriter(outbound: outbound).write(response: response.head, body: response.body)
            }
        } catch {
            logger.debug("cannot answer a refused upgrade", metadata: ["error": "\(error)"])
        }
    }
}

/// The one upgrader, one per connection: asks the router to admit the turn while the client
/// waits for the 101, so the answer carries the `Prewarm-*` headers. Refused, the connection
/// goes on as plain HTTP: a refusal of the turn's route is answered with its JSON error and
/// the connection closed; any other (no such route, a forbidden peer) is Hummingbird's again.
final class StreamUpgrader: NIOTypedHTTPServerProtocolUpgrader, Sendable {
    typealias UpgradeResult = PrewarmChannel.Connection

    let supportedProtocol = "prewarm-stream"
    let requiredUpgradeHeaders: [String] = []
    let admission: StreamAdmission
    let upgrades: @Sendable (Request, PrewarmRequestContext) async throws -> Response
    let logger: Logger
    private let slot = StreamSlot()

    init(admission: StreamAdmission, upgrades: @escaping @Sendable (Request, PrewarmRequestContext) async throws -> Response, logger: Logger) {
        self.admission = admission
        self.upgrades = upgrades
        self.logger = logger
    }

    /// The answer to this connection's upgrade request, if it was refused.
    var refusal: Response? { slot.refusal }

    /// The connection ended after the turn was admitted but before it became a stream (the
    /// client left as the 101 was on its way): the process is killed and the turn recorded,
    /// as for any client that leaves mid-turn.
    func abandonAdmitted() async {
        guard let admitted = slot.admitted else { return }
        admitted.lease.clientGone()
        admitted.input.finish()
        let result = await admitted.turn.result()
        admitted.record.finished(lease: admitted.lease, firstByte: nil, result: result, bytesIn: 0, bytesOut: 0)
    }

    func buildUpgradeResponse(channel: any Channel, upgradeRequest: HTTPRequestHead, initialResponseHeaders: HTTPHeaders) -> EventLoopFuture<HTTPHeaders> {
        let promise = channel.eventLoop.makePromise(of: HTTPHeaders.self)
        let (slot, upgrades, logger, admission) = (self.slot, self.upgrades, self.logger, self.admission)
        let task = Task {
            let request = Request(head: try HTTPRequest(upgradeRequest, secure: false, splitCookie: false), body: .init(buffer: ByteBuffer()))
            let context = PrewarmRequestContext(source: .init(channel: channel, logger: logger), stream: slot)
            let response = try await upgrades(request, context)
            guard response.status == .ok, let admitted = slot.admitted else {
                // Refused (by a middleware, the router or the route): the answer is sent as it is.
                slot.refuse(response)
                throw PrewarmError(.internal, "the upgrade was refused (\(response.status))")
            }
            var headers = initialResponseHeaders
            for (name, value) in admitted.headers { headers.add(name: name, value: value) }
            return headers
        }
        let watch = admission.connections.watch(channel) { task.cancel() }
        promise.completeWithTask {
            defer { admission.connections.leave(watch) }
            return try await task.value
        }
        return promise.futureResult
    }

    func upgrade(channel: any Channel, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<PrewarmChannel.Connection> {
        channel.eventLoop.makeCompletedFuture {
            guard let turn = slot.admitted else {
                throw PrewarmError(.internal, "upgrade without an admitted turn")
            }
            // Raw bytes from now on: the HTTP guard leaves (the upgrader removed the codec).
            let guardHandler = try channel.pipeline.syncOperations.handler(type: HTTPRequestGuard.self)
            channel.pipeline.syncOperations.removeHandler(guardHandler, promise: nil)
            // The client closing its write side ends the process's stdin, not the connection.
            try channel.syncOptions?.setOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            let stream = try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                wrappingChannelSynchronously: channel,
                configuration: .init(isOutboundHalfClosureEnabled: true)
            )
            return .stream(stream, turn)
        }
    }
}

/// What an upgrade request came to: the turn its route admitted, or the router's answer
/// when it was refused. One per connection (the upgrade is its first request).
public final class StreamSlot: Sendable {
    private let state = Mutex<(admitted: StreamAdmission.Admitted?, refusal: Response?)>((nil, nil))

    var admitted: StreamAdmission.Admitted? { state.withLock { $0.admitted } }
    var refusal: Response? { state.withLock { $0.refusal } }

    private func admit(_ admitted: StreamAdmission.Admitted) { state.withLock { $0.admitted = admitted } }

    /// Keeps the admitted turn for the upgrader and answers the route: a 200 with its headers
    /// tells the upgrader to answer 101 with them.
    func answer(_ admitted: StreamAdmission.Admitted) -> Response {
        admit(admitted)
        var headers = HTTPFields()
        for (name, value) in admitted.headers { headers[HTTPField.Name(name)!] = value }
        return Response(status: .ok, headers: headers)
    }
    func refuse(_ response: Response) { state.withLock { $0.refusal = response } }
}

/// Admission of two-way turns: the same checks and the same acquisition as a plain turn.
final class StreamAdmission: Sendable {
    let broker: Broker
    let connections: Connections

    init(broker: Broker, connections: Connections) {
        self.broker = broker
        self.connections = connections
    }

    /// A turn admitted for a two-way stream: its process is bound to it.
    struct Admitted: Sendable {
        let pool: String
        let turn: Turn
        let lease: Lease
        /// The client's bytes on their way to stdin (rendezvous: backpressure to the socket).
        let input: AsyncChannel<ByteBuffer>
        let outcomeLine: Bool
        let headers: [(String, String)]
        let record: TurnContext
        /// A claude turn of a caller of another uid: its `control_request` lines never reach
        /// the process; a line is held at most the pool's `max_request_bytes`.
        var controlFilter: ControlLineFilter? = nil
        /// A drop-in run (framed after the 101), with what of its output its caller must not see.
        var run: RunOutputFilter.Rules? = nil
        /// A print-mode run (`claude -p`): its prompt becomes a user message, its output is
        /// what the CLI prints in that mode (PrintConversion).
        var print: PrintRun? = nil

        /// The `Prewarm-*` headers of the 101 (a turn's response headers).
        static func headers(turnID: String, lease: Lease) -> [(String, String)] {
            [
                ("Prewarm-Turn-Id", turnID), ("Prewarm-Start", lease.startKind.rawValue),
                ("Prewarm-Wait-Ms", String(lease.waited.wholeMilliseconds)), ("Prewarm-Pid", String(lease.pid)),
            ]
        }
    }

    /// The turn route's handling of an upgrade request (routed by `StreamUpgrader`): the
    /// turn is admitted into `slot`, and a 200 with its headers tells the upgrader to answer
    /// 101. A refusal is thrown, and answered like a plain turn's.
    func admit(_ request: Request, pool: Pool, context: PrewarmRequestContext, into slot: StreamSlot) async throws(PrewarmError) -> Response {
        slot.answer(try await admit(request, pool: pool, channel: context.channel, logger: context.logger))
    }

    private func admit(_ request: Request, pool: Pool, channel: any Channel, logger: Logger) async throws(PrewarmError) -> Admitted {
        let arrived = ContinuousClock.now
        let arrivedAt = Date()
        let config = pool.config
        let turnID = RequestID.accepted(request.headers[.xRequestID]) ?? TurnResponder.makeTurnID()
        let input = AsyncChannel<ByteBuffer>()
        // The pool's session: a two-way turn's client speaks stream-json itself.
        let plan = config.claude.map { TurnResponder.Plan.claude(session: $0.session, config: config, turnID: turnID) } ?? TurnResponder.Plan()
        let caller = await connections.of(channel)?.uid
        let record = TurnContext(
            broker: broker, pool: pool, turnID: turnID, arrived: arrived, arrivedAt: arrivedAt,
            caller: caller, twoWay: true, logger: logger
        )
        let turn: Turn
        let lease: Lease
        do {
            (turn, lease) = try await TurnResponder.acquire(record, plan: plan, channel: channel, connections: connections) { claim, directory in
                // The client's bytes reach stdin only once a claim is accepted, so a refused
                // claim's fallback takes the same stream.
                Turn(
                    id: turnID, input: ByteBuffer(), closeStdin: false, timeout: config.turnTimeout, claim: claim,
                    dropLeadingChatter: config.kind == .claude, inputStream: input, ownedDirectory: directory, resume: plan.resume
                )
            }
        } catch {
            input.finish()
            throw error
        }
        return Admitted(
            pool: pool.name, turn: turn, lease: lease, input: input,
            outcomeLine: request.headers[.prewarmOutcomeLine] == "1", headers: Admitted.headers(turnID: turnID, lease: lease), record: record,
            controlFilter: config.claude != nil && CallerPolicy.applies(to: caller) ? ControlLineFilter(maxLine: config.maxRequestBytes) : nil
        )
    }
}

extension StreamAdmission.Admitted {
    /// What a stream's body counts for the turn's record.
    struct Counts {
        var bytesIn = 0
        var bytesOut = 0
        var firstByte: Duration?
    }

    /// An admitted turn's life on its upgraded connection, around `body` (which moves the
    /// bytes both ways): the connection's close kills the process if the turn is not over
    /// (one close callback, for the connection's whole life); a body that fails (its client
    /// left or stopped reading) kills it too; then the turn is recorded.
    func serve(
        _ channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>,
        _ body: (NIOAsyncChannelInboundStream<ByteBuffer>, NIOAsyncChannelOutboundWriter<ByteBuffer>, inout Counts) async throws -> Void
    ) async {
        let (turn, lease) = (self.turn, self.lease)
        channel.channel.closeFuture.whenComplete { _ in
            if !turn.isFinished { lease.clientGone() }
        }
        var counts = Counts()
        do {
            try await channel.executeThenClose { inbound, outbound in try await body(inbound, outbound, &counts) }
        } catch {
            lease.clientGone()
            input.finish()
        }
        let result = await turn.result()
        record.finished(lease: lease, firstByte: counts.firstByte, result: result, bytesIn: counts.bytesIn, bytesOut: counts.bytesOut)
    }
}

/// A two-way turn after the 101: client bytes to stdin, stdout to the client, then close.
struct StreamTurn {
    let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
    let admitted: StreamAdmission.Admitted
    let logger: Logger

    func run() async {
        let turn = admitted.turn
        let input = admitted.input
        let (arrived, outcomeLine) = (admitted.record.arrived, admitted.outcomeLine)
        await admitted.serve(channel) { inbound, outbound, counts in
            try await withThrowingTaskGroup(of: Int.self) { group in
                group.addTask {
                    // The client's bytes, as they come; its half-close closes stdin.
                    var count = 0
                    var filter = admitted.controlFilter
                    do {
                        for try await chunk in inbound {
                            count += chunk.readableBytes
                            // Waits until the process has taken the previous chunk: the
                            // socket is not read meanwhile.
                            if filter != nil {
                                // Mutated in place (optional chaining): the held line is not copied.
                                let lines = filter?.forward(chunk.readableBytesView) ?? []
                                if !lines.isEmpty { await input.send(ByteBuffer(bytes: lines)) }
                            } else {
                                await input.send(chunk)
                            }
                            if Task.isCancelled { break }
                        }
                    } catch {}
                    if let last = filter?.finish(), !last.isEmpty { await input.send(ByteBuffer(bytes: last)) }
                    input.finish()
                    return count
                }
                for await chunk in turn.output {
                    if counts.firstByte == nil { counts.firstByte = arrived.duration(to: .now) }
                    counts.bytesOut += chunk.readableBytes
                    try await outbound.write(chunk)
                }
                let result = await turn.result()
                if outcomeLine {
                    try await outbound.write(TurnResponder.outcomeLine(result))
                }
                group.cancelAll()
                input.finish()
                counts.bytesIn = (try? await group.next()) ?? 0
            }
        }
    }
}
