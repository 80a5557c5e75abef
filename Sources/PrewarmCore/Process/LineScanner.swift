import NIOCore

/// Cuts a process's stdout into segments that end at line boundaries, and tells, at the end
/// of each line, whether the line contained the readiness and end-of-turn substrings.
///
/// It holds no line in memory: a line of any length streams through in the pieces it arrived
/// in, and the substrings are matched incrementally across pieces (Knuth-Morris-Pratt), so a
/// process that writes a gigabyte without a newline costs nothing but time.
public struct LineScanner: Sendable {
    public struct Segment: Sendable, Equatable {
        /// The bytes, a slice of the buffer that was scanned.
        public var bytes: ByteBuffer
        /// The segment ends with a newline.
        public var completesLine: Bool
        /// The line that this segment completes contained the readiness substring.
        public var lineHasReady: Bool
        /// The line that this segment completes contained the end-of-turn substring.
        public var lineHasEnd: Bool
    }

    private var ready: SubstringMatcher?
    private var end: SubstringMatcher?

    public init(ready: String?, end: String?) {
        self.ready = ready.flatMap(SubstringMatcher.init)
        self.end = end.flatMap(SubstringMatcher.init)
    }

    public mutating func scan(_ buffer: ByteBuffer) -> [Segment] {
        var segments: [Segment] = []
        var start = buffer.readerIndex
        buffer.withUnsafeReadableBytes { bytes in
            for (offset, byte) in bytes.enumerated() {
                if byte == UInt8(ascii: "\n") {
                    let length = buffer.readerIndex + offset + 1 - start
                    segments.append(
                        Segment(
                            bytes: buffer.getSlice(at: start, length: length)!,
                            completesLine: true,
                            lineHasReady: ready?.matched ?? false,
                            lineHasEnd: end?.matched ?? false
                        )
                    )
                    ready?.reset()
                    end?.reset()
                    start += length
                } else {
                    ready?.feed(byte)
                    end?.feed(byte)
                }
            }
        }
        let rest = buffer.writerIndex - start
        if rest > 0 {
            segments.append(
                Segment(bytes: buffer.getSlice(at: start, length: rest)!, completesLine: false, lineHasReady: false, lineHasEnd: false)
            )
        }
        return segments
    }
}

/// Finds one substring in a stream of bytes fed one at a time.
struct SubstringMatcher: Sendable {
    private let needle: [UInt8]
    private let failure: [Int]
    private var state = 0
    private(set) var matched = false

    init?(_ needle: String) {
        guard !needle.isEmpty else { return nil }
        self.needle = Array(needle.utf8)
        var failure = [Int](repeating: 0, count: self.needle.count)
        var k = 0
        for i in 1..<max(1, self.needle.count) {
            while k > 0 && self.needle[i] != self.needle[k] { k = failure[k - 1] }
            if self.needle[i] == self.needle[k] { k += 1 }
            failure[i] = k
        }
        self.failure = failure
    }

    mutating func feed(_ byte: UInt8) {
        guard !matched else { return }
        while state > 0 && needle[state] != byte { state = failure[state - 1] }
        if needle[state] == byte { state += 1 }
        if state == needle.count { matched = true }
    }

    mutating func reset() {
        state = 0
        matched = false
    }
}

/// Confirms an end-of-turn candidate by parsing it: the line's top-level JSON `type` must be
/// the pool's `end_type` (a substring match alone would also fire on tool output that holds
/// the same text). A line's segments are kept, as slices of the buffers they arrived in,
/// until its newline, and only a candidate line is parsed.
struct EndTypeCheck: Sendable {
    let type: String
    /// The `session_id` of the last end line, if it had one.
    private(set) var sessionID: String?
    private var pending: [ByteBuffer] = []
    private var pendingBytes = 0
    /// Lines longer than this are not parsed (a result line is far smaller).
    static let limit = 64 << 20

    init(type: String) {
        self.type = type
    }

    /// Whether the line this segment completes is the turn's last.
    mutating func confirm(_ segment: LineScanner.Segment) -> Bool {
        if pendingBytes + segment.bytes.readableBytes <= Self.limit {
            pending.append(segment.bytes)
            pendingBytes += segment.bytes.readableBytes
        } else {
            pendingBytes = Self.limit + 1
        }
        guard segment.completesLine else { return false }
        defer {
            pending.removeAll(keepingCapacity: true)
            pendingBytes = 0
        }
        guard segment.lineHasEnd, pendingBytes <= Self.limit else { return false }
        var line = ByteBuffer()
        line.reserveCapacity(pendingBytes)
        for var piece in pending { line.writeBuffer(&piece) }
        guard let parsed = StreamJSONLine.parse(line.readableBytesView), parsed.type == type else { return false }
        sessionID = parsed.sessionID
        return true
    }
}
