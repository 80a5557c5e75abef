import Foundation
import Testing

/// The operators' files in config/ (Prometheus rules, the Grafana dashboard, the Kubernetes
/// manifest), checked with the tools operators run them with. The metric names they use are
/// checked against a live daemon's /metrics in `OperatorsKitTests`.
@Suite struct OperatorConfigTests {
    static var config: String { ConfigurationTests.repositoryRoot + "/config" }
    static var prometheusDirectory: String { config + "/prometheus" }

    /// The files of a config/ directory whose names end with `suffix`, as full paths, sorted.
    static func files(in directory: String, endingWith suffix: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(suffix) }.sorted().map { directory + "/" + $0 }
    }

    /// The rules files (every .yml of config/prometheus but the tests).
    static func ruleFiles() throws -> [String] {
        try files(in: prometheusDirectory, endingWith: ".yml").filter { !$0.hasSuffix("_test.yml") }
    }

    static func matches(_ pattern: String, in text: String) -> [String] {
        let expression = try! NSRegularExpression(pattern: pattern, options: [.anchorsMatchLines])
        return expression.matches(in: text, range: NSRange(text.startIndex..., in: text)).map { match in
            String(text[Range(match.range(at: match.numberOfRanges > 1 ? 1 : 0), in: text)!])
        }
    }

    /// The names the rules files record, and the alerts they define.
    static func rules() throws -> (records: Set<String>, alerts: [String]) {
        let text = try ruleFiles().map { try String(contentsOfFile: $0, encoding: .utf8) }.joined(separator: "\n")
        return (Set(matches(#"^\s*- record:\s*(\S+)"#, in: text)), matches(#"^\s*- alert:\s*(\w+)"#, in: text))
    }

    /// Every metric name (Prewarm's own, or recorded from them) used anywhere in config/,
    /// with the files using it.
    static func metricNamesUsed() throws -> [String: Set<String>] {
        var used: [String: Set<String>] = [:]
        let enumerator = FileManager.default.enumerator(atPath: config)
        while let relative = enumerator?.nextObject() as? String {
            guard let text = try? String(contentsOfFile: config + "/" + relative, encoding: .utf8) else { continue }
            for name in matches(#"(?<![A-Za-z0-9_:])[a-z_]*:?prewarm_[a-z0-9_]+(?::[a-z0-9_]+)?"#, in: text) {
                used[name, default: []].insert("config/" + relative)
            }
        }
        return used
    }

    /// promtool accepts every rules file, and every promtool unit test in config/prometheus
    /// passes.
    @Test(.enabled(if: ExternalTool.promtool != nil, Comment(rawValue: ExternalTool.missingPrometheus)))
    func promtoolChecksAndTestsTheRules() throws {
        let promtool = try #require(ExternalTool.promtool)
        let rules = try Self.ruleFiles()
        #expect(rules.count >= 2, "\(rules)")
        let check = try runCommand(promtool, ["check", "rules"] + rules)
        #expect(check.status == 0, "\(check)")
        let tests = try Self.files(in: Self.prometheusDirectory, endingWith: "_test.yml")
        #expect(tests.count >= 2, "\(tests)")
        let run = try runCommand(promtool, ["test", "rules"] + tests)
        #expect(run.status == 0, "\(run)")
        #expect(!run.out.contains("FAILED"), "\(run)")
    }

    /// Every alert has a promtool test where it fires and one where it stays quiet; every
    /// recording rule is evaluated by a test.
    @Test func everyRuleIsTestedBothWays() throws {
        let (records, alerts) = try Self.rules()
        #expect(Set(alerts).isSuperset(of: [
            "PrewarmPoolFailing", "PrewarmHitRatioLow", "PrewarmOOMKill", "PrewarmMemoryPressure", "PrewarmStartupFailuresRising",
            "PrewarmJournalDroppingRecords",
        ]))
        var fires: Set<String> = []
        var quiet: Set<String> = []
        var evaluated: Set<String> = []
        for file in try Self.files(in: Self.prometheusDirectory, endingWith: "_test.yml") {
            var alert: String?
            for line in try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }) {
                if line.hasPrefix("alertname:") { alert = line.dropFirst("alertname:".count).trimmingCharacters(in: .whitespaces) }
                if line == "exp_alerts: []", let alert { quiet.insert(alert) }
                if line == "exp_alerts:", let alert { fires.insert(alert) }
                if line.hasPrefix("- expr:") {
                    evaluated.formUnion(Self.matches(#"[a-z_]+:prewarm_[a-z0-9_]+:[a-z0-9_]+"#, in: line))
                }
            }
        }
        for alert in alerts {
            #expect(fires.contains(alert), "no test where \(alert) fires")
            #expect(quiet.contains(alert), "no test where \(alert) stays quiet")
        }
        #expect(records.isSubset(of: evaluated), "recording rules no test evaluates: \(records.subtracting(evaluated).sorted())")
    }

    /// Every Kubernetes file names the Kubernetes version it is for (1.30 or later) and passes
    /// kubernetes-validate offline, strictly (no unknown field), against that version's schemas.
    @Test(.enabled(if: ExternalTool.kubernetesValidate != nil, Comment(rawValue: ExternalTool.missingKubernetesValidate)))
    func kubernetesFilesValidateForTheirVersion() throws {
        let validate = try #require(ExternalTool.kubernetesValidate)
        let manifests = try Self.files(in: Self.config + "/kubernetes", endingWith: ".yaml")
        #expect(!manifests.isEmpty)
        for manifest in manifests {
            let text = try String(contentsOfFile: manifest, encoding: .utf8)
            let version = try #require(Self.matches(#"^# Kubernetes: (\d+\.\d+)"#, in: text).first, "\(manifest) names no version (# Kubernetes: 1.30)")
            let parts = version.split(separator: ".").compactMap { Int($0) }
            #expect(parts.count == 2 && (parts[0], parts[1]) >= (1, 30), "\(manifest): Kubernetes \(version), not 1.30 or later")
            let run = try runCommand(validate, ["--strict", "--kubernetes-version", version + ".0", manifest])
            #expect(run.status == 0, "\(manifest) against Kubernetes \(version): \(run)")
            #expect(run.out.contains("passed"), "\(run)")
            // Every document was checked against the schemas (none skipped as unknown).
            let kinds = Self.matches(#"^kind: (\w+)"#, in: text)
            #expect(Self.matches("passed for resource", in: run.out).count == kinds.count, "\(run.out)")
        }
    }

    /// The Grafana dashboard is a dashboard Grafana imports: a uid and a title; panels with
    /// distinct ids, a type, a place on the 24-column grid and, but for rows, queries with
    /// distinct refIds and an expression; heatmaps read histogram buckets as heatmaps; every
    /// `$variable` is defined (or Grafana's own); the hit ratio, the spares against their
    /// target, the memory and the latency heatmaps are there.
    @Test func grafanaDashboardIsWellFormed() throws {
        let files = try Self.files(in: Self.config + "/grafana", endingWith: ".json")
        #expect(!files.isEmpty)
        for file in files {
            let dashboard = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any])
            #expect((dashboard["uid"] as? String)?.isEmpty == false && (dashboard["title"] as? String)?.isEmpty == false)
            #expect(dashboard["schemaVersion"] is Int)
            let variables = ((dashboard["templating"] as? [String: Any])?["list"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
            let known = Set(variables + ["__rate_interval", "__interval", "__range"])
            let panels = try #require(dashboard["panels"] as? [[String: Any]])
            let ids = panels.compactMap { $0["id"] as? Int }
            #expect(ids.count == panels.count && Set(ids).count == ids.count, "panel ids missing or repeated")
            var expressions: [String] = []
            for panel in panels {
                let title = panel["title"] as? String ?? "?"
                let type = try #require(panel["type"] as? String, "\(title): no type")
                let grid = try #require(panel["gridPos"] as? [String: Int], "\(title): no gridPos")
                #expect((grid["x"] ?? -1) >= 0 && (grid["w"] ?? 0) > 0 && (grid["x"] ?? 0) + (grid["w"] ?? 0) <= 24 && (grid["h"] ?? 0) > 0, "\(title): \(grid)")
                guard type != "row" else { continue }
                let targets = try #require(panel["targets"] as? [[String: Any]], "\(title): no targets")
                #expect(!targets.isEmpty, "\(title): no query")
                let refIDs = targets.compactMap { $0["refId"] as? String }
                #expect(refIDs.count == targets.count && Set(refIDs).count == refIDs.count, "\(title): refIds")
                for target in targets {
                    let expression = try #require(target["expr"] as? String, "\(title): a query without expr")
                    #expect(!expression.isEmpty)
                    expressions.append(expression)
                    if type == "heatmap" {
                        #expect(target["format"] as? String == "heatmap" && expression.contains("_bucket") && expression.contains("by (le)"), "\(title)")
                    }
                }
            }
            for variable in Self.matches(#"\$\{?(\w+)"#, in: expressions.joined(separator: "\n")) {
                #expect(known.contains(variable), "$\(variable) is not a dashboard variable")
            }
            let all = expressions.joined(separator: "\n")
            for needed in [
                "pool:prewarm_hit_ratio:rate5m", "prewarm_pool_idle_processes", "prewarm_pool_target_spares", "prewarm_memory_charged_bytes",
                "instance:prewarm_memory_headroom:ratio",
            ] {
                #expect(all.contains(needed), "the dashboard does not show \(needed)")
            }
            #expect(panels.filter { $0["type"] as? String == "heatmap" }.count >= 3, "latency heatmaps")
        }
    }
}
