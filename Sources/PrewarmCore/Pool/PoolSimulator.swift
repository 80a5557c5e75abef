#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Replays arrivals through the pool's own state machine in simulated time: what hit ratio
/// a pool with these settings would have had for this traffic, given how long its start-ups
/// and turns take. The benchmark's predictions, the advisor and an auto pool's evaluations
/// use it; it has no clock, no process and no randomness of its own. An auto pool replayed
/// here runs its controller too, its evaluations answered at once in simulated time.
public struct PoolSimulator: Sendable {
    public struct Outcome: Sendable, Equatable {
        public var arrivals = 0
        public var warm = 0
        public var waited = 0
        public var cold = 0
        public var rejected = 0

        /// The share of arrivals served warm.
        public var hitRatio: Double { arrivals == 0 ? 0 : Double(warm) / Double(arrivals) }
        /// The share not served warm (waited, cold or refused).
        public var missRatio: Double { 1 - hitRatio }
        /// Idle spares integrated over time, from the first arrival to the last: the memory
        /// the pool held idle, in spare-seconds.
        public var idleSpareSeconds = 0.0
        /// The arrivals not served warm, by index.
        public var missed: [Int] = []
        /// An auto pool's changes of target, with their time from the first arrival.
        public var sizing: [(at: Double, change: PoolStateMachine.SizingChange)] = []

        public static func == (lhs: Self, rhs: Self) -> Bool {
            (lhs.arrivals, lhs.warm, lhs.waited, lhs.cold, lhs.rejected) == (rhs.arrivals, rhs.warm, rhs.waited, rhs.cold, rhs.rejected)
                && lhs.idleSpareSeconds == rhs.idleSpareSeconds && lhs.missed == rhs.missed
                && lhs.sizing.map(\.at) == rhs.sizing.map(\.at) && lhs.sizing.map(\.change) == rhs.sizing.map(\.change)
        }
    }

    public var settings: PoolStateMachine.Settings
    /// Start-up durations in seconds, used in turn (cycling): the measured ones.
    public var startupSeconds: [Double]
    /// How long a turn holds its process, in seconds.
    public var turnSeconds: Double
    /// From a turn's end (or a retirement) until the process is gone.
    public var retireSeconds: Double
    /// Seconds a start-up takes beyond its `startupSeconds` for each other start-up under way
    /// when it begins (start-ups that share the CPU; see `StartupModel`).
    public var startupSlowdown: Double
    /// The memory room the pool has (`PoolStateMachine.room`), with `settings.costs`; nil: no limit.
    public var room: Int?

    public init(
        settings: PoolStateMachine.Settings,
        startupSeconds: [Double],
        turnSeconds: Double,
        retireSeconds: Double = 0.01,
        startupSlowdown: Double = 0
    ) {
        precondition(!startupSeconds.isEmpty, "at least one start-up duration")
        self.settings = settings
        self.startupSeconds = startupSeconds
        self.turnSeconds = turnSeconds
        self.retireSeconds = retireSeconds
        self.startupSlowdown = startupSlowdown
    }

    private enum Event: Sendable {
        case arrival
        case ready(SpareID)
        case turnEnd(SpareID)
        case gone(SpareID)
        /// A timer the machine scheduled, fired at its instant as the live pool fires it.
        case timer(PoolStateMachine.Timer)
    }

    /// Runs `arrivals` (seconds from the start, ascending). With `startFull`, the pool has
    /// reached its spares before the first arrival, as a benchmark waits for it to.
    /// `observe` sees the machine after every event from the first arrival on, with the time
    /// from the first arrival.
    public func run(arrivals: [Double], startFull: Bool = true, observe: ((Double, PoolStateMachine) -> Void)? = nil) -> Outcome {
        let origin = ContinuousClock.now
        func instant(_ seconds: Double) -> ContinuousClock.Instant {
            origin.advanced(by: .nanoseconds(Int64((seconds * 1e9).rounded())))
        }
        var machine = PoolStateMachine(settings: settings)
        machine.room = room
        var queue = EventQueue()
        var outcome = Outcome()
        var startups = 0
        var now = 0.0
        /// When the arrivals start (after the pool filled), and the last idle count's time.
        var offset = 0.0
        var measuring = false
        var lastIdle = (at: 0.0, count: 0)

        func perform(_ actions: [PoolStateMachine.Action]) {
            for action in actions {
                switch action {
                case .start(let spare):
                    // The machine counts every start of this step as under way already.
                    let beside = Double(max(0, machine.startingCount - 1))
                    queue.push(now + startupSeconds[startups % startupSeconds.count] + startupSlowdown * beside, .ready(spare))
                    startups += 1
                case .retire(let spare):
                    queue.push(now + retireSeconds, .gone(spare))
                case .deliver(_, let spare, let kind):
                    count(kind)
                    queue.push(now + turnSeconds, .turnEnd(spare))
                case .reject:
                    outcome.rejected += 1
                case .schedule(let timer, let at):
                    let seconds = origin.duration(to: at).milliseconds / 1000
                    queue.push(max(now, seconds), .timer(timer))
                case .cancelTimer:
                    break  // the machine ignores a cancelled timer's firing
                case .replaySizing(let snapshot):
                    // Answered at once: the replay takes no simulated time.
                    perform(machine.sizingReplayed(SizingReplay.decide(snapshot), now: instant(now)))
                case .sizingChanged(let change):
                    if measuring { outcome.sizing.append((now - offset, change)) }
                }
            }
        }
        func count(_ kind: StartKind) {
            switch kind {
            case .warm: outcome.warm += 1
            case .waited: outcome.waited += 1
            case .cold: outcome.cold += 1
            }
        }
        func handle(_ event: Event) {
            switch event {
            case .arrival:
                outcome.arrivals += 1
                let (decision, actions) = machine.turnArrived(now: instant(now))
                switch decision {
                case .take(let spare):
                    count(.warm)
                    queue.push(now + turnSeconds, .turnEnd(spare))
                case .reject:
                    outcome.rejected += 1
                    outcome.missed.append(outcome.arrivals - 1)
                case .wait:
                    outcome.missed.append(outcome.arrivals - 1)
                }
                perform(actions)
            case .ready(let spare):
                perform(machine.processReady(spare, now: instant(now)))
            case .turnEnd(let spare):
                perform(machine.turnEnded(spare, now: instant(now)))
                queue.push(now + retireSeconds, .gone(spare))
            case .gone(let spare):
                perform(machine.processGone(spare, now: instant(now)))
            case .timer(let timer):
                perform(machine.timerFired(timer, now: instant(now)))
            }
        }

        perform(machine.start(now: instant(0)))
        if startFull {
            // Start-ups only, until the pool holds its spares (or nothing more is coming).
            while machine.idleCount < machine.effectiveSpares, let (time, event) = queue.pop() {
                now = time
                handle(event)
            }
            offset = now
        }
        for arrival in arrivals { queue.push(offset + arrival, .arrival) }
        let end = offset + (arrivals.last ?? 0)
        lastIdle = (offset, machine.idleCount)
        measuring = true
        while let (time, event) = queue.pop() {
            if measuring {
                outcome.idleSpareSeconds += Double(lastIdle.count) * (min(time, end) - lastIdle.at)
                measuring = time < end
            }
            now = time
            handle(event)
            lastIdle = (now, machine.idleCount)
            observe?(now - offset, machine)
            if now > end && machine.waitingCount == 0 && outcome.arrivals == arrivals.count { break }
        }
        return outcome
    }

    /// A binary heap of events by time; ties keep their insertion order.
    private struct EventQueue {
        private var heap: [(time: Double, order: Int, event: Event)] = []
        private var inserted = 0

        mutating func push(_ time: Double, _ event: Event) {
            heap.append((time, inserted, event))
            inserted += 1
            var child = heap.count - 1
            while child > 0 {
                let parent = (child - 1) / 2
                guard before(heap[child], heap[parent]) else { break }
                heap.swapAt(child, parent)
                child = parent
            }
        }

        mutating func pop() -> (Double, Event)? {
            guard !heap.isEmpty else { return nil }
            heap.swapAt(0, heap.count - 1)
            let top = heap.removeLast()
            var parent = 0
            while true {
                let left = 2 * parent + 1
                let right = left + 1
                var best = parent
                if left < heap.count && before(heap[left], heap[best]) { best = left }
                if right < heap.count && before(heap[right], heap[best]) { best = right }
                if best == parent { break }
                heap.swapAt(parent, best)
                parent = best
            }
            return (top.time, top.event)
        }

        private func before(_ a: (time: Double, order: Int, event: Event), _ b: (time: Double, order: Int, event: Event)) -> Bool {
            a.time < b.time || (a.time == b.time && a.order < b.order)
        }
    }
}

/// Poisson arrivals from a seeded generator: the same seed gives the same schedule.
public struct PoissonSchedule: Sendable {
    public var rate: Double
    public var duration: Double
    public var seed: UInt64

    public init(rate: Double, duration: Double, seed: UInt64) {
        self.rate = rate
        self.duration = duration
        self.seed = seed
    }

    /// Arrival times in seconds from 0, ascending, all below `duration`.
    public func arrivals() -> [Double] {
        guard rate > 0 else { return [] }
        var generator = SeededGenerator(seed: seed)
        var times: [Double] = []
        var t = 0.0
        while true {
            // Exponential gaps; 53 random bits give a uniform in (0, 1].
            let uniform = (Double(generator.next() >> 11) + 1) / 9_007_199_254_740_992.0
            t += -log(uniform) / rate
            guard t < duration else { return times }
            times.append(t)
        }
    }
}

/// SplitMix64: small, fast, and the same sequence on every platform for a seed.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
