#if canImport(Glibc)
import Glibc
#endif

/// The daemon's file descriptors: each connection, spare and pipe holds some. The soft limit
/// is raised to the hard one at start (systemd and most shells leave it at 1024 while the
/// hard limit is far higher), and the status shows what is open against it.
public struct DescriptorLimit: Codable, Sendable, Equatable {
    public var open: Int
    public var limit: Int

    /// Raises the soft RLIMIT_NOFILE to the hard limit; returns the limit now in force.
    @discardableResult
    public static func raise() -> Int {
        var limits = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limits) == 0 else { return 0 }
        if limits.rlim_cur < limits.rlim_max {
            var raised = limits
            raised.rlim_cur = limits.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limits = raised }
        }
        return Int(clamping: limits.rlim_cur)
    }

    /// Descriptors open now (entries of /proc/self/fd, less the one reading it) and the
    /// soft limit.
    public static func current() -> DescriptorLimit {
        var limits = rlimit()
        let limit = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limits) == 0 ? Int(clamping: limits.rlim_cur) : 0
        var open = 0
        if let directory = opendir("/proc/self/fd") {
            while let entry = readdir(directory) {
                if entry.pointee.d_name.0 != UInt8(ascii: ".") { open += 1 }
            }
            closedir(directory)
            open -= 1  // the directory's own descriptor
        }
        return DescriptorLimit(open: max(open, 0), limit: limit)
    }
}
