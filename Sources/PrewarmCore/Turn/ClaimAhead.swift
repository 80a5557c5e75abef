#if canImport(Glibc)
import Glibc
#endif
import Crypto
import Foundation

/// Spares claimed ahead (`claim_ahead`): a pool whose turns keep making the same
/// `claim_session` request (one directory, one session's settings) has its next spares claimed
/// with it as they start, so the CLI's claim (54-139 ms, docs/claude-cli.md §1.5)
/// is off the next turn's path.
///
/// What keeps it one caller's: a spare claimed ahead is handed only to a turn whose claim is
/// byte for byte the one it was claimed with, from the same uid (`key`); it carries nothing
/// that turn did not give it. Claims with environment variables (claimable credentials,
/// `CLAUDE_CODE_OAUTH_TOKEN`...) or in-process SDK MCP servers (their handshake follows the
/// claim and is the turn's client's) are never made ahead, nor claims in a git work tree: the
/// CLI takes its git status at the claim, which an edit since would make stale.
///
/// What keeps it fresh: the CLI reads the directory's (and its parents') project settings,
/// CLAUDE.md, AGENTS.md, `.mcp.json` and `.claude/` entries at the claim. `ClaimStamp` is
/// their `lstat`s (and the config directory's); a spare whose stamp differs at the hand-off
/// is discarded and the turn gets a spare claimed for it (as without `claim_ahead`).
public struct AheadClaim: Sendable, Equatable {
    /// SHA-256 of the caller's uid and the claim line: what a turn must match.
    public let key: String
    /// The `claim_session` line written to the spare (request id `requestID`).
    public let line: String
    /// The directory it binds the CLI to.
    public let cwd: String

    public static let requestID = "prewarm-ahead"

    /// The claim a turn would make, made ahead; nil when it may not be (see the type).
    public static func make(session: SessionSettings, cwd: String, sdkMcpServers: [String]?, caller: UInt32?) -> AheadClaim? {
        guard (session.env ?? [:]).isEmpty, (sdkMcpServers ?? []).isEmpty, session.resume == nil, let caller else { return nil }
        let line = session.claimRequest(id: requestID, cwd: cwd)
        var bytes = Array("uid \(caller)\n".utf8)
        bytes += Array(line.utf8)
        let key = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
        return AheadClaim(key: key, line: line, cwd: cwd)
    }
}

/// What the CLI reads of a directory when it is claimed there, as `lstat`s (device, inode,
/// size, mode, change and modification times): equal stamps, nothing it read changed. nil
/// when the directory is in a git work tree (the CLI's git status is taken at the claim) or
/// holds more than `maxEntries` entries to watch.
public struct ClaimStamp: Sendable, Equatable {
    struct Entry: Sendable, Equatable {
        let path: String
        /// nil: absent (or unreadable); its absence is part of the stamp.
        let stat: [Int]?
    }

    let entries: [Entry]

    /// Files the CLI reads in the claimed directory and in each parent.
    static let perDirectory = ["CLAUDE.md", "CLAUDE.local.md", "AGENTS.md", ".mcp.json", ".claude"]
    /// Inside a `.claude` directory (the project's) or the config directory (the user's).
    static let inClaude = [
        "settings.json", "settings.local.json", "CLAUDE.md", "AGENTS.md", "scheduled_tasks.json", "skills", "commands", "agents", "workflows",
        "rules", "output-styles", "hooks",
    ]
    /// Directories whose entries (two levels: `skills/NAME/SKILL.md`) are read too.
    static let listed: Set<String> = ["skills", "commands", "agents", "workflows", "rules", "output-styles"]
    static let maxEntries = 512
    /// Managed settings, read by every CLI.
    static let managed = ["/etc/claude-code/managed-settings.json", "/etc/claude-code/managed-settings.d", "/etc/claude-code/CLAUDE.md"]

    /// Takes the stamp of claiming `cwd` with `configDirectory` as `CLAUDE_CONFIG_DIR`.
    public static func take(cwd: String, configDirectory: String?) -> ClaimStamp? {
        // The directory the CLI binds to, and each directory on its path as it is named: a link
        // or directory replaced since (a swapped symlink) is another directory. Their
        // identities only (device, inode, type): their times change with every file made in them.
        var entries: [Entry] = [Entry(path: cwd + "/.", stat: identity(fileStat(cwd, follow: true)))]
        var directory = cwd
        while true {
            entries.append(Entry(path: directory, stat: identity(lstat(directory))))
            // Any git work tree above: the claim's git status could go stale.
            if lstat(directory + "/.git") != nil { return nil }
            let base = directory == "/" ? "" : directory
            for name in perDirectory { entries.append(Entry(path: base + "/" + name, stat: lstat(base + "/" + name))) }
            if isDirectory(base + "/.claude") { guard add(inside: base + "/.claude", to: &entries) else { return nil } }
            guard directory != "/" else { break }
            let parent = (directory as NSString).deletingLastPathComponent
            directory = parent.isEmpty ? "/" : parent
        }
        if let configDirectory {
            guard add(inside: configDirectory, to: &entries) else { return nil }
            // The project's memory (`projects/<cwd with every non-alphanumeric as ->/memory`).
            let slug = String(cwd.map { $0.isLetter || $0.isNumber ? $0 : "-" })
            guard list(configDirectory + "/projects/" + slug + "/memory", depth: 1, into: &entries) else { return nil }
        }
        for path in managed { entries.append(Entry(path: path, stat: lstat(path))) }
        if isDirectory("/etc/claude-code/managed-settings.d") {
            guard list("/etc/claude-code/managed-settings.d", depth: 1, into: &entries) else { return nil }
        }
        return entries.count > maxEntries ? nil : ClaimStamp(entries: entries)
    }

    private static func add(inside directory: String, to entries: inout [Entry]) -> Bool {
        for name in inClaude {
            let path = directory + "/" + name
            entries.append(Entry(path: path, stat: lstat(path)))
            if listed.contains(name), isDirectory(path), !list(path, depth: 2, into: &entries) { return false }
        }
        return entries.count <= maxEntries
    }

    /// Adds the entries under `directory` (`depth` levels), in the order the directory gives
    /// them (an entry added or removed changes the directory's own stamp anyway); false past
    /// `maxEntries`, read no further: a directory of a million entries costs 512 reads.
    private static func list(_ directory: String, depth: Int, into entries: inout [Entry]) -> Bool {
        guard depth > 0, let stream = opendir(directory) else { return true }
        defer { closedir(stream) }
        entries.append(Entry(path: directory + "/", stat: lstat(directory)))
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name == "." || name == ".." { continue }
            guard entries.count < maxEntries else { return false }
            let path = directory + "/" + name
            entries.append(Entry(path: path, stat: lstat(path)))
            if isDirectory(path), !list(path, depth: depth - 1, into: &entries) { return false }
        }
        return entries.count <= maxEntries
    }

    private static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return Glibc.lstat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    private static func identity(_ fields: [Int]?) -> [Int]? {
        fields.map { [$0[0], $0[1], $0[3] & Int(S_IFMT)] }
    }

    private static func lstat(_ path: String) -> [Int]? {
        fileStat(path, follow: false)
    }

    private static func fileStat(_ path: String, follow: Bool) -> [Int]? {
        var info = stat()
        let result = follow ? stat(path, &info) : Glibc.lstat(path, &info)
        guard result == 0 else { return nil }
        return [
            Int(info.st_dev), Int(info.st_ino), Int(info.st_size), Int(info.st_mode), info.st_mtim.tv_sec, info.st_mtim.tv_nsec,
            info.st_ctim.tv_sec, info.st_ctim.tv_nsec,
        ]
    }
}

/// What a `claim_ahead` pool's turns claim, and so what its next spares are claimed with: the
/// claim of two turns in a row (a pool serving one application in one directory), else none.
/// A turn with another claim, or one that may not be made ahead, ends the plan at once: the
/// spares start unclaimed again, and a turn of another claim finds a spare that serves it.
struct ClaimAheadPlanner: Sendable {
    /// The claim new spares are claimed with; nil: they start unclaimed.
    private(set) var plan: AheadClaim?
    private var last: String?
    /// Turns a spare claimed ahead served, and spares claimed ahead discarded at a hand-off.
    var hits = 0
    var discarded = 0

    /// A turn with a claim took (or waits for) one of the pool's spares.
    mutating func turnArrived(_ ahead: AheadClaim?) {
        plan = ahead != nil && ahead?.key == last ? ahead : nil
        last = ahead?.key
    }
}
