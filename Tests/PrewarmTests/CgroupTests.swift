import Foundation
import Testing

@testable import PrewarmCore

#if canImport(Glibc)
import Glibc
#endif

/// A throwaway directory holding a fake /proc and /sys, built from code.
struct CgroupFixture {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("prewarm-cgroup-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    var root: SystemRoot { SystemRoot(url.path) }

    /// The fixture path of an absolute host path.
    func path(_ absolute: String) -> String { root.path(absolute) }

    /// Writes `text` at the absolute host path `absolute`, creating its parents.
    func write(_ absolute: String, _ text: String) throws {
        let file = URL(fileURLWithPath: path(absolute))
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try text.write(to: file, atomically: false, encoding: .utf8)
    }

    func mkdir(_ absolute: String) throws {
        try FileManager.default.createDirectory(atPath: path(absolute), withIntermediateDirectories: true)
    }

    func remove() {
        try? FileManager.default.removeItem(at: url)
    }

    /// One /proc/self/mountinfo line.
    static func mount(
        _ id: Int, _ root: String, _ mountPoint: String, _ fsType: String, _ superOptions: String,
        optional: String = ""
    ) -> String {
        let extra = optional.isEmpty ? "" : " " + optional
        return "\(id) 23 0:\(id) \(root) \(mountPoint) rw,nosuid,relatime\(extra) - \(fsType) \(fsType) \(superOptions)"
    }
}

@Suite("Cgroup")
struct CgroupTests {
    static let gib: UInt64 = 1 << 30
    static let mib: UInt64 = 1 << 20
    static let v1Unlimited = "9223372036854771712\n"

    /// The machine's hybrid layout: v1 controllers under /sys/fs/cgroup, a cgroup2 mount at
    /// /sys/fs/cgroup/unified without the memory controller.
    static let hybridMountinfo = [
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
        CgroupFixture.mount(32, "/", "/sys/fs/cgroup/cpu", "cgroup", "rw,cpu"),
        CgroupFixture.mount(33, "/", "/sys/fs/cgroup/cpuacct", "cgroup", "rw,cpuacct"),
        CgroupFixture.mount(34, "/", "/sys/fs/cgroup/cpuset", "cgroup", "rw,cpuset"),
        CgroupFixture.mount(35, "/", "/sys/fs/cgroup/memory", "cgroup", "rw,memory", optional: "shared:9"),
        CgroupFixture.mount(41, "/", "/sys/fs/cgroup/unified", "cgroup2", "rw"),
    ].joined(separator: "\n") + "\n"

    // MARK: v1

    /// 1. The lowest limit on the way up wins; the sample reads every v1 file.
    @Test func v1Nested() throws {
        let fx = try CgroupFixture()
        defer { fx.remove() }
        try fx.write("/proc/self/cgroup", "9:name=systemd:/\n4:memory:/a/b\n1:cpu:/\n0::/\n")
        try fx.write("/proc/self/mountinfo", Self.hybridMountinfo)
        try fx.write("/sys/fs/cgroup/memory/memory.limit_in_bytes", Self.v1Unlimited)
        try fx.write("/sys/fs/cgroup/memory/a/memory.limit_in_bytes", "1073741824\n")
        try fx.write("/sys/fs/cgroup/memory/a/b/memory.limit_in_bytes", Self.v1Unlimited)
        try fx.write(
            "/sys/fs/cgroup/memory/a/b/memory.stat",
            "cache 8192\nrss 4096\ninactive_file 100\nhierarchical_memory_limit 1073741824\ntotal_inactive_file 4096\n")
        try fx.write("/sys/fs/cgroup/memory/a/b/memory.usage_in_bytes", "10485760\n")
        try fx.write("/sys/fs/cgroup/memory/a/b/memory.max_usage_in_bytes", "20971520\n")
        try fx.write("/sys/fs/cgroup/memory/a/b/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
        try fx.write(
            "/proc/pressure/memory",
            "some avg10=1.50 avg60=0.00 avg300=0.00 total=10\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=5\n")

        let memory = try #require(Cgroup.memory(root: fx.root))
        #expect(memory.version == .v1)
        #expect(memory.directory == fx.path("/sys/fs/cgroup/memory/a/b"))
        #expect(memory.limit == Self.gib)
        #expect(memory.limitSource == "/sys/fs/cgroup/memory/a/memory.limit_in_bytes")

        let sample = try #require(Cgroup.sample(memory, root: fx.root))
        #expect(sample.usage == 10 * Self.mib)
        #expect(sample.inactiveFile == 4096)
        #expect(sample.workingSet == 10 * Self.mib - 4096)
        #expect(sample.peak == 20 * Self.mib)
        #expect(sample.oomEvents == 0)
        #expect(sample.oomKills == 3)
        #expect(sample.pressureSomeAvg10 == 1.5)
        #expect(sample.pressureFullAvg10 == 0.25)

        // A lower hierarchical_memory_limit (set above the visible mount) is taken from memory.stat.
        try fx.write("/sys/fs/cgroup/memory/a/b/memory.stat", "hierarchical_memory_limit 536870912\ninactive_file 7\n")
        // Old kernels have no oom_kill line; no PSI file → nil.
        try fx.write("/sys/fs/cgroup/memory/a/b/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n")
        try FileManager.default.removeItem(atPath: fx.path("/proc/pressure/memory"))
        let lower = try #require(Cgroup.memory(root: fx.root))
        #expect(lower.limit == 512 * Self.mib)
        #expect(lower.limitSource == "/sys/fs/cgroup/memory/a/b/memory.stat hierarchical_memory_limit")
        let old = try #require(Cgroup.sample(lower, root: fx.root))
        #expect(old.inactiveFile == 7)
        #expect(old.oomKills == 0)
        #expect(old.pressureSomeAvg10 == nil && old.pressureFullAvg10 == nil)
    }

    // MARK: v2

    /// 2. "max" is no limit; memory.high counts as a limit; memory.events and memory.pressure are read.
    @Test func v2Nested() throws {
        let fx = try CgroupFixture()
        defer { fx.remove() }
        try fx.write("/proc/self/cgroup", "0::/x/y\n")
        try fx.write("/proc/self/mountinfo", CgroupFixture.mount(30, "/", "/sys/fs/cgroup", "cgroup2", "rw,nsdelegate") + "\n")
        try fx.write("/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n")
        try fx.write("/sys/fs/cgroup/x/memory.max", "max\n")
        try fx.write("/sys/fs/cgroup/x/memory.high", "268435456\n")
        try fx.write("/sys/fs/cgroup/x/y/memory.max", "536870912\n")
        try fx.write("/sys/fs/cgroup/x/y/memory.high", "max\n")
        try fx.write("/sys/fs/cgroup/x/y/memory.current", "104857600\n")
        try fx.write("/sys/fs/cgroup/x/y/memory.peak", "209715200\n")
        try fx.write("/sys/fs/cgroup/x/y/memory.stat", "anon 4096\nfile 8192\nactive_file 5\ninactive_file 1048576\n")
        try fx.write("/sys/fs/cgroup/x/y/memory.events", "low 0\nhigh 0\nmax 12\noom 1\noom_kill 2\noom_group_kill 0\n")
        try fx.write(
            "/sys/fs/cgroup/x/y/memory.pressure",
            "some avg10=2.50 avg60=1.00 avg300=0.10 total=123\nfull avg10=0.75 avg60=0.00 avg300=0.00 total=45\n")

        let memory = try #require(Cgroup.memory(root: fx.root))
        #expect(memory.version == .v2)
        #expect(memory.directory == fx.path("/sys/fs/cgroup/x/y"))
        #expect(memory.limit == 256 * Self.mib)
        #expect(memory.limitSource == "/sys/fs/cgroup/x/memory.high")

        let sample = try #require(Cgroup.sample(memory, root: fx.root))
        #expect(sample.usage == 100 * Self.mib)
        #expect(sample.inactiveFile == Self.mib)
        #expect(sample.workingSet == 99 * Self.mib)
        #expect(sample.peak == 200 * Self.mib)
        #expect(sample.oomEvents == 1)
        #expect(sample.oomKills == 2)
        #expect(sample.pressureSomeAvg10 == 2.5)
        #expect(sample.pressureFullAvg10 == 0.75)
    }

    /// 3. All "max" is no limit; missing files are skipped.
    @Test func v2Unlimited() throws {
        let fx = try CgroupFixture()
        defer { fx.remove() }
        try fx.write("/proc/self/cgroup", "0::/x/y\n")
        try fx.write("/proc/self/mountinfo", CgroupFixture.mount(30, "/", "/sys/fs/cgroup", "cgroup2", "rw") + "\n")
        try fx.write("/sys/fs/cgroup/cgroup.controllers", "cpu memory\n")
        try fx.write("/sys/fs/cgroup/x/memory.max", "max\n")
        try fx.write("/sys/fs/cgroup/x/y/memory.max", "max\n")
        try fx.write("/sys/fs/cgroup/x/y/memory.high", "max\n")

        let memory = try #require(Cgroup.memory(root: fx.root))
        #expect(memory.limit == nil)
        #expect(memory.limitSource == nil)
        // No memory.current: no sample.
        #expect(Cgroup.sample(memory, root: fx.root) == nil)

        // No memory.max files at all.
        for file in ["/sys/fs/cgroup/x/memory.max", "/sys/fs/cgroup/x/y/memory.max", "/sys/fs/cgroup/x/y/memory.high"] {
            try FileManager.default.removeItem(atPath: fx.path(file))
        }
        let bare = try #require(Cgroup.memory(root: fx.root))
        #expect(bare.directory == fx.path("/sys/fs/cgroup/x/y"))
        #expect(bare.limit == nil)
    }

    // MARK: Choosing the hierarchy

    /// 4. Hybrid: v1 memory wins over a cgroup2 mount without the memory controller; such a
    /// mount alone is no memory controller.
    @Test func hybrid() throws {
        let fx = try CgroupFixture()
        defer { fx.remove() }
        let id = "/process_api/bde06694727b953200ceef22cf1bef9d"
        try fx.write(
            "/proc/self/cgroup",
            "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n4:memory:\(id)\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n")
        try fx.write("/proc/self/mountinfo", Self.hybridMountinfo)
        try fx.write("/sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n")
        try fx.write("/sys/fs/cgroup/memory/memory.limit_in_bytes", Self.v1Unlimited)
        try fx.write("/sys/fs/cgroup/memory\(id)/memory.limit_in_bytes", Self.v1Unlimited)
        try fx.write("/sys/fs/cgroup/memory\(id)/memory.stat", "hierarchical_memory_limit 9223372036854771712\n")
        try fx.write("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n")
        try fx.write("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n")

        let memory = try #require(Cgroup.memory(root: fx.root))
        #expect(memory.version == .v1)
        #expect(memory.directory == fx.path("/sys/fs/cgroup/memory\(id)"))
        #expect(memory.limit == nil)
        #expect(Cgroup.cpu(root: fx.root).quota == nil)

        // Only the cgroup2 mount, without memory: nothing.
        try fx.write("/proc/self/cgroup", "0::/\n")
        try fx.write("/proc/self/mountinfo", CgroupFixture.mount(41, "/", "/sys/fs/cgroup/unified", "cgroup2", "rw") + "\n")
        #expect(Cgroup.memory(root: fx.root) == nil)
    }

    /// 5. A container's namespaced view: the mount's root is the container's cgroup.
    @Test func containerView() throws {
        let fx = try CgroupFixture()
        defer { fx.remove() }
        try fx.write("/proc/self/cgroup", "4:memory:/docker/abc\n")
        try fx.write(
            "/proc/self/mountinfo",
            CgroupFixture.mount(35, "/docker/abc", "/sys/fs/cgroup/memory", "cgroup", "ro,memory") + "\n")
        try fx.write("/sys/fs/cgroup/memory/memory.limit_in_bytes", "2147483648\n")

        let memory = try #require(Cgroup.memory(root: fx.root))
        #expect(memory.directory == fx.path("/sys/fs/cgroup/memory"))
        #expect(memory.limit == 2 * Self.gib)
        #expect(memory.limitSource == "/sys/fs/cgroup/memory/memory.limit_in_bytes")

        // A sub-cgroup of the mount's root resolves below the mountpoint.
        try fx.write("/proc/self/cgroup", "4:memory:/docker/abc/worker\n")
        try fx.write("/sys/fs/cgroup/memory/worker/memory.limit_in_bytes", "1073741824\n")
        #expect(Cgroup.memory(root: fx.root)?.directory == fx.path("/sys/fs/cgroup/memory/worker"))
        #expect(Cgroup.memory(root: fx.root)?.limit == Self.gib)

        // A path outside the mount's root (or a directory that does not exist): the mountpoint.
        try fx.write("/proc/self/cgroup", "4:memory:/elsewhere\n")
        #expect(Cgroup.memory(root: fx.root)?.directory == fx.path("/sys/fs/cgroup/memory"))
        try fx.write("/proc/self/cgroup", "4:memory:/docker/abcdef\n")
        #expect(Cgroup.memory(root: fx.root)?.directory == fx.path("/sys/fs/cgroup/memory"))
        try fx.write("/proc/self/cgroup", "4:memory:/docker/abc/gone\n")
        #expect(Cgroup.memory(root: fx.root)?.directory == fx.path("/sys/fs/cgroup/memory"))
    }

    // MARK: Missing and malformed files

    /// 6. Nothing to read: no memory controller, no host memory, CPUs from ProcessInfo.
    @Test func emptyFixture() throws {
        let fx = try CgroupFixture()
        defer { fx.remove() }
        #expect(Cgroup.memory(root: fx.root) == nil)
        #expect(Cgroup.host(root: fx.root) == nil)
        let cpu = Cgroup.cpu(root: fx.root)
        #expect(cpu.online == max(1, ProcessInfo.processInfo.activeProcessorCount))
        #expect(cpu.quota == nil)
        #expect(cpu.effective == cpu.online)
        #expect(ProcessMemory.processGroups(root: fx.root).isEmpty)
        #expect(ProcessMemory.read(pid: 1, root: fx.root) == nil)
        #expect(ProcessMemory.selfRSS(root: fx.root) == nil)
    }

    /// 6. Malformed numbers and lines are treated as missing.
    @Test func malformedFiles() throws {
        let fx = try CgroupFixture()
        defer { fx.remove() }
        try fx.write("/proc/self/cgroup", "garbage\n::\n4:memory:relative\n4:memory:/a\n")
        try fx.write(
            "/proc/self/mountinfo",
            "short line\n1 2 3 4 5 6 7 8 9\n" + CgroupFixture.mount(35, "/", "/sys/fs/cgroup/memory", "cgroup", "rw,memory") + "\n")
        try fx.write("/sys/fs/cgroup/memory/memory.limit_in_bytes", "2147483648\n")
        try fx.write("/sys/fs/cgroup/memory/a/memory.limit_in_bytes", "12abc\n")
        try fx.write("/sys/fs/cgroup/memory/a/memory.stat", "hierarchical_memory_limit lots\n")
        try fx.write("/sys/fs/cgroup/memory/a/memory.usage_in_bytes", "-5\n")
        try fx.write("/proc/meminfo", "MemTotal: lots kB\nMemAvailable: 10 kB\n")

        let memory = try #require(Cgroup.memory(root: fx.root))
        #expect(memory.directory == fx.path("/sys/fs/cgroup/memory/a"))
        #expect(memory.limit == 2 * Self.gib)
        #expect(memory.limitSource == "/sys/fs/cgroup/memory/memory.limit_in_bytes")
        #expect(Cgroup.sample(memory, root: fx.root) == nil)
        #expect(Cgroup.host(root: fx.root) == nil)

        try fx.write("/proc/meminfo", "MemTotal:       16384 kB\nMemFree:    1024 kB\nMemAvailable:    8192 kB\n")
        #expect(Cgroup.host(root: fx.root) == HostMemory(total: 16 * Self.mib, available: 8 * Self.mib))
    }

    // MARK: CPU

    /// 7. v1 CFS quota, and v2 cpu.max.
    @Test func cpuQuota() throws {
        let fx = try CgroupFixture()
        defer { fx.remove() }
        try fx.write("/proc/cpuinfo", (0..<4).map { "processor\t: \($0)\nmodel name\t: Test\n\n" }.joined())
        try fx.write("/proc/self/cgroup", "3:cpuset:/\n2:cpu,cpuacct:/svc\n0::/\n")
        try fx.write(
            "/proc/self/mountinfo",
            [
                CgroupFixture.mount(34, "/", "/sys/fs/cgroup/cpuset", "cgroup", "rw,cpuset"),
                CgroupFixture.mount(32, "/", "/sys/fs/cgroup/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"),
            ].joined(separator: "\n") + "\n")
        try fx.write("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
        try fx.write("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
        try fx.write("/sys/fs/cgroup/cpu,cpuacct/svc/cpu.cfs_quota_us", "150000\n")
        try fx.write("/sys/fs/cgroup/cpu,cpuacct/svc/cpu.cfs_period_us", "100000\n")

        var cpu = Cgroup.cpu(root: fx.root)
        #expect(cpu.online == 4)
        #expect(cpu.quota == 1.5)
        #expect(cpu.quotaSource == "/sys/fs/cgroup/cpu,cpuacct/svc/cpu.cfs_quota_us")
        #expect(cpu.effective == 2)

        try fx.write("/sys/fs/cgroup/cpu,cpuacct/svc/cpu.cfs_quota_us", "-1\n")
        cpu = Cgroup.cpu(root: fx.root)
        #expect(cpu.quota == nil)
        #expect(cpu.effective == 4)

        // v2
        try fx.write("/proc/self/cgroup", "0::/svc\n")
        try fx.write("/proc/self/mountinfo", CgroupFixture.mount(30, "/", "/sys/fs/cgroup", "cgroup2", "rw") + "\n")
        try fx.write("/sys/fs/cgroup/cgroup.controllers", "cpu memory\n")
        try fx.write("/sys/fs/cgroup/svc/cpu.max", "max 100000\n")
        #expect(Cgroup.cpu(root: fx.root).quota == nil)

        try fx.write("/sys/fs/cgroup/svc/cpu.max", "50000 100000\n")
        cpu = Cgroup.cpu(root: fx.root)
        #expect(cpu.quota == 0.5)
        #expect(cpu.quotaSource == "/sys/fs/cgroup/svc/cpu.max")
        #expect(cpu.effective == 1)

        try fx.write("/sys/fs/cgroup/svc/cpu.max", "bogus\n")
        #expect(Cgroup.cpu(root: fx.root).quota == nil)
    }

    /// The real host: sched_getaffinity gives at least one CPU.
    @Test func cpuOnHost() {
        let cpu = Cgroup.cpu()
        #expect(cpu.online >= 1)
        #expect(cpu.effective >= 1 && cpu.effective <= cpu.online)
    }

    // MARK: Processes

    /// 8. This process and its group on the real host.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/proc/self/stat")))
    func processMemoryOnHost() throws {
        let residentBefore = try #require(ProcessMemory.resident(pid: getpid()))
        let single = try #require(ProcessMemory.read(pid: getpid()))
        let residentAfter = try #require(ProcessMemory.resident(pid: getpid()))
        #expect(single.rss > 0)
        #expect(single.processes == 1)
        if FileManager.default.isReadableFile(atPath: "/proc/self/smaps_rollup") {
            #expect(single.pss != nil)
        }
        #expect((ProcessMemory.selfRSS() ?? 0) > 0)
        // statm's resident bytes (what tells a busy process's walk is due) agree with the
        // walk's RSS, up to what other tests allocated in between.
        let (low, high) = (min(residentBefore, residentAfter), max(residentBefore, residentAfter))
        #expect(low > 0 && low <= single.rss + (16 << 20) && single.rss <= high + (16 << 20), "\(residentBefore)...\(residentAfter) against \(single.rss)")
        #expect(ProcessMemory.resident(pid: Int32.max) == nil)

        let groups = ProcessMemory.processGroups()
        #expect(groups[getpgrp()]?.contains(getpid()) == true)
        let group = try #require(ProcessMemory.group(getpgrp(), groups: groups))
        #expect(group.processes >= 1)
        // Read a moment later, so allow for memory this process returned in between
        // (other tests run concurrently in the same process).
        let slack: UInt64 = 16 << 20
        #expect(group.rss + slack >= single.rss)
        #expect(group.cost + slack >= single.cost)
    }

    /// 8. A fixture /proc: group membership by the field after the last ')', zombies skipped,
    /// PSS from smaps_rollup, else RSS from status.
    @Test func processGroupsFromFixture() throws {
        let fx = try CgroupFixture()
        defer { fx.remove() }
        try fx.write("/proc/100/stat", "100 ((a) b)) S 1 100 100 0 -1 4194560 1 0 0 0\n")
        try fx.write(
            "/proc/100/smaps_rollup",
            "00400000-7fffffffe000 ---p 00000000 00:00 0 [rollup]\nRss:    2000 kB\nPss:    1500 kB\nPss_Anon:   1000 kB\n")
        try fx.write("/proc/100/status", "Name:\t(a) b)\nVmRSS:\t    2000 kB\n")
        try fx.write("/proc/101/stat", "101 (sh) S 100 100 100 0 -1 0\n")
        try fx.write("/proc/101/status", "Name:\tsh\nVmPeak:\t 9999 kB\nVmRSS:\t    1000 kB\n")
        try fx.write("/proc/102/stat", "102 (dead) Z 100 100 100 0 -1 0\n")
        try fx.write("/proc/200/stat", "200 (other) R 1 200 200 0 -1 0\n")
        try fx.write("/proc/200/status", "Name:\tother\n")
        try fx.write("/proc/300/stat", "garbage\n")
        try fx.mkdir("/proc/400")
        try fx.write("/proc/self/stat", "100 (x) S 1 7 7\n")
        try fx.write("/proc/self/status", "VmRSS:\t  12 kB\n")

        let groups = ProcessMemory.processGroups(root: fx.root)
        #expect(groups == [100: [100, 101], 200: [200]])

        #expect(ProcessMemory.read(pid: 100, root: fx.root) == ProcessMemoryReading(pss: 1500 << 10, rss: 2000 << 10, processes: 1))
        #expect(ProcessMemory.read(pid: 101, root: fx.root) == ProcessMemoryReading(pss: nil, rss: 1000 << 10, processes: 1))
        #expect(ProcessMemory.read(pid: 200, root: fx.root) == ProcessMemoryReading(pss: nil, rss: 0, processes: 1))
        #expect(ProcessMemory.read(pid: 400, root: fx.root) == nil)
        #expect(ProcessMemory.selfRSS(root: fx.root) == 12 << 10)

        let group = try #require(ProcessMemory.group(100, groups: groups, root: fx.root))
        #expect(group.processes == 2)
        #expect(group.rss == 3000 << 10)
        // The member without PSS contributes its RSS to the PSS sum.
        #expect(group.pss == 2500 << 10)
        #expect(group.cost == 2500 << 10)
        #expect(ProcessMemory.group(100, root: fx.root) == group)
        #expect(ProcessMemory.group(999, groups: groups, root: fx.root) == nil)
    }

    /// Summing readings: `zero` is the identity; PSS is nil only when neither side has it.
    @Test func readingSum() {
        let a = ProcessMemoryReading(pss: 10, rss: 20, processes: 1)
        let b = ProcessMemoryReading(pss: nil, rss: 5, processes: 1)
        #expect(ProcessMemoryReading.zero + a == a)
        #expect(ProcessMemoryReading.zero + b == b)
        #expect(a + b == ProcessMemoryReading(pss: 15, rss: 25, processes: 2))
        #expect((b + b).pss == nil)
        #expect((b + b).cost == 10)
    }

    // MARK: Escapes

    /// 9. Mountpoints with octal escapes (`\040` is a space).
    @Test func escapedMountpoint() throws {
        let fx = try CgroupFixture()
        defer { fx.remove() }
        try fx.write("/proc/self/cgroup", "4:memory:/a\n")
        try fx.write(
            "/proc/self/mountinfo",
            CgroupFixture.mount(35, "/", #"/sys/fs/cgroup/my\040memory"#, "cgroup", "rw,memory") + "\n")
        try fx.write("/sys/fs/cgroup/my memory/a/memory.limit_in_bytes", "1073741824\n")

        let memory = try #require(Cgroup.memory(root: fx.root))
        #expect(memory.directory == fx.path("/sys/fs/cgroup/my memory/a"))
        #expect(memory.limit == Self.gib)
        #expect(memory.limitSource == "/sys/fs/cgroup/my memory/a/memory.limit_in_bytes")

        #expect(CgroupFiles.unescape(#"a\134b\011c"#) == "a\\b\tc")
        #expect(CgroupFiles.unescape(#"bad\9xy\04"#) == #"bad\9xy\04"#)
    }
}
