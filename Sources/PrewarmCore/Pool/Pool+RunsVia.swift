extension Pool {
    /// Counts a drop-in run admitted to the pool by how prewarm-claude came to be run
    /// (`RunDescription.via`): shown per pool in `runs_via`.
    public func countRun(via: String) {
        state.withLock { $0.runsVia[via, default: 0] += 1 }
    }
}
