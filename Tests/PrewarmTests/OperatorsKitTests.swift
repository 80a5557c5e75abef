import Foundation
import NIOCore
import PrewarmClient
import PrewarmCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension LiveDaemons {
    /// The operators' tools against real daemons: promtool on /metrics, a Prometheus server
    /// scraping `metrics_listen` with the rules of config/prometheus, the names config/ uses,
    /// and `prewarm top` on a terminal (tmux) and off one.
    @Suite("Operators' kit", .serialized)
    struct OperatorsKitTests {
        /// /metrics after every kind of traffic: turns served warm and not, one refused, every
        /// operator route (so Hummingbird's families are there), with the journal on.
        static func exercisedMetrics() async throws -> String {
            let daemon = try await TestDaemon(pools: DaemonTests.pool("x", args: #""--init-sleep-ms", "300""#, spares: 1, extra: "max_turns_per_minute = 2"))
            #expect(try await daemon.turn("x").status == 200)
            #expect(try await daemon.turn("x").status == 200)
            #expect(try await daemon.turn("x").status == 429)
            for path in ["/healthz", "/v1/pools", "/v1/pools/x", "/v1/memory", "/v1/pools/nope"] {
                _ = try await daemon.client.request(.GET, path)
            }
            _ = try await daemon.client.request(.PATCH, "/v1/pools/x", body: ByteBuffer(string: "{}"))
            try await waitUntil("the journal has written the turns", timeout: .seconds(10)) {
                try await OperatorTests.metrics(daemon).value("prewarm_journal_written_records_total") ?? 0 >= 3
            }
            let text = try await daemon.client.request(.GET, "/metrics").bodyString
            daemon.signal(SIGTERM)
            #expect(try await daemon.waitForExit() == 0)
            return text
        }

        /// promtool's linter accepts the daemon's /metrics after traffic: every family has a
        /// HELP line, counters end in `_total`, units are base units.
        @Test(.enabled(if: ExternalTool.promtool != nil, Comment(rawValue: ExternalTool.missingPrometheus)))
        func promtoolAcceptsTheMetricsAfterTraffic() async throws {
            let text = try await Self.exercisedMetrics()
            #expect(text.contains("prewarm_http_requests_total{"), "Hummingbird's families are in the text checked")
            #expect(text.contains("prewarm_turns_rejected_total{pool=\"x\",reason=\"rate_limited\"} 1"))
            let check = try runCommand(try #require(ExternalTool.promtool), ["check", "metrics"], input: Data(text.utf8))
            #expect(check.status == 0, "\(check)")
            #expect(check.out.isEmpty && check.err.isEmpty, "\(check)")
        }

        /// Every metric name config/ uses (the rules, the alerts and their tests, the dashboard,
        /// the prometheus-adapter rule and the HPA, the systemd unit) is a family or sample the
        /// daemon exports, or the output of a recording rule.
        @Test func everyMetricNameInConfigExists() async throws {
            let exposition = try Exposition(try await Self.exercisedMetrics())
            let exported = Set(exposition.samples.map(\.name)).union(exposition.types.keys)
            let recorded = try OperatorConfigTests.rules().records
            let used = try OperatorConfigTests.metricNamesUsed()
            #expect(used.keys.contains("prewarm_pool_busy_ratio") && used.keys.contains("pool:prewarm_hit_ratio:rate5m"), "\(used.keys.sorted())")
            for (name, files) in used.sorted(by: { $0.key < $1.key }) where !exported.contains(name) && !recorded.contains(name) {
                Issue.record("\(name), used in \(files.sorted().joined(separator: ", ")), is neither exported on /metrics nor recorded")
            }
        }

        // MARK: - A Prometheus server

        /// A `prometheus` server on a free loopback port, with its storage in `directory`.
        final class PrometheusServer: @unchecked Sendable {
            let process = Process()
            let port: Int
            let directory: String

            init(config: String, directory: String) throws {
                self.directory = directory
                port = try OperatorTests.freePort()
                process.executableURL = URL(fileURLWithPath: try #require(ExternalTool.prometheus))
                process.arguments = [
                    "--config.file=\(config)", "--storage.tsdb.path=\(directory)/data", "--web.listen-address=127.0.0.1:\(port)",
                    "--log.level=warn",
                ]
                let log = directory + "/prometheus.log"
                _ = FileManager.default.createFile(atPath: log, contents: nil)
                process.standardOutput = FileHandle(forWritingAtPath: log)!
                process.standardError = FileHandle(forWritingAtPath: log)!
                try process.run()
            }

            /// The JSON of an HTTP API call.
            func api(_ path: String) throws -> [String: Any] {
                let answer = try OperatorTests.tcpGet(port: port, path: path)
                guard let object = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any] else {
                    throw TimeoutError(what: "a JSON answer to \(path): \(answer.status) \(answer.body)")
                }
                return object
            }

            /// An instant query's samples: labels and value.
            func query(_ expression: String) throws -> [(labels: [String: String], value: Double)] {
                let encoded = expression.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
                let answer = try api("/api/v1/query?query=\(encoded)")
                guard answer["status"] as? String == "success", let result = (answer["data"] as? [String: Any])?["result"] as? [[String: Any]] else {
                    throw TimeoutError(what: "a successful query \(expression): \(answer)")
                }
                return result.map { sample in
                    let value = (sample["value"] as? [Any])?.last as? String
                    return (sample["metric"] as? [String: String] ?? [:], value.flatMap(Double.init) ?? .nan)
                }
            }

            /// Its log, and the state of its scrape target.
            var log: String {
                let text = (try? String(contentsOfFile: directory + "/prometheus.log", encoding: .utf8)) ?? ""
                let targets = (try? api("/api/v1/targets")).map { "\($0)" } ?? "no answer"
                return "prometheus log: \(text)\ntargets: \(targets)"
            }

            func stop() {
                guard process.isRunning else { return }
                process.terminate()
                process.waitUntilExit()
            }

            deinit {
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            }
        }

        /// A Prometheus server scraping the daemon's `metrics_listen` every second, with the
        /// rules of config/prometheus, records the hit ratio the test's turns had (counted from
        /// their `Prewarm-Start` headers): every turn counts, the first one too, because each
        /// pool's series are exported at 0 and scraped before the first turn. Every rule
        /// evaluates without error, and every dashboard query runs.
        @Test(.enabled(if: ExternalTool.prometheus != nil, Comment(rawValue: ExternalTool.missingPrometheus)))
        func prometheusRecordsTheHitRatioOfTheTurns() async throws {
            let directory = try TestDaemon.makeTemporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let metricsPort = try OperatorTests.freePort()
            // Two spares booting in 2 s: two turns in a row are warm, the next ones wait.
            let daemon = try await TestDaemon(
                pools: DaemonTests.pool("h", args: #""--init-sleep-ms", "2000""#, spares: 2), top: "metrics_listen = \"127.0.0.1:\(metricsPort)\""
            )
            let rules = try OperatorConfigTests.ruleFiles()
            let config = directory + "/prometheus.yml"
            try """
            global:
              scrape_interval: 1s
              evaluation_interval: 1s
            rule_files:
            \(rules.map { "  - \($0)" }.joined(separator: "\n"))
            scrape_configs:
              - job_name: prewarm
                static_configs:
                  - targets: ["127.0.0.1:\(metricsPort)"]
            """.write(toFile: config, atomically: true, encoding: .utf8)
            let prometheus = try PrometheusServer(config: config, directory: directory)
            defer { prometheus.stop() }

            // Scraped before the first turn: every start kind and outcome at 0.
            let zeros = try await poll(timeout: .seconds(30)) {
                (try? prometheus.query(#"prewarm_turns_total{job="prewarm",pool="h"}"#)) ?? []
            } until: { $0.count == 15 && $0.allSatisfy { $0.value == 0 } }
            try #require(
                zeros.count == 15 && zeros.allSatisfy { $0.value == 0 },
                "the pool's turn series: \(Result { try prometheus.query(#"prewarm_turns_total{pool="h"}"#) }); \(prometheus.log)"
            )
            var starts: [String] = []
            for _ in 0..<4 {
                let response = try await daemon.turn("h")
                #expect(response.status == 200)
                starts.append(response.headers.first(name: "Prewarm-Start") ?? "?")
            }
            let warm = starts.count { $0 == "warm" }
            #expect(warm > 0 && warm < starts.count, "a hit ratio strictly between 0 and 1: \(starts)")
            let expected = Double(warm) / Double(starts.count)

            let turns = Double(starts.count)
            try await waitUntil("Prometheus has scraped the \(starts.count) turns", timeout: .seconds(30)) {
                (try? prometheus.query(#"sum(prewarm_turns_total{pool="h"})"#))?.first?.value == turns
            }
            let recorded = try await poll(timeout: .seconds(30)) {
                (try? prometheus.query(#"pool:prewarm_hit_ratio:rate5m{pool="h"}"#))?.first?.value
            } until: { $0.map { abs($0 - expected) < 1e-9 } ?? false }
            #expect(recorded.map { abs($0 - expected) < 1e-9 } ?? false, "recorded \(recorded.map { "\($0)" } ?? "nothing"), the turns' \(expected): \(starts)")
            let byStart = try prometheus.query(#"pool_start:prewarm_turns:rate5m{pool="h"} > 0"#).map { $0.labels["start"] ?? "?" }
            #expect(Set(byStart) == Set(starts), "turns per second by start kind: \(byStart) against \(starts)")

            // Every group loaded, every rule evaluated without error.
            let groups = try #require((try prometheus.api("/api/v1/rules")["data"] as? [String: Any])?["groups"] as? [[String: Any]])
            let evaluated = groups.flatMap { $0["rules"] as? [[String: Any]] ?? [] }
            let (records, alerts) = try OperatorConfigTests.rules()
            #expect(evaluated.count == records.count + alerts.count)
            for rule in evaluated {
                #expect(rule["health"] as? String == "ok", "\(rule["name"] ?? "?"): \(rule["lastError"] ?? "")")
            }
            // Every query of the dashboard runs, with its variables set to everything.
            let dashboard = try String(contentsOfFile: OperatorConfigTests.config + "/grafana/prewarm.json", encoding: .utf8)
            let queries = try #require(try JSONSerialization.jsonObject(with: Data(dashboard.utf8)) as? [String: Any])["panels"] as? [[String: Any]]
            for target in (queries ?? []).flatMap({ $0["targets"] as? [[String: Any]] ?? [] }) {
                let expression = (target["expr"] as? String ?? "").replacingOccurrences(of: "$__rate_interval", with: "1m")
                    .replacingOccurrences(of: "$pool", with: ".*").replacingOccurrences(of: "$instance", with: ".*")
                #expect(throws: Never.self, "\(expression)") { _ = try prometheus.query(expression) }
            }
            daemon.signal(SIGTERM)
            #expect(try await daemon.waitForExit() == 0)
        }

        // MARK: - prewarm top

        /// A tmux server of the test's own, on its own socket.
        struct Tmux {
            let socket: String

            func run(_ arguments: [String]) throws -> CommandResult {
                try runCommand(try #require(ExternalTool.tmux), ["-S", socket] + arguments, environment: ["TERM": "xterm-256color"])
            }

            func screen() throws -> String { try run(["capture-pane", "-p", "-t", "top"]).out }

            func show(_ format: String) throws -> String {
                try run(["display-message", "-p", "-t", "top", format]).out.trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }

        /// The cells of a pool's row on `prewarm top`'s screen, under their column titles.
        static func row(_ pool: String, on screen: String) -> [String: String]? {
            let lines = screen.split(separator: "\n").map(String.init)
            guard let header = lines.first(where: { $0.hasPrefix("POOL ") }), let row = lines.first(where: { $0.hasPrefix(pool + " ") }) else {
                return nil
            }
            // Columns start where their title starts; titles are separated by two spaces.
            let titles = header.components(separatedBy: "  ").filter { !$0.isEmpty }.map { $0.trimmingCharacters(in: .whitespaces) }
            var cells: [String: String] = [:]
            let characters = Array(row)
            for (index, title) in titles.enumerated() {
                guard let start = header.range(of: title)?.lowerBound else { continue }
                let from = header.distance(from: header.startIndex, to: start)
                let to = index + 1 < titles.count ? header.distance(from: header.startIndex, to: header.range(of: titles[index + 1])!.lowerBound) : characters.count
                guard from < characters.count else { continue }
                cells[title] = String(characters[from..<min(to, characters.count)]).trimmingCharacters(in: .whitespaces)
            }
            return cells
        }

        /// `prewarm top` in a terminal (tmux) shows each pool's figures and follows them every
        /// second: after a warm turn and a waited one, a hit ratio of 50% over the last minute
        /// and 2 turns; Ctrl-C ends it with exit 0 and gives the terminal back (the normal
        /// screen, the cursor shown).
        @Test(.enabled(if: ExternalTool.tmux != nil, Comment(rawValue: ExternalTool.missingTmux)))
        func topFollowsThePoolsInATerminal() async throws {
            let daemon = try await TestDaemon(pools: DaemonTests.pool("t", args: #""--init-sleep-ms", "1500""#, spares: 1))
            let tmux = Tmux(socket: daemon.directory + "/tmux.sock")
            defer { _ = try? tmux.run(["kill-server"]) }
            // Once top has exited, the shell prints its status and waits on the terminal (until
            // kill-server hangs it up), so the screen as top left it can be read.
            let command = "'\(TestDaemon.prewarm)' top --socket '\(daemon.socket)'; echo TOP-EXITED $?; read line"
            let started = try tmux.run(["new-session", "-d", "-s", "top", "-x", "150", "-y", "20", command])
            try #require(started.status == 0, "\(started)")

            try await waitUntil("top shows pool t", timeout: .seconds(20)) { Self.row("t", on: try tmux.screen()) != nil }
            #expect(try tmux.show("#{alternate_on}") == "1", "top draws on the alternate screen")
            let first = try #require(Self.row("t", on: try tmux.screen()))
            #expect(first["IDLE"] == "1" && first["SPARES"] == "1/1" && first["STATE"] == "ok", "\(first)")
            #expect(first["SPAWN P50"]?.hasSuffix(" ms") == true && first["MEMORY"]?.contains("MiB") == true, "\(first)")
            #expect(try tmux.screen().contains("memory    limit") && tmux.screen().contains("pressure  no"))

            let warm = try await daemon.turn("t")
            let waited = try await daemon.turn("t")
            #expect(warm.headers.first(name: "Prewarm-Start") == "warm" && waited.headers.first(name: "Prewarm-Start") == "waited")
            let screen = try await poll(timeout: .seconds(10)) { try tmux.screen() } until: { Self.row("t", on: $0)?["TURNS 1M"] == "2" }
            let row = Self.row("t", on: screen) ?? [:]
            #expect(row["TURNS 1M"] == "2" && row["HIT 1M"] == "50%" && row["HIT ALL"] == "50%" && row["REFUSED 1M"] == "0", "\(screen)")

            _ = try tmux.run(["send-keys", "-t", "top", "C-c"])
            try await waitUntil("top exits", timeout: .seconds(10)) { try tmux.screen().contains("TOP-EXITED") }
            let after = try tmux.screen()
            #expect(after.contains("TOP-EXITED 0"), "exit status 0 after Ctrl-C: \(after)")
            #expect(!after.contains("POOL"), "the normal screen is back: \(after)")
            #expect(try tmux.show("#{alternate_on}") == "0")
            #expect(try tmux.show("#{cursor_flag}") == "1", "the cursor is shown again")
            daemon.signal(SIGTERM)
            #expect(try await daemon.waitForExit() == 0)
        }

        /// Off a terminal, `prewarm top` prints one snapshot (no escape sequence) and exits 0;
        /// with no daemon it exits 69, as `prewarm status` does.
        @Test func topPrintsOneSnapshotOffATerminal() async throws {
            let daemon = try await TestDaemon(pools: DaemonTests.pool("s1", spares: 2) + DaemonTests.pool("s2", spares: 1))
            let snapshot = try OperatorTests.prewarm(["top", "--socket", daemon.socket])
            #expect(snapshot.status == 0, "\(snapshot)")
            #expect(!snapshot.out.contains("\u{1B}"), "no escape sequence in a snapshot")
            #expect(snapshot.out.contains("memory    limit") && snapshot.out.contains(", OOM kills 0"))
            #expect(Self.row("s1", on: snapshot.out)?["IDLE"] == "2", "\(snapshot.out)")
            #expect(Self.row("s2", on: snapshot.out)?["SPARES"] == "1/1", "\(snapshot.out)")
            #expect(Self.row("s1", on: snapshot.out)?["HIT 1M"] == "-", "no minute seen in a snapshot")
            daemon.signal(SIGTERM)
            #expect(try await daemon.waitForExit() == 0)

            let none = try OperatorTests.prewarm(["top", "--socket", daemon.socket])
            let status = try OperatorTests.prewarm(["status", "--socket", daemon.socket])
            #expect(none.status == 69 && status.status == 69, "\(none) \(status)")
            #expect(none.err.contains("cannot reach the daemon"), "\(none)")
        }
    }
}
