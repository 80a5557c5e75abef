import Foundation
import NIOCore
import PrewarmClient
import PrewarmCore
import PrewarmServer
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension LiveDaemons {
    /// `spares = "auto"` on a real daemon of real fake agents, through the socket.
    @Suite("Auto sizing, live", .serialized)
    struct AutoSizingDaemonTests {
        /// An auto pool of fake agents that start in 0.5 s without using the CPU; its window,
        /// tick and hold shortened to the test's phases of 30 s.
        static func autoPool(_ name: String = "auto", extra: String = "") -> String {
            """
            [[pool]]
            name = "\(name)"
            command = "FAKE"
            args = ["--init-sleep-ms", "500", "--ttft-ms", "50", "--tokens", "2", "--token-ms", "50"]
            spares = "auto"
            max_spares = 12
            max_starting = 8
            auto_window_s = 30
            auto_every_s = 1
            auto_hold_s = 5
            \(extra)
            [pool.ready]
            send = '{"type":"control_request","request_id":"i","request":{"subtype":"initialize","hooks":null}}'
            expect = '"type":"control_response"'
            [pool.turn]
            end = '"type":"result"'

            """
        }

        /// What the test saw of the pool every 250 ms, in seconds from the load's start.
        final class Watch: @unchecked Sendable {
            private let lock = NSLock()
            private var seen: [(at: Double, status: PoolStatus)] = []

            func record(_ at: Double, _ status: PoolStatus) { lock.withLock { seen.append((at, status)) } }
            func within(_ range: Range<Double>) -> [PoolStatus] { lock.withLock { seen.filter { range.contains($0.at) }.map(\.status) } }
        }

        /// A rate step, low, high, low (1/s, 8/s, 1/s, 30 s each; seeded Poisson arrivals):
        /// the pool rises to meet the high rate and comes back down once it is gone, its
        /// spares beyond the target given back, within its bounds throughout; every change is
        /// journaled and exported, and `prewarm status` says why.
        @Test func aRateStepDrivesTheTargetUpAndBackDown() async throws {
            let directory = try TestDaemon.makeTemporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let journal = directory + "/journal.sqlite"
            let daemon = try await TestDaemon(pools: Self.autoPool(), top: OperatorTests.journalTable(journal), directory: directory)
            var arrivals: [Double] = []
            for (index, (rate, start)) in [(1.0, 0.0), (8.0, 30.0), (1.0, 60.0)].enumerated() {
                arrivals += PoissonSchedule(rate: rate, duration: 30, seed: 21 + UInt64(index)).arrivals().map { $0 + start }
            }
            let watch = Watch()
            let origin = ContinuousClock.now
            let outcomes = try await withThrowingTaskGroup(of: Int?.self) { group in
                group.addTask {
                    // The observer: a reading every 250 ms until the load is over.
                    while !Task.isCancelled, origin.duration(to: .now) < .seconds(91) {
                        if let status = try? await daemon.pool("auto") { watch.record(origin.duration(to: .now).milliseconds / 1000, status) }
                        try? await Task.sleep(for: .milliseconds(250))
                    }
                    return nil
                }
                for at in arrivals {
                    group.addTask {
                        // The load: each turn sent at its arrival time, as an open loop.
                        try await Task.sleep(until: origin.advanced(by: .milliseconds(Int64(at * 1000))), clock: .continuous)
                        return Int(try await daemon.turn("auto").status)
                    }
                }
                return try await group.reduce(into: [Int]()) { if let status = $1 { $0.append(status) } }
            }
            #expect(outcomes.count == arrivals.count && outcomes.allSatisfy { $0 == 200 }, "statuses: \(Dictionary(grouping: outcomes) { $0 }.mapValues(\.count))")

            let low = watch.within(10..<30).map(\.effectiveSpares)
            let high = watch.within(35..<60).map(\.effectiveSpares)
            let after = watch.within(80..<91)
            print("auto sizing live: effective spares low \(low.min() ?? -1)-\(low.max() ?? -1), high \(high.min() ?? -1)-\(high.max() ?? -1), "
                + "last 10 s \(after.map(\.effectiveSpares).min() ?? -1)-\(after.map(\.effectiveSpares).max() ?? -1) (idle \(after.last?.idle ?? -1))")
            let lowTop = try #require(low.max())
            let highTop = try #require(high.max())
            #expect(lowTop <= 6, "low phase: \(low)")
            #expect(highTop >= lowTop + 4, "the high phase raised the target: \(high), low \(lowTop)")
            // Back down: the replays at the low rate's size (a miss may still raise it by one
            // for a moment), and the spares beyond it given back.
            let afterSizes = after.map(\.effectiveSpares).sorted()
            let afterTop = try #require(afterSizes.last)
            #expect(afterSizes[afterSizes.count / 2] <= lowTop + 2 && afterTop <= highTop - 3, "back down after the high phase: \(after.map(\.effectiveSpares))")
            #expect(try #require(after.last).idle <= afterTop + 2, "spares beyond the target given back: idle \(after.map(\.idle))")
            for status in watch.within(0..<91) {
                #expect(status.sizing == "auto" && status.targetSpares == 1)
                #expect((1...12).contains(status.effectiveSpares) && status.auto.map { (1...12).contains($0.target) } == true, "\(status)")
            }

            // Journaled with their causes, exported, and explained by `prewarm status`.
            try await waitUntil("the journal holds the changes of target", timeout: .seconds(10)) {
                let causes = Set((try? JournalReader(path: journal).sizings(since: .distantPast).map(\.cause)) ?? [])
                return causes.contains("replay") && causes.contains("miss")
            }
            let changes = try JournalReader(path: journal).sizings(since: .distantPast, pool: "auto")
            #expect(changes.allSatisfy { $0.fromSpares != $0.toSpares && !$0.reason.isEmpty && (1...12).contains($0.toSpares) })
            #expect(changes.contains { $0.cause == "replay" && $0.toSpares < $0.fromSpares && $0.predictedMiss != nil }, "a replay lowered it")
            let metrics = try await OperatorTests.metrics(daemon)
            #expect(metrics.value("prewarm_pool_auto_target_spares", ["pool": "auto"]) != nil)
            #expect(metrics.value("prewarm_pool_auto_predicted_miss_ratio", ["pool": "auto"]) != nil)
            let status = try OperatorTests.prewarm(["status", "--socket", daemon.socket])
            #expect(status.status == 0 && status.out.contains("auto sizes itself: target") && status.out.contains("auto >= 1"), "\(status.out)")
            daemon.signal(SIGTERM)
            #expect(try await daemon.waitForExit() == 0)
        }

        /// A PATCH of spares on an auto pool sets its floor until the next reload and says so;
        /// `prewarm resize POOL auto` goes back to min_spares; a reload does too. Garbage is a
        /// 400 that says what is expected, and so is "auto" for a pool of a fixed size.
        @Test func aPatchSetsTheFloorUntilTheNextReload() async throws {
            let pools = Self.autoPool() + DaemonTests.pool("fixed", spares: 1)
            let daemon = try await TestDaemon(pools: pools)
            let patched = try await daemon.client.request(.PATCH, "/v1/pools/auto", body: ByteBuffer(string: #"{"spares": 4}"#))
            #expect(patched.status == 200)
            let answer = try JSONDecoder().decode(Resized.self, from: Data(patched.body.readableBytesView))
            #expect(answer.pool.targetSpares == 4 && answer.pool.sizing == "auto" && answer.pool.effectiveSpares >= 4)
            #expect(answer.note.contains("4 is its floor until the next reload"), "\(answer.note)")
            try await waitUntil("the pool holds its floor", timeout: .seconds(20)) { try await daemon.pool("auto").idle >= 4 }

            let resumed = try OperatorTests.prewarm(["resize", "auto", "auto", "--socket", daemon.socket])
            #expect(resumed.status == 0 && resumed.out.contains("sizes itself from min_spares 1"), "\(resumed)")
            #expect(try await daemon.pool("auto").targetSpares == 1)

            _ = try await daemon.client.request(.PATCH, "/v1/pools/auto", body: ByteBuffer(string: #"{"spares": 3}"#))
            daemon.signal(SIGHUP)
            try await waitUntil("the reload restores min_spares", timeout: .seconds(20)) { try await daemon.pool("auto").targetSpares == 1 }

            for body in [#"{"spares": "lots"}"#, #"{"spares": true}"#, #"{"spares": 2.5}"#, #"{"spares": -1}"#, #"{}"#, "spares=3"] {
                let refused = try await daemon.client.request(.PATCH, "/v1/pools/auto", body: ByteBuffer(string: body))
                #expect(refused.status == 400 && refused.bodyString.contains("bad_json"), "\(body): \(refused.status) \(refused.bodyString)")
            }
            let garbage = try await daemon.client.request(.PATCH, "/v1/pools/auto", body: ByteBuffer(string: #"{"spares": "lots"}"#))
            #expect(garbage.bodyString.contains(#"or \"auto\""#), "\(garbage.bodyString)")
            let fixed = try await daemon.client.request(.PATCH, "/v1/pools/fixed", body: ByteBuffer(string: #"{"spares": "auto"}"#))
            #expect(fixed.status == 400 && fixed.bodyString.contains("has a fixed size"), "\(fixed.bodyString)")
            let usage = try OperatorTests.prewarm(["resize", "auto", "autox", "--socket", daemon.socket])
            #expect(usage.status != 0 && usage.err.contains("or auto"), "\(usage)")
            daemon.signal(SIGTERM)
            #expect(try await daemon.waitForExit() == 0)
        }
    }
}
