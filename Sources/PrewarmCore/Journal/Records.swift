import Foundation
import GRDB

/// A row of the journal: Codable, with times stored as Unix seconds (windows and retention
/// are numeric comparisons).
public protocol JournalRecord: Sendable, Equatable, Codable, FetchableRecord, PersistableRecord {}

extension JournalRecord {
    public static func databaseDateEncodingStrategy(for column: String) -> DatabaseDateEncodingStrategy { .timeIntervalSince1970 }
    public static func databaseDateDecodingStrategy(for column: String) -> DatabaseDateDecodingStrategy { .timeIntervalSince1970 }
}

/// One turn as the journal keeps it: served or refused.
public struct TurnRecord: JournalRecord {
    public static let databaseTableName = "turn"

    /// When the request arrived.
    public var time: Date
    public var pool: String
    public var turnID: String
    /// warm, waited or cold; nil for a refused turn.
    public var start: String?
    /// The turn's outcome (completed, exited, timeout, killed, error), or `rejected`.
    public var outcome: String
    /// For a refused turn, its error code (no_capacity, memory_exhausted, rate_limited...).
    public var errorCode: String?
    /// From arrival to the hand-over of a process (or to the refusal).
    public var waitMs: Double
    /// From arrival to the first byte of the process's output sent back.
    public var firstByteMs: Double?
    /// From arrival to the end of the turn.
    public var durationMs: Double
    public var bytesIn: Int
    public var bytesOut: Int
    public var pid: Int?
    /// The caller's uid (SO_PEERCRED), when known.
    public var callerUID: Int?
    /// A two-way (`Upgrade: prewarm-stream`) turn.
    public var twoWay: Bool
    /// The session the turn ended in (its `result`'s), when a claude turn said.
    public var sessionID: String?
    /// A resumed turn: `hit` (its resume spare), `miss` or `stale` (cold); nil otherwise.
    public var resume: String?

    public init(
        time: Date, pool: String, turnID: String, start: String?, outcome: String, errorCode: String? = nil, waitMs: Double,
        firstByteMs: Double? = nil, durationMs: Double, bytesIn: Int = 0, bytesOut: Int = 0, pid: Int? = nil, callerUID: Int? = nil,
        twoWay: Bool = false, sessionID: String? = nil, resume: String? = nil
    ) {
        self.sessionID = sessionID
        self.resume = resume
        self.time = time
        self.pool = pool
        self.turnID = turnID
        self.start = start
        self.outcome = outcome
        self.errorCode = errorCode
        self.waitMs = waitMs
        self.firstByteMs = firstByteMs
        self.durationMs = durationMs
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.pid = pid
        self.callerUID = callerUID
        self.twoWay = twoWay
    }

    /// A turn that got no process.
    public var rejected: Bool { start == nil }

    enum CodingKeys: String, CodingKey {
        case time, pool, start, outcome, pid
        case turnID = "turn_id"
        case errorCode = "error_code"
        case waitMs = "wait_ms"
        case firstByteMs = "first_byte_ms"
        case durationMs = "duration_ms"
        case bytesIn = "bytes_in"
        case bytesOut = "bytes_out"
        case callerUID = "caller_uid"
        case twoWay = "two_way"
        case sessionID = "session_id"
        case resume
    }

}

/// One process's life: how long it took to be ready, what it cost, how it ended.
public struct StartupRecord: JournalRecord {
    public static let databaseTableName = "startup"

    /// When it was spawned.
    public var time: Date
    public var pool: String
    public var pid: Int?
    /// From spawn to readiness; nil if it never became ready.
    public var readyMs: Double?
    /// Its process group's PSS and RSS at readiness.
    public var pssReady: Int?
    public var rssReady: Int?
    /// The highest reading (PSS, else RSS) during its turn, if it served one.
    public var peakBytes: Int?
    /// How it ended: retired, turn <outcome>, died idle, start failed: <why>.
    public var exitReason: String
    /// From spawn to gone.
    public var lifetimeMs: Double

    public init(
        time: Date, pool: String, pid: Int?, readyMs: Double?, pssReady: Int? = nil, rssReady: Int? = nil, peakBytes: Int? = nil,
        exitReason: String, lifetimeMs: Double
    ) {
        self.time = time
        self.pool = pool
        self.pid = pid
        self.readyMs = readyMs
        self.pssReady = pssReady
        self.rssReady = rssReady
        self.peakBytes = peakBytes
        self.exitReason = exitReason
        self.lifetimeMs = lifetimeMs
    }

    enum CodingKeys: String, CodingKey {
        case time, pool, pid
        case readyMs = "ready_ms"
        case pssReady = "pss_ready"
        case rssReady = "rss_ready"
        case peakBytes = "peak_bytes"
        case exitReason = "exit_reason"
        case lifetimeMs = "lifetime_ms"
    }

}

/// A change of an auto pool's target (`spares = "auto"`).
public struct SizingRecord: JournalRecord {
    public static let databaseTableName = "sizing"

    public var time: Date
    public var pool: String
    public var fromSpares: Int
    public var toSpares: Int
    /// `replay` (the recent window replayed), `miss` (a turn found no idle spare) or `floor`
    /// (a size set at run time, a reload).
    public var cause: String
    /// The miss the replay predicts at the new target (replays only).
    public var predictedMiss: Double?
    public var reason: String

    public init(time: Date, pool: String, fromSpares: Int, toSpares: Int, cause: String, predictedMiss: Double?, reason: String) {
        self.time = time
        self.pool = pool
        self.fromSpares = fromSpares
        self.toSpares = toSpares
        self.cause = cause
        self.predictedMiss = predictedMiss
        self.reason = reason
    }

    enum CodingKeys: String, CodingKey {
        case time, pool, cause, reason
        case fromSpares = "from_spares"
        case toSpares = "to_spares"
        case predictedMiss = "predicted_miss"
    }
}
