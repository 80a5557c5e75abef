import Foundation
import GRDB
import Logging
import Synchronization

/// The journal: every turn, every start-up and every change of an auto pool's target, in
/// SQLite (GRDB, WAL), for `prewarm stats` and `prewarm advise`.
///
/// One writer. Records are appended to an in-memory buffer (a lock and an array append, on
/// the request path) and written in batches, one transaction each, by `run()` off the
/// request path. A journal that cannot be opened or written (corrupt, disk full, read-only)
/// costs a logged warning, at most one a minute, and the records of that batch; turns never
/// wait for it and never fail because of it.
public final class Journal: Sendable {
    public let config: JournalConfig
    private let logger: Logger
    private let buffer = Mutex(Buffer())
    /// How often a batch is written.
    static let flushInterval: Duration = .milliseconds(500)
    /// Records held at most while the database is slow or gone; older ones are kept.
    static let bufferLimit = 100_000

    private struct Buffer {
        var turns: [TurnRecord] = []
        var startups: [StartupRecord] = []
        var sizings: [SizingRecord] = []
        var dropped = 0
        var finished = false
    }

    /// Records written and lost since start (for the metrics).
    public struct Counts: Sendable, Equatable {
        public var written = 0
        public var dropped = 0
    }
    private let counts = Mutex(Counts())

    public init(config: JournalConfig, logger: Logger) {
        self.config = config
        self.logger = logger
    }

    public var currentCounts: Counts { counts.withLock { $0 } }

    public func record(_ turn: TurnRecord) {
        append { $0.turns.append(turn) }
    }

    public func record(_ startup: StartupRecord) {
        append { $0.startups.append(startup) }
    }

    public func record(_ sizing: SizingRecord) {
        append { $0.sizings.append(sizing) }
    }

    /// One record into the buffer, unless it is full (then counted lost) or stopped.
    private func append(_ add: (inout Buffer) -> Void) {
        buffer.withLock { buffer in
            guard !buffer.finished else { return }
            if buffer.turns.count + buffer.startups.count + buffer.sizings.count >= Self.bufferLimit { buffer.dropped += 1 } else { add(&buffer) }
        }
    }

    /// Ends `run()` after one last write (the broker calls it once its pools are drained: a
    /// cancelled task could not write, GRDB's async calls refuse to start when cancelled).
    public func stop() {
        buffer.withLock { $0.finished = true }
    }

    private var stopped: Bool { buffer.withLock { $0.finished } }

    /// Writes batches until `stop()` (or cancellation), then writes what is left.
    public func run() async {
        var database: DatabaseQueue?
        var lastWarning: ContinuousClock.Instant?
        var lastRetention: ContinuousClock.Instant?
        var lastOpenAttempt: ContinuousClock.Instant?

        func warn(_ message: String, _ error: any Error) {
            let now = ContinuousClock.now
            if let lastWarning, lastWarning.duration(to: now) < .seconds(60) { return }
            lastWarning = now
            logger.warning(
                "journal: \(message); turns go on without it",
                metadata: ["journal.path": "\(config.path)", "error": "\(error)"]
            )
        }

        func flush(final: Bool = false) async {
            let (turns, startups, sizings, dropped) = buffer.withLock { buffer in
                defer {
                    buffer.turns.removeAll(keepingCapacity: true)
                    buffer.startups.removeAll(keepingCapacity: true)
                    buffer.sizings.removeAll(keepingCapacity: true)
                    buffer.dropped = 0
                }
                return (buffer.turns, buffer.startups, buffer.sizings, buffer.dropped)
            }
            if dropped > 0 { counts.withLock { $0.dropped += dropped } }
            let records = turns.count + startups.count + sizings.count
            guard records > 0 else { return }
            if database == nil, lastOpenAttempt.map({ $0.duration(to: .now) >= .seconds(60) }) ?? true {
                lastOpenAttempt = .now
                do {
                    database = try Self.open(path: config.path)
                } catch {
                    warn("cannot open the database", error)
                }
            }
            guard let database else {
                counts.withLock { $0.dropped += records }
                return
            }
            // Retention on the first write, every minute, and on the last.
            let retention = final || (lastRetention.map { $0.duration(to: .now) >= .seconds(60) } ?? true)
            let config = self.config
            do {
                try await database.write { db in
                    try Self.insert(db, turns: turns, startups: startups, sizings: sizings, retention: retention ? config : nil)
                }
                if retention { lastRetention = .now }
                counts.withLock { $0.written += records }
            } catch {
                counts.withLock { $0.dropped += records }
                warn("a write failed", error)
            }
        }

        while !Task.isCancelled && !stopped {
            try? await Task.sleep(for: Self.flushInterval)
            await flush()
        }
        stop()
        await flush(final: true)
    }

    /// Opens (creating if need be) the journal for writing: WAL, migrated.
    public static func open(path: String) throws -> DatabaseQueue {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        var configuration = GRDB.Configuration()
        configuration.journalMode = .wal
        configuration.busyMode = .timeout(5)
        configuration.label = "prewarm.journal"
        let database = try DatabaseQueue(path: path, configuration: configuration)
        try migrator.migrate(database)
        return database
    }

    /// The schema, one migration per change (GRDB's migrator keeps track).
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: turns and start-ups") { db in
            try db.create(table: "turn") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("time", .double).notNull()
                t.column("pool", .text).notNull()
                t.column("turn_id", .text).notNull()
                t.column("start", .text)
                t.column("outcome", .text).notNull()
                t.column("error_code", .text)
                t.column("wait_ms", .double).notNull()
                t.column("first_byte_ms", .double)
                t.column("duration_ms", .double).notNull()
                t.column("bytes_in", .integer).notNull()
                t.column("bytes_out", .integer).notNull()
                t.column("pid", .integer)
                t.column("caller_uid", .integer)
                t.column("two_way", .boolean).notNull()
            }
            try db.create(index: "turn_by_pool_time", on: "turn", columns: ["pool", "time"])
            try db.create(index: "turn_by_time", on: "turn", columns: ["time"])
            try db.create(table: "startup") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("time", .double).notNull()
                t.column("pool", .text).notNull()
                t.column("pid", .integer)
                t.column("ready_ms", .double)
                t.column("pss_ready", .integer)
                t.column("rss_ready", .integer)
                t.column("peak_bytes", .integer)
                t.column("exit_reason", .text).notNull()
                t.column("lifetime_ms", .double).notNull()
            }
            try db.create(index: "startup_by_pool_time", on: "startup", columns: ["pool", "time"])
            try db.create(index: "startup_by_time", on: "startup", columns: ["time"])
        }
        migrator.registerMigration("v2: auto pools' changes of target") { db in
            try db.create(table: "sizing") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("time", .double).notNull()
                t.column("pool", .text).notNull()
                t.column("from_spares", .integer).notNull()
                t.column("to_spares", .integer).notNull()
                t.column("cause", .text).notNull()
                t.column("predicted_miss", .double)
                t.column("reason", .text).notNull()
            }
            try db.create(index: "sizing_by_pool_time", on: "sizing", columns: ["pool", "time"])
            try db.create(index: "sizing_by_time", on: "sizing", columns: ["time"])
        }
        migrator.registerMigration("v3: turns' sessions and resume spares") { db in
            try db.alter(table: "turn") { t in
                t.add(column: "session_id", .text)
                t.add(column: "resume", .text)
            }
        }
        return migrator
    }

    /// Inserts the records, then, with `retention`, deletes rows older than `max_age_days`
    /// and all but the newest `max_rows` of each table.
    static func insert(
        _ db: Database, turns: [TurnRecord], startups: [StartupRecord], sizings: [SizingRecord] = [], retention config: JournalConfig?
    ) throws {
        for turn in turns { try turn.insert(db) }
        for startup in startups { try startup.insert(db) }
        for sizing in sizings { try sizing.insert(db) }
        guard let config else { return }
        let oldest = Date().timeIntervalSince1970 - Double(config.maxAge.components.seconds)
        for table in ["turn", "startup", "sizing"] {
            try db.execute(sql: "DELETE FROM \(table) WHERE time < ?", arguments: [oldest])
            try db.execute(
                sql: "DELETE FROM \(table) WHERE id <= (SELECT MAX(id) FROM \(table)) - ?",
                arguments: [config.maxRows]
            )
        }
    }

}

/// The journal, read (`stats`, `advise`, tests) while the daemon writes it or not.
public struct JournalReader: Sendable {
    public let path: String
    let database: DatabaseQueue

    /// Opens an existing journal read-only.
    public init(path: String) throws {
        guard FileManager.default.fileExists(atPath: path) else {
            throw JournalError.missing(path)
        }
        var configuration = GRDB.Configuration()
        configuration.readonly = true
        configuration.busyMode = .timeout(5)
        database = try DatabaseQueue(path: path, configuration: configuration)
        self.path = path
        guard try database.read({ try $0.tableExists("turn") && $0.tableExists("startup") }) else {
            throw JournalError.notAJournal(path)
        }
    }

    /// Turns since `since`, oldest first; of one pool, or all.
    public func turns(since: Date, pool: String? = nil) throws -> [TurnRecord] {
        try database.read { db in
            var request = TurnRecord.filter(Column("time") >= since.timeIntervalSince1970)
            if let pool { request = request.filter(Column("pool") == pool) }
            return try request.order(Column("time"), Column("id")).fetchAll(db)
        }
    }

    /// Start-ups since `since`, oldest first; of one pool, or all.
    public func startups(since: Date, pool: String? = nil) throws -> [StartupRecord] {
        try database.read { db in
            var request = StartupRecord.filter(Column("time") >= since.timeIntervalSince1970)
            if let pool { request = request.filter(Column("pool") == pool) }
            return try request.order(Column("time"), Column("id")).fetchAll(db)
        }
    }

    /// Changes of auto pools' targets since `since`, oldest first; of one pool, or all. A
    /// journal no daemon of this version has written yet has none.
    public func sizings(since: Date, pool: String? = nil) throws -> [SizingRecord] {
        try database.read { db in
            guard try db.tableExists("sizing") else { return [] }
            var request = SizingRecord.filter(Column("time") >= since.timeIntervalSince1970)
            if let pool { request = request.filter(Column("pool") == pool) }
            return try request.order(Column("time"), Column("id")).fetchAll(db)
        }
    }

    /// Rows in each table.
    public func counts() throws -> (turns: Int, startups: Int) {
        try database.read { db in (try TurnRecord.fetchCount(db), try StartupRecord.fetchCount(db)) }
    }
}

extension Journal {
    /// Writes records at once, creating the journal if need be (tests, imports); the daemon
    /// uses `record` and `run`.
    public static func write(path: String, turns: [TurnRecord], startups: [StartupRecord] = [], retention: JournalConfig? = nil) throws {
        try open(path: path).write { db in try insert(db, turns: turns, startups: startups, retention: retention) }
    }
}

public enum JournalError: Error, CustomStringConvertible {
    case missing(String)
    case notAJournal(String)

    public var description: String {
        switch self {
        case .missing(let path):
            "no journal at \(path); the daemon writes it as it serves turns ([journal] path, enabled), or pass --config with the daemon's configuration"
        case .notAJournal(let path):
            "\(path) is an SQLite file but not a Prewarm journal"
        }
    }
}
