#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Where the Claude Code CLI keeps a session's transcript, by its own rule (2.1.332,
/// docs/claude-cli.md §4): `<config home>/projects/<project directory>/<session id>.jsonl`,
/// with the config home `CLAUDE_CONFIG_DIR` (else `$HOME/.claude`, NFC) and the project
/// directory the working directory's real path with every UTF-16 unit that is not ASCII
/// alphanumeric turned into `-`; past 200 units it is cut there and `-` and the absolute value
/// of the path's 32-bit Java-style string hash in base 36 are appended. With
/// `CLAUDE_CONFIG_DIR` set, `CLAUDE_CODE_PROJECT_DIR_NAME` (1-64 of `[A-Za-z0-9_-]`) replaces
/// the project directory's name. Resume spares check that a session's transcript has not
/// changed behind the daemon's back before they serve it.
public enum SessionTranscript {
    static let maxName = 200

    /// The transcript of `sessionID` for a CLI run in `cwd` with environment `env`.
    public static func path(sessionID: String, cwd: String, env: [String: String]) -> String? {
        guard let home = configHome(env) else { return nil }
        let directory: String
        if env["CLAUDE_CONFIG_DIR"] != nil, let name = env["CLAUDE_CODE_PROJECT_DIR_NAME"],
            name.range(of: "^[A-Za-z0-9_-]{1,64}$", options: .regularExpression) != nil
        {
            directory = name
        } else {
            directory = projectDirectoryName(realPath(cwd) ?? cwd)
        }
        return home + "/projects/" + directory + "/" + sessionID + ".jsonl"
    }

    /// `CLAUDE_CONFIG_DIR`, else `$HOME/.claude`, NFC-normalized.
    public static func configHome(_ env: [String: String]) -> String? {
        let home = env["CLAUDE_CONFIG_DIR"] ?? env["HOME"].map { $0 + "/.claude" }
        return home?.precomposedStringWithCanonicalMapping
    }

    /// The project directory's name for a (real) working directory path.
    public static func projectDirectoryName(_ path: String) -> String {
        let units = Array(path.utf16)
        let dash = UInt16(UInt8(ascii: "-"))
        let sanitized = units.map { unit -> UInt16 in
            switch unit {
            case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: unit
            default: dash
            }
        }
        guard sanitized.count > maxName else { return String(decoding: sanitized, as: UTF16.self) }
        return String(decoding: sanitized.prefix(maxName), as: UTF16.self) + "-" + String(abs(Int64(javaHash(units))), radix: 36)
    }

    /// `h = (h << 5) - h + unit`, wrapping at 32 bits, over UTF-16 units (the CLI's `Nle`).
    static func javaHash(_ units: [UInt16]) -> Int32 {
        var hash: Int32 = 0
        for unit in units {
            hash = (hash &<< 5) &- hash &+ Int32(unit)
        }
        return hash
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
