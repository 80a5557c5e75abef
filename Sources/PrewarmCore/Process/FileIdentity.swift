/// Which file a path names (following links), and which version of it: device, inode, size
/// and modification time (`FileStamp`'s). A CLI upgrade replaces the file (a new inode) or
/// rewrites it (a new size or time).
///
/// Polled (a `stat` every few seconds per pool) rather than watched with inotify: one call,
/// no descriptor per watched file, and it sees a replaced symlink target too.
public struct FileIdentity: Sendable, Equatable {
    let stamp: FileStamp

    public init?(path: String) {
        guard let stamp = FileStamp(path: path, following: true) else { return nil }
        self.stamp = stamp
    }

    /// The same file with the same size: only its times may differ (an append, a rename over
    /// it, a truncation would not keep both).
    func sameContents(as other: Self) -> Bool {
        stamp.sameFile(as: other.stamp) && stamp.size == other.stamp.size
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.stamp.sameVersion(as: rhs.stamp)
    }
}
