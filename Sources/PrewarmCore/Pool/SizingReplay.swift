import Foundation

/// What an auto pool's evaluation needs, taken from its state machine in one locked step
/// (`PoolStateMachine.Action.replaySizing`) and replayed outside the lock: the recent
/// arrivals, start-ups and turns, and the bounds of the answer.
public struct SizingSnapshot: Sendable, Equatable {
    /// Tells this evaluation from one asked for before a reload or a resize.
    public var generation: UInt64
    /// The pool's machine settings, fixed (no `autoSizing`) and with no memory costs: the
    /// memory budget bounds the answer (`cap`) instead.
    public var settings: PoolStateMachine.Settings
    /// Arrival times in seconds from the window's start, ascending.
    public var arrivals: [Double]
    /// Whether each arrival found no idle spare in the live pool, and the pool's target then.
    public var missed: [Bool]
    public var targets: [Int]
    public var windowSeconds: Double
    public var startups: [StartupSample]
    /// How long a turn holds its process (the median of the recent ones).
    public var turnSeconds: Double
    /// The answer's bounds: `min_spares` (or the floor set at run time), and what
    /// `max_spares`, `max_processes` and the memory budget allow (`capReason` says which).
    public var floor: Int
    public var cap: Int
    public var capReason: String
    public var targetMiss: Double
    /// The target now: where the search starts.
    public var current: Int
}

/// One start-up as measured: from spawn to readiness, and how many start-ups were under way
/// meanwhile (itself included; the mean of the count when it began and when it ended).
public struct StartupSample: Sendable, Equatable {
    public var seconds: Double
    public var concurrency: Double

    public init(seconds: Double, concurrency: Double) {
        self.seconds = seconds
        self.concurrency = concurrency
    }
}

/// What an evaluation found: the spares to keep, and the miss the replay predicts with them.
public struct SizingDecision: Sendable, Equatable {
    public var generation: UInt64
    public var spares: Int
    /// nil when nothing could be replayed (no start-up measured yet).
    public var predictedMiss: Double?
    public var reason: String
}

/// The evaluation itself: the recent window replayed through the pool's own state machine
/// (`PoolSimulator`, as `prewarm advise` does) for candidate sizes; the smallest that meets
/// `target_miss` is the answer, within the floor and the cap. Pure, and CPU-bound: the pool
/// runs it on a thread of NIO's pool, outside its lock.
public enum SizingReplay {
    public static func decide(_ snapshot: SizingSnapshot) -> SizingDecision {
        let floor = snapshot.floor
        let cap = max(floor, snapshot.cap)
        let current = min(max(snapshot.current, floor), cap)
        func answer(_ spares: Int, _ miss: Double?, _ reason: String) -> SizingDecision {
            SizingDecision(generation: snapshot.generation, spares: spares, predictedMiss: miss, reason: reason)
        }
        let traffic = RecentTraffic(snapshot.arrivals, window: snapshot.windowSeconds)
        guard !traffic.arrivals.isEmpty else {
            return answer(floor, 0, "no turn in the last \(Int(traffic.seconds.rounded())) s: the floor")
        }
        guard !snapshot.startups.isEmpty else {
            return answer(current, nil, "no start-up measured yet: the target is kept")
        }
        let model = StartupModel(snapshot.startups)
        // The M/G/inf reference: every turn sets off one start-up, so the spares missing when
        // a turn arrives are the start-ups under way, Poisson(rate x start-up). The rate is
        // taken at two standard deviations above its estimate: a rate measured over a short
        // stretch (a change just seen) is the least sure, and too low a rate is a pool too
        // small.
        let count = Double(traffic.arrivals.count)
        let rate = (count + 2 * count.squareRoot()) / traffic.seconds
        let meanSolo = model.soloSeconds.reduce(0, +) / Double(model.soloSeconds.count)
        let load = rate * (meanSolo + model.slowdown * rate * meanSolo)
        var misses: [Int: Double] = [:]
        /// The replay's miss with `spares`, and never below the closed form's: a window holds
        /// few of the rare moments a pool runs dry, and the smallest size that met the target
        /// in one window's replay would too often be one size short.
        func miss(_ spares: Int) -> Double {
            if let known = misses[spares] { return known }
            var settings = snapshot.settings
            settings.spares = spares
            let simulator = PoolSimulator(
                settings: settings, startupSeconds: model.soloSeconds, turnSeconds: snapshot.turnSeconds, startupSlowdown: model.slowdown
            )
            let result = max(simulator.run(arrivals: traffic.arrivals).missRatio, Advice.poissonTail(mean: load, atLeast: spares))
            misses[spares] = result
            return result
        }

        // Misses fall as spares grow: the smallest size that meets the target is searched
        // from the current one, which is usually the answer or next to it (two replays).
        let target = snapshot.targetMiss
        /// The smallest size in `low...high` that meets the target, `high` known to meet it.
        func smallest(from low: Int, to high: Int) -> Int {
            var low = low
            var high = high
            while low < high {
                let middle = (low + high) / 2
                if miss(middle) <= target { high = middle } else { low = middle + 1 }
            }
            return high
        }
        let what = describe(traffic, snapshot, model)
        let chosen: Int
        if miss(current) <= target {
            chosen = current == floor || miss(current - 1) > target ? current : smallest(from: floor, to: current - 1)
        } else if miss(cap) <= target {
            chosen = smallest(from: current + 1, to: cap)
        } else {
            return answer(cap, miss(cap), "\(what): target_miss \(percent(target)) needs more than \(cap) spares; capped by \(snapshot.capReason)")
        }
        guard chosen < current else {
            return answer(chosen, miss(chosen), "\(what): \(chosen) spares meet target_miss \(percent(target))")
        }
        // Fewer spares, unless the live pool says otherwise: of the turns replayed, those that
        // arrived while its target was at least that size missed more than the target (the
        // replay flatters the traffic, or the window dilutes a change it cannot see).
        var live = (turns: 0, misses: 0)
        for (missed, size) in zip(snapshot.missed.suffix(traffic.arrivals.count), snapshot.targets.suffix(traffic.arrivals.count)) where size >= chosen {
            live.turns += 1
            if missed { live.misses += 1 }
        }
        if live.turns > 0 && Double(live.misses) / Double(live.turns) > target {
            return answer(
                current, miss(current),
                "\(what): \(chosen) spares would meet target_miss \(percent(target)), but \(live.misses) of \(live.turns) turns at that size or more found no idle spare: \(current) kept"
            )
        }
        return answer(chosen, miss(chosen), "\(what): \(chosen) spares meet target_miss \(percent(target))")
    }

    private static func describe(_ traffic: RecentTraffic, _ snapshot: SizingSnapshot, _ model: StartupModel) -> String {
        let median = snapshot.startups.map(\.seconds).sorted()[snapshot.startups.count / 2]
        var text = "replay of \(traffic.arrivals.count) turns in the last \(Int(traffic.seconds.rounded())) s"
        switch traffic.change {
        case .none: break
        case .rose: text += " (since the traffic rose)"
        case .fell: text += " (since the traffic fell)"
        }
        text += " (\(String(format: "%.2f", Double(traffic.arrivals.count) / traffic.seconds))/s, start-up p50 \(Int((median * 1000).rounded())) ms"
        if model.slowdown > 0 { text += ", +\(Int((model.slowdown * 1000).rounded())) ms per start-up beside it" }
        return text + ")"
    }

    static func percent(_ share: Double) -> String {
        let value = share * 100
        return value == value.rounded() ? "\(Int(value))%" : String(format: "%.2f%%", value)
    }
}

/// The part of the window that speaks for the traffic now: the whole window, or, when the
/// rate changed within it, the part since the last change.
///
/// Why: a step down replayed over a whole window keeps the pool sized for traffic that has
/// gone until the window has passed it, and a step up is diluted by the calm before it.
/// Changes are found as a Poisson rate's change points, by binary segmentation: of the
/// splits of the window at each sixtieth, the one whose two rates explain the arrivals best,
/// if they explain them far better than one rate does (a log-likelihood ratio over 10, which
/// steady Poisson traffic exceeds less than once in a thousand evaluations); then the same
/// within the part after it, down to the last change. A burst (turns at once) is not a rate:
/// for finding changes, turns closer together than a twentieth of the window's mean gap count
/// as one (a twentieth of Poisson arrivals are, whatever the rate), and the part before a
/// change is at least a twelfth of the window (the silence right after a burst is not a fall
/// to nothing).
struct RecentTraffic {
    enum Change { case none, rose, fell }

    /// Seconds from the part's start.
    var arrivals: [Double]
    var seconds: Double
    var change: Change

    static let splits = 60
    static let threshold = 10.0

    init(_ all: [Double], window: Double) {
        (arrivals, seconds, change) = (all, window, .none)
        guard !all.isEmpty else { return }
        // The events: one per burst, each with the index of its first turn.
        let together = window / Double(all.count) / 20
        var events: [Double] = []
        var firstTurn: [Int] = []
        var previous = -Double.infinity
        for (index, at) in all.enumerated() {
            if at - previous >= together {
                events.append(at)
                firstTurn.append(index)
            }
            previous = at
        }
        let step = window / Double(Self.splits)
        let shortest = window / 12
        var start = 0.0
        var first = 0
        func logLikelihood(_ count: Double, _ seconds: Double) -> Double { count > 0 ? count * log(count / seconds) : 0 }
        while true {
            let n = Double(events.count - first)
            let one = logLikelihood(n, window - start)
            var best: (gain: Double, at: Double, index: Int, rose: Bool)?
            var index = first
            var at = start + max(step, shortest)
            while at < window - step / 2 {
                while index < events.count && events[index] < at { index += 1 }
                let before = Double(index - first)
                let gain = logLikelihood(before, at - start) + logLikelihood(n - before, window - at) - one
                if gain > (best?.gain ?? Self.threshold) { best = (gain, at, index, (n - before) / (window - at) > before / (at - start)) }
                at += step
            }
            guard let best else { break }
            (start, first, change) = (best.at, best.index, best.rose ? .rose : .fell)
        }
        guard start > 0 else { return }
        arrivals = first < events.count ? all[firstTurn[first]...].map { $0 - start } : []
        seconds = window - start
    }
}

/// How long a start-up takes alone, and how much longer beside others.
///
/// Why: start-ups at once slow each other down on few cores (the CLI's start-up is CPU-bound:
/// 0.5-0.9 s alone, 4 s with 8 at once on 2 cores). Replaying with the durations as measured
/// would feed back: a higher target starts more processes at once, they are measured slower,
/// the replay, taking those durations for every start-up, asks for more spares, which start
/// more at once... and the target ratchets up to its cap. So the concurrency each start-up ran
/// at is measured beside its duration, and the replay models it: each duration is reduced to
/// what it would have been alone (`soloSeconds`), and the replay adds `slowdown` seconds per
/// other start-up under way when it starts one. A size that starts many at once pays for it
/// in the replay, and a burst of slow start-ups in the window is not taken as the normal
/// start-up time. (In a steady state, start-ups under way are about rate x start-up time,
/// whatever the spares; it is the rises that start many at once.)
///
/// The slowdown is the least-squares slope of duration over concurrency, from 0 (start-ups
/// that do not contend: a sleep, a network wait) to proportional (the duration grows with the
/// start-ups beside it, as on one core). Without a spread of concurrency in the samples
/// there is nothing to fit, and the durations are replayed as they are.
struct StartupModel: Equatable {
    var soloSeconds: [Double]
    var slowdown: Double

    init(_ samples: [StartupSample]) {
        let n = Double(samples.count)
        let meanK = samples.reduce(0) { $0 + $1.concurrency } / n
        let meanD = samples.reduce(0) { $0 + $1.seconds } / n
        var covariance = 0.0
        var variance = 0.0
        for sample in samples {
            covariance += (sample.concurrency - meanK) * (sample.seconds - meanD)
            variance += (sample.concurrency - meanK) * (sample.concurrency - meanK)
        }
        var slope = 0.0
        if samples.count >= 3, variance / n >= 0.25 {
            // At most proportional: d(k) = d(1) * k, the most k start-ups sharing one CPU cost.
            slope = min(max(0, covariance / variance), meanD / max(1, meanK))
        }
        slowdown = slope
        soloSeconds = samples.map { max($0.seconds * 0.1, $0.seconds - slope * max(0, $0.concurrency - 1)) }
    }
}
