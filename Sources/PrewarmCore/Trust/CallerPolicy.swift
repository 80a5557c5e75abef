#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// What a caller of another uid (not the daemon's, not root) may ask of a claude pool's turn
/// (README.md, "Trust model"). Socket access is the daemon user's rights already: these are
/// defence in depth, each refused with 403 `forbidden` naming the field.
///
/// - `session.env`: never a name of the fixed deny list (no configuration lifts it: the
///   loader, the shell, the CLI's runtime, its configuration and the model's address), and
///   other names only from the pool's `caller_env`;
/// - `session.cwd`, `session.additional_directories`: only under the pool's `caller_roots`,
///   judged on their real paths (links resolved);
/// - `session.permission_mode`: only from the pool's `caller_permission_modes`;
/// - `session.resume`: only sessions that uid's own turns made (`SessionOwners`);
/// - the body: `{"prompt", "session"}` only, never raw stream-json lines (which could carry
///   control requests past these checks).
public struct CallerPolicy: Sendable, Equatable {
    /// `caller_env`: variable names other uids may set (never one of `denied`).
    public var env: Set<String> = []
    /// `caller_roots`: directories other uids' turns may run in (real paths).
    public var roots: [String] = []
    /// `caller_permission_modes`.
    public var permissionModes: Set<String> = []

    public init(env: Set<String> = [], roots: [String] = [], permissionModes: Set<String> = []) {
        self.env = env
        self.roots = roots
        self.permissionModes = permissionModes
    }

    /// Whether `uid` is held to the policy: anyone but the daemon's uid and root.
    public static func applies(to uid: UInt32?) -> Bool {
        guard let uid else { return true }
        return uid != 0 && uid != getuid()
    }

    /// Names no caller of another uid may set, whatever the configuration says.
    public static func isDenied(_ name: String) -> Bool {
        if name.hasPrefix("LD_") || name.hasPrefix("BUN_") || name.hasPrefix("SSL_CERT_") { return true }
        if name.hasSuffix("_PROXY") || name.hasSuffix("_proxy") { return true }
        return ["NODE_OPTIONS", "PATH", "HOME", "CLAUDE_CONFIG_DIR", "ANTHROPIC_BASE_URL", "NODE_EXTRA_CA_CERTS"].contains(name)
    }

    /// Checks a turn's session from a caller of another uid; returns it with its directories
    /// replaced by the real paths that were checked (a link the caller swaps afterwards is
    /// not followed then; a directory of its own it renames still could be: the CLI takes a
    /// path, not a descriptor).
    public func check(_ session: SessionSettings, caller: UInt32?, owners: SessionOwners) throws(PrewarmError) -> SessionSettings {
        for name in (session.env ?? [:]).keys.sorted() {
            if Self.isDenied(name) {
                throw PrewarmError(.forbidden, "session.env: \(name) is never set by a caller of another uid", field: "session.env.\(name)")
            }
            if !env.contains(name) {
                throw PrewarmError(
                    .forbidden, "session.env: \(name) is not in the pool's caller_env; the daemon's operator can add it", field: "session.env.\(name)"
                )
            }
        }
        var checked = session
        if let cwd = session.cwd { checked.cwd = try checkDirectory(cwd, field: "session.cwd") }
        if let directories = session.additionalDirectories {
            var real: [String] = []
            for (index, directory) in directories.enumerated() {
                real.append(try checkDirectory(directory, field: "session.additional_directories[\(index)]"))
            }
            checked.additionalDirectories = real
        }
        if let mode = session.permissionMode, !permissionModes.contains(mode) {
            throw PrewarmError(
                .forbidden, "session.permission_mode \(mode) is not in the pool's caller_permission_modes", field: "session.permission_mode"
            )
        }
        if let resume = session.resume, owners.owner(of: resume) != caller {
            throw PrewarmError(.forbidden, "session.resume: session \(resume) was not made by this uid's turns", field: "session.resume")
        }
        return checked
    }

    /// `path` resolved (links and all) lies under one of `roots` (themselves resolved); its
    /// real path.
    private func checkDirectory(_ path: String, field: String) throws(PrewarmError) -> String {
        guard let real = Self.realPath(path) else {
            throw PrewarmError(.forbidden, "\(field): \(path) does not exist or cannot be resolved", field: field)
        }
        for root in roots {
            guard let realRoot = Self.realPath(root) else { continue }
            if real == realRoot || real.hasPrefix(realRoot == "/" ? "/" : realRoot + "/") { return real }
        }
        throw PrewarmError(
            .forbidden, "\(field): \(path) is not under the pool's caller_roots\(roots.isEmpty ? " (none set)" : ": " + roots.joined(separator: ", "))",
            field: field
        )
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

/// Which uid's turns made each session (the `session_id` of their `result`), so a caller of
/// another uid resumes only its own: kept in memory (the journal may be off), the most recent
/// `capacity` sessions.
public final class SessionOwners: Sendable {
    private struct State {
        var owners: [String: UInt32] = [:]
        var order: [String] = []
    }

    private let state = Mutex(State())
    let capacity: Int

    public init(capacity: Int = 100_000) {
        self.capacity = capacity
    }

    /// `session` was made (or continued) by a turn of `uid`. The first owner keeps it.
    public func record(_ session: String, uid: UInt32?) {
        guard let uid, !session.isEmpty else { return }
        state.withLock { state in
            guard state.owners[session] == nil else { return }
            state.owners[session] = uid
            state.order.append(session)
            if state.order.count > capacity {
                let dropped = state.order.count - capacity
                for old in state.order.prefix(dropped) { state.owners[old] = nil }
                state.order.removeFirst(dropped)
            }
        }
    }

    public func owner(of session: String) -> UInt32? {
        state.withLock { $0.owners[session] }
    }
}
