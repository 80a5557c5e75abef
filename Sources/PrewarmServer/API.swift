import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import PrewarmCore

/// The HTTP/1.1 API served on the Unix socket.
public struct API: Sendable {
    let broker: Broker
    let streams: StreamAdmission
    let runs: RunAdmission
    /// The peer of each connection, read and decided once, at accept.
    let connections: Connections

    public init(broker: Broker) {
        self.broker = broker
        self.connections = Connections(
            allowedUIDs: broker.configuration.allowedUIDs, maxPerUID: broker.configuration.maxConnectionsPerUID
        )
        self.streams = StreamAdmission(broker: broker, connections: connections)
        self.runs = RunAdmission(broker: broker, connections: connections)
    }

    /// The server: Hummingbird's HTTP/1 with the `prewarm-stream` upgrade in front of it,
    /// whose requests go through `router` as well.
    public func server(router: Router<PrewarmRequestContext>) -> HTTPServerBuilder {
        let streams = self.streams
        let upgrades = router.buildResponder()
        return HTTPServerBuilder { responder in
            PrewarmChannel(
                responder: responder, upgrades: { request, context in try await upgrades.respond(to: request, context: context) }, admission: streams
            )
        }
    }

    /// The routes; with `httpMetrics`, Hummingbird's request metrics (through swift-metrics)
    /// for every route but the turns': a turn's metrics are the daemon's own, recorded after
    /// its end, so nothing is looked up in the registry before a hand-off.
    public func makeRouter(httpMetrics: Bool = false) -> Router<PrewarmRequestContext> {
        let router = Router(context: PrewarmRequestContext.self)
        // Who may use the socket is decided at accept (Connections.admit); the error
        // middleware hides CLIs' stderr tails from the peers that may not read them.
        router.middlewares.add(ErrorMiddleware(connections: connections))
        let operated = router.group()
        if httpMetrics { operated.add(middleware: MetricsMiddleware()) }
        operated.get("/healthz") { _, _ in
            var response = try Self.encoded(
                Health(status: broker.draining ? "draining" : "ok", pid: Int(getpid()), keeper: broker.keeperStatus, descriptors: DescriptorLimit.current())
            )
            if broker.draining { response.status = .serviceUnavailable }
            return response
        }
        operated.get("/metrics") { _, _ in
            Self.metrics(broker)
        }
        let connections = self.connections
        /// Whether this request's peer may see CLIs' stderr tails (the daemon's uid and root).
        let mayRead = { @Sendable (context: PrewarmRequestContext) async in StderrTail.mayRead(uid: await connections.of(context.channel)?.uid) }
        /// A pool's status as this peer may see it.
        let visible = { @Sendable (status: PoolStatus, context: PrewarmRequestContext) async -> PoolStatus in
            await mayRead(context) ? status : Self.withoutStderr(status)
        }
        operated.get("/v1/pools") { _, context in
            let statuses = broker.allPools.map { $0.status() }
            return try Self.encoded(PoolList(pools: await mayRead(context) ? statuses : statuses.map(Self.withoutStderr)))
        }
        operated.get("/v1/memory") { _, _ in
            try Self.encoded(broker.memory.status())
        }
        operated.get("/v1/pools/:name") { _, context in
            try Self.encoded(await visible(try pool(context).status(), context))
        }
        operated.patch("/v1/pools/:name") { request, context in
            let pool = try pool(context)
            var request = request
            let body = try await Self.collect(&request, limit: 64 * 1024)
            guard let object = try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any] else {
                throw PrewarmError(.badJSON, "the body must be a JSON object such as {\"spares\": 4}")
            }
            let unknown = Set(object.keys).subtracting(["spares"])
            guard unknown.isEmpty else {
                throw PrewarmError(.badJSON, "unknown field(s) \(unknown.sorted().joined(separator: ", ")); only \"spares\" can be changed")
            }
            let note: String
            switch try? JSONDecoder().decode(Resize.self, from: Data(buffer: body)).spares {
            case .count(let spares)? where (0...10_000).contains(spares):
                note = pool.resize(spares: spares)
            case .auto?:
                note = try pool.resumeAutoSizing()
            default:
                throw PrewarmError(
                    .badJSON,
                    "\"spares\" must be an integer from 0 to 10000, or \"auto\" (a pool configured with spares = \"auto\" back to its min_spares)"
                )
            }
            return try Self.encoded(Resized(pool: await visible(pool.status(), context), note: note))
        }
        operated.post("/v1/pools/:name/recycle") { _, context in
            let pool = try pool(context)
            let recycled = pool.recycle(reason: "asked through the API")
            return try Self.encoded(Recycled(recycled: recycled, pool: await visible(pool.status(), context)))
        }
        router.post("/v1/pools/:name/turns") { request, context in
            if request.headers[.upgrade]?.lowercased().contains("prewarm-stream") == true {
                // Routed by the upgrader: admit the two-way turn.
                guard let slot = context.stream else {
                    throw PrewarmError(.badJSON, "Upgrade: prewarm-stream must be the first request on its connection, with Connection: Upgrade")
                }
                return try await streams.admit(request, pool: try pool(context), context: context, into: slot)
            }
            return try await TurnResponder(broker: broker, connections: connections).respond(to: request, pool: try pool(context), context: context)
        }
        router.get("/v1/runs/environment") { _, context in
            // What prewarm-claude sends of its caller's environment; asked by the same uid as the runs.
            try await runs.authorize(context.channel)
            return try Self.encoded(broker.runEnvironment)
        }
        router.post("/v1/runs") { request, context in
            // Routed by the upgrader: a drop-in run (prewarm-claude).
            guard request.headers[.upgrade]?.lowercased().contains("prewarm-stream") == true, let slot = context.stream else {
                throw PrewarmError(
                    .badRequest,
                    "POST /v1/runs is a two-way stream: the connection's first request, with Connection: Upgrade, Upgrade: prewarm-stream and Prewarm-Run"
                )
            }
            return try await runs.admit(request, context: context, into: slot)
        }
        return router
    }

    private func pool(_ context: PrewarmRequestContext) throws -> Pool {
        try Self.pool(named: context.parameters.get("name") ?? "", in: broker)
    }

    /// The pool of that name, or 404 `pool_not_found` listing the pools.
    static func pool(named name: String, in broker: Broker) throws(PrewarmError) -> Pool {
        guard let pool = broker.pool(named: name) else {
            let known = broker.allPools.map(\.name).joined(separator: ", ")
            throw PrewarmError(.poolNotFound, "no pool named \"\(name)\"; pools: \(known)")
        }
        return pool
    }

    /// A status without its CLI's stderr tail.
    static func withoutStderr(_ status: PoolStatus) -> PoolStatus {
        var status = status
        status.lastError = status.lastError.map(StderrTail.redacted)
        return status
    }

    /// `GET /metrics`: Prometheus text exposition format 0.0.4.
    static func metrics(_ broker: Broker) -> Response {
        let text = broker.telemetry.metrics.render(
            pools: broker.allPools.map { $0.status() }, memory: broker.memory.status(), journal: broker.telemetry.journal?.currentCounts,
            keeper: broker.keeperStatus
        )
        return Response(
            status: .ok,
            headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: text))
        )
    }

    /// The router of `metrics_listen`: `/metrics` only (the turns stay on the Unix socket).
    public func makeMetricsRouter() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        let broker = self.broker
        router.get("/metrics") { _, _ in Self.metrics(broker) }
        return router
    }

    static func collect(_ request: inout Request, limit: Int) async throws -> ByteBuffer {
        do {
            return try await request.collectBody(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw PrewarmError(.bodyTooLarge, "the request body is over \(limit) bytes (max_request_bytes); send less or raise the limit")
        }
    }

    static func json(_ object: [String: String], status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func encoded(_ value: some Encodable) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(value)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// `GET /v1/pools`.
/// `GET /healthz`: `ok` or `draining`, and the daemon's pid (for tools that watch it).
public struct Health: Codable, Sendable {
    public var status: String
    public var pid: Int
    /// The keeper process that kills every child if the daemon dies: its pid, and how
    /// often it was started again after dying.
    public var keeper: ProcessGroupKeeper.Status?
    /// File descriptors open against the soft limit (raised to the hard one at start).
    public var descriptors: DescriptorLimit?
}

/// `PATCH /v1/pools/{name}`'s body: `{"spares": N}` or `{"spares": "auto"}`.
struct Resize: Decodable {
    enum Spares: Decodable {
        case count(Int)
        case auto

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let count = try? container.decode(Int.self) {
                self = .count(count)
            } else if try container.decode(String.self) == "auto" {
                self = .auto
            } else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "neither an integer nor \"auto\"")
            }
        }
    }

    var spares: Spares
}

/// `PATCH /v1/pools/{name}`'s answer: the pool's status, and what the change means (an auto
/// pool's floor until the next reload, a fixed pool's size until then).
public struct Resized: Codable, Sendable {
    public var pool: PoolStatus
    public var note: String

    enum CodingKeys: String, CodingKey { case note }

    public init(pool: PoolStatus, note: String) {
        self.pool = pool
        self.note = note
    }

    /// The status's fields with `note` beside them, so a client reading a status still can.
    public func encode(to encoder: any Encoder) throws {
        try pool.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(note, forKey: .note)
    }

    public init(from decoder: any Decoder) throws {
        pool = try PoolStatus(from: decoder)
        note = try decoder.container(keyedBy: CodingKeys.self).decode(String.self, forKey: .note)
    }
}

/// `POST /v1/pools/{name}/recycle`: how many idle spares were replaced, and the pool now.
public struct Recycled: Codable, Sendable {
    public var recycled: Int
    public var pool: PoolStatus
}

public struct PoolList: Codable, Sendable {
    public var pools: [PoolStatus]
}

extension HTTPField.Name {
    static let prewarmTurnID = Self("Prewarm-Turn-Id")!
    static let prewarmStart = Self("Prewarm-Start")!
    static let prewarmWaitMs = Self("Prewarm-Wait-Ms")!
    static let prewarmPid = Self("Prewarm-Pid")!
    static let prewarmOutcome = Self("Prewarm-Outcome")!
    static let prewarmExitStatus = Self("Prewarm-Exit-Status")!
    static let prewarmOutcomeLine = Self("Prewarm-Outcome-Line")!
    static let xRequestID = Self("X-Request-Id")!
    static let trailer = Self("Trailer")!
}
