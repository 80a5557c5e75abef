import Foundation
import NIOCore
import PrewarmClient
import PrewarmCore

/// One turn as the harness saw it. Times in milliseconds from the turn's start: its arrival
/// for the daemon and `spawn` (they include any queueing), the moment the request is written
/// for `direct-warm` (its process was made ready beforehand).
public struct TurnSample: Sendable, Codable, Equatable {
    public var index: Int
    /// Seconds from the run's start to the turn's arrival.
    public var at: Double
    /// `warm`, `waited`, `cold` (from `Prewarm-Start`; `cold` for spawn-per-turn, `warm` for
    /// direct-warm); nil when refused.
    public var start: String?
    /// `completed`, `429`, `503`, `broken` (no answer, an error status, or no end of turn).
    public var outcome: String
    public var status: Int?
    public var waitMs: Double?
    public var firstByteMs: Double?
    public var firstTokenMs: Double?
    public var completionMs: Double?
    public var pid: Int?
    public var detail: String?

    enum CodingKeys: String, CodingKey {
        case index, at, start, outcome, status
        case waitMs = "wait_ms"
        case firstByteMs = "first_byte_ms"
        case firstTokenMs = "first_token_ms"
        case completionMs = "completion_ms"
        case pid, detail
    }
}

/// Something turns are sent to.
public protocol BenchTarget: Sendable {
    var name: String { get }
    /// Runs one turn that arrived at `arrival`.
    func turn(index: Int, arrival: ContinuousClock.Instant, at: Double) async -> TurnSample
}

/// What tells the first token: a stdout line whose top-level JSON `type` is one of these.
public struct FirstTokenRule: Sendable {
    public var types: Set<String>
    public init(types: Set<String>) { self.types = types }

    public func matches<Bytes: Collection>(_ line: Bytes) -> Bool where Bytes.Element == UInt8 {
        // Cheap pre-check before parsing: the line must mention one of the types.
        guard line.count > 8, let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
            let type = object["type"] as? String
        else { return false }
        return types.contains(type)
    }
}

func milliseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
}

// MARK: - The daemon

/// Turns sent to a pool of a running daemon, as an upstream service would.
public struct PoolTarget: BenchTarget {
    public let name: String
    let pool: String
    let client: UnixHTTPClient
    let body: String
    let firstToken: FirstTokenRule

    public init(pool: String, socket: String, body: String, firstToken: FirstTokenRule) {
        self.name = "prewarm:\(pool)"
        self.pool = pool
        self.client = UnixHTTPClient(socketPath: socket)
        self.body = body
        self.firstToken = firstToken
    }

    public func turn(index: Int, arrival: ContinuousClock.Instant, at: Double) async -> TurnSample {
        var sample = TurnSample(index: index, at: at, outcome: "broken")
        var pending: [UInt8] = []
        var errorBody = ""
        do {
            let trailers = try await client.stream(
                .POST, "/v1/pools/\(pool)/turns", headers: [("Content-Type", "application/x-ndjson")], body: ByteBuffer(string: body)
            ) { head in
                sample.status = head.status
                sample.start = head.headers.first(name: "Prewarm-Start")
                sample.waitMs = head.headers.first(name: "Prewarm-Wait-Ms").flatMap(Double.init)
                sample.pid = head.headers.first(name: "Prewarm-Pid").flatMap(Int.init)
            } onBody: { chunk in
                let now = ContinuousClock.now
                guard sample.status == 200 else {
                    errorBody += String(buffer: chunk)
                    return
                }
                if sample.firstByteMs == nil { sample.firstByteMs = milliseconds(arrival.duration(to: now)) }
                guard sample.firstTokenMs == nil else { return }
                pending.append(contentsOf: chunk.readableBytesView)
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = pending[..<newline]
                    if firstToken.matches(line) {
                        sample.firstTokenMs = milliseconds(arrival.duration(to: now))
                        pending.removeAll()
                        break
                    }
                    pending.removeSubrange(...newline)
                }
            }
            let end = ContinuousClock.now
            switch sample.status {
            case 200:
                let outcome = trailers?.first(name: "Prewarm-Outcome") ?? "unknown"
                sample.outcome = outcome == "completed" ? "completed" : "broken"
                if outcome != "completed" { sample.detail = "outcome \(outcome)" }
                sample.completionMs = milliseconds(arrival.duration(to: end))
            case 429:
                sample.outcome = "429"
                sample.detail = Self.errorCode(errorBody)
            case 503:
                sample.outcome = "503"
                sample.detail = Self.errorCode(errorBody)
            default:
                sample.detail = "HTTP \(sample.status ?? 0): \(Self.errorCode(errorBody) ?? "")"
            }
        } catch {
            sample.detail = "\(error)"
        }
        return sample
    }

    static func errorCode(_ body: String) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
            let error = object["error"] as? [String: Any]
        else { return nil }
        return error["code"] as? String
    }
}

// MARK: - Baselines

/// A command driven over pipes with no daemon: spawned per turn (`spawn`, `--direct`: the
/// start-up is on the turn's clock, as when an SDK spawns its CLI per turn), or made ready
/// beforehand (`direct-warm`: the floor a broker can approach).
public struct CommandTarget: BenchTarget {
    public let name: String
    let executable: String
    let arguments: [String]
    let environment: [String: String]
    let directory: String?
    let readySend: String?
    let readyExpect: String?
    let end: String?
    let body: String
    let firstToken: FirstTokenRule
    let prewarmed: Bool

    public init(
        name: String, executable: String, arguments: [String], environment: [String: String], directory: String?,
        readySend: String?, readyExpect: String?, end: String?, body: String, firstToken: FirstTokenRule, prewarmed: Bool
    ) {
        self.name = name
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.directory = directory
        self.readySend = readySend
        self.readyExpect = readyExpect
        self.end = end
        self.body = body
        self.firstToken = firstToken
        self.prewarmed = prewarmed
    }

    /// The pool's own command, handshake and end of turn.
    public init(pool: PoolConfig, daemonEnvironment: [String: String], body: String, firstToken: FirstTokenRule, prewarmed: Bool) {
        self.init(
            name: prewarmed ? "direct-warm" : "spawn",
            executable: pool.executable, arguments: pool.args, environment: pool.childEnvironment(from: daemonEnvironment),
            directory: pool.cwd, readySend: pool.ready.send, readyExpect: pool.ready.expect, end: pool.turn.end,
            body: body, firstToken: firstToken, prewarmed: prewarmed
        )
    }

    public func turn(index: Int, arrival: ContinuousClock.Instant, at: Double) async -> TurnSample {
        // Blocking pipes on a thread of their own: no task or event-loop hop on the clock.
        await withCheckedContinuation { continuation in
            let thread = Thread {
                continuation.resume(returning: self.blockingTurn(index: index, arrival: arrival, at: at))
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    private func blockingTurn(index: Int, arrival: ContinuousClock.Instant, at: Double) -> TurnSample {
        var sample = TurnSample(index: index, at: at, start: prewarmed ? "warm" : "cold", outcome: "broken")
        let process: DirectProcess
        do {
            process = try DirectProcess(executable: executable, arguments: arguments, environment: environment, directory: directory)
        } catch {
            sample.detail = "\(error)"
            return sample
        }
        defer { process.terminate() }
        sample.pid = Int(process.pid)
        if let readySend, !process.write(readySend) {
            sample.detail = "cannot write the readiness line"
            return sample
        }
        if let readyExpect {
            let expected = Array(readyExpect.utf8)
            while true {
                guard let line = process.readLine() else {
                    sample.detail = "exited before readiness"
                    return sample
                }
                if line.contains(substring: expected) { break }
            }
        }
        let started = prewarmed ? ContinuousClock.now : arrival
        guard process.write(body) else {
            sample.detail = "cannot write the turn"
            return sample
        }
        let endMarker = end.map { Array($0.utf8) }
        if endMarker == nil { process.closeInput() }  // the turn ends at end of file
        while let line = process.readLine() {
            let now = ContinuousClock.now
            if sample.firstByteMs == nil { sample.firstByteMs = milliseconds(started.duration(to: now)) }
            if sample.firstTokenMs == nil && firstToken.matches(line) { sample.firstTokenMs = milliseconds(started.duration(to: now)) }
            if let endMarker, line.contains(substring: endMarker) {
                sample.completionMs = milliseconds(started.duration(to: now))
                sample.outcome = "completed"
                return sample
            }
        }
        if endMarker == nil {
            sample.completionMs = milliseconds(started.duration(to: .now))
            sample.outcome = "completed"
        } else {
            sample.detail = "exited before the end of the turn"
        }
        return sample
    }
}
