#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A directory on `PATH` where `prewarm sdk install --path-dir` puts a `claude` that is
/// prewarm-claude (for callers that find the CLI on PATH: the PHP SDKs' auto-detection, shell
/// scripts), and the rule for when that would reach other users.
public enum PathDirectory {
    /// Directories on every user's PATH (the defaults of login shells and of sudo's
    /// secure_path): a `claude` there would shadow the CLI of everyone on the host.
    public static let systemDirectories: Set<String> = [
        "/usr/local/bin", "/usr/local/sbin", "/usr/bin", "/usr/sbin", "/bin", "/sbin", "/snap/bin", "/usr/games", "/usr/local/games",
    ]

    /// Why a `claude` in `directory` would be run by other users than `uid`, or could be
    /// replaced by them; nil when it would not (a directory of the user's own, that only the
    /// user can write: `~/.local/bin`, a virtualenv's `bin`).
    public static func sharedReason(_ directory: String, uid: uid_t = getuid()) -> String? {
        let real = URL(fileURLWithPath: directory).resolvingSymlinksInPath().path
        if systemDirectories.contains(real) || systemDirectories.contains(directory) {
            return "\(directory) is on every user's PATH: a claude there is every user's claude"
        }
        guard let stamp = FileStamp(path: real, following: true) else { return nil }
        if stamp.uid != uid {
            return "\(directory) is owned by \(CLIReplacement.userName(stamp.uid)), not by \(CLIReplacement.userName(uid)): it is that user's, and the users whose PATH holds it would run prewarm-claude"
        }
        if stamp.permissions & 0o022 != 0 {
            return "\(directory) is writable by its group or by others (mode \(String(stamp.permissions, radix: 8))): others could put their own claude there"
        }
        // Each directory above it as the daemon's own paths are held (TrustedDirectory): the
        // user's or root's, and not writable by others unless root's and sticky (/tmp). Else
        // another user could move this one aside and put a directory of theirs in its place.
        var parent = (real as NSString).deletingLastPathComponent
        while !parent.isEmpty {
            var info = stat()
            if stat(parent, &info) == 0, let problem = TrustedDirectory.problem(owner: info.st_uid, mode: info.st_mode, isTarget: false, daemonUID: uid) {
                return "\(parent), above \(directory), \(problem): another user could replace \(directory) and the claude in it"
            }
            if parent == "/" { break }
            parent = (parent as NSString).deletingLastPathComponent
        }
        return nil
    }

    /// Notes on how `directory` stands on `path` (a PATH value): not on it, or behind
    /// another `claude` that callers would find first.
    public static func notes(_ directory: String, path: String?) -> [String] {
        let entries = (path ?? "").split(separator: ":").map(String.init).filter { !$0.isEmpty }
        let real = URL(fileURLWithPath: directory).resolvingSymlinksInPath().path
        func same(_ entry: String) -> Bool {
            entry == directory || URL(fileURLWithPath: entry).resolvingSymlinksInPath().path == real
        }
        guard let index = entries.firstIndex(where: same) else {
            return ["\(directory) is not on this PATH: put it on the application's PATH, before any other directory holding a claude"]
        }
        for entry in entries[..<index] where access(entry + "/claude", X_OK) == 0 {
            return ["\(entry)/claude comes before \(directory) on this PATH: callers that search PATH find that one first"]
        }
        return []
    }
}
