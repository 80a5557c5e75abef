#if canImport(Glibc)
import Glibc
#endif
import Foundation

// Hand-written: no maintained Swift package reads /proc/PID/smaps_rollup or process groups.
// Called every 250 ms for a few dozen pids, so every file is read once, in one pass.

/// One process's (or process group's) memory: PSS and RSS in bytes.
public struct ProcessMemoryReading: Sendable, Equatable {
    /// Proportional set size: shared pages divided among their users; nil when smaps_rollup
    /// cannot be read.
    public var pss: UInt64?
    /// Resident set size.
    public var rss: UInt64
    /// How many processes were summed (1 for one pid).
    public var processes: Int
    /// What the reading costs the machine: PSS when known, else RSS.
    public var cost: UInt64 { pss ?? rss }

    public init(pss: UInt64?, rss: UInt64, processes: Int) {
        self.pss = pss
        self.rss = rss
        self.processes = processes
    }

    /// No processes, nothing used; the identity of `+`.
    public static let zero = ProcessMemoryReading(pss: nil, rss: 0, processes: 0)

    /// Sums two readings. PSS is nil only when neither side has one; otherwise a side without
    /// PSS contributes its RSS to the PSS sum, so `cost` stays meaningful (an upper bound).
    public static func + (lhs: ProcessMemoryReading, rhs: ProcessMemoryReading) -> ProcessMemoryReading {
        let pss: UInt64? =
            lhs.pss == nil && rhs.pss == nil ? nil : (lhs.pss ?? lhs.rss) + (rhs.pss ?? rhs.rss)
        return ProcessMemoryReading(pss: pss, rss: lhs.rss + rhs.rss, processes: lhs.processes + rhs.processes)
    }
}

/// Reads processes' memory from /proc.
public enum ProcessMemory {
    /// Reads /proc/PID/smaps_rollup "Pss:" and "Rss:" (kB); falls back to /proc/PID/status
    /// "VmRSS:" (pss nil; rss 0 for a zombie or kernel thread). nil when the process is gone.
    public static func read(pid: Int32, root: SystemRoot = .host) -> ProcessMemoryReading? {
        if let rollup = KernelFile.text(root.path("/proc/\(pid)/smaps_rollup")),
            let rss = KernelFile.kilobytes("Rss:", in: rollup)
        {
            return ProcessMemoryReading(pss: KernelFile.kilobytes("Pss:", in: rollup), rss: rss, processes: 1)
        }
        guard let status = KernelFile.text(root.path("/proc/\(pid)/status")) else { return nil }
        return ProcessMemoryReading(pss: nil, rss: KernelFile.kilobytes("VmRSS:", in: status) ?? 0, processes: 1)
    }

    /// Reads every live process's process-group id from /proc/[0-9]*/stat and returns
    /// pgid → pids (ascending). Zombies (state Z) and dead tasks (X) are skipped.
    ///
    /// The comm field (2nd) is in parentheses and may itself contain spaces and ')', so the
    /// fields are read after the last ')': state ppid pgrp ...
    public static func processGroups(root: SystemRoot = .host) -> [Int32: [Int32]] {
        guard let dir = opendir(root.path("/proc")) else { return [:] }
        defer { closedir(dir) }
        var groups: [Int32: [Int32]] = [:]
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw -> String in
                let bytes = raw.prefix(while: { $0 != 0 })
                return String(decoding: bytes, as: UTF8.self)
            }
            guard let first = name.utf8.first, first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9"),
                let pid = Int32(name),
                let stat = KernelFile.bytes(root.path("/proc/\(name)/stat")),
                let fields = statFields(stat), fields.state != UInt8(ascii: "Z"), fields.state != UInt8(ascii: "X")
            else { continue }
            groups[fields.pgrp, default: []].append(pid)
        }
        for key in groups.keys { groups[key]?.sort() }
        return groups
    }

    /// Sums the memory of the members of process group `pgid` (from `groups`, or a fresh scan
    /// when nil): a CLI with its own children (MCP servers, tools) costs all of them.
    /// nil when the group has no live member.
    public static func group(
        _ pgid: Int32, groups: [Int32: [Int32]]? = nil, root: SystemRoot = .host
    ) -> ProcessMemoryReading? {
        let members = (groups ?? processGroups(root: root))[pgid] ?? []
        var total = ProcessMemoryReading.zero
        for pid in members {
            if let reading = read(pid: pid, root: root) { total = total + reading }
        }
        return total.processes > 0 ? total : nil
    }

    /// A process's resident bytes, from /proc/PID/statm: counters the kernel keeps, read in
    /// O(1). smaps_rollup (`read`) walks the process's page tables under its mmap lock, which
    /// takes milliseconds for a CLI's few hundred MiB and stands in the way of the process's
    /// own mmap calls; this tells when a walk is worth it. nil when gone.
    public static func resident(pid: Int32, root: SystemRoot = .host) -> UInt64? {
        guard let statm = KernelFile.text(root.path("/proc/\(pid)/statm")) else { return nil }
        let fields = statm.split(separator: " ")
        guard fields.count >= 2, let pages = UInt64(fields[1]) else { return nil }
        return pages * UInt64(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Reads the calling process's RSS, /proc/self/status VmRSS.
    public static func selfRSS(root: SystemRoot = .host) -> UInt64? {
        KernelFile.text(root.path("/proc/self/status")).flatMap { KernelFile.kilobytes("VmRSS:", in: $0) }
    }

    /// The fields of a /proc stat file (a process's, or a thread's under task/) after the
    /// command name, which is in parentheses and may itself hold spaces and ')': index 0 is
    /// the state (field 3 of proc(5)), index 16 the nice value (field 19).
    public static func statFields(path: String) -> [Substring]? {
        guard let stat = KernelFile.text(path), let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ")
    }

    /// The state and process group of a /proc/PID/stat line; nil when malformed.
    static func statFields(_ stat: [UInt8]) -> (state: UInt8, pgrp: Int32)? {
        guard let paren = stat.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        // After ")": " state ppid pgrp ..."
        let words = stat[(paren + 1)...].split(separator: UInt8(ascii: " "), maxSplits: 4)
        guard words.count >= 3, words[0].count == 1, let state = words[0].first,
            let pgrp = Int32(String(decoding: words[2], as: UTF8.self))
        else { return nil }
        return (state, pgrp)
    }
}
