import Crypto
import Foundation

/// What a claude pool's spares are, as far as serving a drop-in run goes: their host part
/// (command line and environment, fixed at spawn), whether they are claimed, and the session
/// they have when they are not.
public struct RunProfile: Sendable, Equatable {
    public var pool: String
    public var shape: RunShape
    public var hostEnvironment: [String: String]
    /// The CLI's file: a caller whose real CLI is another file (another version) is not served.
    public var executable: FileIdentity?
    public var claimed: Bool
    /// Spares start with `CLAUDE_CODE_SDK_READS_SESSION_STATE` set.
    public var sessionState: Bool
    /// The pool initialized its spares (`initialize = true`): the caller's `initialize` is
    /// then a repeat, which the CLI applies only in part.
    public var initialized: Bool
    /// The names the pool's own `env` and `pass_env` give: counted as host variables.
    public var extraNames: Set<String>

    /// The profile of a claude pool; nil for other pools.
    public init?(config: PoolConfig, daemonEnvironment: [String: String]) {
        guard let claude = config.claude else { return nil }
        pool = config.name
        claimed = claude.claim && claude.claimSupported
        let environment = config.childEnvironment(from: daemonEnvironment)
        extraNames = Set(config.env.keys).union(config.passEnv)
        hostEnvironment = HostEnvironment.of(environment, extra: extraNames)
        sessionState = HostEnvironment.wantsSessionState(environment)
        initialized = claude.initialize
        executable = FileIdentity(path: config.executable)
        var args = config.args
        args.removeAll { $0 == "--await-claim" }
        shape = RunShape(arguments: args, cwd: claimed ? nil : claude.defaultCwd, env: environment)
    }
}

/// How a run is served by one pool: claimed or not, what is written before the caller's
/// bytes, and what of the process's output the caller must not see.
public struct RunPlan: Sendable, Equatable {
    public var pool: String
    public var claimed: Bool
    /// The claim's session (cwd, prompts, permission mode, directories, claimable env).
    public var session: SessionSettings
    public var sdkMcpServers: [String]?
    /// `set_model` after the claim, when the caller names a model.
    public var model: String?
    public var filter: RunOutputFilter.Rules
}

/// Decides which pool, if any, serves a run warm: the pure part of `POST /v1/runs`.
public enum RunMatcher {
    /// The plan for `shape` on `profile`, or why that pool cannot serve it.
    public static func plan(
        _ shape: RunShape, env: [String: String], cli: FileIdentity?, on profile: RunProfile
    ) -> Result<RunPlan, Mismatch> {
        if let reason = shape.coldReasons.first { return .failure(Mismatch(pool: profile.pool, reason: reason)) }
        if profile.initialized {
            // A run's own `initialize` must be its process's first: a repeat applies only hooks,
            // SDK MCP servers and the title (not agents, skills, prompts...). docs/claude-cli.md §2.4.
            return .failure(Mismatch(pool: profile.pool, reason: "the pool initializes its spares (initialize = false serves runs)"))
        }
        if let cli, let executable = profile.executable, cli != executable {
            return .failure(Mismatch(pool: profile.pool, reason: "the caller's CLI is another file than the pool's command"))
        }
        // Host: equal, but for what the daemon can take away again.
        if shape.host != profile.shape.host {
            let differing = Set(shape.host.keys).symmetricDifference(profile.shape.host.keys)
                .union(shape.host.keys.filter { profile.shape.host[$0] != nil && profile.shape.host[$0] != shape.host[$0] })
            return .failure(Mismatch(pool: profile.pool, reason: "host options differ: \(differing.sorted().joined(separator: " "))"))
        }
        if shape.partialMessages && !profile.shape.partialMessages {
            return .failure(Mismatch(pool: profile.pool, reason: "the caller wants --include-partial-messages, the pool's spares do not give them"))
        }
        let callerHost = HostEnvironment.of(env, extra: profile.extraNames)
        if callerHost != profile.hostEnvironment {
            let names = Set(callerHost.keys).union(profile.hostEnvironment.keys).filter { callerHost[$0] != profile.hostEnvironment[$0] }
            return .failure(Mismatch(pool: profile.pool, reason: "host environment differs: \(names.sorted().joined(separator: " "))"))
        }
        let wantsState = HostEnvironment.wantsSessionState(env)
        if wantsState && !profile.sessionState {
            return .failure(Mismatch(pool: profile.pool, reason: "the caller reads session state, the pool's spares do not write it"))
        }
        // Session: what the spare already has, the claim cannot take away.
        let missing = profile.shape.sessionFlags.subtracting(shape.sessionFlags).subtracting(["--model"])
        if !missing.isEmpty {
            return .failure(Mismatch(pool: profile.pool, reason: "the pool's spares start with \(missing.sorted().joined(separator: " ")), which the caller does not give"))
        }
        if profile.shape.model != nil && shape.model == nil {
            return .failure(Mismatch(pool: profile.pool, reason: "the pool's spares start with a --model, the caller wants the default"))
        }
        if !profile.claimed {
            var theirs = profile.shape.session
            theirs.env = nil
            var ours = shape.session
            let claimable = ours.env
            ours.env = nil
            if theirs != ours || profile.shape.sdkMcpServers != shape.sdkMcpServers {
                return .failure(Mismatch(pool: profile.pool, reason: "unclaimed spares serve only their own session (cwd, prompts, permission mode, directories)"))
            }
            if (claimable ?? [:]) != (profile.shape.session.env ?? [:]) {
                return .failure(Mismatch(pool: profile.pool, reason: "unclaimed spares keep their own credentials (CLAUDE_CODE_OAUTH_TOKEN...)"))
            }
        } else if let mcp = shape.sdkMcpServers, mcp != profile.shape.sdkMcpServers, profile.shape.sdkMcpServers != nil {
            return .failure(Mismatch(pool: profile.pool, reason: "the pool's spares have other SDK MCP servers"))
        }
        let filter = RunOutputFilter.Rules(
            dropPartialMessages: profile.shape.partialMessages && !shape.partialMessages,
            dropSessionState: profile.sessionState && !wantsState
        )
        return .success(
            RunPlan(
                pool: profile.pool, claimed: profile.claimed, session: shape.session,
                sdkMcpServers: profile.claimed ? shape.sdkMcpServers : nil,
                model: shape.model == profile.shape.model ? nil : shape.model, filter: filter
            )
        )
    }

    /// Everything of a run's host part that differs from a pool's spares, as names (options,
    /// `$VARIABLES`, settings), never values: what an operator changes in that pool (`args`,
    /// `pass_env`, `env`...) for such runs to be served by it. Empty when only the session
    /// differs (a claim can apply it).
    public static func differences(_ shape: RunShape, env: [String: String], cli: FileIdentity?, on profile: RunProfile) -> [String] {
        var names: [String] = []
        if profile.initialized { names.append("initialize") }
        if let cli, let executable = profile.executable, cli != executable { names.append("command") }
        let hostKeys = Set(shape.host.keys).union(profile.shape.host.keys).filter { shape.host[$0] != profile.shape.host[$0] }
        names += hostKeys.sorted()
        if shape.partialMessages && !profile.shape.partialMessages { names.append("--include-partial-messages") }
        let callerHost = HostEnvironment.of(env, extra: profile.extraNames)
        let variables = Set(callerHost.keys).union(profile.hostEnvironment.keys).filter { callerHost[$0] != profile.hostEnvironment[$0] }
        names += variables.sorted().map { "$" + $0 }
        if HostEnvironment.wantsSessionState(env) && !profile.sessionState { names.append("$" + HostEnvironment.readsSessionState) }
        let missing = profile.shape.sessionFlags.subtracting(shape.sessionFlags).subtracting(["--model"])
        names += missing.sorted()
        if profile.shape.model != nil && shape.model == nil { names.append("--model") }
        return names
    }

    /// The configured pool whose spares are nearest to serving a run: the fewest differences
    /// (`differences`), the first in the file on a tie; nil when there is no claude pool.
    public static func nearest(
        _ shape: RunShape, env: [String: String], cli: FileIdentity?, among profiles: [RunProfile]
    ) -> (pool: String, differences: [String])? {
        var best: (pool: String, differences: [String])?
        for profile in profiles {
            let found = differences(shape, env: env, cli: cli, on: profile)
            if best == nil || found.count < best!.differences.count { best = (profile.pool, found) }
        }
        return best
    }

    /// Why one pool does not serve a run (logged at debug, for "why was this cold?").
    public struct Mismatch: Error, Sendable, Equatable {
        public var pool: String
        public var reason: String
    }

    /// The fingerprint of a run's host part: equal for runs one spare could serve. Every part
    /// is length-prefixed, so no value can pass for another part's boundary.
    public static func fingerprint(_ shape: RunShape, env: [String: String], executable: String) -> String {
        var parts = ["exe", executable]
        for (name, values) in shape.host.sorted(by: { $0.key < $1.key }) { parts += ["opt", name, String(values.count)] + values }
        if shape.partialMessages { parts.append("partial") }
        for (name, value) in HostEnvironment.of(env).sorted(by: { $0.key < $1.key }) { parts += ["env", name, value] }
        if HostEnvironment.wantsSessionState(env) { parts.append("session-state") }
        return parts.map { "\($0.utf8.count):\($0)" }.joined()
    }

    /// The key runs are routed by: the fingerprint's SHA-256 (64 hex digits). Two host parts
    /// share a pool only if they are equal, not if a shorter hash of theirs collides.
    public static func fingerprintKey(_ fingerprint: String) -> String {
        SHA256.hash(data: Array(fingerprint.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// A pool name for a fingerprint's key: `fp-` and its first 32 hex digits (a name shown in
    /// the API, metrics and the journal, never used to route; the values it covers never show).
    public static func poolName(key: String) -> String {
        "fp-" + key.prefix(32)
    }
}
