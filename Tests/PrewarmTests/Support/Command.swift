import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What a program run to its end printed, and how it exited.
struct CommandResult: CustomStringConvertible {
    var status: Int32
    var out: String
    var err: String
    var description: String { "exit \(status)\nstdout: \(out)\nstderr: \(err)" }
}

/// Runs `executable` with `arguments` to its end; stdout and stderr go to files (neither pipe
/// can fill and block it), stdin is `input` or nothing.
///
/// Spawned with every inherited descriptor but 0, 1 and 2 closed, signals at their defaults
/// and unblocked, and waited for with
/// waitpid: Foundation's `Process` learns of an exit through a socket its child inherits, so
/// `waitUntilExit()` never returns when the child leaves a daemon behind (tmux's server).
func runCommand(_ executable: String, _ arguments: [String], environment: [String: String] = [:], input: Data? = nil) throws -> CommandResult {
    let scratch = try TestDaemon.makeTemporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: scratch) }
    let outPath = scratch + "/stdout"
    let errPath = scratch + "/stderr"
    let inPath = scratch + "/stdin"
    _ = FileManager.default.createFile(atPath: inPath, contents: input ?? Data())

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, inPath, O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    // A descriptor closed meanwhile is no error: glibc ignores closing one that is not open.
    let inherited = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd"))?.compactMap { Int32($0) } ?? []
    for descriptor in inherited where descriptor > 2 { posix_spawn_file_actions_addclose(&actions, descriptor) }

    // Signals as a shell would give them: none blocked (the calling thread may block most,
    // and a mask is inherited), none ignored.
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var none = sigset_t()
    var all = sigset_t()
    sigemptyset(&none)
    sigfillset(&all)
    posix_spawnattr_setsigmask(&attributes, &none)
    posix_spawnattr_setsigdefault(&attributes, &all)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    let merged = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    let envp = merged.map { strdup($0.key + "=" + $0.value) } + [nil]
    defer { (argv + envp).forEach { free($0) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
    guard spawned == 0 else { throw CocoaError(.executableLoad, userInfo: [NSFilePathErrorKey: executable, "errno": spawned]) }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    // Exited: its status; killed by a signal: 128 + the signal, as shells report it.
    let exit = status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
    func text(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
    return CommandResult(status: exit, out: text(outPath), err: text(errPath))
}

/// Programs from outside the package that some tests drive, found where `.ci/run` installs
/// them; a test that needs one is skipped, saying which, where it is missing.
enum ExternalTool {
    /// `name` on PATH.
    static func onPath(_ name: String) -> String? {
        let directories = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":")
        return directories.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Debian's `prometheus` package.
    static let promtool = onPath("promtool")
    static let prometheus = onPath("prometheus")
    static let tmux = onPath("tmux")

    /// PyPI's kubernetes-validate: `$PREWARM_KUBERNETES_VALIDATE`, else the virtualenv
    /// `.ci/run` makes (`${XDG_CACHE_HOME:-~/.cache}/prewarm/venv-ops`), else PATH.
    static let kubernetesValidate: String? = {
        let environment = ProcessInfo.processInfo.environment
        let cache = environment["XDG_CACHE_HOME"] ?? (NSHomeDirectory() + "/.cache")
        let candidates = [environment["PREWARM_KUBERNETES_VALIDATE"], cache + "/prewarm/venv-ops/bin/kubernetes-validate"].compactMap { $0 }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? onPath("kubernetes-validate")
    }()

    static let missingPrometheus = "promtool and prometheus are not installed (Debian's prometheus package; .ci/run installs it)"
    static let missingTmux = "tmux is not installed (Debian's tmux package; .ci/run installs it)"
    static let missingKubernetesValidate = "kubernetes-validate is not installed (PyPI; .ci/run installs it in a virtualenv)"
}
