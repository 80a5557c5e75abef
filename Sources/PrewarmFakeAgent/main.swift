// prewarm-fake-agent — a faithful stand-in for the Claude Code CLI
// (`claude --output-format stream-json --verbose --input-format stream-json`)
// for Prewarm's tests, demos and benchmarks.
//
// It speaks newline-delimited JSON on stdin/stdout: it answers `initialize`
// control requests, and for every `{"type":"user"}` line streams a fake turn
// (system/init, token stream events, assistant message, result). Options shape
// the start-up cost (CPU burn, sleep, memory), the turns (latency, tokens,
// memory), idle chatter, and faults (failing or hanging start-up, crashing or
// hanging turns, garbage output, a grandchild process). See `--help`.
//
// Start-up work happens before stdin is read; lines sent earlier wait in the
// pipe. End of stdin ends the program with status 0.
//
// This file: the entry point, start-up work, the stdin line reader and small
// system helpers. Options.swift: the command line. Agent.swift: the protocol.

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#else
import Darwin
#endif

// MARK: - Entry point

func main() -> Never {
    let arguments = CommandLine.arguments.dropFirst()
    if arguments.contains(Options.grandchildSleepFlag) { grandchildSleep() }
    signal(SIGPIPE, SIG_IGN)

    let options = parseOptionsOrExit(arguments)
    if options.help {
        _ = writeAll(STDOUT_FILENO, Array((Options.usage + "\n").utf8))
        exit(0)
    }
    if options.version {
        _ = writeAll(STDOUT_FILENO, Array("2.1.327 (prewarm-fake-agent)\n".utf8))
        exit(0)
    }

    let writer = Writer()
    let ballast = MemoryBallast()
    let childPID = startUp(options, ballast: ballast)
    let agent = Agent(options: options, writer: writer, ballast: ballast, childPID: childPID)
    if options.garbage { agent.writeStartupGarbage() }
    if options.chatterMs > 0 { startChatter(writer: writer, intervalMs: options.chatterMs) }

    var reader = LineReader(fd: STDIN_FILENO)
    // A turn waiting for the host's answer to a permission request reads on by itself.
    let next = { reader.nextLine() }
    while let line = next() {
        agent.handle(line: line, receivedAt: monotonicNanoseconds(), next: next)
    }
    exit(0)
}

func parseOptionsOrExit(_ arguments: ArraySlice<String>) -> Options {
    do throws(UsageError) {
        return try Options.parse(arguments)
    } catch {
        note("prewarm-fake-agent: \(error.message) (see --help)")
        exit(64)
    }
}

/// The hidden `--grandchild-sleep` mode: sleep an hour, then exit.
func grandchildSleep() -> Never {
    sleep(3600)
    exit(0)
}

// MARK: - Start-up

/// Does the start-up work the options ask for, then the start-up faults.
/// Returns the grandchild's pid when `--fork-child` is given.
func startUp(_ options: Options, ballast: MemoryBallast) -> pid_t? {
    let childPID = options.forkChild ? spawnGrandchild() : nil
    ballast.allocate(mib: options.initMiB)
    burnCPU(milliseconds: options.initMs)
    burnCPU(milliseconds: options.initCPUMs, clock: CLOCK_THREAD_CPUTIME_ID)
    sleepMilliseconds(options.initSleepMs)
    if options.failInit {
        note("fake-agent: simulated start-up failure (--fail-init)")
        exit(1)
    }
    if options.hangInit { hangForever() }
    return childPID
}

/// Keeps one core busy for `milliseconds` of wall time with arithmetic the
/// optimizer cannot remove (its result decides whether a line is written).
/// Burns CPU until `clock` has advanced `milliseconds`: wall time (CLOCK_MONOTONIC), or the
/// thread's own CPU time (CLOCK_THREAD_CPUTIME_ID: a fixed amount of work, which takes longer
/// when the CPU is shared).
func burnCPU(milliseconds: Int, clock: clockid_t = CLOCK_MONOTONIC) {
    guard milliseconds > 0 else { return }
    let deadline = nanoseconds(clock) + UInt64(milliseconds) * 1_000_000
    var state = 0x9E37_79B9_7F4A_7C15 ^ UInt64(getpid())
    var checksum: UInt64 = 0
    repeat {
        for _ in 0..<4096 {  // xorshift64*
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            checksum &+= state &* 0x2545_F491_4F6C_DD1D
        }
    } while nanoseconds(clock) < deadline
    if checksum == 0 { note("fake-agent: start-up checksum is zero") }
}

/// Starts `/proc/self/exe --grandchild-sleep` in our process group with its
/// standard streams on /dev/null. Exits with status 1 if that fails.
func spawnGrandchild() -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0)

    let argv0 = CommandLine.arguments.first ?? "prewarm-fake-agent"
    let argv: [UnsafeMutablePointer<CChar>?] = [strdup(argv0), strdup(Options.grandchildSleepFlag), nil]
    defer { argv.forEach { free($0) } }

    var pid: pid_t = 0
    let status = posix_spawn(&pid, "/proc/self/exe", &actions, nil, argv, environ)
    guard status == 0 else {
        note("fake-agent: cannot start the grandchild: \(String(cString: strerror(status)))")
        exit(1)
    }
    return pid
}

/// Memory that stays allocated, with every page touched, until the process exits.
final class MemoryBallast {
    private var blocks: [UnsafeMutableRawPointer] = []

    func allocate(mib: Int) {
        guard mib > 0 else { return }
        let size = mib << 20
        guard let block = malloc(size) else {
            note("fake-agent: cannot allocate \(mib) MiB")
            exit(1)
        }
        for offset in stride(from: 0, to: size, by: 4096) {
            block.storeBytes(of: 1, toByteOffset: offset, as: UInt8.self)
        }
        blocks.append(block)
    }
}

// MARK: - Input

/// Reads "\n"-terminated lines from a file descriptor with read(2), handing
/// each out as soon as it is complete. A final unterminated line is handed
/// out at end of input.
struct LineReader {
    private let fd: Int32
    private var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    private var buffer: [UInt8] = []
    private var lineStart = 0
    private var scanned = 0
    private var atEnd = false

    init(fd: Int32) {
        self.fd = fd
    }

    /// The next line without its "\n", or nil at end of input.
    mutating func nextLine() -> [UInt8]? {
        while true {
            if let newline = buffer[scanned...].firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[lineStart..<newline])
                lineStart = newline + 1
                scanned = lineStart
                return line
            }
            scanned = buffer.count
            if atEnd { return takeRest() }
            discardConsumed()
            fill()
        }
    }

    private mutating func takeRest() -> [UInt8]? {
        guard lineStart < buffer.count else { return nil }
        let rest = Array(buffer[lineStart...])
        lineStart = buffer.count
        return rest
    }

    private mutating func discardConsumed() {
        buffer.removeFirst(lineStart)
        scanned -= lineStart
        lineStart = 0
    }

    /// Blocks until more input arrives or input ends.
    private mutating func fill() {
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count > 0 {
                buffer.append(contentsOf: chunk[..<count])
                return
            }
            if count < 0 && errno == EINTR { continue }
            if count < 0 { note("fake-agent: stdin read failed: \(String(cString: strerror(errno)))") }
            atEnd = true
            return
        }
    }
}

// MARK: - System helpers

func monotonicNanoseconds() -> UInt64 { nanoseconds(CLOCK_MONOTONIC) }

func nanoseconds(_ clock: clockid_t) -> UInt64 {
    var now = timespec()
    clock_gettime(clock, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

/// Sleeps `milliseconds`, resuming after signal interruptions.
func sleepMilliseconds(_ milliseconds: Int) {
    guard milliseconds > 0 else { return }
    var request = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && errno == EINTR {
        request = remaining
    }
}

/// Blocks forever; signals still end the process as usual.
func hangForever() -> Never {
    while true { pause() }
}

main()
