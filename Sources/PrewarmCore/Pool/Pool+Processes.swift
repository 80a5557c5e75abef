#if canImport(Glibc)
import Glibc
#endif
import Logging

/// What a process's owner task reports, fed into the machine (and the journal's record of
/// the process's life).
extension Pool: ChildProcessDelegate {
    func processReady(_ id: SpareID, pid: pid_t, startup: Duration) {
        let transcript = resumeTranscriptAtReadiness(id)
        perform(
            mutate { state in
                _ = state.startupMillis.record(UInt64(max(0, startup.wholeMilliseconds)))
                state.lives[id]?.pid = Int(pid)
                state.lives[id]?.readyMs = startup.milliseconds
                if let transcript { Self.recordResumeTranscript(&state, spare: id, now: transcript) }
                return state.machine.processReady(id, now: .now)
            }
        )
        telemetry?.startupReady(pool: name, duration: startup)
        // The journal's reading at readiness, of the process itself (the memory sampler's
        // reading of its whole group replaces it if the spare stays idle long enough).
        if telemetry?.journal != nil, let reading = ProcessMemory.read(pid: pid) {
            state.withLock { state in
                guard state.lives[id]?.rssReady == nil else { return }
                state.lives[id]?.pssReady = reading.pss.map { Int(clamping: $0) }
                state.lives[id]?.rssReady = Int(clamping: reading.rss)
            }
        }
    }

    func processStartFailed(_ id: SpareID, reason: String) {
        perform(mutate { $0.machine.startFailed(id, reason: reason, now: .now) })
    }

    func processExited(_ id: SpareID, reason: String) {
        logger.warning("spare exited while idle", metadata: ["process.spare": "\(id)", "reason": "\(reason)"])
        perform(mutate { $0.machine.processExited(id, reason: reason, now: .now) })
    }

    func processTurnEnded(_ id: SpareID) {
        perform(mutate { $0.machine.turnEnded(id, now: .now) })
    }

    func processTurnAnswered(_ id: SpareID) {
        // The turn's last reading, taken once its client has the answer and before the
        // process is stopped: its group's members as last seen.
        let (pid, members) = state.withLock { ($0.processes[id]?.pid, $0.members[id]) }
        var final = 0
        if let pid {
            final = (members ?? [pid]).compactMap { ProcessMemory.read(pid: $0) }.reduce(0) { $0 + Int(clamping: $1.cost) }
        }
        perform(
            mutate { state in
                let peak = max(state.busyPeaks.removeValue(forKey: id) ?? 0, final)
                guard peak > 0 else { return [] }
                state.turnPeak.record(peak)
                state.lives[id]?.peak = peak
                return state.machine.setCosts(state.costs, now: .now)
            }
        )
    }

    func processGone(_ id: SpareID, exit: String) {
        let (actions, emptyWaiters, life, turn) = mutate { state in
            let turn = state.processes[id]?.servedTurn
            state.resumeFiles[id] = nil
            if let endpoint = state.universals.removeValue(forKey: id) { _ = PrivateDirectory.remove(endpoint.directory) }
            state.universalRuns[id] = nil
            let life = state.lives.removeValue(forKey: id)
            state.processes[id] = nil
            state.measuredReady.remove(id)
            state.busyPeaks[id] = nil
            state.lastWalks[id] = nil
            state.members[id] = nil
            let actions = state.machine.processGone(id, now: .now)
            guard state.processes.isEmpty else { return (actions, [CheckedContinuation<Void, Never>](), life, turn) }
            defer { state.emptyWaiters.removeAll() }
            return (actions, state.emptyWaiters, life, turn)
        }
        perform(actions)
        // Its turn's transcript is complete now: the session's next turn may start warm.
        if let turn { turnProcessGone(turn) }
        // Recorded before the pool is reported empty: a drain waits for that, then the journal
        // writes its last records.
        if let life, let telemetry {
            telemetry.processEnded(
                StartupRecord(
                    time: life.spawned, pool: name, pid: life.pid, readyMs: life.readyMs, pssReady: life.pssReady, rssReady: life.rssReady,
                    peakBytes: life.peak, exitReason: exit, lifetimeMs: life.started.duration(to: .now).milliseconds
                )
            )
        }
        for waiter in emptyWaiters { waiter.resume() }
    }
}
