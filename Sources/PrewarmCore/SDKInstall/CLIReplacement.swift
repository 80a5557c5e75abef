#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// One directory's `claude` replaced by `prewarm-claude`, the original kept beside it as
/// `claude.real` (which `prewarm-claude` started as `DIR/claude` runs as the real CLI): an
/// SDK's `_bundled` directory (`prewarm sdk install`), or a directory on `PATH`
/// (`--path-dir`).
///
/// Every change is a rename(2) over a name, so that whoever starts `DIR/claude` at any
/// instant, and whatever instant the change is cut at, finds a working CLI: the original is
/// hard-linked to `claude.real` first, the drop-in is made under a temporary name, a record
/// of what is being installed is written, and only then is the drop-in renamed over `claude`.
/// Uninstalling renames `claude.real` back over `claude`. The directory is locked (flock)
/// while it changes.
public struct CLIReplacement: Sendable {
    public let directory: String

    public init(directory: String) {
        self.directory = directory
    }

    public static let recordName = ".claude.prewarm.json"
    static let temporaryPrefix = ".claude.prewarm-tmp-"

    public var cli: String { directory + "/claude" }
    public var real: String { directory + "/claude.real" }
    public var recordPath: String { directory + "/" + Self.recordName }

    /// How the drop-in was put in place.
    public enum Method: String, Sendable, Codable {
        /// A hard link to prewarm-claude.
        case link
        /// A copy of it (another filesystem, or a file the link is not allowed to).
        case copy
        /// A symbolic link to it (`--path-dir`: it follows an upgrade of prewarm-claude).
        case symlink
    }

    /// What was installed, kept beside it (`.claude.prewarm.json`), so that `status` can
    /// tell the installed drop-in from a CLI that a reinstall of the package put back.
    public struct Record: Sendable, Codable, Equatable {
        public var format = 1
        /// The prewarm-claude it was installed from.
        public var dropIn: String
        public var method: Method
        /// `claude` as installed (lstat).
        public var installed: FileStamp
        /// The original `claude`, now `claude.real`; nil where there was none (`--path-dir`).
        public var original: FileStamp?
        /// The package's version and its CLI's, when installed.
        public var sdkVersion: String?
        public var cliVersion: String?
        public var installedAt: String

        enum CodingKeys: String, CodingKey {
            case format, method, installed, original
            case dropIn = "drop_in"
            case sdkVersion = "sdk_version"
            case cliVersion = "cli_version"
            case installedAt = "installed_at"
        }
    }

    /// The directory as it is now.
    public enum State: Sendable, Equatable {
        /// No `claude`, nothing of ours.
        case absent
        /// `claude` is not prewarm-claude, and nothing says it ever was.
        case original
        /// `claude` is prewarm-claude; `current`: the very prewarm-claude given (not an older copy).
        case installed(Record, current: Bool)
        /// The record is there but `claude` is still the original (the same file as
        /// `claude.real`): an install cut before its last step.
        case interrupted(Record)
        /// The record is there but `claude` is another file than the installed one and than
        /// `claude.real`: a reinstall or upgrade of the package put its own CLI back. It runs
        /// cold.
        case overwritten(Record)
        /// The record and `claude.real` are there, `claude` is gone: the package was
        /// uninstalled around them.
        case orphaned(Record)
        /// `claude` is prewarm-claude but the original it should run is gone.
        case damaged(Record?, String)
    }

    /// What an install or an uninstall did.
    public enum Change: String, Sendable, Equatable {
        case installed
        /// Installed again over the CLI a reinstall of the package put back.
        case reinstalled
        /// An older prewarm-claude replaced by the one given.
        case updated
        case unchanged
        /// The original put back.
        case restored
        /// What an overwritten or interrupted install left (`claude.real`, the record) removed.
        case cleaned
        case nothingInstalled = "nothing_installed"
    }

    // MARK: - Reading

    /// `DIR/claude.real` when `path` is a `DIR/claude` that an install replaced with
    /// prewarm-claude: the CLI a pool configured with that path must run (a pool of the drop-in
    /// would call itself).
    public static func realCLI(installedAt path: String) -> String? {
        guard path.hasSuffix("/claude") else { return nil }
        let replacement = CLIReplacement(directory: String(path.dropLast("/claude".count)))
        guard case .installed(let record, _) = replacement.state(dropIn: nil), record.original != nil else { return nil }
        return replacement.real
    }

    /// The record, if there is one and it parses.
    /// Read without following a link, from a regular file only, at most 64 KiB: the daemon
    /// reads it for every claude pool on each command check, and a FIFO or a link to
    /// /dev/zero planted there must not stall it.
    public func record() -> Record? {
        let fd = open(recordPath, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_size <= Self.maxRecordBytes else { return nil }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        let count = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard count == bytes.count else { return nil }
        return try? JSONDecoder().decode(Record.self, from: Data(bytes))
    }

    static let maxRecordBytes = 64 << 10

    /// The directory's state; `dropIn` is the prewarm-claude an install would put in place
    /// (to tell it from an older one), if known.
    public func state(dropIn: String?) -> State {
        let record = record()
        let dropInStamp = dropIn.flatMap { FileStamp(path: $0, following: true) }
        guard let current = FileStamp(path: cli) else {
            if let record, FileStamp(path: real) != nil { return .orphaned(record) }
            return .absent
        }
        let realStamp = FileStamp(path: real)
        if isDropIn(current, record: record, dropIn: dropIn, dropInStamp: dropInStamp) {
            if let record, record.original != nil, realStamp == nil {
                return .damaged(record, "\(real), the original CLI, is gone")
            }
            if record == nil && realStamp == nil {
                return .damaged(nil, "\(cli) is prewarm-claude with no original CLI beside it (no \(real))")
            }
            let fresh = dropIn.map { isSame(current, asDropIn: $0, stamp: dropInStamp) } ?? true
            let installed = record ?? Record(dropIn: dropIn ?? "", method: .link, installed: current, original: realStamp, installedAt: "")
            return .installed(installed, current: fresh)
        }
        guard let record else { return .original }
        if let realStamp, realStamp.sameFile(as: current) { return .interrupted(record) }
        return .overwritten(record)
    }

    /// Whether `stamp` (of `claude`, lstat) is prewarm-claude: the installed file the record
    /// names (a copy unchanged since), the same file as the drop-in, or a copy of it.
    func isDropIn(_ stamp: FileStamp, record: Record?, dropIn: String?, dropInStamp: FileStamp?) -> Bool {
        if let record {
            if record.method == .copy ? record.installed.sameVersion(as: stamp) : record.installed.sameFile(as: stamp) { return true }
        }
        guard let dropIn else { return false }
        return isSame(stamp, asDropIn: dropIn, stamp: dropInStamp)
    }

    /// Whether `claude` is the very prewarm-claude at `dropIn` (the same file, a link to it,
    /// or a copy with the same bytes).
    func isSame(_ stamp: FileStamp, asDropIn dropIn: String, stamp dropInStamp: FileStamp?) -> Bool {
        guard let dropInStamp, let target = stamp.isSymlink ? FileStamp(path: cli, following: true) : stamp else { return false }
        if target.sameFile(as: dropInStamp) { return true }
        return target.size == dropInStamp.size && Self.sameContents(cli, dropIn)
    }

    static func sameContents(_ a: String, _ b: String) -> Bool {
        guard let left = FileManager.default.contents(atPath: a), let right = FileManager.default.contents(atPath: b) else { return false }
        return left == right
    }

    // MARK: - Changing

    /// The options of an install.
    public struct InstallOptions: Sendable {
        /// The prewarm-claude to put in place (an absolute path).
        public var dropIn: String
        /// Symbolic link (`--path-dir`), or hard link falling back to a copy.
        public var symlink = false
        /// A `claude` must be there to move aside (an SDK's bundled CLI).
        public var requiresOriginal = true
        /// A `claude` that is not ours may be moved aside (`--path-dir` asks with --force).
        public var movesForeignCLI = true
        public var sdkVersion: String?
        public var cliVersion: String?

        public init(dropIn: String, symlink: Bool = false, requiresOriginal: Bool = true, movesForeignCLI: Bool = true, sdkVersion: String? = nil, cliVersion: String? = nil) {
            self.dropIn = dropIn
            self.symlink = symlink
            self.requiresOriginal = requiresOriginal
            self.movesForeignCLI = movesForeignCLI
            self.sdkVersion = sdkVersion
            self.cliVersion = cliVersion
        }
    }

    /// Puts prewarm-claude in place of `claude`. Installing twice changes nothing; an install
    /// cut at any step leaves `claude` the original or the drop-in, never missing.
    /// `interruptAfter`: for the tests, the step after which to stop as if killed.
    @discardableResult
    public func install(_ options: InstallOptions, interruptAfter step: InstallStep? = nil) throws(InstallError) -> Change {
        let lock = try lockDirectory(advice: "run it as the owner of \(directory) (or with sudo)")
        defer { close(lock) }
        removeTemporaries()
        let state = state(dropIn: options.dropIn)
        let change: Change
        var original: FileStamp?
        switch state {
        case .installed(let record, let current):
            if current { return .unchanged }
            original = record.original
            change = .updated
        case .damaged(_, let why):
            throw InstallError(
                .notInstallable,
                "\(why): reinstall the package that owns \(directory) (pip install --force-reinstall ...), then run prewarm sdk install again"
            )
        case .absent, .orphaned:
            if options.requiresOriginal {
                throw InstallError(.notInstallable, "\(cli) does not exist: there is no bundled CLI to move aside")
            }
            change = .installed
        case .original, .interrupted, .overwritten:
            guard let stamp = FileStamp(path: cli) else { throw InstallError(.cannotCreate, "\(cli) vanished while installing; run it again") }
            if case .original = state, !options.movesForeignCLI {
                throw InstallError(
                    .cannotCreate,
                    "\(cli) exists and is not prewarm-claude; --force moves it aside to \(real) (prewarm-claude then runs it as the real CLI, and uninstall puts it back)"
                )
            }
            original = stamp
            try keepOriginal(stamp)
            if step == .original { return .installed }
            if case .overwritten = state { change = .reinstalled } else { change = .installed }
        }
        let temporary = try placeDropIn(options, owner: original)
        if step == .dropIn { return change }
        guard let installed = FileStamp(path: temporary) else { throw InstallError(.cannotCreate, "\(temporary) vanished while installing; run it again") }
        let record = Record(
            dropIn: options.dropIn, method: options.symlink ? .symlink : (Self.sameFile(temporary, options.dropIn) ? .link : .copy),
            installed: installed, original: original, sdkVersion: options.sdkVersion, cliVersion: options.cliVersion,
            installedAt: ISO8601DateFormatter().string(from: Date())
        )
        try writeRecord(record)
        if step == .record { return change }
        try renameTemporary(temporary, to: cli)
        syncDirectory(lock)
        return change
    }

    /// The steps of an install, to cut it after one in the tests.
    public enum InstallStep: Sendable {
        /// The original is also `claude.real`.
        case original
        /// The drop-in is there under a temporary name.
        case dropIn
        /// The record is written; `claude` is still the original.
        case record
    }

    /// Puts the original back (or removes what an overwritten or cut install left).
    @discardableResult
    /// `dropIn`: the prewarm-claude an install put there, which tells it apart when the
    /// install's record is gone (`--drop-in`).
    public func uninstall(dropIn: String? = nil) throws(InstallError) -> Change {
        let lock = try lockDirectory(advice: "run it as the owner of \(directory) (or with sudo)")
        defer { close(lock) }
        removeTemporaries()
        switch state(dropIn: dropIn) {
        case .absent:
            return .nothingInstalled
        case .original:
            // An install cut before its record: the original is also claude.real.
            if let stamp = FileStamp(path: cli), let realStamp = FileStamp(path: real), realStamp.sameFile(as: stamp) {
                try remove(real)
                return .cleaned
            }
            return .nothingInstalled
        case .installed(let record, _):
            if record.original != nil {
                try rename(real, to: cli)
            } else {
                try remove(cli)
            }
            syncDirectory(lock)
            try remove(recordPath)
            return .restored
        case .interrupted, .overwritten, .orphaned:
            // claude.real is the original again (a cut install), a CLI of an earlier version
            // (the package's own is `claude` now), or that of a package gone.
            try remove(real)
            try remove(recordPath)
            return .cleaned
        case .damaged(nil, _) where dropIn != nil:
            // No record and nothing beside it: a `claude` that is this prewarm-claude (a
            // --path-dir install whose record is gone) is removed.
            try remove(cli)
            syncDirectory(lock)
            return .restored
        case .damaged(_, let why):
            throw InstallError(
                .notInstallable,
                "\(why): the original cannot be put back; reinstall the package that owns \(directory) (pip install --force-reinstall ...)"
            )
        }
    }

    // MARK: - Steps

    /// `claude.real`: the original, the same file (a hard link keeps its mode, owner and
    /// times); a copy where a link is refused. Replaces an older one by a rename.
    func keepOriginal(_ stamp: FileStamp) throws(InstallError) {
        if let existing = FileStamp(path: real), existing.sameFile(as: stamp) { return }
        let temporary = temporaryName("real")
        if Glibc.link(cli, temporary) != 0 {
            let code = errno
            guard code == EXDEV || code == EPERM || code == EMLINK else {
                throw InstallError.failed("cannot link", "\(cli) to \(temporary)", errno: code, advice: "run it as the owner of \(directory)")
            }
            try copy(cli, to: temporary, owner: stamp)
        } else if FileStamp(path: temporary)?.sameFile(as: stamp) != true {
            // `claude` was swapped since it was looked at: keep nothing of the newcomer.
            unlink(temporary)
            throw InstallError(.cannotCreate, "\(cli) changed while installing; run it again")
        }
        try renameTemporary(temporary, to: real)
    }

    /// The drop-in under a temporary name in the directory: a link (hard, or symbolic), or a
    /// copy with the original's mode and owner.
    func placeDropIn(_ options: InstallOptions, owner original: FileStamp?) throws(InstallError) -> String {
        let temporary = temporaryName("claude")
        if options.symlink {
            guard Glibc.symlink(options.dropIn, temporary) == 0 else {
                throw InstallError.failed("cannot make", temporary, errno: errno, advice: "run it as the owner of \(directory)")
            }
            return temporary
        }
        // A hard link makes the installed CLI the drop-in's own file: only where its owner
        // is the original's (else whoever owns the drop-in could rewrite what the SDK's other
        // users run, root's included, after a sudo install). A copy gets the original's owner.
        let dropInOwner = FileStamp(path: options.dropIn, following: true)?.uid
        guard original == nil || dropInOwner == original?.uid else {
            try copy(options.dropIn, to: temporary, owner: original)
            return temporary
        }
        if Glibc.link(options.dropIn, temporary) == 0 { return temporary }
        let code = errno
        guard code == EXDEV || code == EPERM || code == EMLINK else {
            throw InstallError.failed("cannot link", "\(options.dropIn) to \(temporary)", errno: code, advice: "run it as the owner of \(directory)")
        }
        try copy(options.dropIn, to: temporary, owner: original)
        return temporary
    }

    /// Copies `source` to a new file `destination`, with `owner`'s mode (else 0755), owner
    /// and group (when this process may give them), and flushed.
    func copy(_ source: String, to destination: String, owner: FileStamp?) throws(InstallError) {
        let input = open(source, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw InstallError.failed("cannot read", source, errno: errno, advice: "check its permissions") }
        defer { close(input) }
        let mode = owner.map { mode_t($0.permissions) } ?? 0o755
        let output = open(destination, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
        guard output >= 0 else { throw InstallError.failed("cannot create", destination, errno: errno, advice: "run it as the owner of \(directory)") }
        defer { close(output) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw InstallError.failed("cannot read", source, errno: errno, advice: "check it") }
            if count == 0 { break }
            var offset = 0
            while offset < count {
                let written = buffer.withUnsafeBytes { write(output, $0.baseAddress! + offset, count - offset) }
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else {
                    let code = errno
                    unlink(destination)
                    throw InstallError.failed("cannot write", destination, errno: code, advice: "check the free space")
                }
                offset += written
            }
        }
        _ = fchmod(output, mode)
        if let owner, getuid() == 0 { _ = fchown(output, owner.uid, owner.gid) }
        guard fsync(output) == 0 else { throw InstallError.failed("cannot write", destination, errno: errno, advice: "check the free space") }
    }

    func writeRecord(_ record: Record) throws(InstallError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data: Data
        do { data = try encoder.encode(record) } catch { throw InstallError(.cannotCreate, "cannot encode the install record: \(error)") }
        let temporary = temporaryName("record")
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { throw InstallError.failed("cannot create", temporary, errno: errno, advice: "run it as the owner of \(directory)") }
        let written = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        close(fd)
        guard written == data.count, synced == 0 else {
            unlink(temporary)
            throw InstallError(.cannotCreate, "cannot write \(temporary)")
        }
        try renameTemporary(temporary, to: recordPath)
    }

    /// Renames `from` over `to`. A failure leaves `from` where it was: the caller removes it
    /// only if it made it (uninstall renames `claude.real`, the only copy of the original).
    func rename(_ from: String, to: String) throws(InstallError) {
        guard Glibc.rename(from, to) == 0 else {
            throw InstallError.failed("cannot rename", "\(from) to \(to)", errno: errno, advice: "run it as the owner of \(directory)")
        }
    }

    /// `rename` of a temporary file this install made: removed if the rename fails.
    func renameTemporary(_ temporary: String, to: String) throws(InstallError) {
        do throws(InstallError) {
            try rename(temporary, to: to)
        } catch {
            unlink(temporary)
            throw error
        }
    }

    func remove(_ path: String) throws(InstallError) {
        guard unlink(path) == 0 || errno == ENOENT else {
            throw InstallError.failed("cannot remove", path, errno: errno, advice: "run it as the owner of \(directory)")
        }
    }

    func temporaryName(_ what: String) -> String {
        directory + "/" + Self.temporaryPrefix + what + "-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// Leftovers of a cut install (temporary names only: never a file of the package's).
    func removeTemporaries() {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        for entry in entries where entry.hasPrefix(Self.temporaryPrefix) {
            unlink(directory + "/" + entry)
        }
    }

    /// The directory, open and locked (flock) against another install or uninstall; checked
    /// writable first, so that nothing is changed where the rest would fail.
    func lockDirectory(advice: String) throws(InstallError) -> Int32 {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw InstallError.failed("cannot open", directory, errno: errno, advice: advice) }
        guard access(directory, W_OK | X_OK) == 0 else {
            let code = errno
            close(fd)
            var owner = ""
            if let stamp = FileStamp(path: directory, following: true) {
                owner = " (owned by \(Self.userName(stamp.uid)), mode \(String(stamp.permissions, radix: 8)))"
            }
            if code == EROFS {
                throw InstallError(
                    .cannotCreate,
                    "\(directory) is on a read-only filesystem; install into a writable copy of the environment (an image's build step), or point the SDK at prewarm-claude with cli_path instead",
                    errno: code
                )
            }
            throw InstallError(
                .permissionDenied, "\(directory) is not writable by \(Self.userName(getuid()))\(owner): \(advice); nothing was changed", errno: code
            )
        }
        while flock(fd, LOCK_EX) != 0 && errno == EINTR {}
        return fd
    }

    func syncDirectory(_ fd: Int32) {
        _ = fsync(fd)
    }

    static func sameFile(_ a: String, _ b: String) -> Bool {
        guard let left = FileStamp(path: a, following: true), let right = FileStamp(path: b, following: true) else { return false }
        return left.sameFile(as: right)
    }

    /// A user's name, or `uid N`.
    public static func userName(_ uid: UInt32) -> String {
        guard let entry = getpwuid(uid), let name = entry.pointee.pw_name else { return "uid \(uid)" }
        return "\(String(cString: name)) (uid \(uid))"
    }
}
