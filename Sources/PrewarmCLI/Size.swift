import ArgumentParser
import Foundation
import PrewarmCore

struct Size: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show how the pools are sized from memory, without starting anything.",
        discussion: """
            Prints the memory limit and where it came from, the reserve, the daemon's RSS, the \
            per-process estimates (configured, until a running daemon measures them: see \
            `prewarm status`), and the resulting maximum processes and spares per pool.
            """
    )

    @OptionGroup var options: CommonOptions

    @Flag(name: .long, help: "Print the derivation as JSON.")
    var json = false

    func run() async throws {
        let configuration = try options.loadOrFail()
        let plan = Self.plan(for: configuration)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(plan), as: UTF8.self))
        } else {
            print(Self.describe(plan, origin: configuration.origin))
        }
    }

    static func plan(for configuration: Configuration) -> MemoryPlan {
        let limit = MemoryLimit.resolve(config: configuration.memory, cgroup: Cgroup.memory(), host: Cgroup.host())
        return MemoryPlan.derive(
            pools: configuration.pools.map { ($0, MemoryCosts(spare: $0.spareBytes, turn: $0.turnBytes), false) },
            limit: limit,
            memory: configuration.memory,
            daemonRSS: MemoryPlan.daemonEstimate,
            daemonRSSSource: "estimate (an idle daemon; a running one reports its own in GET /v1/memory)",
            cpus: Cgroup.cpu().effective
        )
    }

    static func describe(_ plan: MemoryPlan, origin: String) -> String {
        var lines = [
            "configuration  \(origin)",
            "limit          \(mib(plan.limit))  from \(plan.limitSource)",
            "reserve        \(mib(plan.reserve))  [memory] reserve_mib",
            "daemon RSS     \(mib(plan.daemonRSS))  \(plan.daemonRSSSource)",
            "budget         \(mib(plan.budget))  = limit - reserve - daemon RSS"
                + (plan.enforce ? "" : "  (enforce = false: reported, not enforced)"),
            "CPUs           \(plan.cpus)  (default max_starting \(max(1, plan.cpus / 2)))",
            "",
        ]
        let header = ["POOL", "SPARE", "TURN PEAK", "ESTIMATES", "SPARES (CONFIG)", "SPARES (FIT)", "MAX PROCESSES", "CHARGED AT REST"]
        var rows = [header]
        for pool in plan.pools {
            rows.append([
                pool.name, mib(pool.spareBytes), mib(pool.turnPeakBytes), pool.measured ? "measured" : "configured",
                "\(pool.spares)", "\(pool.effectiveSpares)", "\(pool.maxProcesses) (" + (pool.configuredMaxProcesses.map { "config \($0)" } ?? "memory") + ")",
                mib(pool.effectiveSpares * pool.spareBytes),
            ])
        }
        lines.append(Status.align(rows))
        lines.append("")
        lines.append("Spares are charged at their idle cost, start-ups and busy turns at the turn peak;")
        lines.append("a spare count leaves room for one spare to become a turn. A turn that does not fit")
        lines.append("sheds idle spares first; if it still does not fit it waits (when_empty = \"wait\") or")
        lines.append("gets 429 memory_exhausted.")
        return lines.joined(separator: "\n")
    }

    static func mib(_ bytes: Int) -> String { "\(bytes >> 20) MiB" }
}
