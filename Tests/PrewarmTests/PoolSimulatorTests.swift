import Foundation
import Testing

@testable import PrewarmCore

/// The pool's state machine replayed in simulated time, against what theory says.
@Suite("Pool simulator")
struct PoolSimulatorTests {
    /// The same seed gives the same schedule; arrivals have the asked-for rate.
    @Test func poissonScheduleIsSeeded() {
        let a = PoissonSchedule(rate: 5, duration: 200, seed: 7).arrivals()
        let b = PoissonSchedule(rate: 5, duration: 200, seed: 7).arrivals()
        let c = PoissonSchedule(rate: 5, duration: 200, seed: 8).arrivals()
        #expect(a == b)
        #expect(a != c)
        #expect(a == a.sorted() && (a.last ?? 0) < 200)
        // 1000 expected; a Poisson count's standard deviation is about 32.
        #expect(abs(a.count - 1000) < 130, "\(a.count) arrivals")
    }

    /// Rare arrivals always find a spare.
    @Test func slowTrafficIsAllWarm() {
        let simulator = PoolSimulator(settings: .init(spares: 2, maxProcesses: 10), startupSeconds: [0.5], turnSeconds: 0.2)
        let outcome = simulator.run(arrivals: stride(from: 0.0, to: 100, by: 5).map { $0 })
        #expect(outcome.arrivals == 20 && outcome.warm == 20)
    }

    /// With max_starting >= spares, every arrival sets off exactly one start-up, so the spares
    /// missing at an arrival are the arrivals of the last start-up time: the hit ratio is
    /// P[Poisson(λR) < N] (M/D/∞). λ = 2/s, R = 1 s, N = 4: 0.857.
    @Test func matchesTheClosedFormWhenStartupsAreUnbounded() {
        let lambda = 2.0
        let startup = 1.0
        let spares = 4
        let simulator = PoolSimulator(
            settings: .init(spares: spares, maxProcesses: 1000, maxStarting: 1000, waitTimeout: .seconds(3600)),
            startupSeconds: [startup],
            turnSeconds: 0.05
        )
        let outcome = simulator.run(arrivals: PoissonSchedule(rate: lambda, duration: 10_000, seed: 3).arrivals())
        let mean = lambda * startup
        var term = exp(-mean)
        var expected = 0.0
        for k in 0..<spares {
            expected += term
            term *= mean / Double(k + 1)
        }
        #expect(abs(outcome.hitRatio - expected) < 0.01, "simulated \(outcome.hitRatio), closed form \(expected)")
        #expect(outcome.rejected == 0)
        #expect(outcome.warm + outcome.waited + outcome.cold == outcome.arrivals)
    }

    /// max_starting = 1 refills one at a time: the same traffic gets a lower hit ratio than
    /// the closed form promises, which is why predictions replay the state machine.
    @Test func maxStartingLowersTheHitRatio() {
        let arrivals = PoissonSchedule(rate: 2, duration: 2000, seed: 5).arrivals()
        let unbounded = PoolSimulator(settings: .init(spares: 4, maxProcesses: 1000, maxStarting: 1000), startupSeconds: [1], turnSeconds: 0.05)
        let one = PoolSimulator(settings: .init(spares: 4, maxProcesses: 1000, maxStarting: 1), startupSeconds: [1], turnSeconds: 0.05)
        #expect(one.run(arrivals: arrivals).hitRatio < unbounded.run(arrivals: arrivals).hitRatio - 0.1)
    }
}
