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
/// Hummingbird's HTTP/1 handling, with one upgrader, for `prewarm-stream`. A connection that
/// does not ask for it is Hummingbird's as usual. The upgrade must be the connection's first
/// request.
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
    }

    let responder: HTTPChannelHandler.Responder
    let admission: StreamAdmission

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        admission.connections.remember(channel)
        let idleTimeout = admission.broker.configuration.idleTimeout
        return channel.eventLoop.makeCompletedFuture {
            let upgrader = StreamUpgrader(admission: admission, logger: logger)
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
            configuration.decoderConfiguration = HTTPRequestGuard.decoderLimits
            let negotiated = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: configuration)
            // In front of the upgrade handler, so it sees the first request's parse errors too.
            let upgradeHandler = try channel.pipeline.syncOperations.context(handlerType: NIOTypedHTTPServerUpgradeHandler<Connection>.self)
            try channel.pipeline.syncOperations.addHandler(
                HTTPRequestGuard(idleTimeout: idleTimeout.map { .nanoseconds(Int64($0.milliseconds * 1_000_000)) }),
                position: .before(upgradeHandler.handler)
            )
            return Value(negotiated: negotiated, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.negotiated.get() {
            case .http(let channel):
                if let refusal = admission.refusal(on: value.channel) {
                    // A refused upgrade: its request was the upgrader's; answer it here.
                    await Self.answer(refusal, on: channel, logger: logger)
                } else {
                    await handleHTTP(asyncChannel: channel, logger: logger)
                }
            case .stream(let channel, let admitted):
                await StreamTurn(channel: channel, admitted: admitted, logger: logger).run()
            }
        } catch {
            logger.debug("connection ended before its first request", metadata: ["error": "\(error)"])
        }
    }
}

extension PrewarmChannel {
    /// The API's JSON error, then the connection closes.
    static func answer(_ error: PrewarmError, on channel: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, logger: Logger) async {
        do {
            try await channel.executeThenClose { _, outbound in
                var headers = error.headers
                headers[.connection] = "close"
                let body = ByteBuffer(bytes: error.jsonBody)
                headers[.contentLength] = String(body.readableBytes)
                try await outbound.write(contentsOf: [.head(HTTPResponse(status: error.status, headerFields: headers)), .body(body), .end(nil)])
            }
        } catch {
            logger.debug("cannot answer a refused upgrade", metadata: ["error": "\(error)"])
        }
    }
}

/// The one upgrader: admits the turn while the client waits for the 101, so the answer
/// carries the `Prewarm-*` headers (or, refused, the connection goes on as plain HTTP and the
/// route answers with the refusal).
final class StreamUpgrader: NIOTypedHTTPServerProtocolUpgrader, Sendable {
    typealias UpgradeResult = PrewarmChannel.Connection

    let supportedProtocol = "prewarm-stream"
    let requiredUpgradeHeaders: [String] = []
    let admission: StreamAdmission
    let logger: Logger
    private let admitted = Mutex<StreamAdmission.Admitted?>(nil)

    init(admission: StreamAdmission, logger: Logger) {
        self.admission = admission
        self.logger = logger
    }

    func buildUpgradeResponse(channel: any Channel, upgradeRequest: HTTPRequestHead, initialResponseHeaders: HTTPHeaders) -> EventLoopFuture<HTTPHeaders> {
        let promise = channel.eventLoop.makePromise(of: HTTPHeaders.self)
        let admission = self.admission
        let task = Task {
            do {
                let turn = try await admission.admit(head: upgradeRequest, channel: channel, logger: self.logger)
                self.admitted.withLock { $0 = turn }
                var headers = initialResponseHeaders
                for (name, value) in turn.headers { headers.add(name: name, value: value) }
                return headers
            } catch let error as PrewarmError {
                admission.refused(error, on: channel)
                throw error
            }
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
            guard let turn = admitted.withLock({ $0 }) else {
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

/// Admission of two-way turns: the same checks and the same acquisition as a plain turn.
final class StreamAdmission: Sendable {
    let broker: Broker
    let connections: Connections
    /// Refusals of upgrade requests, by connection, for the HTTP route to answer.
    private let refusals = Mutex<[ObjectIdentifier: PrewarmError]>([:])

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
    }

    func admit(head: HTTPRequestHead, channel: any Channel, logger: Logger) async throws(PrewarmError) -> Admitted {
        let arrived = ContinuousClock.now
        let arrivedAt = Date()
        let parts = head.uri.split(separator: "?")[0].split(separator: "/")
        guard head.method == .POST, parts.count == 4, parts[0] == "v1", parts[1] == "pools", parts[3] == "turns" else {
            throw PrewarmError(.routeNotFound, "Upgrade: prewarm-stream is only for POST /v1/pools/{name}/turns")
        }
        let pool = try API.pool(named: String(parts[2]), in: broker)
        if !broker.configuration.allowedUIDs.isEmpty {
            try await PeerAuthorizationMiddleware(allowedUIDs: broker.configuration.allowedUIDs, connections: connections).authorize(channel)
        }
        let config = pool.config
        let turnID = head.headers.first(name: "X-Request-Id").map { String($0.prefix(128)) } ?? TurnResponder.makeTurnID()
        let input = AsyncChannel<ByteBuffer>()
        // The pool's session: a two-way turn's client speaks stream-json itself.
        let plan = config.claude.map { TurnResponder.Plan.claude(session: $0.session, config: config, turnID: turnID) } ?? TurnResponder.Plan()
        let record = TurnContext(
            broker: broker, pool: pool, turnID: turnID, arrived: arrived, arrivedAt: arrivedAt,
            caller: await connections.of(channel)?.uid, twoWay: true, logger: logger
        )
        let turn: Turn
        let lease: Lease
        do {
            (turn, lease) = try await TurnResponder.acquire(record, plan: plan, channel: channel, connections: connections) { claim, directory in
                // The client's bytes reach stdin only once a claim is accepted, so a refused
                // claim's fallback takes the same stream.
                Turn(
                    id: turnID, input: ByteBuffer(), closeStdin: false, timeout: config.turnTimeout, claim: claim,
                    dropLeadingChatter: config.kind == .claude, inputStream: input, ownedDirectory: directory
                )
            }
        } catch {
            input.finish()
            throw error
        }
        return Admitted(
            pool: pool.name, turn: turn, lease: lease, input: input,
            outcomeLine: head.headers.first(name: "Prewarm-Outcome-Line") == "1",
            headers: [
                ("Prewarm-Turn-Id", turnID), ("Prewarm-Start", lease.startKind.rawValue),
                ("Prewarm-Wait-Ms", String(lease.waited.wholeMilliseconds)), ("Prewarm-Pid", String(lease.pid)),
            ],
            record: record
        )
    }

    func refused(_ error: PrewarmError, on channel: any Channel) {
        let key = ObjectIdentifier(channel)
        refusals.withLock { $0[key] = error }
        channel.closeFuture.whenComplete { _ in _ = self.refusals.withLock { $0.removeValue(forKey: key) } }
    }

    /// The refusal of this connection's upgrade request, if it was refused.
    func refusal(on channel: any Channel) -> PrewarmError? {
        refusals.withLock { $0[ObjectIdentifier(channel)] }
    }
}

/// A two-way turn after the 101: client bytes to stdin, stdout to the client, then close.
struct StreamTurn {
    let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
    let admitted: StreamAdmission.Admitted
    let logger: Logger

    func run() async {
        let turn = admitted.turn
        let lease = admitted.lease
        let input = admitted.input
        // The connection is the turn's alone now: one close callback, for its whole life.
        channel.channel.closeFuture.whenComplete { _ in
            if !turn.isFinished { lease.clientGone() }
        }
        var bytesIn = 0
        var bytesOut = 0
        var firstByte: Duration?
        do {
            try await channel.executeThenClose { inbound, outbound in
                try await withThrowingTaskGroup(of: Int.self) { group in
                    group.addTask {
                        // The client's bytes, as they come; its half-close closes stdin.
                        var count = 0
                        do {
                            for try await chunk in inbound {
                                count += chunk.readableBytes
                                // Waits until the process has taken the previous chunk: the
                                // socket is not read meanwhile.
                                await input.send(chunk)
                                if Task.isCancelled { break }
                            }
                        } catch {}
                        input.finish()
                        return count
                    }
                    for await chunk in turn.output {
                        if firstByte == nil { firstByte = admitted.record.arrived.duration(to: .now) }
                        bytesOut += chunk.readableBytes
                        try await outbound.write(chunk)
                    }
                    let result = await turn.result()
                    if admitted.outcomeLine {
                        try await outbound.write(TurnResponder.outcomeLine(result))
                    }
                    group.cancelAll()
                    input.finish()
                    bytesIn = (try? await group.next()) ?? 0
                }
            }
        } catch {
            // The client went away or stopped reading: the process is killed.
            lease.clientGone()
            input.finish()
        }
        let result = await turn.result()
        admitted.record.finished(lease: lease, firstByte: firstByte, result: result, bytesIn: bytesIn, bytesOut: bytesOut)
    }
}
