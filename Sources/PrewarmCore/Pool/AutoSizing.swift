/// `spares = "auto"`: how a pool sizes itself (the keys `min_spares`, `max_spares`,
/// `target_miss`, `auto_window_s`, `auto_every_s`, `auto_hold_s`).
///
/// The floor, `min_spares` (or a size PATCHed at run time), is the pool's `spares`; the
/// state machine's `AutoSizer` keeps the target above it.
public struct AutoSizing: Sendable, Equatable {
    /// The most spares it may keep; nil: what `max_processes` and the memory budget allow.
    public var maxSpares: Int?
    /// The share of turns that may find no idle spare (served `waited`, `cold`, or refused).
    public var targetMiss: Double
    /// The recent arrivals replayed at each evaluation.
    public var window: Duration
    /// How often the window is replayed (and an excess spare may be given back).
    public var every: Duration
    /// How long a spare beyond the target stays unused before it is retired.
    public var hold: Duration

    public init(
        maxSpares: Int? = nil, targetMiss: Double = 0.01, window: Duration = .seconds(300), every: Duration = .seconds(5),
        hold: Duration = .seconds(60)
    ) {
        self.maxSpares = maxSpares
        self.targetMiss = targetMiss
        self.window = window
        self.every = every
        self.hold = hold
    }

    /// `min_spares` when the file does not say.
    public static let defaultMinSpares = 1
    /// `max_processes` of an auto pool that names neither it nor `max_spares`: a bound that
    /// a replay never needs to reach for traffic a single daemon serves, and that the memory
    /// budget lowers anyway.
    public static let defaultMaxProcesses = 64
}
