#if canImport(Glibc)
import Glibc
#endif

/// Which file a path names, and which version of it: device, inode, size and modification
/// time. A CLI upgrade replaces the file (a new inode) or rewrites it (a new size or time).
///
/// Polled (a `stat` every few seconds per pool) rather than watched with inotify: one call,
/// no descriptor per watched file, and it sees a replaced symlink target too.
public struct FileIdentity: Sendable, Equatable {
    var device: UInt64
    var inode: UInt64
    var size: Int64
    var modified: timespec

    public init?(path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        modified = info.st_mtim
    }

    /// The same file with the same size: only its times may differ (an append, a rename over
    /// it, a truncation would not keep both).
    func sameContents(as other: Self) -> Bool {
        device == other.device && inode == other.inode && size == other.size
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.device == rhs.device && lhs.inode == rhs.inode && lhs.size == rhs.size
            && lhs.modified.tv_sec == rhs.modified.tv_sec && lhs.modified.tv_nsec == rhs.modified.tv_nsec
    }
}
