import Foundation
import Testing

@testable import PrewarmCore

/// The journal's file (written, read back, retention), and what `stats` and `advise` make of
/// journals the tests write.
@Suite struct JournalTests {
    static func pool(spares: Int = 2, maxStarting: Int = 16) -> PoolConfig {
        var config = PoolConfig(name: "p", command: "/bin/true", executable: "/bin/true")
        config.spares = spares
        config.maxStarting = maxStarting
        config.maxProcessesSetting = 64
        return config
    }

    /// A Poisson trace of `rate` per second over `duration` seconds, served with `startKind`,
    /// and start-ups of `startup` seconds.
    static func trace(rate: Double, duration: Double, seed: UInt64, startup: Double, origin: Date) -> ([TurnRecord], [StartupRecord]) {
        let arrivals = PoissonSchedule(rate: rate, duration: duration, seed: seed).arrivals()
        let turns = arrivals.enumerated().map { index, offset in
            TurnRecord(
                time: origin.addingTimeInterval(offset), pool: "p", turnID: "t\(index)", start: index % 4 == 0 ? "waited" : "warm",
                outcome: "completed", waitMs: index % 4 == 0 ? 300 : 0.1, firstByteMs: 5, durationMs: 200, bytesIn: 50, bytesOut: 900,
                pid: 1000 + index, callerUID: 0
            )
        }
        let startups = arrivals.enumerated().map { index, offset in
            StartupRecord(
                time: origin.addingTimeInterval(offset), pool: "p", pid: 1000 + index, readyMs: startup * 1000,
                pssReady: 30 << 20, rssReady: 40 << 20, peakBytes: 60 << 20, exitReason: "turn completed (exit status 0)",
                lifetimeMs: 5000
            )
        }
        return (turns, startups)
    }

    static func temporaryPath() throws -> String {
        try TestDaemon.makeTemporaryDirectory() + "/journal.sqlite"
    }

    @Test func writesReadsAndKeepsItsRetention() throws {
        let path = try Self.temporaryPath()
        let now = Date()
        let old = TurnRecord(time: now.addingTimeInterval(-40 * 86_400), pool: "p", turnID: "old", start: "warm", outcome: "completed", waitMs: 0, durationMs: 1)
        let fresh = (0..<10).map {
            TurnRecord(time: now.addingTimeInterval(Double($0)), pool: "p", turnID: "n\($0)", start: "cold", outcome: "completed", waitMs: 1, durationMs: 2)
        }
        try Journal.write(path: path, turns: [old] + fresh)
        let reader = try JournalReader(path: path)
        #expect(try reader.counts().turns == 11)
        let back = try reader.turns(since: now.addingTimeInterval(-50 * 86_400))
        #expect(back.first?.turnID == "old")
        #expect(abs(back.first!.time.timeIntervalSince1970 - old.time.timeIntervalSince1970) < 0.001)
        var last = try #require(back.last)
        #expect(abs(last.time.timeIntervalSince1970 - fresh.last!.time.timeIntervalSince1970) < 0.001)
        last.time = fresh.last!.time
        #expect(last == fresh.last)

        // 30 days and 6 rows: the old row goes by age, the oldest fresh ones by count.
        try Journal.write(path: path, turns: [], retention: JournalConfig(path: path, maxAge: .seconds(30 * 86_400), maxRows: 6))
        let kept = try reader.turns(since: .distantPast)
        #expect(kept.map(\.turnID) == (4..<10).map { "n\($0)" })
    }

    @Test func refusesAFileThatIsNotAJournal() throws {
        let path = try Self.temporaryPath()
        #expect(throws: JournalError.self) { try JournalReader(path: path) }
        try Data("not a database at all, just some bytes that are long enough to be a header".utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: (any Error).self) { try JournalReader(path: path) }
    }

    @Test func statsOfATrace() throws {
        let origin = Date().addingTimeInterval(-600)
        let (turns, startups) = Self.trace(rate: 2, duration: 300, seed: 3, startup: 0.8, origin: origin)
        var all = turns
        all.append(TurnRecord(time: origin.addingTimeInterval(301), pool: "p", turnID: "r", start: nil, outcome: "rejected", errorCode: "no_capacity", waitMs: 0, durationMs: 0))
        let stats = PoolStats(pool: "p", turns: all, startups: startups)
        #expect(stats.turns == turns.count + 1)
        #expect(stats.served == turns.count)
        #expect(stats.rejections == ["no_capacity": 1])
        #expect(abs(stats.hitRatio! - 0.75) < 0.01)
        // 2 a second over 301 s: the average over every minute holding a turn, 361 s of them.
        let span = all.last!.time.timeIntervalSince(all.first!.time)
        #expect(abs(stats.meanRatePerSecond! - Double(all.count) / (span + 60)) < 1e-6)
        #expect(abs(stats.meanRatePerSecond! - 2 * 301 / 361) < 0.25)
        #expect(stats.peakRatePerSecond! >= stats.meanRatePerSecond!)
        #expect(stats.startupMs.p50 == 800)
        #expect(stats.waitMs.p99 == 300)
        #expect(stats.firstByteMs.p50 == 5)
    }

    /// The mean and peak rates are one rate (turns in a minute / 60) averaged and at its
    /// highest, so the peak is never below the mean: not on bursts, gaps or single turns.
    @Test func peakRateIsNeverBelowTheMean() {
        var generator = SeededGenerator(seed: 17)
        let origin = Date(timeIntervalSince1970: 1_800_000_000)
        var traces: [[Double]] = [[0], [0, 61], [0, 0.5, 61, 200], Array(repeating: 5, count: 6), (0..<6).map { Double($0) * 0.15 }]
        for _ in 0..<200 {
            let count = Int.random(in: 1...40, using: &generator)
            let spread = [1.0, 30, 90, 600, 7200].randomElement(using: &generator)!
            traces.append((0..<count).map { _ in Double.random(in: 0...spread, using: &generator) }.sorted())
        }
        for times in traces {
            let turns = times.enumerated().map { index, offset in
                TurnRecord(time: origin.addingTimeInterval(offset), pool: "p", turnID: "t\(index)", start: "warm", outcome: "completed", waitMs: 0, durationMs: 1)
            }
            let stats = PoolStats(pool: "p", turns: turns, startups: [])
            #expect(stats.peakRatePerSecond! >= stats.meanRatePerSecond! * (1 - 1e-12), "\(times)")
        }
    }

    /// `prewarm stats` on a short journal (6 turns within a second) prints the same rate for
    /// its mean and its peak, 6 turns in a minute (0.10/s), and says in its header how rates
    /// are taken.
    @Test func statsOfSixTurnsInASecond() throws {
        let directory = try TestDaemon.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/journal.sqlite"
        let origin = Date().addingTimeInterval(-120)
        let turns = (0..<6).map { index in
            TurnRecord(
                time: origin.addingTimeInterval(Double(index) * 0.15), pool: "p", turnID: "t\(index)", start: index == 0 ? "cold" : "warm",
                outcome: "completed", waitMs: 0, durationMs: 100
            )
        }
        try Journal.write(path: path, turns: turns)
        let config = directory + "/prewarm.toml"
        try TestDaemon.configText(pools: LiveDaemons.DaemonTests.pool("p", spares: 1), top: "[journal]\npath = \"\(path)\"\n")
            .write(toFile: config, atomically: true, encoding: .utf8)
        let run = try runCommand(TestDaemon.prewarm, ["stats", "--config", config, "--since", "1h"])
        #expect(run.status == 0, "\(run)")
        let lines = run.out.split(separator: "\n").map(String.init)
        #expect(lines.contains(PoolStats.rateDefinition), "\(run.out)")
        let header = try #require(lines.first { $0.hasPrefix("POOL") }).split(separator: " ", omittingEmptySubsequences: true)
        let row = try #require(lines.first { $0.hasPrefix("p ") }).split(separator: " ", omittingEmptySubsequences: true)
        #expect(header[1...3] == ["TURNS", "MEAN/S", "PEAK/S"])
        #expect(row[1] == "6" && row[2] == "0.10" && row[3] == "0.10", "\(run.out)")
        let stats = PoolStats(pool: "p", turns: turns, startups: [])
        #expect(stats.peakRatePerSecond == 0.1)
        #expect(stats.meanRatePerSecond! <= stats.peakRatePerSecond!)
    }

    @Test func poissonTailAndBusiestWindow() {
        // P[Poisson(2) >= 4] = 1 - e^-2 (1 + 2 + 2 + 4/3)
        let below: Double = 1 + 2 + 2 + 4.0 / 3
        let expected: Double = 1 - exp(-2.0) * below
        #expect(abs(Advice.poissonTail(mean: 2, atLeast: 4) - expected) < 1e-12)
        #expect(Advice.poissonTail(mean: 2, atLeast: 0) == 1)
        #expect(Advice.poissonTail(mean: 0, atLeast: 1) == 0)
        let times: [Double] = [0, 1, 2, 50, 50.5, 51, 51.2, 52, 200]
        #expect(PoolStats.busiest(times, window: 10) == 3..<8)
        #expect(PoolStats.busiest([7], window: 10) == 0..<1)
    }

    /// With start-ups never limited, the replay agrees with the M/G/∞ closed form, and the
    /// recommendation is the smallest N that meets the target.
    @Test func adviceMeetsTheTargetAndAgreesWithTheClosedForm() throws {
        let origin = Date().addingTimeInterval(-3600)
        let (turns, startups) = Self.trace(rate: 2, duration: 900, seed: 11, startup: 1.0, origin: origin)
        let advice = try Advice.advise(config: Self.pool(), turns: turns, startups: startups, targetMiss: 0.1, window: 900, roomBytes: nil)
        let byN = Dictionary(uniqueKeysWithValues: advice.candidates.map { ($0.spares, $0) })
        let n = advice.recommendedSpares
        #expect(byN[n]!.missRatio <= 0.1)
        #expect(byN[n - 1]!.missRatio > 0.1)
        #expect(byN[n + 1]!.missRatio <= byN[n]!.missRatio)
        // λR = 2: P[Poisson(2) >= 4] = 0.143, >= 5: 0.053.
        #expect(n == 4 || n == 5)
        for candidate in advice.candidates {
            #expect(abs(candidate.missRatio - candidate.closedFormMiss) < 0.05, "N=\(candidate.spares)")
        }
        #expect(advice.arrivals == turns.count)
        #expect(abs(advice.ratePerSecond - 2) < 0.2)
        #expect(byN[n]!.memoryBytes == n * (30 << 20))
        #expect(!advice.cappedByMemory)
    }

    /// The busiest window is replayed, and the memory budget caps the recommendation.
    @Test func adviceReplaysTheBusiestWindowWithinTheBudget() throws {
        let origin = Date().addingTimeInterval(-7200)
        let (calm, startups) = Self.trace(rate: 0.2, duration: 1800, seed: 5, startup: 1.0, origin: origin)
        let (busy, _) = Self.trace(rate: 4, duration: 300, seed: 6, startup: 1.0, origin: origin.addingTimeInterval(1800))
        let advice = try Advice.advise(config: Self.pool(), turns: calm + busy, startups: startups, targetMiss: 0.01, window: 300, roomBytes: nil)
        #expect(abs(advice.ratePerSecond - 4) < 0.5)
        #expect(advice.recommendedSpares >= 8)
        // Room for 5 spares (30 MiB each) and one of them growing into a turn (60 MiB).
        let capped = try Advice.advise(config: Self.pool(), turns: calm + busy, startups: startups, targetMiss: 0.01, window: 300, roomBytes: 180 << 20)
        #expect(capped.cappedByMemory)
        #expect(capped.recommendedSpares == 5)
        #expect(capped.memoryMaxSpares == 5)
        #expect(capped.candidates.last!.overBudget)
    }

    @Test func adviceNeedsTurnsAndStartups() {
        #expect(throws: Advice.Failure.noTurns("p")) {
            try Advice.advise(config: Self.pool(), turns: [], startups: [], targetMiss: 0.1, window: 900, roomBytes: nil)
        }
        let turn = TurnRecord(time: Date(), pool: "p", turnID: "t", start: "warm", outcome: "completed", waitMs: 0, durationMs: 1)
        #expect(throws: Advice.Failure.noStartups("p")) {
            try Advice.advise(config: Self.pool(), turns: [turn], startups: [], targetMiss: 0.1, window: 900, roomBytes: nil)
        }
    }
}

/// `prewarm advise` on resume spares: each session's gaps between turns, and whether the TTL
/// would have caught the misses.
@Suite("Journal: resumed turns")
struct ResumeAdviceTests {
    static func turn(_ at: Double, _ session: String, resume: ResumeOutcome?, durationMs: Double = 1000) -> TurnRecord {
        TurnRecord(
            time: Date(timeIntervalSince1970: 1_800_000_000 + at), pool: "sdk", turnID: "t\(at)", start: resume == .hit ? "warm" : "cold",
            outcome: "completed", waitMs: 1, durationMs: durationMs, sessionID: session, resume: resume?.rawValue
        )
    }

    @Test func sessionsAndResumesRoundTripThroughTheJournal() throws {
        let path = try JournalTests.temporaryPath()
        try Journal.write(path: path, turns: [Self.turn(0, "s1", resume: nil), Self.turn(5, "s1", resume: .stale)])
        let back = try JournalReader(path: path).turns(since: .distantPast)
        #expect(back.map(\.sessionID) == ["s1", "s1"] && back.map(\.resume) == [nil, "stale"])
    }

    @Test func missesBeyondTheTTLAskForALongerOne() throws {
        // s1: turns 10 s apart after each ended (hits); s2: a turn 900 s after its last (a miss beyond
        // a 600 s TTL); s3: a miss 3 s after (within: the spare was not ready).
        let turns = [
            Self.turn(0, "s1", resume: nil), Self.turn(11, "s1", resume: .hit), Self.turn(22, "s1", resume: .hit),
            Self.turn(1, "s2", resume: nil), Self.turn(902, "s2", resume: .miss),
            Self.turn(2, "s3", resume: nil), Self.turn(6, "s3", resume: .miss), Self.turn(30, "s3", resume: .stale),
        ]
        let advice = try #require(ResumeAdvice.advise(turns: turns, ttl: .seconds(600)))
        #expect(advice.resumed == 5 && advice.hits == 2 && advice.misses == 3 && advice.stale == 1)
        #expect(advice.missesBeyondTTL == 1 && advice.missesWithinTTL == 1)
        #expect(advice.gapSecondsP50 == 10 && advice.gapSecondsP90 == 900)
        #expect(advice.suggestedTTLSeconds == 1080)
        // prewarm stats counts them too.
        #expect(PoolStats(pool: "sdk", turns: turns, startups: []).resumed == ["hit": 2, "miss": 2, "stale": 1])
        // Off: every miss is one a resume spare could have caught; no resumed turn: no advice.
        #expect(ResumeAdvice.advise(turns: turns, ttl: nil)?.ttlSeconds == nil)
        #expect(ResumeAdvice.advise(turns: [Self.turn(0, "s1", resume: nil)], ttl: .seconds(600)) == nil)
    }
}
