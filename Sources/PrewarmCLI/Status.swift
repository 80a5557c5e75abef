import ArgumentParser
import Foundation
import PrewarmClient
import PrewarmCore
import PrewarmServer

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the pools: a table, or the JSON of GET /v1/pools.")

    @OptionGroup var options: CommonOptions

    @Flag(name: .long, help: "Print the JSON of GET /v1/pools.")
    var json = false

    @Flag(
        name: .long,
        help: "Print nothing on success; exit 0 when every pool has an idle spare or is failing, 1 when not yet (69: no daemon). For readiness probes."
    )
    var ready = false

    func run() async throws {
        let response = try await options.daemonRequest(.GET, "/v1/pools")
        let list = try JSONDecoder().decode(PoolList.self, from: Data(response.body.readableBytesView))
        if ready {
            // The rule of the daemon's READY=1 (Broker.ready).
            let waiting = list.pools.filter { !$0.ready }
            guard waiting.isEmpty else {
                throw ExitStatus.fail(1, "not ready: no idle spare yet in " + waiting.map(\.name).joined(separator: ", "))
            }
            return
        }
        if json {
            print(response.bodyString)
            return
        }
        print(Self.table(list.pools))
        // The memory section; a daemon without /v1/memory (older) just has none.
        if let memory = try? await UnixHTTPClient(socketPath: options.socketPath()).request(.GET, "/v1/memory"), memory.status == 200,
            let figures = try? JSONDecoder().decode(MemoryStatus.self, from: Data(memory.body.readableBytesView))
        {
            print("")
            print(Self.memoryTable(figures))
        }
        if let health = try? await UnixHTTPClient(socketPath: options.socketPath()).request(.GET, "/healthz"),
            let figures = try? JSONDecoder().decode(Health.self, from: Data(health.body.readableBytesView)), let keeper = figures.keeper
        {
            print("")
            print(
                "keeper: " + (keeper.pid.map { "pid \($0)" } ?? "NONE (being restarted)") + ", \(keeper.groups) process groups"
                    + (keeper.restarts > 0 ? ", restarted \(keeper.restarts) time(s)" : "")
            )
            if let descriptors = figures.descriptors {
                print("descriptors: \(descriptors.open) open of \(descriptors.limit)")
            }
        }
    }

    static func memoryTable(_ memory: MemoryStatus) -> String {
        func mib(_ bytes: Int?) -> String { bytes.map { "\($0 >> 20) MiB" } ?? "-" }
        var lines = [
            "memory: limit \(mib(memory.limit)) (\(memory.limitSource)), usage \(mib(memory.usage)), budget \(mib(memory.budget)), charged \(mib(memory.charged))"
                + (memory.pressure ? ", UNDER PRESSURE" : "") + (memory.oomKills > 0 ? ", OOM kills: \(memory.oomKills)" : "")
                + (memory.enforce ? "" : " (not enforced)")
        ]
        var rows = [["POOL", "SPARE", "TURN PEAK", "ESTIMATES", "CHARGED", "MAX PROCESSES", "SPARES", "EFFECTIVE", "SHED"]]
        for pool in memory.pools {
            rows.append([
                pool.name, mib(pool.spareBytes), mib(pool.turnPeakBytes), pool.measured ? "measured" : (pool.spareMeasured ? "spare measured" : "configured"),
                mib(pool.charged), "\(pool.maxProcesses)", "\(pool.spares)", "\(pool.effectiveSpares)", "\(pool.shed)",
            ])
        }
        lines.append(align(rows))
        return lines.joined(separator: "\n")
    }

    static func table(_ pools: [PoolStatus]) -> String {
        let header = ["POOL", "IDLE", "STARTING", "BUSY", "TARGET", "EFFECTIVE", "SERVED", "WARM/WAITED/COLD", "REJECTED", "SPAWN P50", "SPAWN P99", "LAST ERROR"]
        var rows = [header]
        for pool in pools {
            rows.append([
                pool.name + (pool.failing ? " (failing)" : ""),
                "\(pool.idle)", "\(pool.starting)", "\(pool.busy)", pool.auto == nil ? "\(pool.targetSpares)" : "auto >= \(pool.targetSpares)",
                "\(pool.effectiveSpares)", "\(pool.served)",
                "\(pool.warm)/\(pool.waited)/\(pool.cold)", "\(pool.rejected)",
                pool.spawnMs.p50.map { "\($0) ms" } ?? "-", pool.spawnMs.p99.map { "\($0) ms" } ?? "-",
                pool.lastError ?? "-",
            ])
        }
        var lines = [align(rows)]
        for pool in pools {
            guard let auto = pool.auto else { continue }
            let predicted = auto.predictedMiss.map { "predicted miss \(percent($0))" } ?? "no prediction yet"
            lines.append(
                "\(pool.name) sizes itself: target \(auto.target) (floor \(pool.targetSpares), at most \(auto.maxSpares)), \(predicted) "
                    + "(target_miss \(percent(auto.targetMiss))): \(auto.reason)"
            )
        }
        for pool in pools where pool.fingerprint != nil {
            let state = pool.closing == true ? "closing (goes when its last run ends)" : (pool.targetSpares > 0 ? "keeps spares" : "no spares until a second run")
            let why = pool.differsFrom.map { "differ from pool \($0.pool) in \($0.differences.joined(separator: " "))" } ?? "find no claude pool configured"
            lines.append("\(pool.name) is a fingerprint pool, \(state); its runs \(why)")
        }
        for pool in pools where pool.resumeHeld + pool.resumeHits + pool.resumeMisses > 0 {
            lines.append(
                "\(pool.name) resume spares: \(pool.resumeHeld) held (\(pool.resumeReady) ready); resumed turns \(pool.resumeHits) warm, "
                    + "\(pool.resumeMisses) cold (\(pool.resumeStale) stale); \(pool.resumeEvicted) evicted, \(pool.resumeExpired) expired"
            )
        }
        for pool in pools where !pool.runsVia.isEmpty {
            let counts = pool.runsVia.sorted { $0.key < $1.key }.map { "\($0.value) via \($0.key)" }.joined(separator: ", ")
            lines.append("\(pool.name) runs through an installed prewarm-claude (prewarm sdk install): \(counts)")
        }
        return lines.joined(separator: "\n")
    }

    static func percent(_ share: Double) -> String { String(format: "%.2f%%", share * 100) }

    /// Columns padded to their widest cell; the last column is not padded.
    static func align(_ rows: [[String]]) -> String {
        guard let header = rows.first else { return "" }
        let widths = header.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
