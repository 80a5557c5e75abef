import Foundation

/// What `prewarm sdk status` says of one interpreter or one PATH directory: whether
/// prewarm-claude is installed there, what the package and its CLI are, and what to do.
public struct InstallReport: Sendable, Codable, Equatable {
    public enum State: String, Sendable, Codable {
        /// prewarm-claude is `claude`; runs are handed to the daemon.
        case installed
        /// Installed, from another (older) prewarm-claude than the one next to this prewarm.
        case outdated
        case notInstalled = "not_installed"
        /// A reinstall or upgrade of the package put its own CLI back: it runs cold.
        case overwritten
        /// An install was cut before its last step: `claude` is still the original.
        case interrupted
        /// The package is gone; `claude.real` and the record are left.
        case orphaned
        /// prewarm-claude is `claude` but the original it runs is gone.
        case damaged
        /// No SDK, not the official SDK, no bundled CLI, no interpreter.
        case noSDK = "no_sdk"
        case notOfficial = "not_official"
        case noBundledCLI = "no_bundled_cli"
        case unavailable
    }

    /// `python` or `path_dir`.
    public var kind: String
    /// The interpreter or the directory, as given.
    public var target: String
    /// The package's directory (interpreters).
    public var package: String?
    public var sdkVersion: String?
    public var cliVersion: String?
    /// The directory whose `claude` is replaced: `_bundled`, or the PATH directory.
    public var directory: String?
    public var state: State
    /// One sentence: what is there.
    public var summary: String
    /// What to do, when something is to be done.
    public var advice: String?
    /// What was installed, when it was.
    public var record: CLIReplacement.Record?

    enum CodingKeys: String, CodingKey {
        case kind, target, package, directory, state, summary, advice, record
        case sdkVersion = "sdk_version"
        case cliVersion = "cli_version"
    }

    /// The report of an interpreter's SDK.
    public static func python(_ python: String, dropIn: String?, environment: [String: String] = ProcessInfo.processInfo.environment) -> InstallReport {
        let reinstall = "prewarm sdk install --python \(python)"
        let sdk: PythonSDK
        do {
            sdk = try PythonSDK.find(python: python, environment: environment)
        } catch {
            return InstallReport(kind: "python", target: python, state: .unavailable, summary: error.message)
        }
        var report = InstallReport(
            kind: "python", target: python, package: sdk.package, sdkVersion: sdk.distribution?.version, cliVersion: sdk.cliVersion,
            directory: sdk.bundledDirectory, state: .notInstalled, summary: ""
        )
        guard let bundled = sdk.bundledDirectory else {
            report.state = .noSDK
            report.summary = "\(sdk.executable) has no claude_agent_sdk package"
            return report
        }
        let replacement = CLIReplacement(directory: bundled)
        if sdk.namespaceOnly {
            if case .orphaned(let record) = replacement.state(dropIn: dropIn) {
                report.state = .orphaned
                report.record = record
                report.summary = "claude-agent-sdk was uninstalled; \(replacement.real) (its CLI \(record.cliVersion ?? "")) and \(replacement.recordPath) are left"
                report.advice = "prewarm sdk uninstall --python \(python) removes them"
            } else {
                report.state = .noSDK
                report.summary = "\(sdk.executable) has no claude_agent_sdk package (only an empty \(sdk.package ?? "") directory)"
            }
            return report
        }
        do {
            _ = try sdk.installableDirectory()
        } catch {
            report.state = sdk.isOfficial ? .noBundledCLI : .notOfficial
            report.summary = error.message
            return report
        }
        report.describe(replacement, dropIn: dropIn, reinstall: reinstall, what: "the SDK's bundled CLI")
        return report
    }

    /// The report of a PATH directory's `claude`.
    public static func pathDirectory(_ directory: String, dropIn: String?, path: String? = ProcessInfo.processInfo.environment["PATH"]) -> InstallReport {
        var report = InstallReport(kind: "path_dir", target: directory, directory: directory, state: .notInstalled, summary: "")
        let replacement = CLIReplacement(directory: directory)
        report.describe(replacement, dropIn: dropIn, reinstall: "prewarm sdk install --path-dir \(directory)", what: "\(directory)/claude")
        if report.state == .installed, let note = PathDirectory.notes(directory, path: path).first {
            report.advice = note
        }
        return report
    }

    mutating func describe(_ replacement: CLIReplacement, dropIn: String?, reinstall: String, what: String) {
        switch replacement.state(dropIn: dropIn) {
        case .absent:
            state = .notInstalled
            summary = "\(replacement.cli) does not exist"
        case .original:
            state = .notInstalled
            summary = "\(what) is the original: its runs start cold"
            advice = reinstall + " hands them to the daemon"
        case .installed(let record, let current):
            self.record = record
            state = current ? .installed : .outdated
            let real = record.original == nil ? "no claude.real (the real CLI is found on PATH)" : "the real CLI is \(replacement.real)"
            summary = "\(replacement.cli) is prewarm-claude (\(record.method.rawValue) of \(record.dropIn)); \(real)"
            if !current { advice = "it is another build than \(dropIn ?? "this prewarm's"): \(reinstall) updates it" }
        case .interrupted(let record):
            self.record = record
            state = .interrupted
            summary = "an install was cut before its last step: \(replacement.cli) is still the original (it works, cold)"
            advice = reinstall + " finishes it; prewarm sdk uninstall undoes it"
        case .overwritten(let record):
            self.record = record
            state = .overwritten
            let was = [record.sdkVersion.map { "SDK \($0)" }, record.cliVersion.map { "CLI \($0)" }].compactMap { $0 }.joined(separator: ", ")
            let now = [sdkVersion.map { "SDK \($0)" }, cliVersion.map { "CLI \($0)" }].compactMap { $0 }.joined(separator: ", ")
            summary = "a reinstall or upgrade of the package put its own CLI back at \(replacement.cli)\(now.isEmpty ? "" : " (now \(now))")"
                + "\(was.isEmpty ? "" : "; prewarm-claude had been installed for \(was)"): its runs start cold again"
            advice = reinstall + " installs it again (and replaces the older claude.real)"
        case .orphaned(let record):
            self.record = record
            state = .orphaned
            summary = "\(replacement.cli) is gone; \(replacement.real) and \(replacement.recordPath) are left"
            advice = "prewarm sdk uninstall removes them"
        case .damaged(let record, let why):
            self.record = record
            state = .damaged
            summary = why
            advice = "reinstall the package (pip install --force-reinstall claude-agent-sdk==VERSION), then " + reinstall
        }
    }

    /// Lines for a person.
    public var text: String {
        var lines = ["\(kind == "python" ? "python" : "path dir") \(target): \(state.rawValue.replacingOccurrences(of: "_", with: " "))"]
        if let package {
            let versions = [sdkVersion.map { "claude-agent-sdk \($0)" }, cliVersion.map { "CLI \($0)" }].compactMap { $0 }.joined(separator: ", ")
            lines.append("  package  \(package)\(versions.isEmpty ? "" : " (\(versions))")")
        }
        lines.append("  " + summary)
        if let advice { lines.append("  -> " + advice) }
        return lines.joined(separator: "\n")
    }
}

/// The interpreters and directories `prewarm sdk install` installed into, so that
/// `prewarm sdk status` with no arguments reports them (`$XDG_STATE_HOME/prewarm/sdk-installs.json`).
public struct InstallRegistry: Sendable, Codable, Equatable {
    public var pythons: [String] = []
    public var pathDirectories: [String] = []

    enum CodingKeys: String, CodingKey {
        case pythons
        case pathDirectories = "path_dirs"
    }

    public init() {}

    public static func load(_ path: String) -> InstallRegistry {
        guard let data = FileManager.default.contents(atPath: path), let registry = try? JSONDecoder().decode(InstallRegistry.self, from: data) else {
            return InstallRegistry()
        }
        return registry
    }

    /// Writes it (a best effort: the registry only lists what status reports by default).
    public func save(_ path: String) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(self) else { return }
        // The daemon's state directory: made 0700 and checked as the daemon does (not left
        // readable by all by a first `prewarm sdk install`, nor trusted if another user made it).
        guard (try? TrustedDirectory.prepare((path as NSString).deletingLastPathComponent, purpose: "the state directory")) != nil else { return }
        try? data.write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
