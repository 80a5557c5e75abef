import Foundation
import Histogram
import PrewarmClient
import PrewarmCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How turns arrive.
public enum LoadShape: Sendable, Equatable {
    /// `concurrency` clients, each sending its next turn when its last one ends.
    case closed(concurrency: Int, turns: Int)
    /// Poisson arrivals at `rate` per second for `duration` seconds, from a seeded generator.
    case open(rate: Double, duration: Double, seed: UInt64)
    /// `count` bursts of `size` turns at once, `every` seconds apart.
    case bursts(size: Int, every: Double, count: Int)
    /// Poisson arrivals phase after phase, each at its own rate: phase `i` from the seeded
    /// generator `seed + i`.
    case phases([Phase], seed: UInt64)

    public struct Phase: Sendable, Equatable, Codable {
        public var rate: Double
        public var seconds: Double

        public init(rate: Double, seconds: Double) {
            self.rate = rate
            self.seconds = seconds
        }

        /// `RATE:SECONDS,RATE:SECONDS...`, such as `1:120,6:120,1:120`.
        public static func parse(_ text: String) -> [Phase]? {
            var phases: [Phase] = []
            for part in text.split(separator: ",") {
                let fields = part.split(separator: ":")
                guard fields.count == 2, let rate = Double(fields[0]), let seconds = Double(fields[1]), rate >= 0, seconds > 0 else { return nil }
                phases.append(Phase(rate: rate, seconds: seconds))
            }
            return phases.isEmpty ? nil : phases
        }
    }

    /// Arrival times in seconds from the start; nil for a closed loop.
    public var schedule: [Double]? {
        switch self {
        case .closed: nil
        case .open(let rate, let duration, let seed): PoissonSchedule(rate: rate, duration: duration, seed: seed).arrivals()
        case .bursts(let size, let every, let count): (0..<count).flatMap { burst in Array(repeating: Double(burst) * every, count: size) }
        case .phases(let phases, let seed):
            phases.indices.flatMap { index in
                let start = phases[..<index].reduce(0) { $0 + $1.seconds }
                let phase = phases[index]
                return PoissonSchedule(rate: phase.rate, duration: phase.seconds, seed: seed + UInt64(index)).arrivals().map { $0 + start }
            }
        }
    }

    /// Open-loop arrivals (Poisson, steady or in phases): the state machine can predict them.
    public var isOpenLoop: Bool {
        switch self {
        case .open, .phases: true
        case .closed, .bursts: false
        }
    }

    /// Where each phase starts and ends, in seconds from the start (one phase unless `.phases`).
    public var phaseBounds: [Range<Double>] {
        guard case .phases(let phases, _) = self else { return [0..<(schedule?.last.map { $0 + 1 } ?? 0)] }
        var start = 0.0
        return phases.map { phase in
            defer { start += phase.seconds }
            return start..<(start + phase.seconds)
        }
    }

    public var description: String {
        switch self {
        case .closed(let concurrency, let turns): "closed loop: \(turns) turns, \(concurrency) at a time"
        case .open(let rate, let duration, let seed): "open loop: Poisson arrivals at \(rate)/s for \(duration) s (seed \(seed))"
        case .bursts(let size, let every, let count): "\(count) bursts of \(size) turns, \(every) s apart"
        case .phases(let phases, let seed):
            "open loop in phases: Poisson arrivals at " + phases.map { "\($0.rate)/s for \($0.seconds) s" }.joined(separator: ", then ") + " (seed \(seed))"
        }
    }
}

/// What the daemon used while a target ran: CPU seconds and RSS, from /proc.
public struct DaemonUsage: Sendable, Codable, Equatable {
    public var cpuSeconds: Double
    public var rssMaxBytes: Int
    public var rssMeanBytes: Int

    enum CodingKeys: String, CodingKey {
        case cpuSeconds = "cpu_seconds"
        case rssMaxBytes = "rss_max_bytes"
        case rssMeanBytes = "rss_mean_bytes"
    }
}

/// A pool's spares at one moment of a run.
public struct PoolSample: Sendable, Codable, Equatable {
    /// Seconds from the run's start.
    public var at: Double
    public var idle: Int
    public var effectiveSpares: Int
    /// An auto pool's last replay's predicted miss.
    public var predictedMiss: Double?

    enum CodingKeys: String, CodingKey {
        case at, idle
        case effectiveSpares = "effective_spares"
        case predictedMiss = "predicted_miss"
    }
}

/// Samples a pool's spares and the daemon's CPU and RSS every 250 ms while a target runs.
final class DaemonMonitor: Sendable {
    let pool: String
    let client: UnixHTTPClient
    let pid: Int32?
    private let state = Mutex<(pool: [PoolSample], rss: [Int], cpuStart: Double?, cpuEnd: Double?)>(([], [], nil, nil))

    init(pool: String, socket: String, pid: Int32?) {
        self.pool = pool
        self.client = UnixHTTPClient(socketPath: socket)
        self.pid = pid
    }

    func run(origin: ContinuousClock.Instant) async {
        let cpu = pid.flatMap(Self.cpuSeconds)
        state.withLock { $0.cpuStart = cpu }
        while !Task.isCancelled {
            let at = origin.duration(to: .now).milliseconds / 1000
            if let response = try? await client.request(.GET, "/v1/pools/\(pool)"), response.status == 200,
                let status = try? JSONDecoder().decode(PoolStatus.self, from: Data(response.body.readableBytesView))
            {
                let sample = PoolSample(at: at, idle: status.idle, effectiveSpares: status.effectiveSpares, predictedMiss: status.auto?.predictedMiss)
                state.withLock { $0.pool.append(sample) }
            }
            if let pid, let rss = Self.rss(pid) {
                state.withLock { $0.rss.append(rss) }
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
    }

    func finish() -> (pool: [PoolSample], usage: DaemonUsage?) {
        let cpuEnd = pid.flatMap(Self.cpuSeconds)
        return state.withLock { state in
            var usage: DaemonUsage?
            if let start = state.cpuStart, let cpuEnd, !state.rss.isEmpty {
                usage = DaemonUsage(
                    cpuSeconds: cpuEnd - start,
                    rssMaxBytes: state.rss.max() ?? 0,
                    rssMeanBytes: state.rss.reduce(0, +) / state.rss.count
                )
            }
            return (state.pool, usage)
        }
    }

    /// utime + stime of a process, in seconds (/proc/PID/stat fields 14 and 15).
    static func cpuSeconds(_ pid: Int32) -> Double? {
        guard let fields = ProcessMemory.statFields(path: "/proc/\(pid)/stat"), fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func rss(_ pid: Int32) -> Int? {
        ProcessMemory.read(pid: pid).map { Int(clamping: $0.rss) }
    }
}

/// Runs targets one after another under the same load and reports each on its own.
public struct BenchRunner: Sendable {
    public var load: LoadShape
    public var progress: @Sendable (String) -> Void

    public init(load: LoadShape, progress: @escaping @Sendable (String) -> Void) {
        self.load = load
        self.progress = progress
    }

    /// Runs `target`; `monitor` (pool name, socket, daemon pid) samples the daemon meanwhile.
    public func run(_ target: any BenchTarget, monitor: (pool: String, socket: String, pid: Int32?)? = nil) async -> TargetResult {
        let origin = ContinuousClock.now
        let watcher = monitor.map { DaemonMonitor(pool: $0.pool, socket: $0.socket, pid: $0.pid) }
        let watching = watcher.map { watcher in Task { await watcher.run(origin: origin) } }
        let done = Counter()
        let total: Int
        let samples: [TurnSample]
        switch load {
        case .closed(let concurrency, let turns):
            total = turns
            let next = Counter()
            samples = await withTaskGroup(of: [TurnSample].self) { group in
                for _ in 0..<max(1, concurrency) {
                    group.addTask {
                        var mine: [TurnSample] = []
                        while true {
                            let index = next.increment() - 1
                            guard index < turns else { return mine }
                            let arrival = ContinuousClock.now
                            let at = origin.duration(to: arrival).milliseconds / 1000
                            mine.append(await target.turn(index: index, arrival: arrival, at: at))
                            report(done.increment(), of: turns, target.name)
                        }
                    }
                }
                return await group.reduce(into: []) { $0 += $1 }
            }
        case .open, .bursts, .phases:
            let schedule = load.schedule ?? []
            total = schedule.count
            samples = await withTaskGroup(of: TurnSample.self) { group in
                for (index, offset) in schedule.enumerated() {
                    let arrival = origin.advanced(by: .nanoseconds(Int64(offset * 1e9)))
                    group.addTask {
                        try? await Task.sleep(until: arrival, clock: .continuous)
                        let sample = await target.turn(index: index, arrival: arrival, at: offset)
                        report(done.increment(), of: schedule.count, target.name)
                        return sample
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
        }
        watching?.cancel()
        _ = await watching?.value
        let watched = watcher?.finish()
        progress("\(target.name): \(total) turns done in \(String(format: "%.1f", origin.duration(to: .now).milliseconds / 1000)) s")
        return TargetResult(
            name: target.name,
            samples: samples.sorted { $0.index < $1.index },
            pool: watched?.pool ?? [],
            daemon: watched?.usage
        )
    }

    private func report(_ done: Int, of total: Int, _ name: String) {
        let step = max(1, total / 10)
        if done % step == 0 || done == total {
            progress("\(name): \(done)/\(total) turns")
        }
    }
}

/// A counter shared by the tasks of a run.
final class Counter: Sendable {
    private let value = Atomic<Int>(0)
    /// Adds one; returns the new value.
    func increment() -> Int { value.add(1, ordering: .relaxed).newValue }
}

/// One target's run: its samples and what was watched meanwhile.
public struct TargetResult: Sendable {
    public var name: String
    public var samples: [TurnSample]
    /// A pool's spares every 250 ms.
    public var pool: [PoolSample]
    public var daemon: DaemonUsage?
    /// For open-loop runs of a pool: the hit ratio the state machine predicts for the same
    /// schedule in simulated time, and per phase the share of turns it predicts will miss.
    public var predictedHitRatio: Double?
    public var predictedPhaseMiss: [Double]?

    public var idleSpares: [(Double, Int)] { pool.map { ($0.at, $0.idle) } }
}
