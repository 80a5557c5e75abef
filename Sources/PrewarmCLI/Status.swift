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

    func run() async throws {
        let client = UnixHTTPClient(socketPath: try options.socketPath())
        let response: UnixHTTPClient.Response
        do {
            response = try await client.request(.GET, "/v1/pools")
        } catch {
            throw ExitStatus.fail(ExitStatus.unavailable, "\(error)")
        }
        guard response.status == 200 else {
            throw ExitStatus.fail(ExitStatus.forHTTP(response.status), "HTTP \(response.status): \(Turn.errorMessage(response.body))")
        }
        if json {
            print(response.bodyString)
            return
        }
        let list = try JSONDecoder().decode(PoolList.self, from: Data(response.body.readableBytesView))
        print(Self.table(list.pools))
    }

    static func table(_ pools: [PoolStatus]) -> String {
        let header = ["POOL", "IDLE", "STARTING", "BUSY", "TARGET", "EFFECTIVE", "SERVED", "WARM/WAITED/COLD", "REJECTED", "SPAWN P50", "SPAWN P99", "LAST ERROR"]
        var rows = [header]
        for pool in pools {
            rows.append([
                pool.name + (pool.failing ? " (failing)" : ""),
                "\(pool.idle)", "\(pool.starting)", "\(pool.busy)", "\(pool.targetSpares)", "\(pool.effectiveSpares)", "\(pool.served)",
                "\(pool.warm)/\(pool.waited)/\(pool.cold)", "\(pool.rejected)",
                pool.spawnMs.p50.map { "\($0) ms" } ?? "-", pool.spawnMs.p99.map { "\($0) ms" } ?? "-",
                pool.lastError ?? "-",
            ])
        }
        let widths = header.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
