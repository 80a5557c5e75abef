#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A directory that decides who gets a secret (the socket's, the state directory, the
/// universal spares' root, a pool's turn directories), checked the way OpenSSH's StrictModes
/// checks `~/.ssh`: it and every parent are owned by the daemon's uid or root, writable by no
/// group and no other user, and not symbolic links. A root-owned sticky directory (`/tmp`) is
/// accepted as a parent, never as the directory itself: nobody else can rename or remove
/// what the daemon makes in it.
///
/// Missing components are made (mode 0700 unless told otherwise) with `mkdirat` on the
/// parent's held descriptor and opened with `O_NOFOLLOW`, so a path another user swaps for a
/// link between two steps is refused, never followed. Once a directory has passed, no other
/// non-root user can change what any path below it names: the daemon may use plain paths there.
///
/// Written by hand: swift-system's `FileDescriptor` opens files but has no `openat`/
/// `mkdirat`, and Foundation's `createDirectory` follows links and trusts what exists.
public enum TrustedDirectory {
    /// `strict_modes` (default true): false skips the owner and mode checks, for a container
    /// whose volumes are writable by all by design (Kubernetes' emptyDirs are 0777, shared by
    /// the pod's containers alone). Links are never followed either way. Set once, at start.
    public static let strictModes = Atomic<Bool>(true)

    /// Makes what is missing of `path` and checks all of it. `mode` is the directory's own
    /// when it is made (its parents made on the way get 0700); an existing directory of ours
    /// is given the search bits of `mode` it lacks (a socket's directory that others must
    /// reach), never more. `purpose` names the setting in errors ("the socket's directory
    /// (--socket)").
    public static func prepare(_ path: String, mode: mode_t = 0o700, purpose: String) throws(PrewarmError) {
        try walk(path, create: true, mode: mode, purpose: purpose)
    }

    /// Checks `path` and its parents without making anything.
    public static func check(_ path: String, purpose: String) throws(PrewarmError) {
        try walk(path, create: false, mode: 0o700, purpose: purpose)
    }

    /// What is wrong with one directory met on the way, or nil.
    static func problem(owner: uid_t, mode: mode_t, isTarget: Bool, daemonUID: uid_t = getuid()) -> String? {
        if owner != daemonUID && owner != 0 {
            return "is owned by uid \(owner), not by the daemon's uid \(daemonUID) or root"
        }
        guard mode & 0o022 != 0 else { return nil }
        // /tmp: root's, sticky; others may add entries there but not rename or remove ours.
        if !isTarget && owner == 0 && mode & S_ISVTX != 0 { return nil }
        return "is writable by \(mode & 0o002 != 0 ? "other users" : "its group") (mode \(String(mode & 0o7777, radix: 8)))"
    }

    private static func walk(_ path: String, create: Bool, mode: mode_t, purpose: String) throws(PrewarmError) {
        guard path.hasPrefix("/") else {
            throw PrewarmError(.unsafePath, "\(purpose) must be an absolute path, not \"\(path)\"")
        }
        let components = path.split(separator: "/").map(String.init)
        guard !components.contains(".."), !components.contains(".") else {
            throw PrewarmError(.unsafePath, "\(purpose) \(path) has \".\" or \"..\" in it; give the path without them")
        }
        var fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw PrewarmError(.unsafePath, "cannot open /: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var walked = ""
        try verify(fd, path: "/", isTarget: components.isEmpty, purpose: purpose, target: path)
        for (index, name) in components.enumerated() {
            walked += "/" + name
            let isTarget = index == components.count - 1
            var made = false
            var next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if next < 0 && errno == ENOENT && create {
                if mkdirat(fd, name, isTarget ? mode : 0o700) != 0 && errno != EEXIST {
                    throw PrewarmError(.unsafePath, "cannot create \(walked) (\(purpose)): \(String(cString: strerror(errno))); create it, owned by uid \(getuid()), mode 0700")
                }
                made = true
                next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            }
            guard next >= 0 else {
                var error = errno
                var link = stat()
                if error == ENOTDIR, fstatat(fd, name, &link, AT_SYMLINK_NOFOLLOW) == 0, link.st_mode & S_IFMT == S_IFLNK { error = ELOOP }
                let why = switch error {
                case ELOOP: "is a symbolic link"
                case ENOTDIR: "is not a directory"
                case ENOENT: "does not exist"
                default: String(cString: strerror(error))
                }
                throw PrewarmError(
                    .unsafePath,
                    "\(walked) \(why) (on the way to \(purpose) \(path)); \(error == ENOENT ? "create it" : "replace it with a directory owned by uid \(getuid()) with mode 0700, or choose another path")"
                )
            }
            close(fd)
            fd = next
            if made {
                // The umask may have taken bits away: the mode asked for, exactly.
                _ = fchmod(fd, isTarget ? mode : 0o700)
            } else if isTarget {
                var info = stat()
                if fstat(fd, &info) == 0, info.st_uid == getuid(), info.st_mode & 0o022 == 0, (info.st_mode | (mode & 0o111)) != info.st_mode {
                    _ = fchmod(fd, (info.st_mode & 0o7777) | (mode & 0o111))
                }
            }
            try verify(fd, path: walked, isTarget: isTarget, purpose: purpose, target: path)
        }
    }

    private static func verify(_ fd: Int32, path: String, isTarget: Bool, purpose: String, target: String) throws(PrewarmError) {
        guard strictModes.load(ordering: .relaxed) else { return }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw PrewarmError(.unsafePath, "cannot stat \(path): \(String(cString: strerror(errno)))")
        }
        guard let problem = problem(owner: info.st_uid, mode: info.st_mode, isTarget: isTarget) else { return }
        let fix =
            (isTarget
                ? "another user could have made it to catch what the daemon puts there; remove it (check what it is first) or choose another path"
                : "a parent directory another user can change could swap the path; fix its owner or mode, or choose a path outside it")
            + " (in a container whose volumes are shared on purpose: strict_modes = false)"
        throw PrewarmError(.unsafePath, "\(path) \(problem), so it cannot hold \(purpose)\(path == target ? "" : " \(target)"): \(fix)")
    }
}
