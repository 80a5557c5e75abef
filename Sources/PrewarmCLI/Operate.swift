import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import PrewarmClient
import PrewarmCore
import PrewarmServer

/// `prewarm resize POOL N|auto`: `PATCH /v1/pools/{name}` with `{"spares": N}` or
/// `{"spares": "auto"}`.
struct Resize: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set a pool's spares at run time (until the next reload or restart); an auto pool's floor, or auto to go back to min_spares."
    )

    @OptionGroup var options: CommonOptions

    @Argument(help: "The pool.")
    var pool: String

    @Argument(help: "The spares to keep (0 to 10000): a fixed pool's size, an auto pool's floor; or auto: an auto pool back to min_spares.")
    var spares: String

    func validate() throws {
        guard spares == "auto" || Int(spares).map({ (0...10_000).contains($0) }) == true else {
            throw ValidationError("spares must be from 0 to 10000, or auto, found \(spares)")
        }
    }

    func run() async throws {
        let body = ByteBuffer(string: spares == "auto" ? #"{"spares":"auto"}"# : #"{"spares":\#(spares)}"#)
        let response = try await options.daemonRequest(.PATCH, "/v1/pools/\(pool)", body: body)
        let answer = try JSONDecoder().decode(Resized.self, from: Data(response.body.readableBytesView))
        let status = answer.pool
        let target = status.auto.map { "auto, floor \(status.targetSpares), target \($0.target)" } ?? "spares \(status.targetSpares)"
        print("pool \(status.name): \(target) (effective \(status.effectiveSpares)), idle \(status.idle), starting \(status.starting), busy \(status.busy)")
        print(answer.note)
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
        let response = try await options.daemonRequest(.POST, "/v1/pools/\(pool)/recycle")
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

/// The configuration, its journal opened for reading, and the start of the period asked for.
private struct JournalQuery {
    let configuration: Configuration
    let path: String
    let reader: JournalReader
    let since: Date

    init(options: CommonOptions, since span: Span) throws {
        configuration = try options.loadOrFail()
        path = configuration.journal.path
        do {
            reader = try JournalReader(path: path)
        } catch {
            throw ExitStatus.fail(ExitStatus.unavailable, "cannot read the journal: \(error)")
        }
        since = Date().addingTimeInterval(-span.seconds)
    }

    /// `journal PATH, since TIME`, the first line of a table.
    var heading: String { "journal \(path), since \(ISO8601DateFormatter().string(from: since))" }
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
        let query = try JournalQuery(options: options, since: since)
        let turns = try query.reader.turns(since: query.since, pool: pool)
        let startups = try query.reader.startups(since: query.since, pool: pool)
        var names = query.configuration.pools.map(\.name).filter { pool == nil || $0 == pool }
        for name in Set(turns.map(\.pool)).union(startups.map(\.pool)).sorted() where !names.contains(name) { names.append(name) }
        let stats = names.map { name in
            PoolStats(pool: name, turns: turns.filter { $0.pool == name }, startups: startups.filter { $0.pool == name })
        }
        if json {
            print(try JournalReport(journal: query.path, since: query.since, pools: stats).text())
            return
        }
        print(query.heading)
        print(PoolStats.rateDefinition)
        var rows = [["POOL", "TURNS", "MEAN/S", "PEAK/S", "HIT", "WARM/WAITED/COLD", "REJECTED", "START P50", "START P99", "WAIT P99", "FIRST BYTE P50", "FIRST BYTE P99"]]
        for s in stats {
            rows.append([
                s.pool, "\(s.turns)", rate(s.meanRatePerSecond), rate(s.peakRatePerSecond),
                s.hitRatio.map(percent) ?? "-", "\(s.warm)/\(s.waited)/\(s.cold)",
                s.rejections.isEmpty ? "0" : s.rejections.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", "),
                ms(s.startupMs.p50), ms(s.startupMs.p99), ms(s.waitMs.p99), ms(s.firstByteMs.p50), ms(s.firstByteMs.p99),
            ])
        }
        print(Status.align(rows))
        for s in stats {
            guard let resumed = s.resumed else { continue }
            let misses = (resumed["miss"] ?? 0) + (resumed["stale"] ?? 0)
            print("\(s.pool) resumed turns: \(resumed["hit"] ?? 0) from resume spares, \(misses) cold (\(resumed["stale"] ?? 0) stale)")
        }
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
        let query = try JournalQuery(options: options, since: since)
        let configuration = query.configuration
        let plan = Size.plan(for: configuration)
        var advice: [Advice] = []
        var problems: [String] = []
        for config in configuration.pools where pool == nil || config.name == pool {
            let turns = try query.reader.turns(since: query.since, pool: config.name)
            let startups = try query.reader.startups(since: query.since, pool: config.name)
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
            print(try JournalReport(journal: query.path, since: query.since, pools: advice, problems: problems.isEmpty ? nil : problems).text())
        } else {
            print("\(query.heading), miss target \(percent(miss))")
            for advice in advice {
                print("")
                print(Self.describe(advice, sizesItself: configuration.pool(named: advice.pool)?.autoSizing != nil))
            }
            for problem in problems { print(""); print(problem) }
        }
        if advice.isEmpty { throw ExitCode(ExitStatus.dataError) }
    }

    /// `sizesItself`: the pool has `spares = "auto"` (its `spares` is its floor).
    static func describe(_ a: Advice, sizesItself: Bool = false) -> String {
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
        var verdict = "recommended: spares = \(a.recommendedSpares) "
            + (sizesItself ? "(the pool sizes itself: spares = \"auto\", min_spares \(a.currentSpares))" : "(now \(a.currentSpares))")
        if a.cappedByMemory {
            verdict += "; the miss target is not met within the memory budget (\(a.memoryMaxSpares ?? 0) spares fit): add memory or scale out"
        }
        lines.append(verdict)
        if let r = a.resume { lines.append(describe(r)) }
        return lines.joined(separator: "\n")
    }

    /// Resumed turns: served by resume spares or not, and whether the TTL was the cause.
    static func describe(_ r: ResumeAdvice) -> String {
        let gaps = "gaps between a session's turns p50 \(seconds(r.gapSecondsP50)), p90 \(seconds(r.gapSecondsP90))"
        var lines = ["resumed turns: \(r.resumed), \(r.hits) from resume spares, \(r.misses) cold (\(r.stale) stale); \(gaps)"]
        guard let ttl = r.ttlSeconds else {
            lines.append("resume spares: off; resume_spares = true would start the next turn of each session warm")
            return lines.joined(separator: "\n")
        }
        var verdict = "resume_spare_ttl_s = \(Int(ttl)): \(r.missesBeyondTTL) misses came after it had passed, \(r.missesWithinTTL) within it"
        if r.missesWithinTTL > 0 { verdict += " (the spare not ready yet, memory or max_resume_spares)" }
        if let suggested = r.suggestedTTLSeconds {
            verdict += suggested > ttl
                ? "; resume_spare_ttl_s = \(Int(suggested)) would have caught 90% of the gaps"
                : "; resume_spare_ttl_s = \(Int(suggested)) covers 90% of the gaps and holds spares for less time"
        }
        lines.append(verdict)
        return lines.joined(separator: "\n")
    }
}

private func seconds(_ value: Double?) -> String { value.map { String(format: "%.1f s", $0) } ?? "-" }

private func percent(_ value: Double) -> String { String(format: "%.1f%%", value * 100) }
private func ms(_ value: Double?) -> String { value.map { "\(Int($0.rounded())) ms" } ?? "-" }
private func rate(_ value: Double?) -> String { value.map { String(format: "%.2f", $0) } ?? "-" }

/// What `stats --json` and `advise --json` print: the journal, the period, and per pool.
private struct JournalReport<Item: Encodable>: Encodable {
    var journal: String
    var since: Date
    var pools: [Item]
    var problems: [String]?

    func text() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}
