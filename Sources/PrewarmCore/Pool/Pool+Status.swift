extension Pool {
    // MARK: - Status

    public func status() -> PoolStatus {
        state.withLock { state in
            let machine = state.machine
            let hasSamples = state.startupMillis.totalCount > 0
            return PoolStatus(
                name: name,
                idle: machine.idleCount,
                starting: machine.startingCount,
                busy: machine.busyCount,
                waiting: machine.waitingCount,
                targetSpares: state.config.spares,
                effectiveSpares: machine.effectiveSpares,
                maxProcesses: machine.memoryMaxProcesses,
                served: machine.counters.served,
                warm: machine.counters.warm,
                waited: machine.counters.waited,
                cold: machine.counters.cold,
                rejected: machine.counters.rejected,
                startFailures: machine.counters.startFailures,
                recycled: machine.counters.recycled,
                shed: machine.counters.shed,
                spawnMs: hasSamples
                    ? .init(p50: Int(state.startupMillis.valueAtPercentile(50)), p99: Int(state.startupMillis.valueAtPercentile(99)))
                    : .init(p50: nil, p99: nil),
                failing: machine.failing,
                lastError: machine.lastError,
                pids: state.processes.values.compactMap(\.pid).map(Int.init).sorted(),
                kind: state.config.kind.rawValue,
                claim: state.config.claude.map { $0.claim ? ($0.claimSupported ? "on" : "unsupported") : "off" },
                spareNice: StartupPriority.effectiveSpareNice(state.config.spareNice),
                fingerprint: state.config.fingerprint,
                differsFrom: state.config.nearest,
                closing: state.config.fingerprint == nil ? nil : state.closing,
                sizing: machine.autoSizing == nil ? "fixed" : "auto",
                auto: machine.autoSizing.map {
                    PoolStatus.AutoSizing(
                        target: $0.target, maxSpares: $0.maxSpares, targetMiss: $0.targetMiss, predictedMiss: $0.predictedMiss, reason: $0.reason
                    )
                },
                resumeHeld: machine.resumeHeldCount,
                resumeReady: machine.resumeReadyCount,
                resumeHits: machine.counters.resumeHits,
                resumeMisses: machine.counters.resumeMisses,
                resumeStale: machine.counters.resumeStale,
                resumeEvicted: machine.counters.resumeEvicted,
                resumeExpired: machine.counters.resumeExpired,
                universal: state.config.claude.map { _ in
                    !state.config.universalSupported ? "unsupported" : machine.settings.universalSpares > 0 ? "on" : state.config.universalSpares > 0 ? "unsupported" : "off"
                },
                universalIdle: machine.universalIdleCount,
                universalHits: machine.counters.universalHits,
                runsVia: state.runsVia,
                claimedAhead: state.processes.values.count { $0.currentPhase == .idle && $0.aheadClaim != nil },
                claimAheadHits: state.claimAhead.hits,
                claimAheadDiscarded: state.claimAhead.discarded
            )
        }
    }
}
