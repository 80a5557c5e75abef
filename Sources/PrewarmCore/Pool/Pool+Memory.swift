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
        typealias Target = (id: SpareID, pid: Int32, busy: Bool, last: (resident: UInt64, cost: Int)?)
        let targets = state.withLock { state in
            state.processes.compactMap { id, process -> Target? in
                guard let pid = process.pid else { return nil }
                switch state.machine.processes[id] {
                case .idle where !state.measuredReady.contains(id): return (id, pid, false, nil)
                case .busy: return (id, pid, true, state.lastWalks[id])
                default: return all ? (id, pid, false, nil) : nil
                }
            }
        }
        guard !targets.isEmpty else { return 0 }
        var readings: [(SpareID, Int, busy: Bool, members: [Int32], reading: ProcessMemoryReading?, resident: UInt64)] = []
        for target in targets {
            let members = groups[target.pid] ?? [target.pid]
            // statm for busy processes only: the others are walked at once.
            let resident = target.busy ? members.compactMap { ProcessMemory.resident(pid: $0, root: root) }.reduce(0, +) : 0
            // A busy process is walked again (smaps_rollup) only once it has grown: its PSS
            // cannot have grown by more than its resident bytes have (the peak is off by
            // `rewalkAfterGrowth` at most), and a burst's turns are not slowed by the walks.
            if target.busy, let last = target.last, resident < last.resident + Self.rewalkAfterGrowth {
                readings.append((target.id, last.cost, true, members, nil, last.resident))
                continue
            }
            guard let reading = ProcessMemory.group(target.pid, groups: groups, root: root) else { continue }
            readings.append((target.id, Int(clamping: reading.cost), target.busy, members, reading, resident))
        }
        perform(
            mutate { state in
                let before = state.costs
                for (id, bytes, busy, members, reading, resident) in readings {
                    state.members[id] = members
                    if busy {
                        state.busyPeaks[id] = max(state.busyPeaks[id] ?? 0, bytes)
                        if reading != nil { state.lastWalks[id] = (resident, bytes) }
                    } else if let reading, case .idle = state.machine.processes[id], state.measuredReady.insert(id).inserted {
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

    /// How much a busy process's resident bytes must grow before its memory is read again in
    /// full (see `sampleMemory`).
    static let rewalkAfterGrowth: UInt64 = 8 << 20

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
