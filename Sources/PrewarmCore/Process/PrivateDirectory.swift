#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A fresh working directory for one process or one turn (mkdtemp: unique, mode 0700),
/// removed with everything in it once the process group that used it is gone. Turns that
/// name no directory never share one: what one tenant's tools write there is never the
/// next tenant's.
public enum PrivateDirectory {
    /// Makes `root/PREFIX-XXXXXX` (and `root` itself, made and checked by TrustedDirectory, if
    /// it is missing: the daemon makes and checks it before it serves, so a turn's path costs
    /// one mkdtemp). `root` is one no other user can change (TrustedDirectory), so the paths
    /// below it are the daemon's alone.
    public static func make(under root: String, prefix: String) throws(PrewarmError) -> String {
        var template = Array((root + "/" + prefix + "-XXXXXX").utf8CString)
        var made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) != nil }
        if !made, errno == ENOENT {
            try TrustedDirectory.prepare(root, purpose: "the turns' and spares' own directories (turn_dirs)")
            // The failed call may have written into the template: a fresh one.
            template = Array((root + "/" + prefix + "-XXXXXX").utf8CString)
            made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) != nil }
        }
        guard made else {
            throw PrewarmError(.internal, "cannot create a directory in \(root): \(String(cString: strerror(errno))); check turn_dirs and its permissions")
        }
        return String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Removes the directory and its contents (one already gone is not a failure); a failure
    /// is returned for the log.
    public static func remove(_ path: String) -> String? {
        do {
            try FileManager.default.removeItem(atPath: path)
            return nil
        } catch {
            return access(path, F_OK) != 0 && errno == ENOENT ? nil : error.localizedDescription
        }
    }
}
