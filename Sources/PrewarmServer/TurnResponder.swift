import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PrewarmCore

/// `POST /v1/pools/{name}/turns`: one turn on one process, streamed back.
///
/// The body is read whole first (it is small, and a slow upload must not hold a spare), then
/// checked, then a process is acquired, the body written to its stdin and its stdout streamed
/// back until the end of the turn. The outcome comes as the `Prewarm-Outcome` trailer, or
/// as a last `prewarm_outcome` line for clients that cannot read trailers.
struct TurnResponder {
    let broker: Broker
    let connections: Connections

    func respond(to request: Request, pool: Pool, context: PrewarmRequestContext) async throws -> Response {
        let arrived = ContinuousClock.now
        let arrivedAt = Date()
        let config = pool.config
        var request = request
        var body = try await API.collect(&request, limit: config.maxRequestBytes)
        let turnID = RequestID.accepted(request.headers[.xRequestID]) ?? Self.makeTurnID()
        let caller = await connections.of(context.channel)?.uid
        let plan = try Self.plan(
            body: &body, contentType: request.headers[.contentType], config: config, turnID: turnID, caller: caller, owners: broker.sessionOwners
        )
        if body.readableBytesView.last != UInt8(ascii: "\n") {
            body.writeString("\n")
        }
        let bytesIn = body.readableBytes

        // Hummingbird does not cancel a handler whose client went away: watch the channel.
        let channel = context.channel
        let record = TurnContext(
            broker: broker, pool: pool, turnID: turnID, arrived: arrived, arrivedAt: arrivedAt,
            caller: caller, twoWay: false, logger: context.logger
        )
        let (turn, lease) = try await Self.acquire(record, plan: plan, channel: channel, connections: connections) { claim, directory in
            Turn(
                id: turnID, input: body, closeStdin: config.turn.closeStdin, timeout: config.turnTimeout, claim: claim,
                dropLeadingChatter: config.kind == .claude, ownedDirectory: directory, resume: plan.resume
            )
        }
        // Hummingbird does not cancel a handler whose client went away: the connection's
        // close kills the process, for as long as the turn runs (and no longer).
        let watch = connections.watch(channel) { lease.clientGone() }

        let outcomeLine = request.headers[.prewarmOutcomeLine] == "1"
        var headers: HTTPFields = [
            .contentType: "application/x-ndjson",
            .prewarmTurnID: turnID,
            .prewarmStart: lease.startKind.rawValue,
            .prewarmWaitMs: String(lease.waited.wholeMilliseconds),
            .prewarmPid: String(lease.pid),
        ]
        if !outcomeLine {
            headers[.trailer] = "Prewarm-Outcome, Prewarm-Exit-Status"
        }
        return Response(
            status: .ok,
            headers: headers,
            body: ResponseBody { writer in
                defer { connections.leave(watch) }
                var firstByte: Duration?
                var bytesOut = 0
                do {
                    for await chunk in turn.output {
                        if firstByte == nil { firstByte = arrived.duration(to: .now) }
                        bytesOut += chunk.readableBytes
                        try await writer.write(chunk)
                    }
                } catch {
                    // The client stopped reading: the process is killed, the turn is over.
                    lease.clientGone()
                    let result = await turn.result()
                    record.finished(lease: lease, firstByte: firstByte, result: result, bytesIn: bytesIn, bytesOut: bytesOut)
                    throw error
                }
                let result = await turn.result()
                // The log line, metrics and journal once the client has the end of the turn.
                defer { record.finished(lease: lease, firstByte: firstByte, result: result, bytesIn: bytesIn, bytesOut: bytesOut) }
                if outcomeLine {
                    try await writer.write(Self.outcomeLine(result))
                    try await writer.finish(nil)
                } else {
                    var trailers: HTTPFields = [.prewarmOutcome: result.outcome.rawValue]
                    if let status = result.exitStatus { trailers[.prewarmExitStatus] = String(status) }
                    try await writer.finish(trailers)
                }
            }
        )
    }

    /// `{"type":"prewarm_outcome","outcome":...,"exit_status":...}`, the last line for
    /// clients that cannot read trailers.
    static func outcomeLine(_ result: TurnResult) -> ByteBuffer {
        var object: [String: Any] = ["type": "prewarm_outcome", "outcome": result.outcome.rawValue]
        object["exit_status"] = result.exitStatus.map { $0 as Any } ?? NSNull()
        if let detail = result.detail { object["detail"] = detail }
        var data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        data.append(UInt8(ascii: "\n"))
        return ByteBuffer(bytes: data)
    }

    /// Acquires a process for the turn made by `makeTurn` (given the plan's claim); a refused
    /// claim with `claim_fallback` becomes a cold start with the same session (and a new turn
    /// object: the refused one is spent). Used by plain and two-way turns alike; a refusal is
    /// logged and recorded here.
    static func acquire(
        _ context: TurnContext, plan: Plan, channel: any Channel, connections: Connections,
        makeTurn: (Turn.Claim?, _ ownedDirectory: String?) -> Turn
    ) async throws(PrewarmError) -> (Turn, Lease) {
        let pool = context.pool
        var plan = plan
        do throws(PrewarmError) {
            if context.broker.draining {
                throw PrewarmError(.draining, "the daemon is shutting down; retry on another instance or after the restart")
            }
            try pool.admit(caller: context.caller)
            while true {
                var claim: (claim: Turn.Claim, directory: String?)?
                if let plan = plan.claim { claim = try plan.make(turnID: context.turnID, caller: context.caller) }
                let turn = makeTurn(claim?.claim, claim?.directory)
                let launch = plan.launch
                // The wait ends when the connection closes: the acquisition is cancelled
                // (a process started for this turn is retired with it).
                let acquisition = Task { try await pool.acquire(turn, launch: launch) }
                let watch = connections.watch(channel) { acquisition.cancel() }
                defer { connections.leave(watch) }
                do {
                    return (turn, try await acquisition.value)
                } catch let error as PrewarmError {
                    if let directory = claim?.directory, !turn.isFinished {
                        // No process took the turn: nothing else removes its directory.
                        _ = PrivateDirectory.remove(directory)
                    }
                    guard error.code == .claimRefused, let fallback = plan.fallback else { throw error }
                    context.logger.info(
                        "claim refused; cold start instead",
                        metadata: ["pool.name": "\(pool.name)", "turn.id": "\(context.turnID)", "claim.reason": "\(error.reason ?? "")"]
                    )
                    plan = Plan(launch: fallback)
                } catch {
                    throw PrewarmError(.internal, "the wait for a process ended: \(error)")
                }
            }
        } catch {
            context.rejected(error)
            throw error
        }
    }

    /// How a turn gets its process, and what is written first.
    struct Plan: Sendable {
        var launch: Pool.Launch = .spare
        var claim: ClaimPlan?
        /// With `claim_fallback`: where the turn goes when the claim is refused.
        var fallback: Pool.Launch?
        /// What a resume spare of the turn's session copies once the turn is over.
        var resume: ResumeSource?

        /// A claude pool's turn with `session`: a claimed spare, a spare as it is, or a
        /// process started with the session (a resume: its resume spare if one is ready; a
        /// session no spare serves).
        static func claude(session: SessionSettings, config: PoolConfig, turnID: String) -> Plan {
            var plan = claudeLaunch(session: session, config: config, turnID: turnID)
            guard config.claude != nil, config.resumeSpares != nil else { return plan }
            // The next turn of the session resumes it with the same settings (a session with
            // a directory of its own: a resume finds its transcript by the directory).
            var next = session
            next.resume = nil
            let own = config.forSession(next)
            if let cwd = own.cwd {
                plan.resume = ResumeSource(run: RunDescription(argv: own.args, cwd: cwd, env: own.env), config: own)
            }
            return plan
        }

        private static func claudeLaunch(session: SessionSettings, config: PoolConfig, turnID: String) -> Plan {
            guard let claude = config.claude else { return Plan() }
            if session.resume != nil {
                // A claimed spare cannot resume (the CLI refuses): its resume spare, or cold.
                let own = config.forSession(session)
                if let cwd = own.cwd, let key = ResumeKey(run: RunDescription(argv: own.args, cwd: cwd, env: own.env), executable: config.executable) {
                    return Plan(launch: .resume(key, cold: own))
                }
                return Plan(launch: .cold(own))
            }
            if claude.claim && claude.claimSupported {
                return Plan(
                    claim: ClaimPlan(
                        session: session, cwd: session.cwd ?? claude.defaultCwd, directories: config.privateDirectories, claimAhead: claude.claimAhead
                    ),
                    fallback: claude.claimFallback ? .cold(config.forSession(session)) : nil
                )
            }
            return config.sparesServe(session) ? Plan() : Plan(launch: .cold(config.forSession(session)))
        }
    }

    /// A claim to make at hand-off: the session, and the directory it binds the CLI to
    /// (the session's or the pool's; with none, one made for the turn alone).
    struct ClaimPlan: Sendable {
        var session: SessionSettings
        var cwd: String?
        var directories: PoolConfig.PrivateDirectories?
        /// A drop-in run's in-process SDK MCP servers (`--mcp-config` of `type: "sdk"` only).
        var sdkMcpServers: [String]? = nil
        /// The pool's `claim_ahead`: the claim says whether a spare claimed ahead may serve it.
        var claimAhead = false

        func make(turnID: String, caller: UInt32?) throws(PrewarmError) -> (claim: Turn.Claim, directory: String?) {
            let id = "prewarm-claim-\(turnID)"
            if let cwd {
                // A claim that may be made ahead is that very line (one id per process is enough).
                if claimAhead, let ahead = AheadClaim.make(session: session, cwd: cwd, sdkMcpServers: sdkMcpServers, caller: caller) {
                    return (Turn.Claim(id: AheadClaim.requestID, line: ahead.line, ahead: ahead), nil)
                }
                return (Turn.Claim(id: id, line: session.claimRequest(id: id, cwd: cwd, sdkMcpServers: sdkMcpServers)), nil)
            }
            guard let directories else { throw PrewarmError(.internal, "a claimed turn has no working directory") }
            let directory = try PrivateDirectory.make(under: directories.root, prefix: "t")
            return (Turn.Claim(id: id, line: session.claimRequest(id: id, cwd: directory, sdkMcpServers: sdkMcpServers)), directory)
        }
    }

    /// Checks the body, and for a claude pool plans the turn with its session. A JSON body
    /// (`{"prompt": ..., "session": {...}}`) becomes the user message; any other body is
    /// written as it is (with the pool's session). A caller of another uid is held to the
    /// pool's CallerPolicy: a JSON body only, its session checked field by field.
    static func plan(
        body: inout ByteBuffer, contentType: String?, config: PoolConfig, turnID: String, caller: UInt32?, owners: SessionOwners
    ) throws -> Plan {
        guard let claude = config.claude else {
            try check(body, format: config.turn.input)
            return Plan()
        }
        var session = claude.session
        let policed = CallerPolicy.applies(to: caller)
        if contentType?.lowercased().hasPrefix("application/json") == true {
            let request = try ClaudeTurnRequest.parse(Data(buffer: body))
            var asked = request.session
            if policed, let given = asked {
                // Checked, and from here on its directories are the real paths checked.
                asked = try config.callerPolicy.check(given, caller: caller, owners: owners)
            }
            session = (asked ?? SessionSettings()).over(claude.session)
            body = ByteBuffer(string: SessionSettings.userLine(prompt: request.prompt))
        } else if policed {
            throw PrewarmError(
                .forbidden,
                "a caller of another uid sends {\"prompt\": ..., \"session\": {...}} with Content-Type: application/json, not stream-json lines",
                field: "body"
            )
        } else {
            try check(body, format: config.turn.input)
        }
        return .claude(session: session, config: config, turnID: turnID)
    }

    /// In `ndjson` pools every non-empty line of the body must be JSON.
    static func check(_ body: ByteBuffer, format: PoolConfig.InputFormat) throws {
        guard body.readableBytes > 0 else {
            throw PrewarmError(.badJSON, "the request body is empty; send the turn's stream-json line(s)")
        }
        guard format == .ndjson else { return }
        for (index, line) in body.readableBytesView.split(separator: UInt8(ascii: "\n")).enumerated() {
            if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\t") }) { continue }
            if (try? JSONSerialization.jsonObject(with: Data(line), options: [.fragmentsAllowed])) == nil {
                throw PrewarmError(
                    .badJSON,
                    "line \(index + 1) of the request body is not JSON; a turn is newline-delimited JSON (stream-json), one message per line"
                )
            }
        }
    }

    static func makeTurnID() -> String {
        "t-" + UUID().uuidString.lowercased().prefix(13).replacingOccurrences(of: "-", with: "")
    }


}

/// One turn's facts for its log line, the metrics and the journal.
struct TurnContext: Sendable {
    let broker: Broker
    let pool: Pool
    let turnID: String
    let arrived: ContinuousClock.Instant
    /// The arrival on the wall clock, for the journal.
    let arrivedAt: Date
    /// The caller's uid (SO_PEERCRED).
    let caller: UInt32?
    let twoWay: Bool
    let logger: Logger

    /// The turn is over: its log line, its metrics, its journal row.
    func finished(lease: Lease, firstByte: Duration?, result: TurnResult, bytesIn: Int, bytesOut: Int) {
        let duration = arrived.duration(to: .now)
        var metadata: Logger.Metadata = lease.resume.map { ["turn.resume": "\($0.rawValue)"] } ?? [:]
        metadata.merge(
            [
                "pool.name": "\(pool.name)", "turn.id": "\(turnID)", "process.pid": "\(lease.pid)",
                "turn.start": "\(lease.startKind.rawValue)", "turn.wait_ms": "\(lease.waited.wholeMilliseconds)",
                "turn.first_byte_ms": "\(firstByte.map { String($0.wholeMilliseconds) } ?? "-")",
                "turn.duration_ms": "\(duration.wholeMilliseconds)", "turn.outcome": "\(result.outcome.rawValue)",
                "turn.bytes_in": "\(bytesIn)", "turn.bytes_out": "\(bytesOut)",
            ],
            uniquingKeysWith: { $1 }
        )
        logger.info("turn", metadata: metadata)
        if let session = lease.sessionID { broker.sessionOwners.record(session, uid: caller) }
        broker.telemetry.turn(
            TurnRecord(
                time: arrivedAt, pool: pool.name, turnID: turnID, start: lease.startKind.rawValue, outcome: result.outcome.rawValue,
                waitMs: lease.waited.milliseconds, firstByteMs: firstByte?.milliseconds, durationMs: duration.milliseconds,
                bytesIn: bytesIn, bytesOut: bytesOut, pid: Int(lease.pid), callerUID: caller.map(Int.init), twoWay: twoWay,
                sessionID: lease.sessionID, resume: lease.resume?.rawValue
            )
        )
    }

    /// The turn got no process.
    func rejected(_ error: PrewarmError) {
        let waited = arrived.duration(to: .now)
        logger.info(
            "turn rejected",
            metadata: [
                "pool.name": "\(pool.name)", "turn.id": "\(turnID)", "turn.outcome": "rejected",
                "error.code": "\(error.code)", "turn.wait_ms": "\(waited.wholeMilliseconds)",
            ]
        )
        broker.telemetry.turn(
            TurnRecord(
                time: arrivedAt, pool: pool.name, turnID: turnID, start: nil, outcome: "rejected", errorCode: error.code.description,
                waitMs: waited.milliseconds, durationMs: waited.milliseconds, callerUID: caller.map(Int.init), twoWay: twoWay
            )
        )
    }
}
