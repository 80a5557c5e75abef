import Foundation
import Testing

#if canImport(FoundationXML)
import FoundationXML
#endif

#if canImport(Glibc)
import Glibc
#endif

extension LiveDaemons {
    /// `prewarm bench` end to end: it starts its own daemon of fake agents, runs the pool and the
    /// spawn-per-turn baseline under the same bursts, and writes the JSON and the chart.
    @Suite("Bench", .serialized)
    struct BenchTests {
        @Test func benchAgainstSpawnBaseline() async throws {
            let directory = try TestDaemon.makeTemporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let config = directory + "/bench.toml"
            try """
            [[pool]]
            name = "p"
            command = "\(TestDaemon.fakeAgent)"
            args = ["--init-ms", "1000", "--ttft-ms", "20", "--tokens", "3", "--token-ms", "5"]
            spares = 4
            [pool.ready]
            send = '{"type":"control_request","request_id":"i","request":{"subtype":"initialize","hooks":null}}'
            expect = '"type":"control_response"'
            [pool.turn]
            end = '"type":"result"'
            """.write(toFile: config, atomically: true, encoding: .utf8)
            let json = directory + "/bench.json"
            let svg = directory + "/bench.svg"

            let process = Process()
            process.executableURL = URL(fileURLWithPath: TestDaemon.prewarm)
            process.arguments = [
                "bench", "--config", config, "--pool", "p", "--baseline", "spawn",
                "--burst", "3", "--every", "2", "--bursts", "2", "--json", json, "--svg", svg,
            ]
            let output = Pipe()
            let errors = Pipe()
            process.standardOutput = output
            process.standardError = errors
            try process.run()
            let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            let progress = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "stderr: \(progress)")
            #expect(printed.contains("prewarm:p") && printed.contains("spawn"), "table: \(printed)")
            #expect(progress.contains("turns"), "progress on stderr")

            // The JSON: every turn accounted for, warm first token well below spawning per turn.
            let data = try Data(contentsOf: URL(fileURLWithPath: json))
            let report = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            let targets = try #require(report["targets"] as? [[String: Any]])
            #expect(targets.map { $0["name"] as? String } == ["prewarm:p", "spawn"])
            var p50: [String: Double] = [:]
            for target in targets {
                let name = target["name"] as? String ?? "?"
                let samples = target["samples"] as? [[String: Any]] ?? []
                #expect(samples.count == 6, "\(name): every turn has a sample")
                let outcomes = target["outcomes"] as? [String: Int] ?? [:]
                #expect(outcomes.values.reduce(0, +) == 6, "\(name): every turn has an outcome: \(outcomes)")
                #expect(outcomes["completed"] == 6, "\(name): \(outcomes)")
                let firstToken = target["first_token_ms"] as? [String: Any] ?? [:]
                for key in ["p50", "p90", "p99", "max"] { #expect(firstToken[key] is Double, "\(name): first_token_ms.\(key)") }
                #expect((target["completion_ms"] as? [String: Any])?["p50"] is Double)
                #expect(target["hit_ratio"] is Double)
                p50[name] = firstToken["p50"] as? Double
            }
            let warm = try #require(p50["prewarm:p"])
            let spawn = try #require(p50["spawn"])
            #expect(warm < spawn, "warm p50 \(warm) ms, spawn p50 \(spawn) ms")
            #expect(spawn > 1000, "spawning pays the 1 s start-up: \(spawn) ms")
            #expect((targets[0]["hit_ratio"] as? Double ?? 0) > 0.8)
            #expect(targets[0]["daemon"] is [String: Any], "the daemon's CPU and RSS were sampled")

            // The chart: well-formed XML that rsvg-convert renders.
            let chart = try String(contentsOfFile: svg, encoding: .utf8)
            #expect(chart.hasPrefix("<?xml") || chart.hasPrefix("<svg"))
            let parser = XMLParser(data: Data(chart.utf8))
            #expect(parser.parse(), "the SVG parses as XML: \(String(describing: parser.parserError))")
            guard let rsvg = ["/usr/bin/rsvg-convert", "/usr/local/bin/rsvg-convert"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
                print("SKIPPED: rendering the chart needs rsvg-convert (Debian's librsvg2-bin; .ci/run installs it)")
                return
            }
            let png = directory + "/bench.png"
            let render = Process()
            render.executableURL = URL(fileURLWithPath: rsvg)
            render.arguments = ["-o", png, svg]
            try render.run()
            render.waitUntilExit()
            #expect(render.terminationStatus == 0)
            let image = try Data(contentsOf: URL(fileURLWithPath: png))
            #expect(image.starts(with: [0x89, 0x50, 0x4E, 0x47]), "a PNG")
            #expect(image.count > 5000)
        }

        /// The direct-pool floor: the pool's command kept ready over pipes with no daemon; every
        /// turn completes, served warm while the stock lasts, and nothing is left running.
        @Test func directPoolFloor() async throws {
            let directory = try TestDaemon.makeTemporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let config = directory + "/bench.toml"
            try TestDaemon.configText(pools: DaemonTests.pool("p", args: #""--init-sleep-ms", "300""#, spares: 2))
                .write(toFile: config, atomically: true, encoding: .utf8)
            let json = directory + "/bench.json"
            let run = try OperatorTests.prewarm([
                "bench", "--config", config, "--pool", "p", "--baseline", "direct-pool", "--burst", "2", "--every", "1", "--bursts", "2", "--json", json,
            ])
            #expect(run.status == 0, "\(run.err)")
            let report = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any]
            let targets = try #require(report?["targets"] as? [[String: Any]])
            let floor = try #require(targets.first { $0["name"] as? String == "direct-pool" })
            #expect(floor["outcomes"] as? [String: Int] == ["completed": 4])
            #expect((floor["starts"] as? [String: Int])?["warm"] ?? 0 >= 2, "the first burst is served from the stock")
            let pids = Set((floor["samples"] as? [[String: Any]] ?? []).compactMap { $0["pid"] as? Int })
            #expect(pids.count == 4, "one process per turn")
            #expect(pids.allSatisfy { !isAlive(Int32($0)) }, "no process of the floor outlives the run")
        }
    }
}
