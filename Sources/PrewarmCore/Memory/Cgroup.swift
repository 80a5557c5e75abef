#if canImport(Glibc)
import Glibc
#endif
import Foundation

// Hand-written: no maintained Swift package reads cgroup v1/v2 files. The rules follow
// OpenJDK's CgroupSubsystemFactory and Go's automemlimit: find the controller's line in
// /proc/self/cgroup, its mount in /proc/self/mountinfo, resolve the path relative to the
// mount's root, and walk up to the mountpoint keeping the lowest limit.

/// Where the kernel's files are read from: "" on a real host; a fixture directory in tests,
/// which then holds proc/self/cgroup, proc/self/mountinfo, proc/meminfo, sys/fs/cgroup/...
public struct SystemRoot: Sendable, Equatable {
    /// The directory prepended to every absolute path; "" for the real host.
    public var prefix: String

    /// Reads the kernel's files under `prefix` ("" for the real host).
    public init(_ prefix: String = "") {
        self.prefix = prefix
    }

    /// The real host: paths are read as they are.
    public static let host = SystemRoot()

    /// The real host, whatever the spelling of an empty prefix.
    var isHost: Bool { prefix.isEmpty || prefix == "/" }

    /// Returns `absolute` (which starts with "/") under the prefix.
    public func path(_ absolute: String) -> String {
        if isHost { return absolute }
        var base = prefix
        while base.count > 1, base.hasSuffix("/") { base.removeLast() }
        return absolute.hasPrefix("/") ? base + absolute : base + "/" + absolute
    }
}

/// The cgroup hierarchy a controller was found in.
public enum CgroupVersion: String, Sendable, Codable {
    case v1, v2
}

/// The daemon's memory cgroup and the lowest memory limit on the way to its root.
public struct CgroupMemory: Sendable, Equatable {
    /// Which hierarchy the memory controller was found in.
    public var version: CgroupVersion
    /// The daemon's own memory cgroup directory, as read (with the `SystemRoot` prefix).
    public var directory: String
    /// The lowest limit from the directory up to the mountpoint; nil = unlimited.
    public var limit: UInt64?
    /// Where `limit` came from, e.g. "/sys/fs/cgroup/memory/a/memory.limit_in_bytes" or
    /// "/sys/fs/cgroup/x/memory.high" (without the `SystemRoot` prefix); nil when unlimited.
    public var limitSource: String?

    public init(version: CgroupVersion, directory: String, limit: UInt64?, limitSource: String?) {
        self.version = version
        self.directory = directory
        self.limit = limit
        self.limitSource = limitSource
    }
}

/// One reading of the daemon's memory cgroup.
public struct CgroupMemorySample: Sendable, Equatable {
    /// v2 memory.current, v1 memory.usage_in_bytes.
    public var usage: UInt64
    /// v2 memory.stat inactive_file, v1 memory.stat total_inactive_file (else inactive_file); 0 when absent.
    public var inactiveFile: UInt64
    /// Usage less the inactive page cache: what the kernel cannot simply drop under pressure.
    public var workingSet: UInt64 { usage > inactiveFile ? usage - inactiveFile : 0 }
    /// v2 memory.peak, v1 memory.max_usage_in_bytes; nil when absent.
    public var peak: UInt64?
    /// v2 memory.events "oom"; always 0 on v1, which has no such counter.
    public var oomEvents: UInt64
    /// v2 memory.events "oom_kill"; v1 memory.oom_control "oom_kill" (0 on kernels without it).
    public var oomKills: UInt64
    /// v2 memory.pressure "some avg10="; v1 /proc/pressure/memory (host-wide) if present; else nil.
    public var pressureSomeAvg10: Double?
    /// As `pressureSomeAvg10`, the "full" line.
    public var pressureFullAvg10: Double?

    public init(
        usage: UInt64, inactiveFile: UInt64, peak: UInt64?, oomEvents: UInt64, oomKills: UInt64,
        pressureSomeAvg10: Double?, pressureFullAvg10: Double?
    ) {
        self.usage = usage
        self.inactiveFile = inactiveFile
        self.peak = peak
        self.oomEvents = oomEvents
        self.oomKills = oomKills
        self.pressureSomeAvg10 = pressureSomeAvg10
        self.pressureFullAvg10 = pressureFullAvg10
    }
}

/// The host's memory as /proc/meminfo reports it, in bytes.
public struct HostMemory: Sendable, Equatable {
    /// MemTotal.
    public var total: UInt64
    /// MemAvailable (MemFree on kernels older than 3.14).
    public var available: UInt64

    public init(total: UInt64, available: UInt64) {
        self.total = total
        self.available = available
    }
}

/// How much CPU the daemon may use.
public struct CPULimits: Sendable, Equatable {
    /// CPUs this process may run on: the sched_getaffinity count on the real host; under a
    /// fixture root the "processor" lines of proc/cpuinfo; else ProcessInfo.activeProcessorCount.
    public var online: Int
    /// The lowest CFS quota on the walk to the root, in CPUs (quota / period); nil = none.
    public var quota: Double?
    /// Where `quota` came from (file path without the `SystemRoot` prefix).
    public var quotaSource: String?
    /// The quota rounded up, at least 1 and at most `online`; `online` when there is no quota.
    public var effective: Int { quota.map { max(1, min(online, Int($0.rounded(.up)))) } ?? online }

    public init(online: Int, quota: Double?, quotaSource: String?) {
        self.online = online
        self.quota = quota
        self.quotaSource = quotaSource
    }
}

/// Reads the daemon's cgroup limits and usage, v1, v2 or hybrid.
public enum Cgroup {
    /// Values at or above this are "no limit" (v1 writes 9223372036854771712 = PAGE_COUNTER_MAX pages).
    public static let unlimitedThreshold: UInt64 = 1 << 62

    /// Reads the daemon's memory cgroup and its lowest limit; nil when no memory controller is found.
    ///
    /// v1 is preferred when /proc/self/cgroup has a memory line and a v1 memory mount exists
    /// (hybrid hosts); else v2 when a cgroup2 mount's cgroup.controllers lists "memory".
    public static func memory(root: SystemRoot = .host) -> CgroupMemory? {
        let lines = CgroupFiles.cgroupLines(root: root)
        let mounts = CgroupFiles.mounts(root: root)

        if let line = lines.first(where: { $0.isV1 && $0.controllers.contains("memory") }),
            let mount = CgroupFiles.v1Mount(controller: "memory", path: line.path, mounts: mounts)
        {
            let directory = CgroupFiles.resolve(line.path, in: mount, root: root)
            var lowest = Lowest<UInt64>()
            CgroupFiles.walk(from: directory, to: mount.mountPoint) { dir in
                let file = dir + "/memory.limit_in_bytes"
                lowest.offer(limitValue(KernelFile.uint(root.path(file))), file)
            }
            if let stat = KernelFile.text(root.path(directory + "/memory.stat")) {
                let value = KernelFile.field("hierarchical_memory_limit", in: stat).flatMap { UInt64($0) }
                lowest.offer(limitValue(value), directory + "/memory.stat hierarchical_memory_limit")
            }
            return CgroupMemory(
                version: .v1, directory: root.path(directory), limit: lowest.value, limitSource: lowest.source)
        }

        if let mount = mounts.first(where: {
            $0.fsType == "cgroup2"
                && CgroupFiles.controllers(root.path(CgroupFiles.join($0.mountPoint, "/cgroup.controllers")))
                    .contains("memory")
        }) {
            let path = lines.first(where: { !$0.isV1 })?.path ?? "/"
            let directory = CgroupFiles.resolve(path, in: mount, root: root)
            var lowest = Lowest<UInt64>()
            CgroupFiles.walk(from: directory, to: mount.mountPoint) { dir in
                for name in ["memory.max", "memory.high"] {
                    let file = dir + "/" + name
                    lowest.offer(limitValue(KernelFile.uintOrMax(root.path(file))), file)
                }
            }
            return CgroupMemory(
                version: .v2, directory: root.path(directory), limit: lowest.value, limitSource: lowest.source)
        }
        return nil
    }

    /// Reads the current usage, inactive page cache, peak, OOM counters and pressure of `memory`
    /// (its `directory` is read as is; `root` only locates /proc/pressure/memory on v1).
    /// nil when the usage file cannot be read.
    public static func sample(_ memory: CgroupMemory, root: SystemRoot = .host) -> CgroupMemorySample? {
        let dir = memory.directory
        switch memory.version {
        case .v2:
            guard let usage = KernelFile.uint(dir + "/memory.current") else { return nil }
            let stat = KernelFile.text(dir + "/memory.stat") ?? ""
            let events = KernelFile.text(dir + "/memory.events") ?? ""
            let pressure = KernelFile.text(dir + "/memory.pressure").map(Pressure.init) ?? Pressure()
            return CgroupMemorySample(
                usage: usage,
                inactiveFile: KernelFile.field("inactive_file", in: stat).flatMap { UInt64($0) } ?? 0,
                peak: KernelFile.uint(dir + "/memory.peak"),
                oomEvents: KernelFile.field("oom", in: events).flatMap { UInt64($0) } ?? 0,
                oomKills: KernelFile.field("oom_kill", in: events).flatMap { UInt64($0) } ?? 0,
                pressureSomeAvg10: pressure.some,
                pressureFullAvg10: pressure.full)
        case .v1:
            guard let usage = KernelFile.uint(dir + "/memory.usage_in_bytes") else { return nil }
            let stat = KernelFile.text(dir + "/memory.stat") ?? ""
            let inactive =
                KernelFile.field("total_inactive_file", in: stat).flatMap { UInt64($0) }
                ?? KernelFile.field("inactive_file", in: stat).flatMap { UInt64($0) } ?? 0
            let oomControl = KernelFile.text(dir + "/memory.oom_control") ?? ""
            let pressure = KernelFile.text(root.path("/proc/pressure/memory")).map(Pressure.init) ?? Pressure()
            return CgroupMemorySample(
                usage: usage,
                inactiveFile: inactive,
                peak: KernelFile.uint(dir + "/memory.max_usage_in_bytes"),
                oomEvents: 0,
                oomKills: KernelFile.field("oom_kill", in: oomControl).flatMap { UInt64($0) } ?? 0,
                pressureSomeAvg10: pressure.some,
                pressureFullAvg10: pressure.full)
        }
    }

    /// Reads the CPUs this process may use and the lowest CFS quota on the way to the cgroup root
    /// (v1 cpu.cfs_quota_us / cpu.cfs_period_us when a v1 cpu mount exists, else v2 cpu.max).
    public static func cpu(root: SystemRoot = .host) -> CPULimits {
        let online = onlineCPUs(root: root)
        let lines = CgroupFiles.cgroupLines(root: root)
        let mounts = CgroupFiles.mounts(root: root)
        var lowest = Lowest<Double>()

        if let line = lines.first(where: { $0.isV1 && $0.controllers.contains("cpu") }),
            let mount = CgroupFiles.v1Mount(controller: "cpu", path: line.path, mounts: mounts)
        {
            let directory = CgroupFiles.resolve(line.path, in: mount, root: root)
            CgroupFiles.walk(from: directory, to: mount.mountPoint) { dir in
                let file = dir + "/cpu.cfs_quota_us"
                guard let quota = KernelFile.int(root.path(file)), quota > 0,
                    let period = KernelFile.int(root.path(dir + "/cpu.cfs_period_us")), period > 0
                else { return }
                lowest.offer(Double(quota) / Double(period), file)
            }
        } else if let mount = mounts.first(where: {
            $0.fsType == "cgroup2"
                && CgroupFiles.controllers(root.path(CgroupFiles.join($0.mountPoint, "/cgroup.controllers")))
                    .contains("cpu")
        }) ?? mounts.first(where: { $0.fsType == "cgroup2" }) {
            let path = lines.first(where: { !$0.isV1 })?.path ?? "/"
            let directory = CgroupFiles.resolve(path, in: mount, root: root)
            CgroupFiles.walk(from: directory, to: mount.mountPoint) { dir in
                let file = dir + "/cpu.max"
                guard let text = KernelFile.text(root.path(file)) else { return }
                let parts = text.split(whereSeparator: \.isWhitespace)
                guard parts.count >= 1, parts[0] != "max", let quota = Int64(parts[0]), quota > 0 else { return }
                // The period is optional when written, but the kernel always reports it.
                let period = parts.count >= 2 ? Int64(parts[1]) : 100_000
                guard let period, period > 0 else { return }
                lowest.offer(Double(quota) / Double(period), file)
            }
        }
        return CPULimits(online: online, quota: lowest.value, quotaSource: lowest.source)
    }

    /// Reads /proc/meminfo MemTotal and MemAvailable (kB → bytes); nil when missing or malformed.
    public static func host(root: SystemRoot = .host) -> HostMemory? {
        guard let text = KernelFile.text(root.path("/proc/meminfo")),
            let total = KernelFile.kilobytes("MemTotal:", in: text),
            let available = KernelFile.kilobytes("MemAvailable:", in: text)
                ?? KernelFile.kilobytes("MemFree:", in: text)
        else { return nil }
        return HostMemory(total: total, available: available)
    }

    #if os(Linux)
    /// The number of CPUs in this thread's affinity mask (sched_getaffinity); nil on failure.
    ///
    /// Glibc declares sched_getaffinity only under _GNU_SOURCE, which Swift's Glibc module does
    /// not define, so the symbol is looked up at run time. (ProcessInfo.activeProcessorCount
    /// ignores the affinity mask: `taskset -c 0` still reports every CPU.)
    private static func affinityCount() -> Int? {
        typealias SchedGetAffinity = @convention(c) (pid_t, Int, UnsafeMutableRawPointer?) -> CInt
        guard let handle = dlopen(nil, RTLD_NOW) else { return nil }
        defer { dlclose(handle) }
        guard let symbol = dlsym(handle, "sched_getaffinity") else { return nil }
        let getAffinity = unsafeBitCast(symbol, to: SchedGetAffinity.self)
        // 1024 CPUs (glibc's cpu_set_t) first; larger masks for larger machines.
        var words = 16
        while words <= 1024 {
            var mask = [UInt64](repeating: 0, count: words)
            let result = mask.withUnsafeMutableBytes { getAffinity(0, $0.count, $0.baseAddress) }
            if result == 0 { return mask.reduce(0) { $0 + $1.nonzeroBitCount } }
            guard errno == EINVAL else { return nil }
            words *= 4
        }
        return nil
    }
    #endif

    /// A limit value, or nil when it means "no limit".
    private static func limitValue(_ value: UInt64?) -> UInt64? {
        guard let value, value < unlimitedThreshold else { return nil }
        return value
    }

    private static func onlineCPUs(root: SystemRoot) -> Int {
        #if os(Linux)
        if root.isHost, let count = affinityCount(), count > 0 { return count }
        #endif
        if !root.isHost, let text = KernelFile.text(root.path("/proc/cpuinfo")) {
            let count = text.split(separator: "\n").reduce(0) { count, line in
                line.hasPrefix("processor") && line.contains(":") ? count + 1 : count
            }
            if count > 0 { return count }
        }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }
}

/// The lowest value offered so far and where it came from; ties keep the first (deepest) one.
struct Lowest<Value: Comparable> {
    var value: Value?
    var source: String?

    mutating func offer(_ candidate: Value?, _ origin: String) {
        guard let candidate else { return }
        if let value, value <= candidate { return }
        value = candidate
        source = origin
    }
}

/// The avg10 values of a PSI file ("some avg10=0.00 avg60=... total=0" / "full avg10=...").
struct Pressure {
    var some: Double?
    var full: Double?

    init() {}

    init(_ text: String) {
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard let kind = parts.first,
                let avg10 = parts.first(where: { $0.hasPrefix("avg10=") }),
                let value = Double(avg10.dropFirst("avg10=".count))
            else { continue }
            if kind == "some" { some = value } else if kind == "full" { full = value }
        }
    }
}

/// Parsing of /proc/self/cgroup and /proc/self/mountinfo, and path resolution.
enum CgroupFiles {
    /// One line of /proc/self/cgroup, `ID:CONTROLLERS:PATH`.
    struct Line: Equatable {
        var id: Substring
        var controllers: [Substring]
        var path: String
        /// A v2 line is `0::PATH`.
        var isV1: Bool { !(id == "0" && controllers.isEmpty) }
    }

    /// One line of /proc/self/mountinfo.
    struct Mount: Equatable {
        var root: String
        var mountPoint: String
        var fsType: String
        var superOptions: [Substring]
    }

    static func cgroupLines(root: SystemRoot) -> [Line] {
        guard let text = KernelFile.text(root.path("/proc/self/cgroup")) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            guard let first = line.firstIndex(of: ":") else { return nil }
            let rest = line[line.index(after: first)...]
            guard let second = rest.firstIndex(of: ":") else { return nil }
            let path = String(rest[rest.index(after: second)...])
            guard path.hasPrefix("/") else { return nil }
            return Line(
                id: line[..<first],
                controllers: rest[..<second].split(separator: ","),
                path: path)
        }
    }

    static func mounts(root: SystemRoot) -> [Mount] {
        guard let text = KernelFile.text(root.path("/proc/self/mountinfo")) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            // id parent major:minor ROOT MOUNTPOINT opts [optional...] - FSTYPE SOURCE SUPEROPTS
            guard fields.count >= 9, let dash = fields[6...].firstIndex(of: "-"), dash + 1 < fields.count else {
                return nil
            }
            return Mount(
                root: unescape(fields[3]),
                mountPoint: unescape(fields[4]),
                fsType: String(fields[dash + 1]),
                superOptions: dash + 3 < fields.count ? fields[dash + 3].split(separator: ",") : [])
        }
    }

    /// The v1 mount of `controller`, preferring one whose root contains `path`.
    static func v1Mount(controller: Substring, path: String, mounts: [Mount]) -> Mount? {
        let candidates = mounts.filter { $0.fsType == "cgroup" && $0.superOptions.contains(controller) }
        return candidates.first(where: { $0.root == "/" || path == $0.root || path.hasPrefix($0.root + "/") })
            ?? candidates.first
    }

    /// The words of a cgroup.controllers file; empty when missing.
    static func controllers(_ file: String) -> [Substring] {
        KernelFile.text(file)?.split(whereSeparator: \.isWhitespace) ?? []
    }

    /// The cgroup `path` as a directory under `mount` (without the root prefix): relative to
    /// the mount's root, or the mountpoint itself when the path lies outside it (a container's
    /// namespaced view) or the directory does not exist.
    static func resolve(_ path: String, in mount: Mount, root: SystemRoot) -> String {
        let candidate: String
        if path.split(separator: "/").contains("..") {
            candidate = mount.mountPoint
        } else if mount.root == "/" {
            candidate = join(mount.mountPoint, path)
        } else if path == mount.root {
            candidate = mount.mountPoint
        } else if path.hasPrefix(mount.root + "/") {
            candidate = join(mount.mountPoint, String(path.dropFirst(mount.root.count)))
        } else {
            candidate = mount.mountPoint
        }
        return KernelFile.isDirectory(root.path(candidate)) ? candidate : mount.mountPoint
    }

    /// `base` + `path`, with exactly one "/" between them and none at the end.
    static func join(_ base: String, _ path: String) -> String {
        var base = base
        while base.hasSuffix("/") { base.removeLast() }
        let tail = path.split(separator: "/").joined(separator: "/")
        if tail.isEmpty { return base.isEmpty ? "/" : base }
        return base + "/" + tail
    }

    /// Calls `body` with `directory`, then each parent up to `top` inclusive.
    static func walk(from directory: String, to top: String, _ body: (String) -> Void) {
        var current = directory
        while true {
            body(current)
            guard current != top, current.count > top.count, current.hasPrefix(top),
                let slash = current.lastIndex(of: "/")
            else { return }
            current = slash == current.startIndex ? "/" : String(current[..<slash])
        }
    }

    /// Undoes mountinfo's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash).
    static func unescape(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        let bytes = Array(field.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\\"), i + 3 < bytes.count,
                let value = octal(bytes[i + 1], bytes[i + 2], bytes[i + 3])
            {
                out.append(value)
                i += 4
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func octal(_ a: UInt8, _ b: UInt8, _ c: UInt8) -> UInt8? {
        let zero = UInt8(ascii: "0")
        let seven = UInt8(ascii: "7")
        guard (zero...UInt8(ascii: "3")).contains(a), (zero...seven).contains(b), (zero...seven).contains(c) else {
            return nil
        }
        return (a - zero) << 6 | (b - zero) << 3 | (c - zero)
    }
}

/// Small, allocation-light readers for /proc and /sys files (which report size 0: read to EOF).
enum KernelFile {
    /// Files larger than this are treated as unreadable.
    static let maxSize = 16 << 20

    /// The whole file, or nil when it cannot be opened or read.
    static func bytes(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 4096) { buffer -> [UInt8]? in
            guard let base = buffer.baseAddress else { return nil }
            var out: [UInt8] = []
            while true {
                let n = read(fd, base, buffer.count)
                if n > 0 {
                    out.append(contentsOf: UnsafeBufferPointer(start: base, count: n))
                    if out.count > maxSize { return nil }
                } else if n == 0 {
                    return out
                } else if errno != EINTR {
                    return nil
                }
            }
        }
    }

    /// The file as UTF-8 text, or nil when it cannot be read.
    static func text(_ path: String) -> String? {
        bytes(path).map { String(decoding: $0, as: UTF8.self) }
    }

    /// The file's content as one unsigned number; nil when missing or malformed.
    static func uint(_ path: String) -> UInt64? {
        text(path).flatMap { UInt64(trimmed($0)) }
    }

    /// As `uint`, but "max" (cgroup v2's "no limit") reads as UInt64.max.
    static func uintOrMax(_ path: String) -> UInt64? {
        guard let text = text(path) else { return nil }
        let value = trimmed(text)
        return value == "max" ? UInt64.max : UInt64(value)
    }

    /// The file's content as one signed number (v1 quotas are -1 when unset).
    static func int(_ path: String) -> Int64? {
        text(path).flatMap { Int64(trimmed($0)) }
    }

    static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    /// The second word of the first line whose first word is `key` ("key value" files).
    static func field(_ key: String, in text: String) -> Substring? {
        for line in text.split(separator: "\n") where line.hasPrefix(key) {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if words.count >= 2, words[0] == key { return words[1] }
        }
        return nil
    }

    /// A "Key:   1234 kB" field in bytes.
    static func kilobytes(_ key: String, in text: String) -> UInt64? {
        guard let value = field(key, in: text).flatMap({ UInt64($0) }) else { return nil }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: 1024)
        return overflow ? nil : bytes
    }

    private static func trimmed(_ text: String) -> Substring {
        let scalars = text.unicodeScalars
        guard let start = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
            let end = scalars.lastIndex(where: { !$0.properties.isWhitespace })
        else { return "" }
        return Substring(scalars[start...end])
    }
}
