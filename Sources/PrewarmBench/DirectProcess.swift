import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A child process driven directly over pipes, with blocking reads on the calling thread: the
/// baselines (`spawn`, `direct-warm`, `--direct`) measure a CLI with nothing in between, so
/// their clocks read the instant a line arrives, with no event loop or task hop. (The daemon
/// itself uses swift-subprocess and SwiftNIO; a baseline must not share its machinery.)
///
/// Not thread-safe: one thread drives it from spawn to `terminate()`.
public final class DirectProcess: @unchecked Sendable {
    /// Every process group a baseline has running, so an interrupted run can end them.
    private static let running = Mutex<Set<pid_t>>([])

    /// Kills every baseline process still running (the bench was interrupted).
    public static func killAll() {
        for pid in running.withLock({ $0 }) { kill(-pid, SIGKILL) }
    }

    let pid: pid_t
    private let input: Int32
    private let output: Int32
    private var pending: [UInt8] = []
    private var eof = false
    private var inputOpen = true

    struct SpawnError: Error, CustomStringConvertible {
        var description: String
    }

    /// Spawns `executable` in its own process group with pipes on stdin and stdout (stderr
    /// goes to /dev/null).
    init(executable: String, arguments: [String], environment: [String: String], directory: String?) throws {
        var toChild: [Int32] = [0, 0]
        var fromChild: [Int32] = [0, 0]
        guard pipe(&toChild) == 0 else { throw SpawnError(description: "pipe: \(String(cString: strerror(errno)))") }
        guard pipe(&fromChild) == 0 else {
            close(toChild[0])
            close(toChild[1])
            throw SpawnError(description: "pipe: \(String(cString: strerror(errno)))")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, toChild[0], 0)
        posix_spawn_file_actions_adddup2(&actions, fromChild[1], 1)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        for fd in toChild + fromChild { posix_spawn_file_actions_addclose(&actions, fd) }
        if let directory, let addChdir = Self.addChdir {
            _ = addChdir(&actions, directory)
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var child: pid_t = 0
        let result = posix_spawn(&child, executable, &actions, &attributes, argv, envp)
        close(toChild[0])
        close(fromChild[1])
        guard result == 0 else {
            close(toChild[1])
            close(fromChild[0])
            throw SpawnError(description: "cannot spawn \(executable): \(String(cString: strerror(result)))")
        }
        pid = child
        input = toChild[1]
        output = fromChild[0]
        Self.running.withLock { _ = $0.insert(child) }
    }

    /// posix_spawn_file_actions_addchdir_np (glibc 2.29+): Glibc declares it only under
    /// _GNU_SOURCE, which Swift's Glibc module does not define, so it is looked up at run time.
    private typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> CInt
    private static let addChdir: AddChdir? = {
        guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "posix_spawn_file_actions_addchdir_np") else { return nil }
        return unsafeBitCast(symbol, to: AddChdir.self)
    }()

    /// Writes `text` (a newline is added when missing).
    func write(_ text: String) -> Bool {
        var bytes = Array(text.utf8)
        if bytes.last != UInt8(ascii: "\n") { bytes.append(UInt8(ascii: "\n")) }
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.write(input, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += written
        }
        return true
    }

    /// The next stdout line (without its newline), blocking; nil at end of file.
    func readLine() -> [UInt8]? {
        while true {
            if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(pending[..<newline])
                pending.removeSubrange(...newline)
                return line
            }
            if eof {
                guard !pending.isEmpty else { return nil }
                defer { pending.removeAll() }
                return pending
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let count = chunk.withUnsafeMutableBytes { Glibc.read(output, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 {
                eof = true
            } else {
                pending.append(contentsOf: chunk[..<count])
            }
        }
    }

    /// Closes stdin (for CLIs that read a turn to end of file).
    func closeInput() {
        guard inputOpen else { return }
        inputOpen = false
        close(input)
    }

    /// Closes the pipes, kills the process group and reaps the process.
    func terminate() {
        closeInput()
        close(output)
        kill(-pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        Self.running.withLock { _ = $0.remove(pid) }
    }
}

extension Array where Element == UInt8 {
    /// Whether `needle`'s bytes occur in this line.
    func contains(substring needle: [UInt8]) -> Bool {
        guard !needle.isEmpty else { return true }
        guard count >= needle.count else { return false }
        for start in 0...(count - needle.count) where self[start] == needle[0] {
            if self[start..<(start + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }
}
