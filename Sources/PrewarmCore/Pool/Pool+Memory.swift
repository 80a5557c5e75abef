#if canImport(Glibc)
import Glibc
#endif
import Logging

extension Pool {
    // MARK: - Memory

    var idleCount: Int { state.withLock { $0.machine.idleCount } }

    /// Measures the processes (`groups`: process group -> members, from one /proc scan):
    /// a spare once at readiness, a busy process on every sample (its peak is kept until
    /// the turn ends). A process's cost includes its group: MCP servers, tools. With `all`,
    /// every process is read, and the sum returned (the pools' own usage).
    @discardableResult
    func sampleMemory(groups: [Int32: [Int32]], root: SystemRoot, all: Bool = false) -> Int {
        let targets = state.withLock { state in
            state.processes.compactMap { id, process -> (SpareID, Int32, busy: Bool)? in
                guard let pid = process.pid else { return nil }
                switch state.machine.processes[id] {
                case .idle where !state.measuredReady.contains(id): return (id, pid, false)
                case .busy: return (id, pid, true)
                default: return all ? (id, pid, false) : nil
                }
            }
        }
        guard !targets.isEmpty else { return 0 }
        var readings: [(SpareID, Int, busy: Bool, members: [Int32], reading: ProcessMemoryReading)] = []
        for (id, pid, busy) in targets {
            guard let reading = ProcessMemory.group(pid, groups: groups, root: root) else { continue }
            readings.append((id, Int(clamping: reading.cost), busy, groups[pid] ?? [pid], reading))
        }
        perform(
            mutate { state in
                let before = state.costs
                for (id, bytes, busy, members, reading) in readings {
                    state.members[id] = members
                    if busy {
                        state.busyPeaks[id] = max(state.busyPeaks[id] ?? 0, bytes)
                    } else if case .idle = state.machine.processes[id], state.measuredReady.insert(id).inserted {
                        state.spareCost.record(bytes)
                        state.lives[id]?.pssReady = reading.pss.map { Int(clamping: $0) }
                        state.lives[id]?.rssReady = Int(clamping: reading.rss)
                    }
                }
                return state.costs == before ? [] : state.machine.setCosts(state.costs, now: .now)
            }
        )
        return readings.reduce(0) { $0 + $1.1 }
    }

    /// A new memory reading (the governor's sampler): the machine sees the room and pressure
    /// now, and sheds or starts accordingly.
    func memoryChanged() {
        perform(mutate { $0.machine.memoryChanged(now: .now) })
    }

    /// Retires idle spares, oldest first, until `bytes` are freed; returns the bytes freed.
    var resumeHeldCount: Int { state.withLock { $0.machine.resumeHeldCount } }

    /// Resume spares shed for memory (they go before any pool's idle spares).
    func shedResumeSpares(upTo bytes: Int) -> Int {
        let (freed, actions) = mutate { $0.machine.shedResumeSpares(upTo: bytes, now: .now) }
        perform(actions)
        if freed > 0 { logger.info("resume spares shed for memory", metadata: ["memory.freed_mib": "\(freed >> 20)"]) }
        return freed
    }

    func shedIdle(upTo bytes: Int) -> Int {
        let (freed, actions) = mutate { $0.machine.shedIdle(upTo: bytes, now: .now) }
        perform(actions)
        if freed > 0 { logger.info("idle spares shed for memory", metadata: ["memory.freed_mib": "\(freed >> 20)"]) }
        return freed
    }

    public func memoryStatus() -> MemoryStatus.PoolMemory {
        state.withLock { state in
            MemoryStatus.PoolMemory(
                name: name,
                spareBytes: state.spareCost.value,
                turnPeakBytes: state.turnPeak.value,
                measured: state.spareCost.measured && state.turnPeak.measured,
                spareMeasured: state.spareCost.measured,
                turnMeasured: state.turnPeak.measured,
                charged: state.machine.chargedBytes,
                maxProcesses: state.machine.memoryMaxProcesses,
                spares: state.config.spares,
                effectiveSpares: state.machine.effectiveSpares,
                shed: state.machine.counters.shed
            )
        }
    }
}
