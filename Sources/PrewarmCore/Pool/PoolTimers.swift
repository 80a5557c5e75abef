import Synchronization

/// The timers a pool's state machine asks for (`schedule`, `cancelTimer`), run by one task
/// for the pool's whole life: it sleeps until the earliest deadline, fires every timer that
/// is due, and is woken early only when a timer earlier than the one it sleeps for is armed.
/// No polling: an idle pool with no timer sleeps until something is scheduled.
///
/// Written by hand: one sleeping task per timer would cost a task per waiting turn and per
/// idle spare (whose `max_idle_s` is an hour), and could not be disarmed.
final class PoolTimers: Sendable {
    private struct State {
        var deadlines: [PoolStateMachine.Timer: ContinuousClock.Instant] = [:]
        /// The instant the run loop sleeps until; nil: until woken.
        var sleepingUntil: ContinuousClock.Instant?
        /// The run loop's wake-up, when it is asleep.
        var wake: CheckedContinuation<Void, Never>?
        /// A wake-up that came while it was not asleep.
        var woken = false
    }

    private let state = Mutex(State())

    /// How many timers are armed (for tests).
    var count: Int { state.withLock { $0.deadlines.count } }

    func schedule(_ timer: PoolStateMachine.Timer, at deadline: ContinuousClock.Instant) {
        let wake = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.deadlines[timer] = deadline
            guard state.sleepingUntil.map({ deadline < $0 }) ?? true else { return nil }
            return takeWake(&state)
        }
        wake?.resume()
    }

    func cancel(_ timer: PoolStateMachine.Timer) {
        state.withLock { _ = $0.deadlines.removeValue(forKey: timer) }
    }

    /// Fires due timers through `fire` until the calling task is cancelled.
    func run(_ fire: (PoolStateMachine.Timer) -> Void) async {
        while !Task.isCancelled {
            let now = ContinuousClock.now
            let (due, next) = state.withLock { state -> ([PoolStateMachine.Timer], ContinuousClock.Instant?) in
                let due = state.deadlines.filter { $0.value <= now }.sorted { $0.value < $1.value }.map(\.key)
                for timer in due { state.deadlines[timer] = nil }
                let next = state.deadlines.values.min()
                state.sleepingUntil = next
                state.woken = false
                return (due, next)
            }
            for timer in due { fire(timer) }
            if !due.isEmpty { continue }
            await sleep(until: next)
        }
    }

    /// Sleeps until `deadline` (nil: indefinitely) or a wake-up, whichever comes first.
    private func sleep(until deadline: ContinuousClock.Instant?) async {
        await withTaskGroup(of: Void.self) { group in
            if let deadline {
                group.addTask { try? await Task.sleep(until: deadline, clock: .continuous) }
            }
            group.addTask {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let now = self.state.withLock { state -> Bool in
                            if state.woken || Task.isCancelled { return true }
                            state.wake = continuation
                            return false
                        }
                        if now { continuation.resume() }
                    }
                } onCancel: {
                    self.state.withLock { self.takeWake(&$0) }?.resume()
                }
            }
            await group.next()
            group.cancelAll()
        }
    }

    private func takeWake(_ state: inout State) -> CheckedContinuation<Void, Never>? {
        state.woken = true
        defer { state.wake = nil }
        return state.wake
    }
}
