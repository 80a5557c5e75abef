import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import PrewarmClient
import PrewarmCore
import PrewarmServer

/// `prewarm resize POOL N`: `PATCH /v1/pools/{name}` with `{"spares": N}`.
struct Resize: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set a pool's spares at run time (until the next reload or restart)."
    )

    @OptionGroup var options: CommonOptions

    @Argument(help: "The pool.")
    var pool: String

    @Argument(help: "The spares to keep (0 to 10000).")
    var spares: Int

    func validate() throws {
        guard (0...10_000).contains(spares) else { throw ValidationError("spares must be from 0 to 10000, found \(spares)") }
    }

    func run() async throws {
        let body = ByteBuffer(string: #"{"spares":\#(spares)}"#)
        let status = try await Self.call(.PATCH, "/v1/pools/\(pool)", body: body, options: options)
        print("pool \(status.name): spares \(status.targetSpares) (effective \(status.effectiveSpares)), idle \(status.idle), starting \(status.starting), busy \(status.busy)")
    }

    /// One request to the daemon; an error answer becomes the command's exit status.
    static func call(_ method: HTTPMethod, _ path: String, body: ByteBuffer? = nil, options: CommonOptions) async throws -> PoolStatus {
        let response = try await send(method, path, body: body, options: options)
        return try JSONDecoder().decode(PoolStatus.self, from: Data(response.body.readableBytesView))
    }

    static func send(_ method: HTTPMethod, _ path: String, body: ByteBuffer? = nil, options: CommonOptions) async throws -> UnixHTTPClient.Response {
        let client = UnixHTTPClient(socketPath: try options.socketPath())
        let response: UnixHTTPClient.Response
        do {
            response = try await client.request(method, path, headers: body == nil ? [] : [("Content-Type", "application/json")], body: body)
        } catch {
            throw ExitStatus.fail(ExitStatus.unavailable, "\(error)")
        }
        guard response.status == 200 else {
            throw ExitStatus.fail(ExitStatus.forHTTP(response.status), "HTTP \(response.status): \(Turn.errorMessage(response.body))")
        }
        return response
    }
}

/// `prewarm recycle POOL`: `POST /v1/pools/{name}/recycle`.
struct Recycle: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replace every idle spare of a pool (after a CLI upgrade or a credential rotation); busy turns go on."
    )

    @OptionGroup var options: CommonOptions

    @Argument(help: "The pool.")
    var pool: String

    func run() async throws {
        let response = try await Resize.send(.POST, "/v1/pools/\(pool)/recycle", options: options)
        let recycled = try JSONDecoder().decode(Recycled.self, from: Data(response.body.readableBytesView))
        print("pool \(recycled.pool.name): \(recycled.recycled) idle spare(s) recycled; starting \(recycled.pool.starting), busy \(recycled.pool.busy)")
    }
}

/// Durations on the command line: `90s`, `15m`, `1h`, `7d`, or seconds.
struct Span: ExpressibleByArgument, Sendable {
    var seconds: Double

    init?(argument: String) {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        if let unit = argument.last.flatMap({ units[$0] }), let value = Double(argument.dropLast()), value > 0 {
            seconds = value * unit
        } else if let value = Double(argument), value > 0 {
            seconds = value
        } else {
            return nil
        }
    }

    static var defaultCompletionKind: CompletionKind { .default }
}

/// The journal named by the configuration, opened for reading.
func openJournal(_ configuration: Configuration) throws -> (path: String, reader: JournalReader) {
    let path = configuration.journal.path
    do {
        return (path, try JournalReader(path: path))
    } catch {
        throw ExitStatus.fail(ExitStatus.unavailable, "cannot read the journal: \(error)")
    }
}

struct Stats: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Traffic and latencies per pool, from the journal (the daemon may be running or not).",
        discussion: "The journal is found through the configuration, as `serve` finds it ([journal] path)."
    )

    @OptionGroup var options: CommonOptions

    @Option(name: .long, help: "How far back: 90s, 15m, 1h, 7d (default 1h).")
    var since: Span = Span(argument: "1h")!

    @Option(name: .long, help: "Only this pool.")
    var pool: String?

    @Flag(name: .long, help: "Print JSON.")
    var json = false

    func run() async throws {
        let configuration = try options.loadOrFail()
        let (path, journal) = try openJournal(configuration)
        let since = Date().addingTimeInterval(-self.since.seconds)
        let turns = try journal.turns(since: since, pool: pool)
        let startups = try journal.startups(since: since, pool: pool)
        var names = configuration.pools.map(\.name).filter { pool == nil || $0 == pool }
        for name in Set(turns.map(\.pool)).union(startups.map(\.pool)).sorted() where !names.contains(name) { names.append(name) }
        let stats = names.map { name in
            PoolStats(pool: name, turns: turns.filter { $0.pool == name }, startups: startups.filter { $0.pool == name })
        }
        if json {
            print(try jsonText(["journal": path, "since": ISO8601DateFormatter().string(from: since)], stats, key: "pools"))
            return
        }
        print("journal \(path), since \(ISO8601DateFormatter().string(from: since))")
        var rows = [["POOL", "TURNS", "MEAN/S", "PEAK/S", "HIT", "WARM/WAITED/COLD", "REJECTED", "START P50", "START P99", "WAIT P99", "FIRST BYTE P50", "FIRST BYTE P99"]]
        for s in stats {
            rows.append([
                s.pool, "\(s.turns)", rate(s.meanRatePerSecond), rate(s.peakRatePerSecond),
                s.hitRatio.map { String(format: "%.1f%%", $0 * 100) } ?? "-", "\(s.warm)/\(s.waited)/\(s.cold)",
                s.rejections.isEmpty ? "0" : s.rejections.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", "),
                ms(s.startupMs.p50), ms(s.startupMs.p99), ms(s.waitMs.p99), ms(s.firstByteMs.p50), ms(s.firstByteMs.p99),
            ])
        }
        print(Status.align(rows))
    }
}

struct Advise: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Recommend spares per pool from the journal: its busiest window replayed through the pool's own state machine.",
        discussion: """
            For each pool, the busiest window of arrivals (15 minutes by default) is replayed in \
            simulated time through the pool's state machine, with the journal's start-up durations \
            and the pool's max_starting, for spares = 0, 1, 2...; the smallest N whose simulated \
            miss rate (turns not served warm) is at or below --miss is recommended, capped by the \
            memory budget. N-1, N and N+1 are shown with their hit ratio, the memory their spares \
            hold, and the M/G/inf closed form P[Poisson(rate x mean start-up) >= N] as a reference.
            """
    )

    @OptionGroup var options: CommonOptions

    @Option(name: .long, help: "How far back: 90s, 15m, 1h, 7d (default 24h).")
    var since: Span = Span(argument: "24h")!

    @Option(name: .long, help: "The miss rate to meet, a fraction (default 0.01).")
    var miss: Double = 0.01

    @Option(name: .long, help: "The busiest window replayed (default 15m).")
    var window: Span = Span(argument: "15m")!

    @Option(name: .long, help: "Only this pool.")
    var pool: String?

    @Flag(name: .long, help: "Print JSON.")
    var json = false

    func validate() throws {
        guard miss >= 0 && miss < 1 else { throw ValidationError("--miss is a fraction from 0 to below 1, such as 0.01; found \(miss)") }
    }

    func run() async throws {
        let configuration = try options.loadOrFail()
        let (path, journal) = try openJournal(configuration)
        let since = Date().addingTimeInterval(-self.since.seconds)
        let plan = Size.plan(for: configuration)
        var advice: [Advice] = []
        var problems: [String] = []
        for config in configuration.pools where pool == nil || config.name == pool {
            let turns = try journal.turns(since: since, pool: config.name)
            let startups = try journal.startups(since: since, pool: config.name)
            // The budget this pool may use: what the other pools' spares leave.
            let others = plan.pools.filter { $0.name != config.name }.reduce(0) { $0 + $1.effectiveSpares * $1.spareBytes }
            do {
                advice.append(
                    try Advice.advise(
                        config: config, turns: turns, startups: startups, targetMiss: miss, window: window.seconds,
                        roomBytes: plan.enforce ? max(0, plan.budget - others) : nil
                    )
                )
            } catch {
                problems.append(error.description)
            }
        }
        if let pool, !configuration.pools.contains(where: { $0.name == pool }) {
            throw ExitStatus.fail(ExitStatus.usage, "no pool named \"\(pool)\" in \(configuration.origin)")
        }
        if json {
            print(try jsonText(["journal": path, "since": ISO8601DateFormatter().string(from: since)], advice, key: "pools", problems: problems))
        } else {
            print("journal \(path), since \(ISO8601DateFormatter().string(from: since)), miss target \(percent(miss))")
            for advice in advice { print(""); print(Self.describe(advice)) }
            for problem in problems { print(""); print(problem) }
        }
        if advice.isEmpty { throw ExitCode(ExitStatus.dataError) }
    }

    static func describe(_ a: Advice) -> String {
        let formatter = ISO8601DateFormatter()
        var lines = [
            "pool \(a.pool): busiest window \(formatter.string(from: a.windowStart)) to \(formatter.string(from: a.windowEnd)), "
                + "\(a.arrivals) turns (\(String(format: "%.2f", a.ratePerSecond))/s), start-up p50 \(Int(a.startupMsP50)) ms "
                + "(\(a.startups) replayed)"
        ]
        var rows = [["SPARES", "HIT (REPLAY)", "MISS (REPLAY)", "MISS (M/G/INF)", "MEMORY", ""]]
        for c in a.candidates {
            rows.append([
                "\(c.spares)", percent(c.hitRatio), percent(c.missRatio), percent(c.closedFormMiss), "\(c.memoryBytes >> 20) MiB",
                (c.spares == a.recommendedSpares ? "<- recommended" : "") + (c.overBudget ? " (over the memory budget)" : ""),
            ])
        }
        lines.append(Status.align(rows))
        var verdict = "recommended: spares = \(a.recommendedSpares) (now \(a.currentSpares))"
        if a.cappedByMemory {
            verdict += "; the miss target is not met within the memory budget (\(a.memoryMaxSpares ?? 0) spares fit): add memory or scale out"
        }
        lines.append(verdict)
        return lines.joined(separator: "\n")
    }
}

private func percent(_ value: Double) -> String { String(format: "%.1f%%", value * 100) }
private func ms(_ value: Double?) -> String { value.map { "\(Int($0.rounded())) ms" } ?? "-" }
private func rate(_ value: Double?) -> String { value.map { String(format: "%.2f", $0) } ?? "-" }

private func jsonText<T: Encodable>(_ header: [String: String], _ items: T, key: String, problems: [String] = []) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    var object = try JSONSerialization.jsonObject(with: encoder.encode(items)) as Any
    var top: [String: Any] = header
    top[key] = object
    if !problems.isEmpty { top["problems"] = problems }
    object = top
    let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
    return String(decoding: data, as: UTF8.self)
}

extension CommonOptions {
    /// The configuration, or exit 78 (EX_CONFIG) saying what is wrong with it.
    func loadOrFail() throws -> Configuration {
        do {
            return try loadConfiguration()
        } catch let error as ConfigError {
            throw ExitStatus.fail(78, "invalid configuration: \(error)")
        }
    }
}
