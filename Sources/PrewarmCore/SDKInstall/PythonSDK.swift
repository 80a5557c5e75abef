import Foundation

/// The `claude_agent_sdk` package a Python interpreter imports, found by asking that
/// interpreter (without importing the package: nothing of it runs), and the distribution
/// that installed it.
public struct PythonSDK: Sendable, Equatable, Codable {
    /// The interpreter as given, and as it reports itself (`sys.executable`).
    public var python: String
    public var executable: String
    public var pythonVersion: String
    /// The package's directory; nil when the interpreter has no `claude_agent_sdk`.
    public var package: String?
    /// A namespace package: the directory is there without its `__init__.py` (what
    /// `pip uninstall` leaves around files it did not install).
    public var namespaceOnly: Bool
    /// The distribution whose files hold the package, if any.
    public var distribution: Distribution?
    /// The bundled CLI's version (`_bundled/claude.version`, else `_cli_version.py`).
    public var cliVersion: String?

    public struct Distribution: Sendable, Equatable, Codable {
        public var name: String
        public var version: String
        public var authorEmail: String?
        public var urls: [String]
        /// Where it records its files (`RECORD`), if it does.
        public var record: String?
        public var installer: String?

        enum CodingKeys: String, CodingKey {
            case name, version, urls, record, installer
            case authorEmail = "author_email"
        }
    }

    /// The official SDK's distribution name on PyPI.
    public static let officialName = "claude-agent-sdk"

    /// The official SDK: the distribution `claude-agent-sdk`, by Anthropic, from its
    /// repository. A package of another name, or one that claims the name but not the
    /// author and home, is not touched.
    public var isOfficial: Bool {
        guard let distribution else { return false }
        let name = distribution.name.lowercased().replacingOccurrences(of: "_", with: "-")
        guard name == Self.officialName else { return false }
        let byAnthropic = distribution.authorEmail?.lowercased().contains("anthropic") ?? false
        let home = distribution.urls.contains { $0.contains("github.com/anthropics/claude-agent-sdk-python") }
        return byAnthropic && home
    }

    /// The bundled CLI's directory.
    public var bundledDirectory: String? { package.map { $0 + "/_bundled" } }

    enum CodingKeys: String, CodingKey {
        case python, executable, package, distribution
        case pythonVersion = "python_version"
        case namespaceOnly = "namespace_only"
        case cliVersion = "cli_version"
    }

    /// What the interpreter runs: finds the package's spec and the distribution whose
    /// files include its `__init__.py` at that place. Prints one JSON object.
    static let probe = #"""
        import importlib.util, json, os, re, sys
        out = {"executable": sys.executable, "python_version": sys.version.split()[0], "package": None,
               "namespace_only": False, "distribution": None, "cli_version": None}
        spec = importlib.util.find_spec("claude_agent_sdk")
        if spec is not None and spec.submodule_search_locations:
            package = os.path.abspath(list(spec.submodule_search_locations)[0])
            out["package"] = package
            out["namespace_only"] = spec.origin in (None, "namespace") or not os.path.exists(os.path.join(package, "__init__.py"))
            try:
                from importlib import metadata
                init = os.path.realpath(os.path.join(package, "__init__.py"))
                for dist in metadata.distributions():
                    files = dist.files or []
                    if not any(str(f).replace("\\", "/") == "claude_agent_sdk/__init__.py" and os.path.realpath(dist.locate_file(f)) == init for f in files):
                        continue
                    meta = dist.metadata
                    urls = [u.split(",", 1)[-1].strip() for u in (meta.get_all("Project-URL") or [])]
                    if meta.get("Home-page"):
                        urls.append(meta.get("Home-page"))
                    record = None
                    installer = None
                    try:
                        path = getattr(dist, "_path", None)
                        if path is not None:
                            record = os.path.join(str(path), "RECORD")
                            installer = (dist.read_text("INSTALLER") or "").strip() or None
                    except Exception:
                        pass
                    out["distribution"] = {"name": meta.get("Name") or "", "version": dist.version or "",
                        "author_email": meta.get("Author-email") or meta.get("Author"), "urls": urls,
                        "record": record, "installer": installer}
                    break
            except Exception:
                pass
            for name, pattern in (("_bundled/claude.version", r"^\s*([0-9][^\s]*)"), ("_cli_version.py", r"__cli_version__\s*=\s*['\"]([^'\"]+)")):
                try:
                    with open(os.path.join(package, name)) as f:
                        found = re.search(pattern, f.read(), re.M)
                    if found:
                        out["cli_version"] = found.group(1)
                        break
                except OSError:
                    pass
        print(json.dumps(out))
        """#

    /// Asks `python` (a path, or a name looked up on PATH) where its SDK is.
    public static func find(python: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws(InstallError) -> PythonSDK {
        guard let interpreter = resolve(python, environment: environment) else {
            throw InstallError(.interpreterUnavailable, "no Python interpreter \(python)\(python.contains("/") ? "" : " on PATH"): give its path with --python (a virtualenv's bin/python)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: interpreter)
        // -I: the interpreter's own paths, not a PYTHONPATH of this shell's nor the current
        // directory (a `json.py` or `claude_agent_sdk/` there would run, or be reported, as
        // the package: under sudo, another user's code as root).
        process.arguments = ["-I", "-c", probe]
        process.environment = environment
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw InstallError(.interpreterUnavailable, "cannot run \(interpreter): \(error)")
        }
        // Both pipes at once: an interpreter that fills one while the other is read would
        // block for ever (64 KiB of warnings on stderr, say).
        let stderrRead = DispatchGroup()
        nonisolated(unsafe) var err = Data()
        DispatchQueue.global().async(group: stderrRead) { err = errors.fileHandleForReading.readDataToEndOfFile() }
        let out = output.fileHandleForReading.readDataToEndOfFile()
        stderrRead.wait()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let tail = String(decoding: err.suffix(500), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw InstallError(.interpreterUnavailable, "\(interpreter) could not say where its packages are (exit \(process.terminationStatus)): \(tail)")
        }
        struct Answer: Decodable {
            var executable: String
            var python_version: String
            var package: String?
            var namespace_only: Bool
            var distribution: Distribution?
            var cli_version: String?
        }
        let answer: Answer
        do {
            answer = try JSONDecoder().decode(Answer.self, from: out)
        } catch {
            throw InstallError(.interpreterUnavailable, "\(interpreter) answered something else than its packages: \(String(decoding: out.prefix(300), as: UTF8.self))")
        }
        return PythonSDK(
            python: interpreter, executable: answer.executable, pythonVersion: answer.python_version, package: answer.package,
            namespaceOnly: answer.namespace_only, distribution: answer.distribution, cliVersion: answer.cli_version
        )
    }

    /// A path as given (made absolute), a name looked up on PATH.
    public static func resolve(_ python: String, environment: [String: String]) -> String? {
        if python.contains("/") {
            let absolute = python.hasPrefix("/") ? python : FileManager.default.currentDirectoryPath + "/" + python
            return FileManager.default.isExecutableFile(atPath: absolute) ? absolute : nil
        }
        for directory in (environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") where !directory.isEmpty {
            let candidate = "\(directory)/\(python)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// The package's bundled CLI directory to install into, or why not (naming the path and
    /// what to do instead).
    public func installableDirectory() throws(InstallError) -> String {
        let instead = "point the SDK at prewarm-claude instead (Python: ClaudeAgentOptions(cli_path=\".../prewarm-claude\"))"
        guard let package, !namespaceOnly else {
            if let package, namespaceOnly {
                throw InstallError(
                    .notInstallable,
                    "\(package) is what an uninstalled claude-agent-sdk left (no __init__.py): \(python) has no SDK to install into; pip install claude-agent-sdk first"
                )
            }
            throw InstallError(.notInstallable, "\(python) (\(executable)) has no claude_agent_sdk package: pip install claude-agent-sdk into it, or give --python the interpreter of the application's virtualenv")
        }
        guard isOfficial else {
            let what = distribution.map { "belongs to the distribution \($0.name) \($0.version)" } ?? "belongs to no installed distribution (no dist-info names it)"
            throw InstallError(
                .notInstallable,
                "\(package) \(what), not the official \(Self.officialName) (Anthropic's, from PyPI): prewarm sdk install replaces only that package's bundled CLI; \(instead)"
            )
        }
        let bundled = package + "/_bundled"
        guard FileStamp(path: bundled + "/claude") != nil || FileStamp(path: bundled + "/claude.real") != nil else {
            throw InstallError(
                .notInstallable,
                "\(bundled)/claude does not exist: this \(Self.officialName) \(distribution?.version ?? "") has no bundled CLI (a wheel for another platform, or a source install), so the SDK runs `claude` from PATH; use prewarm sdk install --path-dir DIR for a DIR early on the application's PATH, or \(instead)"
            )
        }
        return bundled
    }
}
