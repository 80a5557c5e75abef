import Foundation
import PrewarmClient

/// One HTTP/1.1 request over a Unix socket with blocking reads on the calling thread, so the
/// harness times the daemon and not its own client: no event loop, no task hop between a
/// byte's arrival and its timestamp (the same footing as the pipe baselines). Handles what
/// the daemon sends: a head, then a chunked body with trailers, a Content-Length body, or a
/// body to end of file. (The CLI's own client is SwiftNIO's; a measuring instrument should
/// add as little as it can.)
final class BlockingHTTPConnection {
    private let socket: UnixStreamSocket
    private var buffer: [UInt8] = []
    private var position = 0
    private var eof = false

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    init(socketPath: String) throws {
        socket = try UnixStreamSocket(path: socketPath)
    }

    func send(_ bytes: [UInt8]) throws {
        guard socket.write(bytes) else { throw Failure(description: "the daemon closed the connection") }
    }

    /// Reads more bytes into the buffer; false at end of file.
    private func fill() -> Bool {
        if eof { return false }
        if position > 0 && position == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            position = 0
        }
        let chunk = socket.read()
        guard !chunk.isEmpty else {
            eof = true
            return false
        }
        buffer += chunk
        return true
    }

    /// A line ending in CRLF (without it); nil at end of file.
    private func line() -> String? {
        while true {
            if let end = buffer[position...].firstIndex(of: UInt8(ascii: "\n")) {
                var stop = end
                if stop > position && buffer[stop - 1] == UInt8(ascii: "\r") { stop -= 1 }
                let text = String(decoding: buffer[position..<stop], as: UTF8.self)
                position = end + 1
                return text
            }
            guard fill() else { return nil }
        }
    }

    /// Up to `limit` bytes already read or read now; nil at end of file.
    private func bytes(upTo limit: Int) -> ArraySlice<UInt8>? {
        if position == buffer.count && !fill() { return nil }
        let end = min(buffer.count, position + limit)
        defer { position = end }
        return buffer[position..<end]
    }

    /// The status and headers (names lowercased).
    func readHead() throws -> (status: Int, headers: [String: String]) {
        guard let statusLine = line() else { throw Failure(description: "the connection closed before a response") }
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, let status = Int(parts[1]) else { throw Failure(description: "bad status line: \(statusLine)") }
        var headers: [String: String] = [:]
        while let header = line(), !header.isEmpty {
            guard let colon = header.firstIndex(of: ":") else { continue }
            headers[header[..<colon].lowercased()] = header[header.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return (status, headers)
    }

    /// Reads the body, handing each piece to `onData` as it arrives; returns the trailers.
    func readBody(headers: [String: String], onData: (ArraySlice<UInt8>) -> Void) throws -> [String: String] {
        if headers["transfer-encoding"]?.lowercased().contains("chunked") == true {
            while true {
                guard let sizeLine = line() else { throw Failure(description: "the connection closed inside a chunked body") }
                let hex = sizeLine.split(separator: ";").first.map(String.init) ?? ""
                guard let size = Int(hex.trimmingCharacters(in: .whitespaces), radix: 16) else {
                    throw Failure(description: "bad chunk size: \(sizeLine)")
                }
                if size == 0 {
                    var trailers: [String: String] = [:]
                    while let trailer = line(), !trailer.isEmpty {
                        guard let colon = trailer.firstIndex(of: ":") else { continue }
                        trailers[trailer[..<colon].lowercased()] = trailer[trailer.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                    }
                    return trailers
                }
                var remaining = size
                while remaining > 0 {
                    guard let piece = bytes(upTo: remaining) else { throw Failure(description: "the connection closed inside a chunk") }
                    remaining -= piece.count
                    onData(piece)
                }
                _ = line()  // the CRLF after the chunk
            }
        }
        if let length = headers["content-length"].flatMap(Int.init) {
            var remaining = length
            while remaining > 0, let piece = bytes(upTo: remaining) {
                remaining -= piece.count
                onData(piece)
            }
            return [:]
        }
        while let piece = bytes(upTo: 65536) { onData(piece) }
        return [:]
    }
}
