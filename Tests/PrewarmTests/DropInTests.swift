import Foundation
import Testing

@testable import PrewarmCore

#if canImport(Glibc)
import Glibc
#endif

/// `prewarm-claude` where no daemon serves its run: it becomes the real CLI, with the same
/// argv, the same environment and stdin untouched, so an SDK pointed at it works as without
/// Prewarm. (Runs the daemon serves: `RunTests`, `SDKDropInTests`.)
@Suite("prewarm-claude, falling back")
struct DropInTests {
    static var dropIn: String { TestDaemon.buildDirectory + "/prewarm-claude" }

    /// A stand-in CLI: prints its argv, one argument a line, then echoes stdin, then exits 7.
    static func fakeCLI(in directory: String, name: String = "claude") throws -> String {
        let path = directory + "/" + name
        try "#!/bin/sh\nfor a in \"$0\" \"$@\"; do echo \"arg:$a\"; done\necho \"env:$PREWARM_TEST_MARK\"\ncat\nexit 7\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
        return path
    }

    static func run(
        _ arguments: [String], environment: [String: String], stdin: String, as executable: String = dropIn, cwd: String? = nil
    ) throws -> (Int32, String, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        if let cwd { process.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        let input = Pipe()
        let output = Pipe()
        let errors = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        // write(2), not FileHandle.write: a run ended early (a flood refused) closes its stdin,
        // and the rest is then dropped (EPIPE), as a shell's pipe drops it.
        let fd = input.fileHandleForWriting.fileDescriptor
        var bytes = Array(stdin.utf8)[...]
        while !bytes.isEmpty {
            let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { break }
            bytes = bytes.dropFirst(written)
        }
        try input.fileHandleForWriting.close()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
    }

    /// With no daemon, the real CLI (PREWARM_CLAUDE_CLI) runs with the same arguments and
    /// environment, gets every byte of stdin, and its exit status is the run's.
    @Test func noDaemonRunsTheRealCLI() throws {
        let directory = try TestDaemon.makeTemporaryDirectory()
        let cli = try Self.fakeCLI(in: directory)
        let (status, out, err) = try Self.run(
            ["--output-format", "stream-json", "--resume=abc", "--system-prompt", ""],
            environment: [
                "PREWARM_CLAUDE_CLI": cli, "PREWARM_SOCKET": directory + "/nothing.sock", "PREWARM_TEST_MARK": "kept", "PATH": "/usr/bin:/bin",
            ],
            stdin: "{\"type\":\"user\"}\nsecond line\n"
        )
        #expect(status == 7, "\(err)")
        #expect(out == "arg:\(cli)\narg:--output-format\narg:stream-json\narg:--resume=abc\narg:--system-prompt\narg:\nenv:kept\n{\"type\":\"user\"}\nsecond line\n")
    }

    /// Without PREWARM_CLAUDE_CLI, `claude` on PATH runs, but never prewarm-claude itself
    /// installed as `claude` earlier on PATH (compared by device and inode, not name).
    @Test func pathLookupSkipsItself() throws {
        let directory = try TestDaemon.makeTemporaryDirectory()
        let first = directory + "/first"
        let second = directory + "/second"
        try FileManager.default.createDirectory(atPath: first, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: second, withIntermediateDirectories: true)
        #expect(link(Self.dropIn, first + "/claude") == 0 || symlink(Self.dropIn, first + "/claude") == 0)
        let cli = try Self.fakeCLI(in: second)
        let (status, out, _) = try Self.run(
            ["-p", "x"], environment: ["PATH": "\(first):\(second):/usr/bin:/bin", "PREWARM_SOCKET": directory + "/nothing.sock"], stdin: ""
        )
        #expect(status == 7)
        #expect(out.hasPrefix("arg:\(cli)\narg:-p\narg:x\n"))
    }

    /// Started as an SDK's bundled CLI moved aside (`_bundled/claude` a link to prewarm-claude,
    /// the CLI at `_bundled/claude.real`), it runs `claude.real` with no PREWARM_CLAUDE_CLI;
    /// an explicit PREWARM_CLAUDE_CLI still wins.
    @Test func aMovedAsideBundledCLIIsTheRealOne() throws {
        let directory = try TestDaemon.makeTemporaryDirectory()
        let bundled = directory + "/_bundled"
        try FileManager.default.createDirectory(atPath: bundled, withIntermediateDirectories: true)
        #expect(symlink(Self.dropIn, bundled + "/claude") == 0)
        let real = try Self.fakeCLI(in: bundled, name: "claude.real")
        let environment = ["PATH": "/usr/bin:/bin", "PREWARM_SOCKET": directory + "/nothing.sock"]
        let (status, out, err) = try Self.run(["-p", "x"], environment: environment, stdin: "", as: bundled + "/claude")
        #expect(status == 7, "\(err)")
        #expect(out.hasPrefix("arg:\(real)\narg:-p\narg:x\n"), "\(out)")
        let explicit = try Self.fakeCLI(in: directory, name: "explicit")
        let (_, chosen, _) = try Self.run(["-p", "x"], environment: environment.merging(["PREWARM_CLAUDE_CLI": explicit]) { $1 }, stdin: "", as: bundled + "/claude")
        #expect(chosen.hasPrefix("arg:\(explicit)\n"), "\(chosen)")
    }

    /// With no CLI to fall back to, a clear error and exit 127.
    @Test func noCLIAtAll() throws {
        let directory = try TestDaemon.makeTemporaryDirectory()
        let (status, _, err) = try Self.run(["-p", "x"], environment: ["PATH": directory, "PREWARM_SOCKET": directory + "/nothing.sock"], stdin: "")
        #expect(status == 127)
        #expect(err.contains("PREWARM_CLAUDE_CLI"))
    }

    /// `-v` is the real CLI's at once (its own fast path), daemon or not.
    @Test func versionIsTheRealCLIs() throws {
        let directory = try TestDaemon.makeTemporaryDirectory()
        let cli = directory + "/claude"
        try "#!/bin/sh\necho \"2.1.332 (Claude Code)\"\n".write(toFile: cli, atomically: true, encoding: .utf8)
        chmod(cli, 0o755)
        let (status, out, _) = try Self.run(["-v"], environment: ["PREWARM_CLAUDE_CLI": cli], stdin: "")
        #expect(status == 0)
        #expect(out == "2.1.332 (Claude Code)\n")
    }

    /// A pool whose command is prewarm-claude is refused at load: it would call itself.
    @Test func aPoolOfTheDropInIsRefused() throws {
        let loader = ConfigurationLoader(executableDirectory: TestDaemon.buildDirectory, environment: ["PATH": "/usr/bin:/bin"], cpus: 2)
        #expect(throws: ConfigError.self) {
            try loader.parse("[[pool]]\nname = \"c\"\nkind = \"claude\"\ncommand = \"prewarm-claude\"\n", origin: "t", baseDirectory: "/tmp")
        }
        let directory = try TestDaemon.makeTemporaryDirectory()
        #expect(link(Self.dropIn, directory + "/claude") == 0)
        do {
            _ = try loader.parse("[[pool]]\nname = \"c\"\nkind = \"claude\"\ncommand = \"\(directory)/claude\"\n", origin: "t", baseDirectory: "/tmp")
            Issue.record("a hard link to prewarm-claude named claude was accepted")
        } catch {
            #expect(error.message.contains("prewarm-claude"))
        }
    }
}
