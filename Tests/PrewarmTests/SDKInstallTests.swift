import Foundation
import Testing

@testable import PrewarmCore

#if canImport(Glibc)
import Glibc
#endif

/// `prewarm sdk install`'s file operations (CLIReplacement), the interpreter probe and its
/// refusals, on directories and virtualenvs the tests make; and prewarm-claude started in
/// the CLI's place.
@Suite("prewarm sdk install: files, refusals, prewarm-claude in place")
struct SDKInstallTests {
    static var dropIn: String { TestDaemon.buildDirectory + "/prewarm-claude" }

    /// A directory holding a stand-in `claude` (DropInTests' fake CLI: exits 7), mode 0750.
    static func bundledDirectory() throws -> (directory: String, original: FileStamp) {
        let directory = try TestDaemon.makeTemporaryDirectory() + "/_bundled"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let cli = try DropInTests.fakeCLI(in: directory)
        chmod(cli, 0o750)
        return (directory, try #require(FileStamp(path: cli)))
    }

    /// The directory's entries, each with its stamp: what "nothing changed" compares.
    static func snapshot(_ directory: String) -> [String: FileStamp] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return Dictionary(uniqueKeysWithValues: entries.compactMap { name in FileStamp(path: directory + "/" + name).map { (name, $0) } })
    }

    /// `claude` runs, as the original (the fake CLI's exit 7).
    static func runsOriginal(_ directory: String) throws -> Bool {
        try runCommand(directory + "/claude", ["-p", "x"], environment: ["PREWARM_SOCKET": directory + "/none.sock"]).status == 7
    }

    /// Installed: `claude` is prewarm-claude, `claude.real` the original file (mode, owner
    /// and times kept: the same inode); installing twice changes nothing; uninstalling puts
    /// the very same file back and leaves nothing behind.
    @Test func installIsIdempotentAndUninstallRestoresTheOriginal() throws {
        let (directory, original) = try Self.bundledDirectory()
        let replacement = CLIReplacement(directory: directory)
        #expect(replacement.state(dropIn: Self.dropIn) == .original)
        #expect(try replacement.install(.init(dropIn: Self.dropIn, sdkVersion: "0.2.189", cliVersion: "2.1.332")) == .installed)
        let installed = try #require(FileStamp(path: replacement.cli))
        #expect(installed.sameFile(as: try #require(FileStamp(path: Self.dropIn))))
        let real = try #require(FileStamp(path: replacement.real))
        #expect(real == original, "claude.real is the original file, unchanged")
        guard case .installed(let record, current: true) = replacement.state(dropIn: Self.dropIn) else {
            Issue.record("not installed: \(replacement.state(dropIn: Self.dropIn))")
            return
        }
        #expect(record.method == .link && record.sdkVersion == "0.2.189" && record.original == original)
        // With no daemon, the installed claude runs the original.
        #expect(try Self.runsOriginal(directory))

        let before = Self.snapshot(directory)
        #expect(try replacement.install(.init(dropIn: Self.dropIn)) == .unchanged)
        #expect(Self.snapshot(directory) == before, "installing twice changed nothing")

        #expect(try replacement.uninstall() == .restored)
        #expect(FileStamp(path: replacement.cli) == original, "the very same file is back, mode 0750 kept")
        #expect(Self.snapshot(directory).keys.sorted() == ["claude"])
        #expect(try replacement.uninstall() == .nothingInstalled)
    }

    /// An install cut after any of its steps (as if killed) leaves `claude` the original and
    /// working; installing again finishes it, uninstalling leaves nothing of it.
    @Test(arguments: [CLIReplacement.InstallStep.original, .dropIn, .record])
    func anInterruptedInstallLeavesAWorkingCLI(step: CLIReplacement.InstallStep) throws {
        for finish in [true, false] {
            let (directory, original) = try Self.bundledDirectory()
            let replacement = CLIReplacement(directory: directory)
            try replacement.install(.init(dropIn: Self.dropIn), interruptAfter: step)
            #expect(FileStamp(path: replacement.cli) == original, "claude is still the original after \(step)")
            #expect(try Self.runsOriginal(directory))
            if step == .record {
                guard case .interrupted = replacement.state(dropIn: Self.dropIn) else {
                    Issue.record("\(replacement.state(dropIn: Self.dropIn))")
                    continue
                }
            }
            if finish {
                #expect(try replacement.install(.init(dropIn: Self.dropIn)) == .installed)
                guard case .installed(_, current: true) = replacement.state(dropIn: Self.dropIn) else {
                    Issue.record("\(replacement.state(dropIn: Self.dropIn))")
                    continue
                }
                #expect(FileStamp(path: replacement.real) == original)
                #expect(!Self.snapshot(directory).keys.contains { $0.hasPrefix(".claude.prewarm-tmp") })
            } else {
                _ = try replacement.uninstall()
                #expect(Self.snapshot(directory).keys.sorted() == ["claude"], "\(Self.snapshot(directory).keys.sorted())")
                #expect(FileStamp(path: replacement.cli) == original)
            }
        }
    }

    /// A reinstall of the package (pip writes a new `claude`) is seen as overwritten; the
    /// package's new CLI runs (cold); installing again keeps that one as claude.real.
    @Test func aReinstallOverwritesItAndInstallingAgainTakesTheNewCLI() throws {
        let (directory, _) = try Self.bundledDirectory()
        let replacement = CLIReplacement(directory: directory)
        try replacement.install(.init(dropIn: Self.dropIn))
        // pip: the old file removed, a new one written.
        unlink(replacement.cli)
        try "#!/bin/sh\nexit 9\n".write(toFile: replacement.cli, atomically: false, encoding: .utf8)
        chmod(replacement.cli, 0o755)
        let upgraded = try #require(FileStamp(path: replacement.cli))
        guard case .overwritten = replacement.state(dropIn: Self.dropIn) else {
            Issue.record("\(replacement.state(dropIn: Self.dropIn))")
            return
        }
        #expect(try runCommand(replacement.cli, []).status == 9)
        #expect(try replacement.install(.init(dropIn: Self.dropIn)) == .reinstalled)
        #expect(FileStamp(path: replacement.real) == upgraded, "claude.real is the package's new CLI")
        #expect(try replacement.uninstall() == .restored)
        #expect(FileStamp(path: replacement.cli) == upgraded)

        // Overwritten, then uninstalled: the older claude.real and the record are removed.
        try replacement.install(.init(dropIn: Self.dropIn))
        unlink(replacement.cli)
        try "#!/bin/sh\nexit 9\n".write(toFile: replacement.cli, atomically: false, encoding: .utf8)
        #expect(try replacement.uninstall() == .cleaned)
        #expect(Self.snapshot(directory).keys.sorted() == ["claude"])

        // The package uninstalled around an install: claude.real and the record are left, then removed.
        try replacement.install(.init(dropIn: Self.dropIn))
        unlink(replacement.cli)
        guard case .orphaned = replacement.state(dropIn: nil) else {
            Issue.record("\(replacement.state(dropIn: nil))")
            return
        }
        #expect(try replacement.uninstall() == .cleaned)
        #expect(Self.snapshot(directory).isEmpty)
    }

    /// Where a hard link cannot be made (another filesystem), a copy with the original's
    /// mode; recognised as installed, and uninstalled like a link.
    @Test(.enabled(if: SDKInstallTests.otherFilesystem != nil, "needs /dev/shm on another filesystem than the build"))
    func aCopyOnAnotherFilesystem() throws {
        let directory = Self.otherFilesystem! + "/prewarm-sdk-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let cli = try DropInTests.fakeCLI(in: directory)
        chmod(cli, 0o750)
        let original = try #require(FileStamp(path: cli))
        let replacement = CLIReplacement(directory: directory)
        #expect(try replacement.install(.init(dropIn: Self.dropIn)) == .installed)
        guard case .installed(let record, current: true) = replacement.state(dropIn: Self.dropIn) else {
            Issue.record("\(replacement.state(dropIn: Self.dropIn))")
            return
        }
        #expect(record.method == .copy)
        #expect(FileStamp(path: replacement.cli)?.permissions == 0o750)
        #expect(try replacement.install(.init(dropIn: Self.dropIn)) == .unchanged)
        #expect(try Self.runsOriginal(directory))
        #expect(try replacement.uninstall() == .restored)
        #expect(FileStamp(path: replacement.cli) == original)
    }

    static let otherFilesystem: String? = {
        guard let shm = FileStamp(path: "/dev/shm", following: true), let build = FileStamp(path: TestDaemon.buildDirectory, following: true),
            shm.device != build.device, access("/dev/shm", W_OK) == 0
        else { return nil }
        return "/dev/shm"
    }()

    /// `--path-dir`: a symbolic link named claude; a claude there that is not ours is moved
    /// aside only when asked (and put back by uninstall); shared directories are named.
    @Test func pathDirectory() throws {
        let directory = try TestDaemon.makeTemporaryDirectory()
        chmod(directory, 0o755)
        let replacement = CLIReplacement(directory: directory)
        let options = CLIReplacement.InstallOptions(dropIn: Self.dropIn, symlink: true, requiresOriginal: false, movesForeignCLI: false)
        #expect(try replacement.install(options) == .installed)
        #expect(FileStamp(path: replacement.cli)?.isSymlink == true)
        #expect(try replacement.install(options) == .unchanged)
        #expect(try replacement.uninstall() == .restored)
        #expect(Self.snapshot(directory).isEmpty)

        // Its record lost: without the drop-in's path the link is not known to be ours, with it it is.
        #expect(try replacement.install(options) == .installed)
        try FileManager.default.removeItem(atPath: replacement.recordPath)
        #expect(try replacement.uninstall() == .nothingInstalled)
        #expect(FileStamp(path: replacement.cli)?.isSymlink == true)
        #expect(try replacement.uninstall(dropIn: Self.dropIn) == .restored)
        #expect(Self.snapshot(directory).isEmpty)

        let foreign = try DropInTests.fakeCLI(in: directory)
        let before = Self.snapshot(directory)
        do {
            try replacement.install(options)
            Issue.record("a claude that is not ours was replaced without --force")
        } catch {
            #expect(error.kind == .cannotCreate && error.message.contains("--force"), "\(error)")
        }
        #expect(Self.snapshot(directory) == before)
        var forced = options
        forced.movesForeignCLI = true
        #expect(try replacement.install(forced) == .installed)
        #expect(try Self.runsOriginal(directory), "prewarm-claude runs the claude it moved aside")
        #expect(try replacement.uninstall() == .restored)
        #expect(Self.snapshot(directory) == before, "\(foreign) is back")

        // Shared: every user's PATH; another user's; writable by others. One's own: not.
        #expect(PathDirectory.sharedReason("/usr/local/bin")?.contains("every user's PATH") == true)
        #expect(PathDirectory.sharedReason(directory) == nil)
        chmod(directory, 0o777)
        #expect(PathDirectory.sharedReason(directory)?.contains("writable") == true)
        chmod(directory, 0o755)
        #expect(PathDirectory.sharedReason(directory, uid: getuid() + 1)?.contains("owned by") == true)
        // A directory above it that others may write: they could swap the whole directory.
        let open = try TestDaemon.makeTemporaryDirectory()
        try FileManager.default.createDirectory(atPath: open + "/bin", withIntermediateDirectories: false)
        #expect(PathDirectory.sharedReason(open + "/bin") == nil)
        chmod(open, 0o777)
        let reason = PathDirectory.sharedReason(open + "/bin")
        #expect(reason?.contains("\(open), above \(open)/bin, is writable by other users") == true, "\(String(describing: reason))")
        chmod(open, 0o700)
    }

    /// The CLI: --path-dir refuses a shared directory (77) and a foreign claude (73) and
    /// changes nothing.
    @Test func pathDirectoryRefusals() throws {
        let shared = try AppEnvironment.prewarm(["sdk", "install", "--path-dir", "/usr/local/bin"])
        #expect(shared.status == 77 && shared.err.contains("/usr/local/bin") && shared.err.contains("--shared"), "\(shared)")
        let directory = try TestDaemon.makeTemporaryDirectory()
        chmod(directory, 0o755)
        _ = try DropInTests.fakeCLI(in: directory)
        let before = Self.snapshot(directory)
        let foreign = try AppEnvironment.prewarm(["sdk", "install", "--path-dir", directory])
        #expect(foreign.status == 73 && foreign.err.contains("\(directory)/claude") && foreign.err.contains("--force"), "\(foreign)")
        #expect(Self.snapshot(directory) == before)
        let forced = try AppEnvironment.prewarm(["sdk", "install", "--path-dir", directory, "--force"])
        #expect(forced.status == 0, "\(forced)")
        let status = try AppEnvironment.prewarm(["sdk", "status", "--path-dir", directory, "--json"])
        #expect(status.out.contains("\"state\" : \"installed\""), "\(status)")
        #expect(try AppEnvironment.prewarm(["sdk", "uninstall", "--path-dir", directory]).status == 0)
        #expect(Self.snapshot(directory) == before)
    }

    // MARK: - Interpreters

    /// A virtualenv of Debian's python3 (no pip) holding a `claude_agent_sdk` package made
    /// here: by `distribution` (nil: none), with a bundled CLI or not.
    static func virtualenv(distribution: (name: String, author: String, home: String)?, bundled: Bool) throws -> (python: String, package: String) {
        let directory = try TestDaemon.makeTemporaryDirectory()
        chmod(directory, 0o755)
        let venv = directory + "/venv"
        let made = try runCommand(SDKInstallTests.python!, ["-m", "venv", "--without-pip", venv])
        guard made.status == 0 else { throw CocoaError(.fileWriteUnknown, userInfo: ["venv": made.description]) }
        let python = venv + "/bin/python"
        let site = try runCommand(python, ["-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).out.trimmingCharacters(in: .whitespacesAndNewlines)
        let package = site + "/claude_agent_sdk"
        try FileManager.default.createDirectory(atPath: package + "/_bundled", withIntermediateDirectories: true)
        try "".write(toFile: package + "/__init__.py", atomically: true, encoding: .utf8)
        if bundled {
            _ = try DropInTests.fakeCLI(in: package + "/_bundled")
            try "2.1.999 (Claude Code)\n".write(toFile: package + "/_bundled/claude.version", atomically: true, encoding: .utf8)
        }
        if let distribution {
            let info = site + "/\(distribution.name.replacingOccurrences(of: "-", with: "_"))-0.2.999.dist-info"
            try FileManager.default.createDirectory(atPath: info, withIntermediateDirectories: true)
            try "Metadata-Version: 2.1\nName: \(distribution.name)\nVersion: 0.2.999\nAuthor-email: \(distribution.author)\nProject-URL: Homepage, \(distribution.home)\n"
                .write(toFile: info + "/METADATA", atomically: true, encoding: .utf8)
            try "claude_agent_sdk/__init__.py,,\n".write(toFile: info + "/RECORD", atomically: true, encoding: .utf8)
            try "pip\n".write(toFile: info + "/INSTALLER", atomically: true, encoding: .utf8)
        }
        return (python, package)
    }

    static let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") ? "/usr/bin/python3" : nil
    static let official = (name: "claude-agent-sdk", author: "Anthropic <support@anthropic.com>", home: "https://github.com/anthropics/claude-agent-sdk-python")

    /// The official SDK (by its distribution) is found and installed into through the CLI;
    /// status names the versions; uninstall puts it back.
    @Test(.enabled(if: SDKInstallTests.python != nil, "needs /usr/bin/python3 with venv"))
    func theCLIInstallsIntoAnInterpretersSDK() throws {
        let (python, package) = try Self.virtualenv(distribution: Self.official, bundled: true)
        let install = try AppEnvironment.prewarm(["sdk", "install", "--python", python])
        #expect(install.status == 0 && install.out.contains("claude-agent-sdk 0.2.999, CLI 2.1.999"), "\(install)")
        #expect(FileStamp(path: package + "/_bundled/claude")?.sameFile(as: try #require(FileStamp(path: Self.dropIn))) == true)
        let again = try AppEnvironment.prewarm(["sdk", "install", "--python", python])
        #expect(again.status == 0 && again.out.contains("nothing changed"), "\(again)")
        let status = try AppEnvironment.prewarm(["sdk", "status", "--python", python])
        #expect(status.out.contains("installed") && status.out.contains("claude-agent-sdk 0.2.999, CLI 2.1.999"), "\(status)")
        let uninstall = try AppEnvironment.prewarm(["sdk", "uninstall", "--python", python])
        #expect(uninstall.status == 0, "\(uninstall)")
        #expect(Self.snapshot(package + "/_bundled").keys.sorted() == ["claude", "claude.version"])
    }

    /// Not the official SDK, an SDK without a bundled CLI, no SDK, no interpreter: each a
    /// clear error naming the path and what to do, its own exit status, nothing changed.
    @Test(.enabled(if: SDKInstallTests.python != nil, "needs /usr/bin/python3 with venv"))
    func whatIsNotInstallableIsRefused() throws {
        let (impostor, impostorPackage) = try Self.virtualenv(distribution: (name: "claude-agent-sdk", author: "someone <x@example.com>", home: "https://example.com/fork"), bundled: true)
        let before = Self.snapshot(impostorPackage + "/_bundled")
        let refused = try AppEnvironment.prewarm(["sdk", "install", "--python", impostor])
        #expect(refused.status == 78 && refused.err.contains(impostorPackage) && refused.err.contains("not the official") && refused.err.contains("cli_path"), "\(refused)")
        #expect(Self.snapshot(impostorPackage + "/_bundled") == before)

        let (stray, strayPackage) = try Self.virtualenv(distribution: nil, bundled: true)
        let noDistribution = try AppEnvironment.prewarm(["sdk", "install", "--python", stray])
        #expect(noDistribution.status == 78 && noDistribution.err.contains(strayPackage) && noDistribution.err.contains("no installed distribution"), "\(noDistribution)")

        let (bare, barePackage) = try Self.virtualenv(distribution: Self.official, bundled: false)
        let noCLI = try AppEnvironment.prewarm(["sdk", "install", "--python", bare])
        #expect(noCLI.status == 78 && noCLI.err.contains(barePackage + "/_bundled/claude") && noCLI.err.contains("--path-dir"), "\(noCLI)")

        let empty = try TestDaemon.makeTemporaryDirectory() + "/venv"
        #expect(try runCommand(Self.python!, ["-m", "venv", "--without-pip", empty]).status == 0)
        let noSDK = try AppEnvironment.prewarm(["sdk", "install", "--python", empty + "/bin/python"])
        #expect(noSDK.status == 78 && noSDK.err.contains("no claude_agent_sdk") && noSDK.err.contains("pip install claude-agent-sdk"), "\(noSDK)")

        let missing = try AppEnvironment.prewarm(["sdk", "install", "--python", "/nonexistent/bin/python"])
        #expect(missing.status == 69 && missing.err.contains("/nonexistent/bin/python"), "\(missing)")
    }

    /// A virtualenv the user cannot write (root's, installed into by another user): 77,
    /// naming the directory and what to do; nothing changed.
    @Test(.enabled(if: Stranger.available && SDKInstallTests.python != nil, "needs root, setpriv (util-linux) and /usr/bin/python3, to play another local user"))
    func aPackageTheUserCannotWrite() throws {
        let (python, package) = try Self.virtualenv(distribution: Self.official, bundled: true)
        let before = Self.snapshot(package + "/_bundled")
        let result = try runCommand(
            Stranger.setpriv!,
            Stranger.command([TestDaemon.prewarm, "sdk", "install", "--python", python, "--drop-in", Self.dropIn]),
            environment: ["HOME": "/nonexistent", "XDG_STATE_HOME": "/nonexistent"]
        )
        #expect(result.status == 77, "\(result)")
        #expect(result.err.contains(package + "/_bundled") && result.err.contains("not writable") && result.err.contains("sudo") && result.err.contains("nothing was changed"), "\(result)")
        #expect(Self.snapshot(package + "/_bundled") == before)
    }

    /// Site-packages on a read-only filesystem (a bind mount): 73, naming it; nothing changed.
    @Test(.enabled(if: getuid() == 0 && SDKInstallTests.python != nil, "needs root (a read-only bind mount)"))
    func aReadOnlySitePackages() throws {
        let (python, package) = try Self.virtualenv(distribution: Self.official, bundled: true)
        let bundled = package + "/_bundled"
        let mounted = try runCommand("/bin/mount", ["--bind", bundled, bundled])
        guard mounted.status == 0 else {
            Issue.record("cannot bind-mount here: \(mounted)")
            return
        }
        defer { _ = try? runCommand("/bin/umount", [bundled]) }
        #expect(try runCommand("/bin/mount", ["-o", "remount,bind,ro", bundled]).status == 0)
        let before = Self.snapshot(bundled)
        let result = try AppEnvironment.prewarm(["sdk", "install", "--python", python])
        #expect(result.status == 73 && result.err.contains(bundled) && result.err.contains("read-only"), "\(result)")
        #expect(Self.snapshot(bundled) == before)
    }

    // MARK: - prewarm-claude in the CLI's place

    /// Started by a bare name from PATH (a shell's `claude`) out of a directory where
    /// `--path-dir --force` moved a claude aside, it runs that claude.
    @Test func aBareNameFindsClaudeRealBesideIt() throws {
        let directory = try TestDaemon.makeTemporaryDirectory()
        #expect(symlink(Self.dropIn, directory + "/claude") == 0)
        let real = try DropInTests.fakeCLI(in: directory, name: "claude.real")
        let result = try runCommand(
            "/bin/bash", ["-c", "exec -a claude claude -p x"], environment: ["PATH": directory + ":/usr/bin:/bin", "PREWARM_SOCKET": directory + "/none.sock"]
        )
        #expect(result.status == 7, "\(result)")
        #expect(result.out.hasPrefix("arg:\(real)\narg:-p\narg:x\n"), "\(result)")
    }

    /// Started as `_bundled/claude` just before an uninstall renamed claude.real back over
    /// it: it runs what is `claude` now (the original), never fails for want of a CLI.
    @Test func startedJustBeforeAnUninstall() throws {
        let directory = try TestDaemon.makeTemporaryDirectory() + "/_bundled"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let restored = try DropInTests.fakeCLI(in: directory)
        // prewarm-claude whose argv[0] is `_bundled/claude`, which is the original again.
        let result = try runCommand(
            "/bin/bash", ["-c", "exec -a \"$0\" \"$1\" -p x", restored, Self.dropIn], environment: ["PATH": "/usr/bin:/bin", "PREWARM_SOCKET": directory + "/none.sock"]
        )
        #expect(result.status == 7, "\(result)")
        #expect(result.out.hasPrefix("arg:\(restored)\narg:-p\n"), "\(result)")
    }
}

extension LiveDaemons {
    /// A daemon whose pool's command file is replaced by prewarm-claude under it (an SDK's
    /// bundled CLI installed into while the daemon runs): the spares it then starts see that
    /// their parent is the daemon they would hand themselves to, and run the real CLI.
    @Suite("prewarm sdk install under a running daemon's pool")
    struct SDKInstallUnderAPoolTests {
        @Test func sparesStartedAsTheDropInRunTheRealCLI() async throws {
            let directory = try TestDaemon.makeTemporaryDirectory()
            let bundled = directory + "/_bundled"
            try FileManager.default.createDirectory(atPath: bundled, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: TestDaemon.fakeAgent, toPath: bundled + "/claude")
            let daemon = try await TestDaemon(
                pools: """
                    [[pool]]
                    name = "p"
                    command = "\(bundled)/claude"
                    spares = 1
                    env = { PREWARM_SOCKET = "\(directory)/prewarm.sock" }
                    [pool.ready]
                    send = '{"type":"control_request","request_id":"i","request":{"subtype":"initialize","hooks":null}}'
                    expect = '"type":"control_response"'
                    [pool.turn]
                    end = '"type":"result"'

                    """,
                directory: directory
            )
            #expect(try await daemon.turn("p").status == 200)
            try await waitUntil("the pool is full again", timeout: .seconds(30)) {
                let pool = try await daemon.pool("p")
                return pool.idle == 1 && pool.starting == 0
            }

            try CLIReplacement(directory: bundled).install(.init(dropIn: SDKInstallTests.dropIn))
            let recycle = try runCommand(TestDaemon.prewarm, ["recycle", "p", "--socket", daemon.socket])
            #expect(recycle.status == 0, "\(recycle)")
            try await waitUntil("the recycled spare is ready", timeout: .seconds(30)) {
                let pool = try await daemon.pool("p")
                return pool.idle == 1 && pool.recycled >= 1
            }
            // The spare is the real CLI (prewarm-claude exec'd it), and no run reached the daemon.
            let pid = try #require(try await daemon.pool("p").pids.first)
            let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")
            #expect(executable == bundled + "/claude.real", "\(executable)")
            let turn = try await daemon.turn("p")
            #expect(turn.status == 200 && jsonLines(turn).last?["type"] as? String == "result", "\(turn.bodyString)")
            let pools = try await daemon.pools()
            #expect(pools.map(\.name) == ["p"], "no fingerprint pool was made for a spare: \(pools.map(\.name))")
            #expect(pools.allSatisfy { $0.runsVia.isEmpty })
        }
    }
}
