import Synchronization
import Foundation
import PrewarmCore

/// One turn as the harness saw it. Times in milliseconds from the moment the harness sends
/// the turn (connects to the daemon, spawns the CLI); for `direct-warm`, from the moment the
/// request is written (its process was made ready beforehand). A turn that waited for a
/// spare includes its wait.
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

    public func matches<Bytes: Sequence>(_ line: Bytes) -> Bool where Bytes.Element == UInt8 {
        guard let type = StreamJSONLine.parse(line)?.type else { return false }
        return types.contains(type)
    }
}


// MARK: - The daemon

/// Turns sent to a pool of a running daemon, as an upstream service would: one connection
/// per turn, the body as stream-json lines, the response read as it streams.
public struct PoolTarget: BenchTarget {
    public let name: String
    let pool: String
    let socket: String
    let body: String
    let firstToken: FirstTokenRule

    public init(pool: String, socket: String, body: String, firstToken: FirstTokenRule) {
        self.name = "prewarm:\(pool)"
        self.pool = pool
        self.socket = socket
        self.body = body
        self.firstToken = firstToken
    }

    public func turn(index: Int, arrival: ContinuousClock.Instant, at: Double) async -> TurnSample {
        await onThread { self.blockingTurn(index: index, at: at) }
    }

    private func blockingTurn(index: Int, at: Double) -> TurnSample {
        var sample = TurnSample(index: index, at: at, outcome: "broken")
        let started = ContinuousClock.now
        do {
            let connection = try BlockingHTTPConnection(socketPath: socket)
            let bodyBytes = Array(body.utf8)
            let head =
                "POST /v1/pools/\(pool)/turns HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-ndjson\r\n"
                + "Content-Length: \(bodyBytes.count)\r\nTE: trailers\r\nConnection: close\r\n\r\n"
            try connection.send(Array(head.utf8) + bodyBytes)
            let (status, headers) = try connection.readHead()
            sample.status = status
            sample.start = headers["prewarm-start"]
            sample.waitMs = headers["prewarm-wait-ms"].flatMap(Double.init)
            sample.pid = headers["prewarm-pid"].flatMap(Int.init)
            var pending: [UInt8] = []
            var errorBody: [UInt8] = []
            let trailers = try connection.readBody(headers: headers) { piece in
                let now = ContinuousClock.now
                guard status == 200 else {
                    errorBody += piece
                    return
                }
                if sample.firstByteMs == nil { sample.firstByteMs = started.duration(to: now).milliseconds }
                guard sample.firstTokenMs == nil else { return }
                pending += piece
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    if firstToken.matches(pending[..<newline]) {
                        sample.firstTokenMs = started.duration(to: now).milliseconds
                        pending.removeAll()
                        break
                    }
                    pending.removeSubrange(...newline)
                }
            }
            let end = ContinuousClock.now
            let errorCode = Self.errorCode(String(decoding: errorBody, as: UTF8.self))
            switch status {
            case 200:
                let outcome = trailers["prewarm-outcome"] ?? "unknown"
                sample.outcome = outcome == "completed" ? "completed" : "broken"
                if outcome != "completed" { sample.detail = "outcome \(outcome)" }
                sample.completionMs = started.duration(to: end).milliseconds
            case 429:
                sample.outcome = "429"
                sample.detail = errorCode
            case 503:
                sample.outcome = "503"
                sample.detail = errorCode
            default:
                sample.detail = "HTTP \(status): \(errorCode ?? "")"
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

/// Runs blocking work on a thread of its own: no task or event-loop hop on the clock.
func onThread<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        let thread = Thread { continuation.resume(returning: work()) }
        thread.stackSize = 1 << 20
        thread.start()
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
    /// With `end`: the line must also have this top-level JSON type (`end_type`).
    let endType: String?
    let body: String
    let firstToken: FirstTokenRule
    let prewarmed: Bool

    public init(
        name: String, executable: String, arguments: [String], environment: [String: String], directory: String?,
        readySend: String?, readyExpect: String?, end: String?, endType: String? = nil, body: String, firstToken: FirstTokenRule, prewarmed: Bool
    ) {
        self.endType = endType
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
            directory: pool.cwd, readySend: pool.ready.send, readyExpect: pool.ready.expect, end: pool.turn.marker, endType: pool.turn.endType,
            body: body, firstToken: firstToken, prewarmed: prewarmed
        )
    }

    public func turn(index: Int, arrival: ContinuousClock.Instant, at: Double) async -> TurnSample {
        await onThread { self.blockingTurn(index: index, at: at) }
    }

    private func blockingTurn(index: Int, at: Double) -> TurnSample {
        var sample = TurnSample(index: index, at: at, start: prewarmed ? "warm" : "cold", outcome: "broken")
        let sent = ContinuousClock.now
        let process: DirectProcess
        do {
            process = try start()
        } catch {
            sample.detail = "\(error)"
            return sample
        }
        defer { process.terminate() }
        sample.pid = Int(process.pid)
        if let failure = awaitReadiness(process) {
            sample.detail = failure
            return sample
        }
        run(on: process, from: prewarmed ? ContinuousClock.now : sent, into: &sample)
        return sample
    }

    /// Spawns the command and writes its readiness line.
    func start() throws -> DirectProcess {
        let process = try DirectProcess(executable: executable, arguments: arguments, environment: environment, directory: directory)
        if let readySend, !process.write(readySend) {
            process.terminate()
            throw BenchError("cannot write the readiness line")
        }
        return process
    }

    /// Reads until the readiness line; the reason when it never comes.
    func awaitReadiness(_ process: DirectProcess) -> String? {
        guard let readyExpect else { return nil }
        let expected = Array(readyExpect.utf8)
        while true {
            guard let line = process.readLine() else { return "exited before readiness" }
            if line.contains(substring: expected) { return nil }
        }
    }

    /// Writes the turn and reads it to its end, timing from `started`.
    func run(on process: DirectProcess, from started: ContinuousClock.Instant, into sample: inout TurnSample) {
        guard process.write(body) else {
            sample.detail = "cannot write the turn"
            return
        }
        let endMarker = end.map { Array($0.utf8) }
        if endMarker == nil { process.closeInput() }  // the turn ends at end of file
        while let line = process.readLine() {
            let now = ContinuousClock.now
            if sample.firstByteMs == nil { sample.firstByteMs = started.duration(to: now).milliseconds }
            if sample.firstTokenMs == nil && firstToken.matches(line) { sample.firstTokenMs = started.duration(to: now).milliseconds }
            if let endMarker, line.contains(substring: endMarker), endType == nil || StreamJSONLine.parse(line)?.type == endType {
                sample.completionMs = started.duration(to: now).milliseconds
                sample.outcome = "completed"
                return
            }
        }
        if endMarker == nil {
            sample.completionMs = started.duration(to: .now).milliseconds
            sample.outcome = "completed"
        } else {
            sample.detail = "exited before the end of the turn"
        }
    }
}

/// `direct-pool`: the floor of a pool. `spares` initialised processes of the pool's command
/// kept over pipes with no daemon; a turn takes one (or waits for the next to be ready) and a
/// replacement starts beside it. Its processes idle between bursts as long as the daemon's
/// spares do (a CLI that has idled answers its first turn more slowly than one that has just
/// initialised), and its refills boot beside the turns, `max_starting` at a time, as the
/// daemon's do: what is left between it and the daemon is the daemon's own share.
public final class DirectPoolTarget: BenchTarget, @unchecked Sendable {
    public let name = "direct-pool"
    let command: CommandTarget
    let spares: Int
    /// Replacements booting at once at most (the pool's `max_starting`).
    private let boots: DispatchSemaphore
    private let stock = Mutex<(processes: [DirectProcess], stopped: Bool)>(([], false))
    private let ready = DispatchSemaphore(value: 0)
    /// Replacements still starting.
    private let starting = DispatchGroup()

    /// How much lower its processes boot in CPU priority, as the pool's spares do (its
    /// effective `spare_nice`); a process gets the bench's own back when a turn takes it.
    let niceOffset: Int

    public init(command: CommandTarget, spares: Int, maxStarting: Int, niceOffset: Int = 0) {
        self.command = command
        self.niceOffset = niceOffset
        self.spares = max(1, spares)
        self.boots = DispatchSemaphore(value: max(1, maxStarting))
    }

    /// Starts the spares and returns once every one is ready.
    public func fill() async {
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<spares {
                group.addTask { await onThread { self.replenish() } }
            }
        }
    }

    /// Starts one process and adds it to the stock once it is ready (retries a failure once);
    /// after `empty()`, kills it instead.
    private func replenish() {
        for _ in 0..<2 {
            guard let process = try? command.start() else { continue }
            if niceOffset != 0 { StartupPriority.set(processGroup: process.pid, offset: niceOffset) }
            if command.awaitReadiness(process) == nil {
                let kept = stock.withLock { stock -> Bool in
                    guard !stock.stopped else { return false }
                    stock.processes.append(process)
                    return true
                }
                if kept { ready.signal() } else { process.terminate() }
                return
            }
            process.terminate()
        }
    }

    public func turn(index: Int, arrival: ContinuousClock.Instant, at: Double) async -> TurnSample {
        await onThread {
            var sample = TurnSample(index: index, at: at, start: "warm", outcome: "broken")
            if self.ready.wait(timeout: .now()) == .timedOut {
                sample.start = "waited"
                self.ready.wait()
            }
            let process = self.stock.withLock { $0.processes.removeFirst() }
            if self.niceOffset != 0 { StartupPriority.set(processGroup: process.pid, offset: 0) }
            self.starting.enter()
            Thread {
                self.boots.wait()
                self.replenish()
                self.boots.signal()
                self.starting.leave()
            }.start()
            defer { process.terminate() }
            sample.pid = Int(process.pid)
            self.command.run(on: process, from: arrival, into: &sample)
            return sample
        }
    }

    /// Kills the processes left in the stock, once the replacements under way are done.
    public func empty() async {
        stock.withLock { $0.stopped = true }
        await onThread { self.starting.wait() }
        let left = stock.withLock { stock in
            defer { stock.processes.removeAll() }
            return stock.processes
        }
        for process in left { process.terminate() }
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
