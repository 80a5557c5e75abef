#if canImport(Glibc)
import Glibc
#endif

/// A file as `prewarm sdk install` recognises it later: which file (device and inode), which
/// version of it (size and modification time), and its mode and owner. Taken with lstat
/// (a symlink is the link), or with stat where `following` says so.
public struct FileStamp: Sendable, Codable, Equatable {
    public var device: UInt64
    public var inode: UInt64
    public var size: Int64
    public var modifiedSeconds: Int
    public var modifiedNanoseconds: Int
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32

    public init?(path: String, following: Bool = false) {
        var info = stat()
        guard (following ? stat(path, &info) : lstat(path, &info)) == 0 else { return nil }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        modifiedSeconds = info.st_mtim.tv_sec
        modifiedNanoseconds = info.st_mtim.tv_nsec
        mode = UInt32(info.st_mode)
        uid = UInt32(info.st_uid)
        gid = UInt32(info.st_gid)
    }

    /// The same file (device and inode), whatever its version.
    public func sameFile(as other: FileStamp) -> Bool {
        device == other.device && inode == other.inode
    }

    /// The same file, unchanged since: same size and modification time too.
    public func sameVersion(as other: FileStamp) -> Bool {
        sameFile(as: other) && size == other.size && modifiedSeconds == other.modifiedSeconds && modifiedNanoseconds == other.modifiedNanoseconds
    }

    public var isSymlink: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFLNK) }
    public var isRegularFile: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFREG) }
    /// The permission bits (`0o755`).
    public var permissions: UInt32 { mode & 0o7777 }

    enum CodingKeys: String, CodingKey {
        case device, inode, size, mode, uid, gid
        case modifiedSeconds = "mtime_s"
        case modifiedNanoseconds = "mtime_ns"
    }
}
