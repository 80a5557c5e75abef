/// A per-pool estimate of what one process costs, from observed samples.
///
/// It rises at once on a new high and decays slowly: the estimate is the larger of a high
/// percentile of the recent samples and the highest sample seen, which loses
/// `decayPerSample` of its value with every later sample, so one old outlier stops counting
/// after some dozens of turns while a new one counts from its first turn.
/// Before any sample it is the configured starting estimate.
public struct PeakEstimator: Sendable, Equatable {
    public let configured: Int
    public let window: Int
    public let percentile: Double
    public let decayPerSample: Double
    private var samples: [Int] = []
    private var next = 0
    private var held: Double = 0
    public private(set) var count = 0

    public init(configured: Int, window: Int = 64, percentile: Double = 0.95, decayPerSample: Double = 0.02) {
        precondition(window > 0)
        self.configured = configured
        self.window = window
        self.percentile = percentile
        self.decayPerSample = decayPerSample
    }

    /// Whether any sample was recorded (else the estimate is the configured one).
    public var measured: Bool { count > 0 }

    public mutating func record(_ bytes: Int) {
        if samples.count < window {
            samples.append(bytes)
        } else {
            samples[next] = bytes
            next = (next + 1) % window
        }
        count += 1
        held = max(Double(bytes), held * (1 - decayPerSample))
    }

    /// The estimate in bytes.
    public var value: Int {
        guard measured else { return configured }
        let sorted = samples.sorted()
        let index = min(sorted.count - 1, Int((Double(sorted.count - 1) * percentile).rounded(.up)))
        return max(sorted[index], Int(held))
    }
}
