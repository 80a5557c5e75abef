#if canImport(Glibc)
import Glibc
#endif

// `prewarm-claude`: the Claude Code CLI's command line, to be served by a Prewarm daemon's
// warm CLIs; where the daemon cannot serve it, the real CLI with the same argv, stdin
// untouched: never worse than no Prewarm. An SDK points at it instead of the CLI (Python
// `cli_path`, TypeScript `pathToClaudeCodeExecutable`, Laravel `CLAUDE_AGENT_CLI_PATH`).
//
// Plain Glibc on purpose (no Foundation, no NIO): it runs once per agent turn, on the
// request path, and must cost almost nothing before the first forwarded byte.
//
// The daemon's side of a run (`POST /v1/runs`, upgraded to a two-way stream) is the next
// step; until a daemon offers it, every run goes to the real CLI.

/// The real CLI: `PREWARM_CLAUDE_CLI`, else `claude` on PATH that is not this executable.
func realCLI(_ environment: [String: String]) -> String? {
    if let path = environment["PREWARM_CLAUDE_CLI"], !path.isEmpty { return path }
    let me = FileKey(path: "/proc/self/exe")
    for directory in (environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") where !directory.isEmpty {
        let candidate = String(directory) + "/claude"
        guard access(candidate, X_OK) == 0, let key = FileKey(path: candidate) else { continue }
        if key != me { return candidate }
    }
    return nil
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

/// Replaces this process with the real CLI, same argv (argv[0] the CLI's path), same
/// environment, stdin unread. Returns only if that fails: exit 127 with why.
func execRealCLI(_ environment: [String: String], arguments: [String]) -> Never {
    guard let cli = realCLI(environment) else {
        fail(127, "prewarm-claude: no Claude Code CLI to run: set PREWARM_CLAUDE_CLI to its path, or put `claude` on PATH")
    }
    var argv: [UnsafeMutablePointer<CChar>?] = ([cli] + arguments.dropFirst()).map { strdup($0) }
    argv.append(nil)
    execv(cli, argv)
    let reason = String(cString: strerror(errno))
    fail(127, "prewarm-claude: cannot run \(cli): \(reason); check PREWARM_CLAUDE_CLI")
}

func fail(_ status: Int32, _ message: String) -> Never {
    let line = message + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
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
/// `/tmp/prewarm-$UID.sock` (the daemon's own default).
func socketPath(_ environment: [String: String]) -> String {
    if let path = environment["PREWARM_SOCKET"], !path.isEmpty { return path }
    if let runtime = environment["XDG_RUNTIME_DIR"], !runtime.isEmpty { return runtime + "/prewarm.sock" }
    return "/tmp/prewarm-\(getuid()).sock"
}

/// Asks the daemon whether it serves this run: the status of its answer to the run's
/// upgrade request, or nil when no daemon answers (within a second).
func askDaemon(socket path: String) -> Int? {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 1, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard connected == 0 else { return nil }
    let request = "POST /v1/runs HTTP/1.1\r\nHost: prewarm\r\nConnection: Upgrade\r\nUpgrade: prewarm-stream\r\nContent-Length: 0\r\n\r\n"
    let sent = request.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
    guard sent > 0 else { return nil }
    var buffer = [UInt8](repeating: 0, count: 512)
    let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
    guard count > 12 else { return nil }
    // "HTTP/1.1 NNN ..."
    let status = String(decoding: buffer[9..<12], as: UTF8.self)
    return Int(status)
}

let arguments = CommandLine.arguments
let environment = currentEnvironment()

// `-v`, `-V`, `--version` (with or without `--verbose`): the real CLI's own fast path.
let asksVersion = arguments.count >= 2 && arguments.dropFirst().allSatisfy { ["-v", "-V", "--version", "--verbose"].contains($0) }
    && arguments.dropFirst().contains { $0 != "--verbose" }
if asksVersion { execRealCLI(environment, arguments: arguments) }

switch askDaemon(socket: socketPath(environment)) {
case 429:
    // Memory or capacity: shed, do not bypass the daemon's governor by running the CLI anyway.
    fail(75, "prewarm-claude: the Prewarm daemon has no room for this run now (429); retry later")
default:
    // No daemon, a daemon that cannot serve runs (draining, failing, an older version), a
    // refused caller: the real CLI, as if Prewarm were not there.
    execRealCLI(environment, arguments: arguments)
}
