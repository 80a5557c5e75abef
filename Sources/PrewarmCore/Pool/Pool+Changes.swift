import Foundation
import Logging

extension Pool {
    // MARK: - Claude pools

    /// A claude pool's directories, and whether its CLI knows `--await-claim`.
    func prepareClaude() async {
        let config = self.config
        let prepared = await prepared(config)
        guard prepared != config else { return }
        state.withLock { state in
            state.config = prepared
            state.machine.settings.universalSpares = prepared.machineSettings.universalSpares
        }
    }

    /// `config` made ready to run: a claude pool's directories created, and, when its CLI does
    /// not know `--await-claim`, its spares bound to the pool's session (they then serve only
    /// turns that share it).
    func prepared(_ config: PoolConfig) async -> PoolConfig {
        guard let claude = config.claude else { return config }
        // Made and checked (the daemon checked the file's pools before it served; a fingerprint
        // pool's are made here, in the checked state directory).
        var directories = [claude.configDirectory, claude.parkingDirectory] + [config.privateDirectories?.root].compactMap({ $0 })
        if config.universalSpares > 0 { directories.append(config.universalRoot) }
        for directory in directories {
            do throws(PrewarmError) {
                try TrustedDirectory.prepare(directory, purpose: "pool \(config.name)'s files")
            } catch {
                logger.error("a pool's directory is not safe to use", metadata: ["pool.name": "\(config.name)", "error": "\(error.message)"])
            }
        }
        var config = config
        if config.universalSpares > 0 {
            let problem = await ClaudeProbe.bgSpareProblem(
                executable: config.executable, environment: config.childEnvironment(from: environment), root: config.universalRoot
            )
            config.universalSupported = problem == nil
            if let problem {
                logger.warning(
                    "the CLI does not support --bg-spare: no universal spares; turns no spare serves start cold",
                    metadata: ["pool.command": "\(config.executable)", "reason": "\(problem)"]
                )
            }
        }
        // A fingerprint pool starts no spare until its fingerprint is seen again: the probe
        // waits for that (`promote`).
        guard claude.claim, !(config.fingerprint != nil && config.spares == 0) else { return config }
        let supported = await ClaudeProbe.knowsAwaitClaim(executable: config.executable, environment: config.childEnvironment(from: environment))
        guard !supported else { return config }
        logger.warning(
            "the CLI does not know --await-claim: spares start bound to the pool's session; turns with other settings start cold",
            metadata: ["pool.command": "\(config.executable)"]
        )
        var bound = config
        bound.claude?.claimSupported = false
        bound.args = claude.arguments(for: claude.session)
        bound.cwd = claude.session.cwd
        return bound
    }

    // MARK: - Changes at run time

    /// Replaces every idle spare (and start-up under way) with one started now: after a CLI
    /// upgrade or a credential rotation. Busy turns go on. Returns the spares recycled.
    @discardableResult
    public func recycle(reason: String) -> Int {
        let (recycled, actions) = mutate { state in
            state.commandFile = FileIdentity(path: state.config.executable)
            return state.machine.recycle(now: .now)
        }
        perform(actions)
        logger.info("spares recycled", metadata: ["reason": "\(reason)", "pool.recycled": "\(recycled)"])
        return recycled
    }

    /// The pool's CLI as `prewarm sdk install` left it: an SDK's bundled CLI replaced by the
    /// drop-in since the pool started runs its `claude.real`, and one put back runs the
    /// bundled path again. Returns a reason when the executable changed (the caller recycles).
    func followInstalledCLI() -> String? {
        let config = self.config
        let wanted: (executable: String, installedAt: String?)
        if let installedAt = config.installedAt {
            guard CLIReplacement.realCLI(installedAt: installedAt) == nil else { return nil }
            wanted = (installedAt, nil)
        } else {
            guard config.kind == .claude, let real = CLIReplacement.realCLI(installedAt: config.executable) else { return nil }
            wanted = (real, config.executable)
        }
        state.withLock { state in
            state.config.executable = wanted.executable
            state.config.installedAt = wanted.installedAt
            state.configured.executable = wanted.executable
            state.configured.installedAt = wanted.installedAt
        }
        return wanted.installedAt == nil
            ? "prewarm sdk uninstall put the SDK's CLI back: \(wanted.executable)"
            : "prewarm sdk install put the drop-in in place of the SDK's CLI: its spares run \(wanted.executable)"
    }

    /// True when the command file is not the one the spares were started from (a CLI
    /// upgrade). A missing file (mid-upgrade) is not a change yet.
    func commandFileChanged() -> Bool {
        let (path, known) = state.withLock { ($0.config.executable, $0.commandFile) }
        guard let current = FileIdentity(path: path) else { return false }
        return current != known
    }

    /// What a reload did to this pool.
    public enum Reload: Sendable, Equatable {
        case unchanged
        /// Only the size set at run time went back to the file's.
        case sizeRestored(from: Int, to: Int)
        /// New settings; the idle spares were recycled.
        case changed(recycled: Int)
    }

    /// Applies a reloaded `[[pool]]`: a changed pool gets its new settings and new spares
    /// (busy turns go on as they were); an unchanged one only loses a size set at run time.
    public func reload(_ config: PoolConfig) async -> Reload {
        let (configured, runtime) = state.withLock { ($0.configured, $0.runtimeSpares) }
        if config == configured {
            guard let runtime, runtime != config.spares else {
                state.withLock { $0.runtimeSpares = nil }
                return .unchanged
            }
            resize(spares: config.spares, atRunTime: false)
            return .sizeRestored(from: runtime, to: config.spares)
        }
        let prepared = await prepared(config)
        let (recycled, actions) = mutate { state in
            state.configured = config
            state.config = prepared
            state.runtimeSpares = nil
            state.commandFile = FileIdentity(path: prepared.executable)
            var settings = prepared.machineSettings
            settings.costs = state.machine.settings.costs
            return state.machine.reconfigure(settings, now: .now)
        }
        perform(actions)
        return .changed(recycled: recycled)
    }

    /// Counts a turn against `max_turns_per_minute` for its caller; 429 `rate_limited` with
    /// Retry-After when the caller has used the minute's turns.
    public func admit(caller uid: UInt32?) throws(PrewarmError) {
        let now = ContinuousClock.now
        let refusal = state.withLock { state -> (limit: Int, retryAfter: Int)? in
            guard let limit = state.config.maxTurnsPerMinute else { return nil }
            return state.rateLimiter.admit(caller: uid ?? UInt32.max, limit: limit, now: now)
        }
        if let refusal {
            throw PrewarmError(
                .rateLimited,
                "uid \(uid.map(String.init) ?? "unknown") has used pool \(name)'s \(refusal.limit) turns a minute (max_turns_per_minute); retry after \(refusal.retryAfter) s",
                retryAfter: refusal.retryAfter
            )
        }
    }

    /// Stops taking turns; idle spares and start-ups are retired, busy turns go on.
    public func drain() {
        perform(mutate { $0.machine.drain(now: .now) })
    }

    /// Retires every process, busy or not (the end of a drain).
    public func retireAll() {
        let processes = state.withLock { Array($0.processes.values) }
        for process in processes { process.retire() }
    }

    /// Winds the pool down (a fingerprint pool chosen for removal): it keeps no spares from
    /// now on, and its busy and waiting turns go on to their end, never killed or refused.
    /// `waitUntilEmpty` returns once they have.
    func close() {
        perform(
            mutate { state in
                state.closing = true
                state.config.spares = 0
                state.config.resumeSpares = nil
                state.config.universalSpares = 0
                return state.machine.close(now: .now)
            }
        )
    }

    /// A fingerprint pool's fingerprint was seen again: it starts its spares (after the
    /// claim probe its start skipped).
    func promote(spares: Int) async {
        let config = self.config
        var wanted = config
        wanted.spares = spares
        let prepared = await prepared(wanted)
        state.withLock { state in
            state.config.claude = prepared.claude
            state.config.args = prepared.args
            state.config.cwd = prepared.cwd
        }
        // A pool closed while its probe ran stays without spares (resize checks).
        resize(spares: spares, atRunTime: false)
    }

    /// Waits until no process is left, or `timeout` passes; true if none is left.
    public func waitUntilEmpty(timeout: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let empty = self.state.withLock { state -> Bool in
                        if state.processes.isEmpty { return true }
                        state.emptyWaiters.append(continuation)
                        return false
                    }
                    if empty { continuation.resume() }
                }
                return true
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next()!
            if !first {
                // Release the waiter that will never be resumed otherwise.
                let waiters = state.withLock { state in
                    defer { state.emptyWaiters.removeAll() }
                    return state.emptyWaiters
                }
                for waiter in waiters { waiter.resume() }
            }
            group.cancelAll()
            return first && state.withLock { $0.processes.isEmpty }
        }
    }

    /// Sets the spares target at run time (until the next reload): a fixed pool's size, an
    /// auto pool's floor. Returns what it did, for the answer.
    @discardableResult
    public func resize(spares: Int) -> String {
        resize(spares: spares, atRunTime: true)
        guard let minSpares = state.withLock({ $0.configured.autoSizing != nil ? $0.configured.spares : nil }) else {
            return "pool \(name) keeps \(spares) spares until the next reload"
        }
        return "pool \(name) sizes itself (spares = \"auto\"): \(spares) is its floor until the next reload, in place of min_spares \(minSpares); "
            + "prewarm resize \(name) auto goes back to min_spares"
    }

    /// `prewarm resize POOL auto`: an auto pool's floor back to `min_spares`. A fixed pool is
    /// refused: whether a pool sizes itself is the configuration's to say.
    public func resumeAutoSizing() throws(PrewarmError) -> String {
        let configured = state.withLock { $0.configured }
        guard configured.autoSizing != nil else {
            throw PrewarmError(
                .badJSON,
                "pool \(name) has a fixed size (spares = \(configured.spares) in the configuration); \"auto\" is for pools configured with spares = \"auto\": set it there and reload"
            )
        }
        resize(spares: configured.spares, atRunTime: false)
        return "pool \(name) sizes itself from min_spares \(configured.spares)"
    }

    func resize(spares: Int, atRunTime: Bool) {
        perform(
            mutate { state in
                // A closing fingerprint pool keeps no spares, whatever asks for them.
                guard !state.closing else { return [] }
                state.config.spares = spares
                state.runtimeSpares = atRunTime ? spares : nil
                return state.machine.resize(spares: spares, maxProcesses: state.config.maxProcesses, now: .now)
            }
        )
        if atRunTime { logger.info("pool resized; the size lasts until the next reload", metadata: ["pool.spares": "\(spares)"]) }
    }
}
