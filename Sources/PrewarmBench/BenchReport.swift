import Foundation
import Histogram

/// p50, p90, p99 and max of a set of latencies, in milliseconds (hdrhistogram, microsecond
/// resolution, 3 significant digits).
public struct LatencySummary: Sendable, Codable, Equatable {
    public var count: Int
    public var p50: Double?
    public var p90: Double?
    public var p99: Double?
    public var max: Double?

    public init(_ values: [Double]) {
        count = values.count
        guard !values.isEmpty else { return }
        var histogram = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
        for value in values {
            _ = histogram.record(UInt64(Swift.max(0, Swift.min(3_600_000_000, (value * 1000).rounded()))))
        }
        func ms(_ percentile: Double) -> Double { Double(histogram.valueAtPercentile(percentile)) / 1000 }
        p50 = ms(50)
        p90 = ms(90)
        p99 = ms(99)
        self.max = Double(histogram.max) / 1000
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(count, forKey: .count)
        try container.encode(p50, forKey: .p50)
        try container.encode(p90, forKey: .p90)
        try container.encode(p99, forKey: .p99)
        try container.encode(max, forKey: .max)
    }
}

/// One target's figures, as `--json` writes them.
public struct TargetReport: Sendable, Codable {
    public var name: String
    public var turns: Int
    public var firstTokenMs: LatencySummary
    public var firstByteMs: LatencySummary
    public var completionMs: LatencySummary
    public var waitMs: LatencySummary
    /// The share of turns served warm (of all turns sent).
    public var hitRatio: Double
    public var predictedHitRatio: Double?
    /// Per phase (`--phases`), the share of turns the state machine predicts will miss.
    public var predictedPhaseMiss: [Double]?
    /// A pool's spares every 250 ms (idle, effective, an auto pool's predicted miss).
    public var timeline: [PoolSample]
    /// Turns by outcome: completed, 429, 503, broken.
    public var outcomes: [String: Int]
    /// Turns by start kind: warm, waited, cold.
    public var starts: [String: Int]
    public var daemon: DaemonUsage?
    public var samples: [TurnSample]

    enum CodingKeys: String, CodingKey {
        case name, turns
        case firstTokenMs = "first_token_ms"
        case firstByteMs = "first_byte_ms"
        case completionMs = "completion_ms"
        case waitMs = "wait_ms"
        case hitRatio = "hit_ratio"
        case predictedHitRatio = "predicted_hit_ratio"
        case predictedPhaseMiss = "predicted_phase_miss"
        case outcomes, starts, daemon, samples, timeline
    }

    public init(_ result: TargetResult) {
        name = result.name
        turns = result.samples.count
        let completed = result.samples.filter { $0.outcome == "completed" }
        firstTokenMs = LatencySummary(completed.compactMap(\.firstTokenMs))
        firstByteMs = LatencySummary(completed.compactMap(\.firstByteMs))
        completionMs = LatencySummary(completed.compactMap(\.completionMs))
        waitMs = LatencySummary(result.samples.compactMap(\.waitMs))
        let warm = result.samples.count { $0.start == "warm" && $0.outcome == "completed" }
        hitRatio = turns == 0 ? 0 : Double(warm) / Double(turns)
        predictedHitRatio = result.predictedHitRatio
        predictedPhaseMiss = result.predictedPhaseMiss
        timeline = result.pool
        outcomes = Dictionary(grouping: result.samples, by: \.outcome).mapValues(\.count)
        starts = Dictionary(grouping: result.samples.compactMap(\.start), by: { $0 }).mapValues(\.count)
        daemon = result.daemon
        samples = result.samples
    }
}

/// The whole run, as `--json` writes it.
public struct BenchReport: Sendable, Codable {
    public var load: String
    public var date: String
    public var host: String
    public var targets: [TargetReport]

    public init(load: String, targets: [TargetReport]) {
        self.load = load
        let formatter = ISO8601DateFormatter()
        self.date = formatter.string(from: Date())
        var name = utsname()
        uname(&name)
        let machine = withUnsafeBytes(of: &name.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let release = withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        self.host = "\(ProcessInfo.processInfo.activeProcessorCount) CPUs, \(machine), Linux \(release)"
        self.targets = targets
    }

    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self)
    }

    /// The table printed at the end of a run.
    public func table() -> String {
        func ms(_ value: Double?) -> String {
            guard let value else { return "-" }
            if value >= 1000 { return String(format: "%.2f s", value / 1000) }
            if value >= 100 { return String(format: "%.0f ms", value) }
            if value >= 10 { return String(format: "%.1f ms", value) }
            return String(format: "%.2f ms", value)
        }
        var rows = [["TARGET", "TURNS", "FIRST TOKEN p50", "p90", "p99", "max", "COMPLETION p50", "p99", "HIT RATIO", "REFUSED", "BROKEN"]]
        for target in targets {
            let refused = (target.outcomes["429"] ?? 0) + (target.outcomes["503"] ?? 0)
            var hit = String(format: "%.1f%%", target.hitRatio * 100)
            if let predicted = target.predictedHitRatio { hit += String(format: " (predicted %.1f%%)", predicted * 100) }
            rows.append([
                target.name, "\(target.turns)",
                ms(target.firstTokenMs.p50), ms(target.firstTokenMs.p90), ms(target.firstTokenMs.p99), ms(target.firstTokenMs.max),
                ms(target.completionMs.p50), ms(target.completionMs.p99), hit, "\(refused)", "\(target.outcomes["broken"] ?? 0)",
            ])
        }
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        var lines = rows.map { row in
            row.enumerated().map { column, cell in
                column == 0 ? cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[column] - cell.count) + cell
            }.joined(separator: "  ")
        }
        for target in targets {
            if let daemon = target.daemon {
                lines.append(
                    "\(target.name): daemon used \(String(format: "%.2f", daemon.cpuSeconds)) CPU s, RSS max \(daemon.rssMaxBytes >> 20) MiB, mean \(daemon.rssMeanBytes >> 20) MiB"
                )
            }
        }
        return lines.joined(separator: "\n")
    }
}
