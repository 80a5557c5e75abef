import ArgumentParser
import Foundation
import PrewarmCore

/// `prewarm sdk install | uninstall | status`: prewarm-claude in place of a Python SDK's
/// bundled CLI (or as `claude` in a PATH directory), so that applications that never set
/// `cli_path` get warm runs without a change to their code.
struct SDK: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sdk",
        abstract: "Put prewarm-claude in place of a Python SDK's bundled CLI, or as claude in a PATH directory.",
        discussion: """
            The Python Agent SDK runs its bundled CLI (claude_agent_sdk/_bundled/claude) unless \
            the application sets cli_path. `install` moves that CLI aside to claude.real and puts \
            prewarm-claude in its place: each run goes to the daemon, or to claude.real when the \
            daemon cannot serve it. `uninstall` puts the original back; `status` tells whether a \
            reinstall of the package has overwritten it since.
            """,
        subcommands: [Install.self, Uninstall.self, Report.self]
    )

    /// Where the SDK or the PATH directory is.
    struct Target: ParsableArguments {
        @Option(name: .long, help: "The Python interpreter whose claude_agent_sdk to change (a virtualenv's bin/python; default: python3 on PATH).")
        var python: String?

        @Option(name: .customLong("path-dir"), help: "Instead: a directory on the callers' PATH to put a claude that is prewarm-claude in.")
        var pathDirectory: String?

        @Option(
            name: .customLong("drop-in"),
            help: "The prewarm-claude to install (default: the one next to this prewarm); uninstall knows it by it if the install's record is gone."
        )
        var dropIn: String?

        func validate() throws {
            if python != nil && pathDirectory != nil {
                throw ValidationError("give --python or --path-dir, not both")
            }
        }

        /// The drop-in's absolute path, checked executable.
        func dropInPath() throws -> String {
            guard let path = dropIn ?? CommonOptions.executableDirectory.map({ $0 + "/prewarm-claude" }) else {
                throw ExitStatus.fail(ExitStatus.usage, "cannot tell where prewarm-claude is: give --drop-in PATH")
            }
            let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
            guard FileManager.default.isExecutableFile(atPath: absolute) else {
                throw ExitStatus.fail(ExitStatus.usage, "\(absolute) is not an executable prewarm-claude: build it (swift build) or give --drop-in PATH")
            }
            return absolute
        }

        /// The directory, absolute.
        var absolutePathDirectory: String? {
            pathDirectory.map { dir in
                let absolute = dir.hasPrefix("/") ? dir : FileManager.default.currentDirectoryPath + "/" + dir
                return absolute.count > 1 && absolute.hasSuffix("/") ? String(absolute.dropLast()) : absolute
            }
        }
    }

    static var registryPath: String {
        ConfigurationLoader(executableDirectory: nil, cpus: 1).stateDirectory + "/sdk-installs.json"
    }

    static func updateRegistry(_ change: (inout InstallRegistry) -> Void) {
        var registry = InstallRegistry.load(registryPath)
        change(&registry)
        registry.save(registryPath)
    }

    static func fail(_ error: InstallError) -> ExitCode {
        ExitStatus.fail(error.kind.exitStatus, error.message)
    }

    struct Install: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put prewarm-claude in place of the SDK's bundled CLI (kept as claude.real), or as claude in --path-dir.",
            discussion: """
                Idempotent: installing twice changes nothing. Every step is a rename, so an \
                application running meanwhile always finds a working claude. Exit status: 0 \
                done; 64 usage; 69 the interpreter cannot be run; 73 a file cannot be made there \
                (read-only filesystem; a claude in --path-dir that is not prewarm-claude, without \
                --force); 77 the directory is not writable by this user, or --path-dir is shared \
                without --shared; 78 no SDK, not the official SDK, no bundled CLI.
                """
        )

        @OptionGroup var target: Target

        @Flag(name: .long, help: "--path-dir: allow a directory other users run from (/usr/local/bin, one owned by another user).")
        var shared = false

        @Flag(name: .long, help: "--path-dir: move a claude there that is not prewarm-claude aside to claude.real (uninstall puts it back).")
        var force = false

        func run() async throws {
            let dropIn = try target.dropInPath()
            if let directory = target.absolutePathDirectory {
                try installPathDirectory(directory, dropIn: dropIn)
                return
            }
            let python = target.python ?? "python3"
            let sdk: PythonSDK
            let bundled: String
            do {
                sdk = try PythonSDK.find(python: python)
                bundled = try sdk.installableDirectory()
            } catch {
                throw SDK.fail(error)
            }
            let replacement = CLIReplacement(directory: bundled)
            let change: CLIReplacement.Change
            do {
                change = try replacement.install(
                    CLIReplacement.InstallOptions(dropIn: dropIn, sdkVersion: sdk.distribution?.version, cliVersion: sdk.cliVersion)
                )
            } catch {
                throw SDK.fail(error)
            }
            SDK.updateRegistry { if !$0.pythons.contains(sdk.python) { $0.pythons.append(sdk.python) } }
            let versions = "claude-agent-sdk \(sdk.distribution?.version ?? "?"), CLI \(sdk.cliVersion ?? "?")"
            switch change {
            case .unchanged: print("already installed: \(replacement.cli) is prewarm-claude (\(versions)); nothing changed")
            case .updated: print("updated: \(replacement.cli) is now \(dropIn)")
            case .reinstalled: print("installed again over the CLI a reinstall put back: \(replacement.cli) is prewarm-claude (\(versions))")
            default: print("installed: \(replacement.cli) is prewarm-claude (\(versions))")
            }
            print("the SDK's CLI is \(replacement.real): runs the daemon does not serve (no daemon, another uid...) run it, as before")
            print("a pool for these runs: command = \"\(replacement.real)\" (see config/claude-sdk.toml); without one, fingerprint pools serve them from the second run on")
        }

        func installPathDirectory(_ directory: String, dropIn: String) throws {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw ExitStatus.fail(73, "\(directory) is not a directory: make it (mkdir -p \(directory)) and put it on the application's PATH")
            }
            if let reason = PathDirectory.sharedReason(directory), !shared {
                throw ExitStatus.fail(77, "\(reason); --shared installs there anyway; nothing was changed")
            }
            let replacement = CLIReplacement(directory: directory)
            let change: CLIReplacement.Change
            do {
                change = try replacement.install(
                    CLIReplacement.InstallOptions(dropIn: dropIn, symlink: true, requiresOriginal: false, movesForeignCLI: force)
                )
            } catch {
                throw SDK.fail(error)
            }
            SDK.updateRegistry { if !$0.pathDirectories.contains(directory) { $0.pathDirectories.append(directory) } }
            switch change {
            case .unchanged: print("already installed: \(replacement.cli) is prewarm-claude; nothing changed")
            default:
                print("installed: \(replacement.cli) -> \(dropIn)")
                if FileStamp(path: replacement.real) != nil { print("the claude that was there is \(replacement.real): prewarm-claude runs it as the real CLI") }
            }
            for note in PathDirectory.notes(directory, path: ProcessInfo.processInfo.environment["PATH"]) {
                print("note: \(note)")
            }
        }
    }

    struct Uninstall: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put the SDK's bundled CLI (or what was in --path-dir) back.",
            discussion: "Exit status as install's; removing what an overwritten or cut install left counts as done."
        )

        @OptionGroup var target: Target

        func run() async throws {
            let directory: String
            var interpreter: String?
            if let pathDirectory = target.absolutePathDirectory {
                directory = pathDirectory
            } else {
                let python = target.python ?? "python3"
                let sdk: PythonSDK
                do {
                    sdk = try PythonSDK.find(python: python)
                } catch {
                    throw SDK.fail(error)
                }
                guard let bundled = sdk.bundledDirectory else {
                    print("nothing to do: \(sdk.executable) has no claude_agent_sdk package")
                    return
                }
                directory = bundled
                interpreter = sdk.python
            }
            let replacement = CLIReplacement(directory: directory)
            let change: CLIReplacement.Change
            do {
                // In a --path-dir, the prewarm-claude an install put there tells ours apart when
                // its record is gone (an SDK's bundled CLI with neither record nor original is
                // damaged: removing it would leave the package without its CLI).
                change = try replacement.uninstall(dropIn: target.absolutePathDirectory == nil ? nil : try? target.dropInPath())
            } catch {
                throw SDK.fail(error)
            }
            SDK.updateRegistry { registry in
                if let interpreter { registry.pythons.removeAll { $0 == interpreter } }
                if let directory = target.absolutePathDirectory { registry.pathDirectories.removeAll { $0 == directory } }
            }
            switch change {
            case .restored: print("uninstalled: \(replacement.cli) is the original again")
            case .cleaned: print("removed what was left (\(replacement.real), \(replacement.recordPath)); \(replacement.cli) was not prewarm-claude")
            default: print("nothing to do: prewarm-claude is not installed in \(directory)")
            }
        }
    }

    struct Report: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "status",
            abstract: "Per interpreter (and PATH directory): installed or not, the SDK's and CLI's versions, overwritten by a reinstall since.",
            discussion: "Without --python or --path-dir: those install has recorded, and python3 on PATH. Exit 0 whatever it finds."
        )

        @Option(name: .long, help: "An interpreter to report on (repeatable).")
        var python: [String] = []

        @Option(name: .customLong("path-dir"), help: "A PATH directory to report on (repeatable).")
        var pathDirectory: [String] = []

        @Option(name: .customLong("drop-in"), help: "The prewarm-claude an install would put in place (default: the one next to this prewarm).")
        var dropIn: String?

        @Flag(name: .long, help: "Print JSON: {\"installs\": [...]}.")
        var json = false

        func run() async throws {
            let dropIn = self.dropIn ?? CommonOptions.executableDirectory.map { $0 + "/prewarm-claude" }
            var pythons = python
            var directories = pathDirectory
            if pythons.isEmpty && directories.isEmpty {
                let registry = InstallRegistry.load(SDK.registryPath)
                pythons = registry.pythons
                directories = registry.pathDirectories
                if let onPath = PythonSDK.resolve("python3", environment: ProcessInfo.processInfo.environment),
                    !pythons.contains(where: { URL(fileURLWithPath: $0).resolvingSymlinksInPath() == URL(fileURLWithPath: onPath).resolvingSymlinksInPath() })
                {
                    pythons.append(onPath)
                }
            }
            let reports = pythons.map { InstallReport.python($0, dropIn: dropIn) } + directories.map { InstallReport.pathDirectory($0, dropIn: dropIn) }
            if json {
                struct Output: Encodable { var installs: [InstallReport] }
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: try encoder.encode(Output(installs: reports)), as: UTF8.self))
            } else {
                print(reports.map(\.text).joined(separator: "\n\n"))
            }
        }
    }
}
