import ArgumentParser
import Foundation
import PrewarmBench
import PrewarmClient
import PrewarmCore
import PrewarmServer

#if canImport(Glibc)
import Glibc
#endif

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure first-token latency: Prewarm's pools against spawning per turn, side by side.",
        discussion: """
            Targets run one after another under the same load (pools at once with --together), each reported on its own: \
            --pool (turns through the daemon), --baseline spawn (the pool's command spawned per \
            turn, as the SDKs do), --baseline direct-warm (an initialised process of the pool's \
            command made ready just before each turn, over pipes, no daemon), --baseline direct-pool (the \
            pool's spares kept ready over pipes with no daemon, replaced as they are used: the floor \
            of a pool, idling as long as its spares), --direct CMD (any command per turn). \
            With --config and no --socket, a daemon is started for the run and stopped after.
            """
    )

    @OptionGroup var options: CommonOptions

    @Option(name: .long, help: "A pool to send turns to (repeatable).")
    var pool: [String] = []

    @Option(
        name: .long,
        help: "A baseline: spawn, direct-warm or direct-pool (repeatable); uses the first --pool's command from the configuration."
    )
    var baseline: [String] = []

    @Option(name: .long, help: "A command spawned per turn, e.g. 'claude -p --output-format stream-json'.")
    var direct: String?
    @Option(name: .customLong("ready-send"), help: "For --direct: a line written at start-up.")
    var readySend: String?
    @Option(name: .customLong("ready-expect"), help: "For --direct: the substring of the readiness line.")
    var readyExpect: String?
    @Option(name: .long, help: "For --direct: the substring of a turn's last line (default: end of file).")
    var end: String?

    @Option(name: .long, help: "Closed loop: turns at a time.")
    var concurrency: Int?
    @Option(name: .long, help: "Closed loop: turns in all (default 20).")
    var turns: Int?
    @Option(name: .long, help: "Open loop: Poisson arrivals per second.")
    var rate: Double?
    @Option(name: .long, help: "Open loop: seconds of arrivals.")
    var duration: Double?
    @Option(name: .long, help: "Open loop: the generator's seed (same seed, same schedule).")
    var seed: UInt64 = 1
    @Option(name: .long, help: "Open loop in phases: RATE:SECONDS,... (Poisson, phase i seeded with --seed + i), e.g. 1:120,6:120,1:120.")
    var phases: String?
    @Flag(name: .long, help: "Run the --pool targets at once, each under the same schedule (to compare pools side by side).")
    var together = false
    @Option(name: .long, help: "Bursts: turns at once.")
    var burst: Int?
    @Option(name: .long, help: "Bursts: seconds between bursts.")
    var every: Double?
    @Option(name: .long, help: "Bursts: how many.")
    var bursts: Int?
    @Option(name: .long, help: "Seconds of quiet before each target's load starts, once its pools are full (so a first burst meets spares that have idled as long as later ones; default 0).")
    var settle: Double = 0

    @Option(name: .long, help: "A file whose content is each turn's body (default: the fake agent's user line).")
    var input: String?
    @Option(name: .customLong("first-token"), help: "Comma-separated top-level JSON types that mark the first token.")
    var firstToken = "stream_event,assistant"

    @Option(name: .long, help: "Write the report as JSON to this file.")
    var json: String?
    @Option(name: .long, help: "Write the chart as SVG to this file.")
    var svg: String?

    static let userLine = #"{"type":"user","message":{"role":"user","content":"hello"},"parent_tool_use_id":null,"session_id":"default"}"#

    func validate() throws {
        if pool.isEmpty && baseline.isEmpty && direct == nil {
            throw ValidationError("name at least one target: --pool NAME, --baseline spawn|direct-warm, or --direct CMD")
        }
        for name in baseline where !["spawn", "direct-warm", "direct-pool"].contains(name) {
            throw ValidationError("--baseline takes spawn, direct-warm or direct-pool, not \(name)")
        }
        let shapes = [concurrency != nil || turns != nil, rate != nil || duration != nil, burst != nil || every != nil || bursts != nil, phases != nil]
        if shapes.filter({ $0 }).count > 1 {
            throw ValidationError("choose one load: --concurrency/--turns, --rate/--duration, --burst/--every/--bursts, or --phases")
        }
        if let phases, LoadShape.Phase.parse(phases) == nil {
            throw ValidationError("--phases takes RATE:SECONDS,RATE:SECONDS..., such as 1:120,6:120,1:120; found \(phases)")
        }
        if (rate != nil) != (duration != nil) { throw ValidationError("--rate and --duration go together") }
        if !(settle >= 0) { throw ValidationError("--settle takes seconds, 0 or more") }
        if burst != nil && (every == nil || bursts == nil) && bursts != 1 {
            throw ValidationError("--burst needs --every and --bursts")
        }
    }

    var load: LoadShape {
        if let phases = phases.flatMap(LoadShape.Phase.parse) { return .phases(phases, seed: seed) }
        if let rate, let duration { return .open(rate: rate, duration: duration, seed: seed) }
        if let burst { return .bursts(size: burst, every: every ?? 0, count: bursts ?? 1) }
        return .closed(concurrency: concurrency ?? 1, turns: turns ?? 20)
    }

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let configuration: Configuration? = try options.loadOrFail()
        let body: String
        if let input {
            do {
                body = try String(contentsOfFile: input, encoding: .utf8)
            } catch {
                throw ExitStatus.fail(ExitStatus.usage, "cannot read --input \(input): \(error.localizedDescription)")
            }
        } else {
            body = Self.userLine
        }
        let rule = FirstTokenRule(types: Set(firstToken.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }))
        @Sendable func progress(_ line: String) { FileHandle.standardError.write(Data(("bench: " + line + "\n").utf8)) }

        // The daemon: the one on --socket, or one started for the run from --config.
        var daemon: BenchDaemon?
        var socket = ""
        if !pool.isEmpty {
            if options.socket == nil && environment["PREWARM_SOCKET"] == nil && options.config != nil {
                progress("starting a daemon for the run (\(options.config!))")
                daemon = try await BenchDaemon.start(config: options.config!)
                socket = daemon!.socket
            } else {
                socket = try options.socketPath()
            }
        }
        defer { daemon?.stop() }
        if daemon == nil { BenchDaemon.onSignals() }

        let runner = BenchRunner(load: load, progress: { progress($0) })
        progress(load.description)
        var reports: [TargetReport] = []
        var timeline: Timeline?
        let client = UnixHTTPClient(socketPath: socket)
        let daemonSocket = socket
        /// One pool target's run, with its prediction.
        @Sendable func run(_ name: String) async -> TargetResult {
            var result = await runner.run(
                PoolTarget(pool: name, socket: daemonSocket, body: body, firstToken: rule),
                monitor: (name, daemonSocket, await Self.daemonPID(client))
            )
            if load.isOpenLoop, let config = configuration?.pool(named: name) {
                (result.predictedHitRatio, result.predictedPhaseMiss) = await Self.predict(result, config: config, client: client, load: load)
            }
            return result
        }
        if together && !pool.isEmpty {
            for name in pool { try await Self.waitForSpares(client, pool: name, progress: progress) }
            try await settleDown(progress)
            progress("running \(pool.joined(separator: ", ")) at once")
            let results = await withTaskGroup(of: TargetResult.self) { group in
                for name in pool { group.addTask { await run(name) } }
                return await group.reduce(into: [TargetResult]()) { $0.append($1) }
            }
            reports += pool.compactMap { name in results.first { $0.name == "prewarm:\(name)" } }.map(TargetReport.init)
        } else {
            for name in pool {
                // A quiet daemon: every pool of the run full, no start-up sharing the CPU.
                for other in pool { try await Self.waitForSpares(client, pool: other, progress: progress) }
                try await settleDown(progress)
                reports.append(TargetReport(await run(name)))
            }
        }
        if load.isOpenLoop, let first = reports.first, first.name.hasPrefix("prewarm:") {
            timeline = Timeline(turns: [], idleSpares: first.timeline.map { (at: $0.at, idle: $0.idle) })
        }
        if !baseline.isEmpty {
            guard let configuration else { throw ExitStatus.fail(ExitStatus.usage, "--baseline needs a configuration") }
            guard let poolConfig = pool.first.flatMap({ configuration.pool(named: $0) }) ?? (configuration.pools.count == 1 ? configuration.pools[0] : nil) else {
                throw ExitStatus.fail(ExitStatus.usage, "--baseline needs --pool NAME of a pool in \(configuration.origin) (whose command it runs)")
            }
            // A claude pool's command as the SDKs run it: bound to the session, no --await-claim.
            let command = poolConfig.claude.map { poolConfig.forSession($0.session) } ?? poolConfig
            for name in baseline {
                // A quiet daemon: its refills must not share the CPU with the baseline.
                for name in pool { try await Self.waitForSpares(UnixHTTPClient(socketPath: socket), pool: name, progress: progress) }
                let target = CommandTarget(pool: command, daemonEnvironment: environment, body: body, firstToken: rule, prewarmed: name != "spawn")
                if name == "direct-pool" {
                    let pool = DirectPoolTarget(
                        command: target, spares: poolConfig.spares, maxStarting: poolConfig.maxStarting,
                        niceOffset: StartupPriority.effectiveSpareNice(poolConfig.spareNice)
                    )
                    progress("direct-pool: starting \(poolConfig.spares) process(es) of pool \(poolConfig.name)'s command")
                    await pool.fill()
                    try await settleDown(progress)
                    reports.append(TargetReport(await runner.run(pool)))
                    await pool.empty()
                } else {
                    try await settleDown(progress)
                    reports.append(TargetReport(await runner.run(target)))
                }
            }
        }
        if let direct {
            let words = direct.split(separator: " ").map(String.init)
            let resolved = ConfigurationLoader(executableDirectory: CommonOptions.executableDirectory).resolveCommand(words[0], baseDirectory: FileManager.default.currentDirectoryPath)
            let target = CommandTarget(
                name: "direct", executable: resolved, arguments: Array(words.dropFirst()), environment: environment, directory: nil,
                readySend: readySend, readyExpect: readyExpect, end: end, body: body, firstToken: rule, prewarmed: false
            )
            reports.append(TargetReport(await runner.run(target)))
        }

        let report = BenchReport(load: load.description, targets: reports)
        print(report.table())
        if let json {
            try report.json().write(to: URL(fileURLWithPath: json))
            progress("wrote \(json)")
        }
        if let svg {
            if load.isOpenLoop {
                timeline?.turns = reports.flatMap { target in target.samples.map { (at: $0.at, milliseconds: $0.firstTokenMs, series: target.name) } }
            }
            let chart = SVGChart.render(
                title: "First-token latency",
                subtitle: "\(load.description) · \(report.host) · \(report.date.prefix(10))",
                series: reports.map { LatencySeries(name: $0.name, values: $0.samples.compactMap(\.firstTokenMs)) },
                timeline: timeline
            )
            try chart.write(toFile: svg, atomically: true, encoding: .utf8)
            progress("wrote \(svg)")
        }
    }

    static func daemonPID(_ client: UnixHTTPClient) async -> Int32? {
        guard let response = try? await client.request(.GET, "/healthz"),
            let health = try? JSONDecoder().decode(Health.self, from: Data(response.body.readableBytesView))
        else { return nil }
        return Int32(health.pid)
    }

    /// A run starts with the pool full, as after a quiet spell.
    /// `--settle`: the quiet before a target's load.
    func settleDown(_ progress: (String) -> Void) async throws {
        guard settle > 0 else { return }
        progress("settling for \(settle) s")
        try await Task.sleep(for: .milliseconds(Int64(settle * 1000)))
    }

    static func waitForSpares(_ client: UnixHTTPClient, pool: String, progress: (String) -> Void) async throws {
        let deadline = ContinuousClock.now.advanced(by: .seconds(300))
        var said = false
        while ContinuousClock.now < deadline {
            let response: UnixHTTPClient.Response
            do {
                response = try await client.request(.GET, "/v1/pools/\(pool)")
            } catch {
                throw ExitStatus.fail(ExitStatus.unavailable, "\(error)")
            }
            guard response.status == 200 else {
                throw ExitStatus.fail(ExitStatus.forHTTP(response.status), "pool \(pool): HTTP \(response.status): \(Turn.errorMessage(response.body))")
            }
            let status = try JSONDecoder().decode(PoolStatus.self, from: Data(response.body.readableBytesView))
            if status.idle >= status.effectiveSpares { return }
            if !said {
                progress("waiting for pool \(pool) to reach its spares (\(status.idle)/\(status.effectiveSpares))")
                said = true
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ExitStatus.fail(ExitStatus.unavailable, "pool \(pool) did not reach its spares within 300 s")
    }

    /// The hit ratio the pool's state machine predicts for the same schedule, with the
    /// measured start-up time (the pool's spawn_ms p50) and turn time (completion p50); and,
    /// per phase, the share of turns it predicts will miss. An auto pool is replayed with its
    /// controller, evaluations included.
    static func predict(_ result: TargetResult, config: PoolConfig, client: UnixHTTPClient, load: LoadShape) async -> (Double?, [Double]?) {
        guard let response = try? await client.request(.GET, "/v1/pools/\(config.name)"),
            let status = try? JSONDecoder().decode(PoolStatus.self, from: Data(response.body.readableBytesView)),
            let spawn = status.spawnMs.p50
        else { return (nil, nil) }
        let completions = result.samples.compactMap(\.completionMs).sorted()
        let turnSeconds = completions.isEmpty ? 0.1 : completions[completions.count / 2] / 1000
        let simulator = PoolSimulator(settings: config.machineSettings, startupSeconds: [Double(spawn) / 1000], turnSeconds: turnSeconds)
        let schedule = load.schedule ?? []
        let outcome = simulator.run(arrivals: schedule)
        let missed = Set(outcome.missed)
        let phases = load.phaseBounds.map { bounds in
            let inside = schedule.indices.filter { bounds.contains(schedule[$0]) }
            return inside.isEmpty ? 0 : Double(inside.count { missed.contains($0) }) / Double(inside.count)
        }
        return (outcome.hitRatio, phases)
    }
}

/// A daemon started for a bench run: `prewarm serve` on a private socket, stopped after.
/// (Foundation's Process is used from one task at a time, and from the signal handler.)
final class BenchDaemon: @unchecked Sendable {
    let process: Process
    let socket: String
    let directory: String

    init(process: Process, socket: String, directory: String) {
        self.process = process
        self.socket = socket
        self.directory = directory
    }

    static func start(config: String) async throws -> BenchDaemon {
        guard let executable = CommonOptions.executablePath else {
            throw ExitStatus.fail(ExitStatus.broken, "cannot find the prewarm executable to start a daemon")
        }
        let directory = NSTemporaryDirectory() + "prewarm-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let socket = directory + "/prewarm.sock"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["serve", "--config", config, "--socket", socket, "--log-level", "warning"]
        let log = directory + "/daemon.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: log)
        process.standardOutput = FileHandle(forWritingAtPath: log)
        try process.run()
        let daemon = BenchDaemon(process: process, socket: socket, directory: directory)
        daemon.stopOnSignals()
        let client = UnixHTTPClient(socketPath: socket)
        for _ in 0..<300 {
            if (try? await client.request(.GET, "/healthz"))?.status == 200 { return daemon }
            if !process.isRunning {
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                throw ExitStatus.fail(ExitStatus.unavailable, "the daemon exited: \(text.suffix(500))")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        daemon.stop()
        throw ExitStatus.fail(ExitStatus.unavailable, "the daemon did not answer within 15 s")
    }

    /// SIGINT or SIGTERM to the bench stops the daemon it started (which stops its
    /// processes) before the bench exits: nothing it started outlives it.
    func stopOnSignals() {
        Self.onSignals { self.stop() }
    }

    /// On SIGINT or SIGTERM: the baselines' processes are killed, then `also`, then exit.
    static func onSignals(also: @escaping @Sendable () -> Void = {}) {
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                DirectProcess.killAll()
                also()
                exit(128 + number)
            }
            source.resume()
            Self.signalSources.append(source)
        }
    }

    /// Kept alive for the run; written once, before any signal can arrive.
    nonisolated(unsafe) private static var signalSources: [any DispatchSourceSignal] = []

    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: directory)
    }
}
