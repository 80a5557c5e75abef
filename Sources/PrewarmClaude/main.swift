#if canImport(Glibc)
import Glibc
#endif

// `prewarm-claude`: the Claude Code CLI's command line, served by a Prewarm daemon's warm
// CLIs; where the daemon cannot serve it, the real CLI with the same argv, stdin untouched:
// never worse than no Prewarm. An SDK points at it instead of the CLI (Python `cli_path`,
// TypeScript `pathToClaudeCodeExecutable`, Laravel `CLAUDE_AGENT_CLI_PATH`).
//
// Plain Glibc on purpose (no Foundation, no NIO): it runs once per agent run, on the
// request path, and must cost almost nothing before the first forwarded byte. For the same
// reason its JSON and base64 are written by hand (a few lines each).
//
// It asks the daemon for a run (`POST /v1/runs`, upgraded to a framed two-way stream; the
// frames are described in the daemon's RunStream.swift) and reads nothing from its stdin
// before the daemon has accepted the run, so a fallback exec loses no byte.
//
// The run carries the caller's credentials, so the daemon is checked before anything is
// sent: the process listening on the socket (SO_PEERCRED) must be of this uid or root. And
// only what the daemon reads to route and start the run is sent (the variables it names in
// `GET /v1/runs/environment`), never the rest of the environment.

// MARK: - The real CLI

/// The real CLI: `PREWARM_CLAUDE_CLI`, else `claude.real` beside the path this was started
/// as (an SDK's bundled CLI that `prewarm sdk install` moved aside: `_bundled/claude` is then
/// this executable, `_bundled/claude.real` the CLI), else `claude` on PATH that is not this
/// executable.
func realCLI(_ environment: [String: String]) -> String? {
    if let path = environment["PREWARM_CLAUDE_CLI"], !path.isEmpty { return path }
    let me = FileKey(path: "/proc/self/exe")
    if let started = startedPath(environment), let slash = started.lastIndex(of: "/") {
        let beside = String(started[..<slash]) + "/claude.real"
        if access(beside, X_OK) == 0, trusted(beside), let key = FileKey(path: beside), key != me { return beside }
        // Started as `DIR/claude` that is no longer this executable: an uninstall put the
        // original back (renamed claude.real over it) since this started.
        if started.hasSuffix("/claude"), access(started, X_OK) == 0, trusted(started), let key = FileKey(path: started), key != me { return started }
    }
    for directory in (environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") where !directory.isEmpty {
        let candidate = String(directory) + "/claude"
        guard access(candidate, X_OK) == 0, let key = FileKey(path: candidate) else { continue }
        if key != me { return candidate }
    }
    return nil
}

/// Whether a file found from argv[0] (which the caller chose) may be run as the real CLI: it
/// and its directory are owned by this uid or root and writable by no one else, as the
/// daemon's TrustedDirectory requires of its own paths. Else another user who can write
/// there (a shared or group-writable directory, /tmp) would plant the CLI the caller runs.
func trusted(_ path: String) -> Bool {
    guard let slash = path.lastIndex(of: "/") else { return false }
    let directory = slash == path.startIndex ? "/" : String(path[..<slash])
    return [path, directory].allSatisfy { item in
        var info = stat()
        guard stat(item, &info) == 0 else { return false }
        return (info.st_uid == getuid() || info.st_uid == 0) && info.st_mode & 0o022 == 0
    }
}

/// The path this was started as: argv[0] when it names a path; for a bare name (a shell's
/// `claude`), the file name its exec was given, which the kernel keeps (AT_EXECFN: the path
/// the shell or execvp found on PATH), else the first file on PATH by that name that is this
/// executable.
func startedPath(_ environment: [String: String]) -> String? {
    // Looked up once per run (the real CLI's lookup and the daemon's counts both ask).
    if let known = startedPathFound { return known }
    let path = findStartedPath(environment)
    startedPathFound = .some(path)
    return path
}

/// What `startedPath` found (`.some(nil)`: nothing); read and written on the main thread only.
nonisolated(unsafe) var startedPathFound: String??

/// glibc's getauxval, which Swift's Glibc module does not export (sys/auxv.h), found by name.
let auxiliaryValue: (@convention(c) (UInt) -> UInt)? = dlsym(nil, "getauxval").map { unsafeBitCast($0, to: (@convention(c) (UInt) -> UInt).self) }

private func findStartedPath(_ environment: [String: String]) -> String? {
    guard let first = CommandLine.arguments.first, !first.isEmpty else { return nil }
    if first.contains("/") { return first }
    // AT_EXECFN (31 in <elf.h>): the file name execve was given, the one PATH led to.
    if let name = auxiliaryValue.flatMap({ UnsafePointer<CChar>(bitPattern: $0(31)) }) {
        let path = String(cString: name)
        if path.contains("/"), let key = FileKey(path: path), key == FileKey(path: "/proc/self/exe") { return path }
    }
    let me = FileKey(path: "/proc/self/exe")
    for directory in (environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") where !directory.isEmpty {
        let candidate = String(directory) + "/" + first
        if access(candidate, X_OK) == 0, let key = FileKey(path: candidate), key == me { return candidate }
    }
    return nil
}

/// How this came to be run in the CLI's place, for the daemon's counts: `sdk-install`
/// (started as an SDK's `_bundled/claude` with `claude.real` beside it: `prewarm sdk
/// install`), `path-install` (started as `claude` from a directory: `--path-dir`), or nil
/// (named by its own name: `cli_path` and the like).
func installedVia(_ environment: [String: String]) -> String? {
    guard let started = startedPath(environment), started.hasSuffix("/claude") else { return nil }
    let directory = String(started.dropLast("/claude".count))
    if directory.hasSuffix("/_bundled") && access(directory + "/claude.real", X_OK) == 0 { return "sdk-install" }
    return "path-install"
}

/// A file's identity (device and inode): the same file under any name or link. (PrewarmCore's
/// `FileIdentity` does the same, but linking PrewarmCore would bring Foundation and NIO into
/// an executable that must start in milliseconds.)
struct FileKey: Equatable {
    let device: UInt64
    let inode: UInt64

    init?(path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
    }
}

/// Whether `PREWARM_CLAUDE_DEBUG=1` asks why a run went to the real CLI.
func debugging(_ environment: [String: String]) -> Bool {
    guard let value = environment["PREWARM_CLAUDE_DEBUG"] else { return false }
    return !value.isEmpty && value != "0"
}

/// The real CLI for this run, and why (one line on stderr with PREWARM_CLAUDE_DEBUG=1).
func fallBack(_ environment: [String: String], because reason: String) -> Never {
    if debugging(environment) { writeAll(2, Array("prewarm-claude: running the real CLI: \(reason)\n".utf8)) }
    execRealCLI(environment)
}

/// Replaces this process with the real CLI, same argv (argv[0] the CLI's path), same
/// environment, stdin unread. Returns only if that fails: exit 127 with why. The arguments
/// are the process's own bytes, never re-encoded: one that is not valid UTF-8 reaches the
/// CLI as it was given (CommandLine.arguments would have repaired it).
func execRealCLI(_ environment: [String: String]) -> Never {
    guard let cli = realCLI(environment) else {
        fail(127, "prewarm-claude: no Claude Code CLI to run: set PREWARM_CLAUDE_CLI to its path, or put `claude` on PATH")
    }
    let given = (1..<Int(CommandLine.argc)).map { CommandLine.unsafeArgv[$0] }
    var argv: [UnsafeMutablePointer<CChar>?] = [strdup(cli)] + given + [nil]
    execv(cli, argv)
    // claude.real renamed back over claude (an uninstall) since it was looked up: look again.
    if errno == ENOENT, let again = realCLI(environment), again != cli {
        argv[0] = strdup(again)
        execv(again, argv)
    }
    let reason = String(cString: strerror(errno))
    fail(127, "prewarm-claude: cannot run \(cli): \(reason); check PREWARM_CLAUDE_CLI")
}

func fail(_ status: Int32, _ message: String) -> Never {
    writeAll(2, Array((message + "\n").utf8))
    exit(status)
}

func currentEnvironment() -> [String: String] {
    var result: [String: String] = [:]
    var entry = environ
    while let pointer = entry.pointee {
        let text = String(cString: pointer)
        if let equals = text.firstIndex(of: "=") {
            result[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        entry += 1
    }
    return result
}

/// Where the daemon listens: `PREWARM_SOCKET`, else `$XDG_RUNTIME_DIR/prewarm.sock`, else
/// `/tmp/prewarm-$UID/prewarm.sock` (the daemon's own default).
func socketPath(_ environment: [String: String]) -> String {
    if let path = environment["PREWARM_SOCKET"], !path.isEmpty { return path }
    if let runtime = environment["XDG_RUNTIME_DIR"], !runtime.isEmpty { return runtime + "/prewarm.sock" }
    return "/tmp/prewarm-\(getuid())/prewarm.sock"
}

// MARK: - Bytes

func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
    writeAll(fd, bytes[...])
}

/// Writes everything (blocking: a reader that does not read holds the run back, as it would
/// hold back the CLI itself). A closed reader loses the rest, as it would with the CLI.
func writeAll(_ fd: Int32, _ bytes: ArraySlice<UInt8>) {
    var offset = bytes.startIndex
    while offset < bytes.endIndex {
        let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if written < 0 {
            if errno == EINTR { continue }
            return
        }
        offset += written
    }
}

/// JSON text of a string (RFC 8259 escapes).
func jsonString(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 {
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out + "\""
}

func base64(_ bytes: [UInt8]) -> String {
    let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    var out: [UInt8] = []
    out.reserveCapacity((bytes.count + 2) / 3 * 4)
    var index = 0
    while index < bytes.count {
        let a = UInt32(bytes[index])
        let b = index + 1 < bytes.count ? UInt32(bytes[index + 1]) : 0
        let c = index + 2 < bytes.count ? UInt32(bytes[index + 2]) : 0
        let triple = a << 16 | b << 8 | c
        out.append(alphabet[Int(triple >> 18 & 63)])
        out.append(alphabet[Int(triple >> 12 & 63)])
        out.append(index + 1 < bytes.count ? alphabet[Int(triple >> 6 & 63)] : UInt8(ascii: "="))
        out.append(index + 2 < bytes.count ? alphabet[Int(triple & 63)] : UInt8(ascii: "="))
        index += 3
    }
    return String(decoding: out, as: UTF8.self)
}

/// What the daemon reads of the environment (`GET /v1/runs/environment`): variables by
/// name, prefix and suffix.
struct RunEnvironment {
    var names: Set<String> = []
    var prefixes: [String] = []
    var suffixes: [String] = []

    func sends(_ name: String) -> Bool {
        names.contains(name) || prefixes.contains { name.hasPrefix($0) } || suffixes.contains { name.hasSuffix($0) }
    }

    /// Reads `{"names": [...], "prefixes": [...], "suffixes": [...]}` (arrays of strings;
    /// whatever else is there is skipped). nil when it is not that.
    init?(json: [UInt8]) {
        var index = 0
        var found = 0
        func skipSpace() { while index < json.count, [9, 10, 13, 32].contains(json[index]) { index += 1 } }
        func string() -> String? {
            guard index < json.count, json[index] == UInt8(ascii: "\"") else { return nil }
            index += 1
            var bytes: [UInt8] = []
            while index < json.count, json[index] != UInt8(ascii: "\"") {
                if json[index] == UInt8(ascii: "\\") {
                    index += 1
                    guard index < json.count else { return nil }
                    // Names are plain ASCII words: an escape other than \" or \\ is refused.
                    guard json[index] == UInt8(ascii: "\"") || json[index] == UInt8(ascii: "\\") else { return nil }
                }
                bytes.append(json[index])
                index += 1
            }
            guard index < json.count else { return nil }
            index += 1
            return String(decoding: bytes, as: UTF8.self)
        }
        skipSpace()
        guard index < json.count, json[index] == UInt8(ascii: "{") else { return nil }
        index += 1
        while true {
            skipSpace()
            if index < json.count, json[index] == UInt8(ascii: "}") { break }
            guard let key = string() else { return nil }
            skipSpace()
            guard index < json.count, json[index] == UInt8(ascii: ":") else { return nil }
            index += 1
            skipSpace()
            guard index < json.count, json[index] == UInt8(ascii: "[") else { return nil }
            index += 1
            var values: [String] = []
            while true {
                skipSpace()
                if index < json.count, json[index] == UInt8(ascii: "]") { index += 1; break }
                guard let value = string() else { return nil }
                values.append(value)
                skipSpace()
                if index < json.count, json[index] == UInt8(ascii: ",") { index += 1 }
            }
            switch key {
            case "names": names = Set(values); found += 1
            case "prefixes": prefixes = values; found += 1
            case "suffixes": suffixes = values; found += 1
            default: break
            }
            skipSpace()
            if index < json.count, json[index] == UInt8(ascii: ",") { index += 1 }
        }
        guard found == 3 else { return nil }
    }
}

/// The run as the daemon reads it: `{"argv": [...], "cwd": "...", "env": {...}, "cli": "...",
/// "via": "..."}`.
func describeRun(arguments: [String], cwd: String, environment: [String: String], cli: String?, via: String?) -> String {
    var json = "{\"argv\":[" + arguments.dropFirst().map(jsonString).joined(separator: ",") + "],"
    json += "\"cwd\":" + jsonString(cwd) + ",\"env\":{"
    json += environment.map { jsonString($0.key) + ":" + jsonString($0.value) }.joined(separator: ",") + "}"
    if let cli { json += ",\"cli\":" + jsonString(cli) }
    if let via { json += ",\"via\":" + jsonString(via) }
    return json + "}"
}

func workingDirectory() -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    guard getcwd(&buffer, buffer.count) != nil else { return "" }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

// MARK: - The daemon

/// The process listening on the other end of a connected Unix socket (SO_PEERCRED):
/// `struct ucred`, which Glibc's module does not export without _GNU_SOURCE.
func peer(of fd: Int32) -> (pid: Int32, uid: UInt32)? {
    var credentials: (Int32, UInt32, UInt32) = (0, 0, 0)
    var length = socklen_t(MemoryLayout.size(ofValue: credentials))
    guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0 else { return nil }
    return (credentials.0, credentials.1)
}

enum Connection {
    case connected(Int32)
    /// Nothing listens there (or the path is unusable): why.
    case absent(String)
    /// Something of another user listens there: why (said on stderr, always).
    case stranger(String)
}

/// A connected socket to a daemon of this uid or root.
func connectDaemon(_ path: String) -> Connection {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return .absent("socket(): \(String(cString: strerror(errno)))") }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
        close(fd)
        return .absent("the socket path \(path) is too long")
    }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard connected == 0 else {
        let reason = String(cString: strerror(errno))
        close(fd)
        return .absent("no daemon at \(path) (\(reason))")
    }
    guard let peer = peer(of: fd) else {
        close(fd)
        return .stranger("cannot tell who listens on \(path) (SO_PEERCRED: \(String(cString: strerror(errno)))); nothing was sent")
    }
    guard peer.uid == getuid() || peer.uid == 0 else {
        close(fd)
        return .stranger(
            "\(path) is served by pid \(peer.pid) of uid \(peer.uid), not by a daemon of uid \(getuid()) or root; nothing was sent to it. Remove it, or set PREWARM_SOCKET to your daemon's socket"
        )
    }
    // Started by the daemon itself: a pool's command is this executable (an SDK's bundled
    // CLI replaced under a running daemon's pool). Handing itself to the daemon as a run would
    // loop; it is the real CLI instead.
    if peer.pid == getppid() {
        close(fd)
        return .absent("started by the daemon itself (pid \(peer.pid)): a pool's command is prewarm-claude; set it to the real CLI (claude.real)")
    }
    return .connected(fd)
}

/// Sends all of `bytes` on the socket; false when it fails.
func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    var rest = bytes[...]
    while !rest.isEmpty {
        let sent = rest.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if sent < 0 && errno == EINTR { continue }
        guard sent > 0 else { return false }
        rest = rest.dropFirst(sent)
    }
    return true
}

/// `GET /v1/runs/environment` on its own connection (a run's upgrade must be its
/// connection's first request): which variables the daemon reads. Returns why not otherwise.
func runEnvironment(_ fd: Int32) -> Result<RunEnvironment, Failure> {
    defer { close(fd) }
    guard sendAll(fd, Array("GET /v1/runs/environment HTTP/1.1\r\nHost: prewarm\r\nConnection: close\r\n\r\n".utf8)) else {
        return .failure(Failure("the daemon closed the connection"))
    }
    var received: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16_384)
    while received.count < 1 << 20 {
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { break }
        received += chunk[0..<count]
    }
    guard let end = headEnd(received), received.count >= 12, let status = Int(String(decoding: received[9..<12], as: UTF8.self)) else {
        return .failure(Failure("the daemon's answer to GET /v1/runs/environment is not HTTP"))
    }
    guard status == 200 else {
        let why = status == 404 ? "the daemon is older than this prewarm-claude (no /v1/runs/environment)" : "the daemon answered \(status): \(errorMessage(-1, after: Array(received[(end + 4)...])))"
        return .failure(Failure(why))
    }
    guard let environment = RunEnvironment(json: Array(received[(end + 4)...])) else {
        return .failure(Failure("the daemon's /v1/runs/environment is not {\"names\", \"prefixes\", \"suffixes\"}"))
    }
    return .success(environment)
}

struct Failure: Error {
    let reason: String
    init(_ reason: String) { self.reason = reason }
}

/// The answer's status and body start, and the bytes after its head (the first frames).
struct Answer {
    var status: Int
    var head: String
    var rest: [UInt8]
}

/// Sends the run's request and reads the head of the answer. The daemon answers once the run
/// has a process (it may wait for a spare, or start one): no time limit here.
func requestRun(_ fd: Int32, description: String) -> Answer? {
    let request = "POST /v1/runs HTTP/1.1\r\nHost: prewarm\r\nConnection: Upgrade\r\nUpgrade: prewarm-stream\r\n"
        + "Prewarm-Run: \(base64(Array(description.utf8)))\r\nContent-Length: 0\r\n\r\n"
    guard sendAll(fd, Array(request.utf8)) else { return nil }
    var received: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16_384)
    while true {
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { return nil }
        received += chunk[0..<count]
        if let end = headEnd(received) {
            let head = String(decoding: received[0..<end], as: UTF8.self)
            guard head.hasPrefix("HTTP/1."), head.count >= 12, let status = Int(head.dropFirst(9).prefix(3)) else { return nil }
            return Answer(status: status, head: head, rest: Array(received[(end + 4)...]))
        }
        if received.count > 65_536 { return nil }
    }
}

func headEnd(_ bytes: [UInt8]) -> Int? {
    guard bytes.count >= 4 else { return nil }
    for index in 0...(bytes.count - 4)
    where bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 {
        return index
    }
    return nil
}

/// The `message` of a JSON error body, read without a JSON parser (enough for a reason line).
func errorMessage(_ fd: Int32, after rest: [UInt8]) -> String {
    var body = rest
    var chunk = [UInt8](repeating: 0, count: 4096)
    var timeout = timeval(tv_sec: 1, tv_usec: 0)
    if fd >= 0 { setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size)) }
    while fd >= 0 && body.count < 16_384 {
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { break }
        body += chunk[0..<count]
    }
    let text = String(decoding: body, as: UTF8.self)
    let key = Array("\"message\":\"".utf8)
    guard body.count >= key.count, let start = (0...(body.count - key.count)).first(where: { body[$0..<($0 + key.count)].elementsEqual(key) }) else {
        return text
    }
    var message = ""
    var escaped = false
    for character in String(decoding: body[(start + key.count)...], as: UTF8.self) {
        if escaped {
            message.append(character)
            escaped = false
        } else if character == "\\" {
            escaped = true
        } else if character == "\"" {
            break
        } else {
            message.append(character)
        }
    }
    return message
}

// MARK: - The run

/// The write end of the pipe that signal handlers write their signal number to, so the
/// loop forwards it (a handler may only do async-signal-safe things).
nonisolated(unsafe) var signalPipe: (read: Int32, write: Int32) = (-1, -1)

func installSignalForwarding() {
    var fds: [Int32] = [-1, -1]
    guard pipe(&fds) == 0 else { return }
    for fd in fds {
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }
    signalPipe = (fds[0], fds[1])
    // A parent may spawn it with these blocked (threaded runtimes block signals in their
    // worker threads, and a child inherits the mask): they must reach the handler.
    var unblock = sigset_t()
    sigemptyset(&unblock)
    for number in [SIGTERM, SIGINT, SIGHUP, SIGQUIT] { sigaddset(&unblock, number) }
    sigprocmask(SIG_UNBLOCK, &unblock, nil)
    for number in [SIGTERM, SIGINT, SIGHUP, SIGQUIT] {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { number in
            var byte = UInt8(truncatingIfNeeded: number)
            _ = write(signalPipe.write, &byte, 1)
        }
        sigemptyset(&action.sa_mask)
        action.sa_flags = SA_RESTART
        sigaction(number, &action, nil)
    }
    signal(SIGPIPE, SIG_IGN)
}

func frame(_ type: UInt8, _ payload: ArraySlice<UInt8>) -> [UInt8] {
    let length = UInt32(payload.count)
    return [type, UInt8(length >> 24), UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff)] + payload
}

/// Pumps the run until the daemon sends its exit status: stdin and signals to the daemon,
/// stdout and stderr from it. Never returns.
func pump(_ fd: Int32, initial: [UInt8]) -> Never {
    installSignalForwarding()
    var inbound = initial
    var outbound: [UInt8] = []
    var stdinOpen = true
    // The daemon may end a run while we still send (a flood refused): what it said before
    // closing (its error and exit frames) is still ours to read, so a failed send stops the
    // sending only, and the reading goes on to the exit frame.
    var sendFailure: String?
    var chunk = [UInt8](repeating: 0, count: 65_536)
    _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    while true {
        // Whole frames first.
        while inbound.count >= 5 {
            let length = Int(inbound[1]) << 24 | Int(inbound[2]) << 16 | Int(inbound[3]) << 8 | Int(inbound[4])
            guard inbound.count >= 5 + length else { break }
            let payload = inbound[5..<(5 + length)]
            switch inbound[0] {
            case UInt8(ascii: "o"): writeAll(1, payload)
            case UInt8(ascii: "e"): writeAll(2, payload)
            case UInt8(ascii: "x"):
                guard payload.count >= 4 else { fail(1, "prewarm-claude: a malformed exit frame from the daemon") }
                let status = Int32(bitPattern: UInt32(payload[payload.startIndex]) << 24 | UInt32(payload[payload.startIndex + 1]) << 16
                    | UInt32(payload[payload.startIndex + 2]) << 8 | UInt32(payload[payload.startIndex + 3]))
                let reason = String(decoding: payload.dropFirst(4), as: UTF8.self)
                if !reason.isEmpty { writeAll(2, Array("prewarm-claude: \(reason)\n".utf8)) }
                exit(status)
            default:
                fail(1, "prewarm-claude: an unknown frame from the daemon (type \(inbound[0]))")
            }
            inbound.removeFirst(5 + length)
        }
        // Stdin is read only when what was read before has gone out: the daemon's
        // backpressure reaches the writer of our stdin.
        var fds = [pollfd(fd: fd, events: Int16(POLLIN) | (outbound.isEmpty ? 0 : Int16(POLLOUT)), revents: 0)]
        fds.append(pollfd(fd: signalPipe.read, events: Int16(POLLIN), revents: 0))
        if stdinOpen && outbound.isEmpty { fds.append(pollfd(fd: 0, events: Int16(POLLIN), revents: 0)) }
        let ready = poll(&fds, nfds_t(fds.count), -1)
        if ready < 0 {
            if errno == EINTR { continue }
            fail(1, "prewarm-claude: poll failed: \(String(cString: strerror(errno)))")
        }
        if fds[1].revents != 0 {
            var byte: UInt8 = 0
            while read(signalPipe.read, &byte, 1) == 1 {
                if sendFailure == nil { outbound += frame(UInt8(ascii: "s"), [byte]) }
            }
        }
        if fds.count > 2 && fds[2].revents != 0 {
            let count = chunk.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
            if count > 0 {
                outbound += frame(UInt8(ascii: "i"), chunk[0..<count])
            } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                // The end of stdin is a half-close: the process's stdin closes, the run goes on.
                stdinOpen = false
                outbound += frame(UInt8(ascii: "e"), [])
            }
        }
        if !outbound.isEmpty {
            let sent = outbound.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent > 0 {
                outbound.removeFirst(sent)
            } else if sent < 0 && errno != EAGAIN && errno != EINTR {
                sendFailure = "the Prewarm daemon closed the run (\(String(cString: strerror(errno))))"
                outbound.removeAll()
                stdinOpen = false
            }
        }
        if fds[0].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count > 0 {
                inbound += chunk[0..<count]
            } else if count == 0 || (errno != EAGAIN && errno != EINTR) {
                fail(1, "prewarm-claude: \(sendFailure ?? "the Prewarm daemon ended the run without its exit status")")
            }
        }
    }
}

// MARK: - Main

let arguments = CommandLine.arguments
let environment = currentEnvironment()

// `-v`, `-V`, `--version` (with or without `--verbose`): the real CLI's own fast path.
let asksVersion = arguments.count >= 2 && arguments.dropFirst().allSatisfy { ["-v", "-V", "--version", "--verbose"].contains($0) }
    && arguments.dropFirst().contains { $0 != "--verbose" }
if asksVersion { execRealCLI(environment) }

// An argument that is not valid UTF-8 (a file name in another encoding): the run description
// is JSON text and could not carry it unchanged, so the real CLI gets it, as given.
if (1..<Int(CommandLine.argc)).contains(where: { index in
    guard let pointer = CommandLine.unsafeArgv[index] else { return false }
    return String(validatingCString: pointer) == nil
}) {
    fallBack(environment, because: "an argument is not valid UTF-8")
}

// A terminal on stdin or stdout is a person at the keyboard (the interactive CLI, or a `-p`
// whose output they read): what they get is the real CLI's, untouched. SDKs, scripts and
// servers spawn the CLI on pipes.
if isatty(0) != 0 || isatty(1) != 0 {
    fallBack(environment, because: "a terminal on \(isatty(0) != 0 ? "stdin" : "stdout"): the real CLI is for a person")
}


/// A connection to the daemon, checked; else the real CLI (a stranger's socket is said on
/// stderr whatever PREWARM_CLAUDE_DEBUG says: someone may be trying to catch credentials).
func checkedConnection(_ path: String) -> Int32 {
    switch connectDaemon(path) {
    case .connected(let fd):
        return fd
    case .absent(let reason):
        // No daemon: the real CLI, as if Prewarm were not there.
        fallBack(environment, because: reason)
    case .stranger(let reason):
        writeAll(2, Array("prewarm-claude: \(reason)\n".utf8))
        execRealCLI(environment)
    }
}

let path = socketPath(environment)
let sent: RunEnvironment
switch runEnvironment(checkedConnection(path)) {
case .success(let names): sent = names
case .failure(let failure): fallBack(environment, because: failure.reason)
}
let daemon = checkedConnection(path)
let description = describeRun(
    arguments: arguments, cwd: workingDirectory(), environment: environment.filter { sent.sends($0.key) }, cli: realCLI(environment),
    via: installedVia(environment)
)
guard let answer = requestRun(daemon, description: description) else {
    close(daemon)
    fallBack(environment, because: "the daemon closed the connection before it answered the run")
}
switch answer.status {
case 101:
    pump(daemon, initial: answer.rest)
case 429:
    // Memory or capacity: shed, do not bypass the daemon's governor by running the CLI anyway.
    fail(75, "prewarm-claude: the Prewarm daemon has no room for this run now: \(errorMessage(daemon, after: answer.rest)); retry later")
default:
    // A daemon that cannot serve the run (draining, failing, another uid, a directory it
    // cannot see, an older daemon): the real CLI, as if Prewarm were not there.
    let why = debugging(environment) ? errorMessage(daemon, after: answer.rest) : ""
    close(daemon)
    fallBack(environment, because: "the daemon answered \(answer.status): \(why)")
}
