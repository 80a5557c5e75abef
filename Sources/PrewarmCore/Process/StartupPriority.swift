#if canImport(Glibc)
import Glibc
#endif

/// The CPU priority of start-ups: a spare boots at a higher nice value than the turns running
/// beside it, and gets the daemon's own back when a turn takes it (or starts waiting for it).
///
/// Why: on a small machine a burst of turns and the replacements started for them compete for
/// the same cores, and a CLI's boot is about as much CPU as its first token; the turns are on
/// a request path, the replacements are not. Lowering a priority is always allowed, raising it
/// back needs CAP_SYS_NICE (or an RLIMIT_NICE that allows it): without either, spares start at
/// the daemon's priority and the pool's status says so (`spare_nice` 0).
///
/// Linux nice values are per thread: the whole process group (each process has its own) is
/// set with `PRIO_PGRP`, which reaches every thread of every process in it; threads created
/// later inherit their creator's value.
public enum StartupPriority {
    /// The daemon's own nice value, which turns run at.
    public static let base: Int32 = {
        errno = 0
        let value = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        return errno == 0 ? value : 0
    }()

    /// Whether a process's priority can be raised back to `base` after it was lowered.
    public static let canRestore: Bool = {
        if hasCapability(23) { return true }  // CAP_SYS_NICE
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(__RLIMIT_NICE.rawValue), &limit) == 0 else { return false }
        // RLIMIT_NICE allows nice values down to 20 - limit.
        return limit.rlim_cur == rlim_t.max || 20 - Int64(clamping: limit.rlim_cur) <= Int64(base)
    }()

    /// The nice value a pool's spares start at for `spareNice` (0: the daemon's, as when the
    /// priority could not be restored).
    public static func effectiveSpareNice(_ spareNice: Int) -> Int {
        guard spareNice > 0, canRestore else { return 0 }
        return max(0, min(spareNice, 19 - Int(base)))
    }

    /// Sets every thread of the process group `group` to `base + offset`; false if refused.
    @discardableResult
    public static func set(processGroup group: pid_t, offset: Int) -> Bool {
        setpriority(__priority_which_t(PRIO_PGRP.rawValue), id_t(group), base + Int32(offset)) == 0
    }

    /// Empties the ambient capability set, which every child would otherwise get at exec; the
    /// daemon keeps its own permitted and effective capabilities.
    public static func keepCapabilitiesFromChildren() {
        // PR_CAP_AMBIENT (47), PR_CAP_AMBIENT_CLEAR_ALL (4), from linux/prctl.h.
        _ = prctl?(47, 4, 0, 0, 0)
    }

    /// prctl(2) is variadic, which Swift does not import: looked up at run time and called with
    /// its five integer arguments (the same registers on x86_64 and arm64 Linux).
    private typealias Prctl = @convention(c) (CInt, CUnsignedLong, CUnsignedLong, CUnsignedLong, CUnsignedLong) -> CInt
    private static let prctl: Prctl? = {
        guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "prctl") else { return nil }
        return unsafeBitCast(symbol, to: Prctl.self)
    }()

    /// The nice value of the thread `tid` (of process `pid`), from /proc; nil if gone.
    public static func nice(pid: Int32, tid: Int32? = nil) -> Int? {
        let path = tid.map { "/proc/\(pid)/task/\($0)/stat" } ?? "/proc/\(pid)/stat"
        guard let fields = ProcessMemory.statFields(path: path), fields.count > 16 else { return nil }
        return Int(fields[16])
    }

    private static func hasCapability(_ bit: Int) -> Bool {
        guard let status = KernelFile.text("/proc/self/status"),
            let mask = KernelFile.field("CapEff:", in: status).flatMap({ UInt64($0, radix: 16) })
        else { return false }
        return mask & (1 << UInt64(bit)) != 0
    }
}
