import NIOCore
import NIOPosix
import Synchronization

/// The timers a pool's state machine asks for (`schedule`, `cancelTimer`), owned by one task
/// of the pool for its whole life (`run`): one NIO scheduled task is armed for the earliest
/// deadline, fires every timer that is due, and arms the next. No polling, and no sleeping
/// task per timer.
///
/// Written by hand: one `Task.sleep` per timer would cost a task per waiting turn and per
/// idle spare (whose `max_idle_s` is an hour), could not be disarmed, and on Linux a
/// cancelled sleep keeps its timer and task until its deadline.
final class PoolTimers: Sendable {
    private struct State {
        var deadlines: [PoolStateMachine.Timer: ContinuousClock.Instant] = [:]
        /// The scheduled task armed for the earliest deadline, and that deadline.
        var armed: (task: Scheduled<Void>, at: ContinuousClock.Instant)?
        /// Where due timers go, while `run` runs.
        var fire: (@Sendable (PoolStateMachine.Timer) -> Void)?
    }

    private let state = Mutex(State())
    private let loop = MultiThreadedEventLoopGroup.singleton.any()

    func schedule(_ timer: PoolStateMachine.Timer, at deadline: ContinuousClock.Instant) {
        state.withLock { state in
            state.deadlines[timer] = deadline
            if state.fire != nil, state.armed.map({ deadline < $0.at }) ?? true { arm(&state, at: deadline) }
        }
    }

    /// Disarms a timer. The scheduled task stays armed for its instant: it finds nothing due
    /// then, and arms the next.
    func cancel(_ timer: PoolStateMachine.Timer) {
        state.withLock { _ = $0.deadlines.removeValue(forKey: timer) }
    }

    /// Fires due timers through `fire` until the calling task is cancelled.
    func run(_ fire: @escaping @Sendable (PoolStateMachine.Timer) -> Void) async {
        state.withLock { state in
            state.fire = fire
            if let next = state.deadlines.values.min() { arm(&state, at: next) }
        }
        // Owned by the caller's task: returns when it is cancelled, and disarms everything.
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let cancelled = stopped.withLock { stopped -> Bool in
                    guard !Task.isCancelled else { return true }
                    stopped = continuation
                    return false
                }
                if cancelled { continuation.resume() }
            }
        } onCancel: {
            self.stopped.withLock { stopped in
                defer { stopped = nil }
                return stopped
            }?.resume()
        }
        state.withLock { state in
            state.armed?.task.cancel()
            state.armed = nil
            state.fire = nil
        }
    }

    /// `run`'s wait for its task's cancellation.
    private let stopped = Mutex<CheckedContinuation<Void, Never>?>(nil)

    private func arm(_ state: inout State, at deadline: ContinuousClock.Instant) {
        state.armed?.task.cancel()
        let task = loop.scheduleTask(in: TimeAmount(ContinuousClock.now.duration(to: deadline))) { [self] in fireDue() }
        state.armed = (task, deadline)
    }

    /// Fires every timer due now (earliest first), after arming the next.
    private func fireDue() {
        let now = ContinuousClock.now
        let (due, fire) = state.withLock { state -> ([PoolStateMachine.Timer], (@Sendable (PoolStateMachine.Timer) -> Void)?) in
            let due = state.deadlines.filter { $0.value <= now }.sorted { $0.value < $1.value }.map(\.key)
            for timer in due { state.deadlines[timer] = nil }
            state.armed = nil
            if state.fire != nil, let next = state.deadlines.values.min() { arm(&state, at: next) }
            return (due, state.fire)
        }
        guard let fire else { return }
        for timer in due { fire(timer) }
    }
}
