#if canImport(Glibc)
import Glibc
#endif
import Logging

/// Resume spares at run time (the decisions are PoolStateMachine+Resume's): which session's
/// transcript each one resumes, and its identity once the spare is ready, checked again at
/// hand-off so that a session continued elsewhere (another host, another process) is never
/// served from a spare that loaded an older transcript.
struct ResumeSpareFile: Sendable {
    let transcript: String
    /// The transcript when the spare was asked for (its session's last turn over).
    let before: FileIdentity?
    /// The transcript as it was when the spare became ready (a resuming CLI sets its mtime
    /// while it loads: docs/claude-cli.md §7); nil before, and nil for good if its contents
    /// changed while the spare loaded it (size or file: the spare may have read either).
    var identity: FileIdentity?
}

extension Pool {
    /// A turn's process is gone: if the turn ended in a session a resume spare can serve, one
    /// is started for that session's next turn (the machine decides whether it fits).
    func turnProcessGone(_ turn: Turn) {
        guard let source = turn.resume, source.config.resumeSpares != nil, let session = turn.sessionID, Self.plausibleSession(session) else { return }
        switch turn.peekResult?.outcome {
        case .completed?, .exited?: break
        default: return  // killed, timed out: no conversation to go on with
        }
        guard let key = source.key(session: session) else { return }
        var config = source.config
        config.args = ResumeKey.spareArguments(from: source.run.argv, session: session)
        config.retireAtOnce = true
        if config.ready.send == nil {
            // A drop-in run's process reads the run's own `initialize` first: the spare is
            // ready when it answers the version probe (by then it has loaded the transcript).
            config.ready = PoolConfig.Readiness(send: PoolConfig.ClaudeSettings.versionProbe, expect: #""request_id":"prewarm-ready""#, timeout: config.ready.timeout)
        }
        guard let cwd = config.cwd,
            let transcript = SessionTranscript.path(sessionID: session, cwd: cwd, env: config.childEnvironment(from: environment)),
            let before = FileIdentity(path: transcript)
        else {
            logger.debug("no resume spare: the session's transcript is not where the CLI keeps it", metadata: ["session.id": "\(session)"])
            return
        }
        let actions = mutate { state -> [PoolStateMachine.Action] in
            state.resumeLaunches[key] = (config, transcript, before)
            let actions = state.machine.resumeWanted(key, now: .now).1
            // Settings of spares no longer wanted (replaced, expired) are let go; those of
            // spares started by these actions are taken when they are performed.
            let live = Set(state.machine.wantedResumeKeys).union(state.machine.resumeKeys)
            state.resumeLaunches = state.resumeLaunches.filter { live.contains($0.key) }
            return actions
        }
        perform(actions)
    }

    /// Whether a resume spare (starting or ready) is held for `key`.
    public func holdsResumeSpare(_ key: ResumeKey) -> Bool {
        state.withLock { $0.machine.resumeSpare(for: key) != nil }
    }

    /// The settings a resume spare starts with, taken when its start-up is performed.
    static func takeResumeLaunch(_ state: inout State, spare: SpareID) -> PoolConfig? {
        guard let key = state.machine.resumeKey(of: spare), let (config, transcript, before) = state.resumeLaunches.removeValue(forKey: key) else { return nil }
        state.resumeFiles[spare] = ResumeSpareFile(transcript: transcript, before: before)
        return config
    }

    /// A session id as the CLI makes them (a UUID; at most 128 of letters, digits, `-`, `_`):
    /// anything else never names a file to watch.
    static func plausibleSession(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 128 && id.utf8.allSatisfy { byte in
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || byte == 0x2D || byte == 0x5F
        }
    }

    /// A resume spare about to be reported ready: its transcript now (read before the locked
    /// step that reports it, so no turn ever sees it ready without it); nil for other processes.
    func resumeTranscriptAtReadiness(_ id: SpareID) -> FileIdentity?? {
        guard let transcript = state.withLock({ $0.resumeFiles[id]?.transcript }) else { return nil }
        return .some(FileIdentity(path: transcript))
    }

    /// Records a ready resume spare's transcript: the identity it serves from now on, if only
    /// its mtime changed since the spare was asked for (the CLI's own touch while loading).
    static func recordResumeTranscript(_ state: inout State, spare: SpareID, now: FileIdentity?) {
        guard let file = state.resumeFiles[spare], let now, let before = file.before, now.sameContents(as: before) else { return }
        state.resumeFiles[spare]?.identity = now
    }

    /// What a resumed turn's arrival is told of its session's resume spare.
    struct ResumeCheck {
        let spare: SpareID
        let fresh: Bool
        /// Why it is stale, for the log; nil when fresh.
        let staleNote: String?
    }

    /// The ready resume spare held for `key`, checked against its transcript; nil when none
    /// is ready. The stat runs outside every lock; the locked step trusts it only for the
    /// same spare.
    func checkResumeSpare(_ key: ResumeKey) -> ResumeCheck? {
        let held = state.withLock { state -> (SpareID, ResumeSpareFile)? in
            guard let (spare, ready) = state.machine.resumeSpare(for: key), ready, let file = state.resumeFiles[spare] else { return nil }
            return (spare, file)
        }
        guard let (spare, file) = held else { return nil }
        let now = FileIdentity(path: file.transcript)
        guard let identity = file.identity, now == identity else {
            let was = file.identity.map { "\($0)" } ?? "changed while it loaded"
            return ResumeCheck(spare: spare, fresh: false, staleNote: "transcript \(file.transcript): \(was) at readiness, \(now.map { "\($0)" } ?? "gone") now")
        }
        return ResumeCheck(spare: spare, fresh: true, staleNote: nil)
    }
}
