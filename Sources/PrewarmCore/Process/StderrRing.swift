import NIOCore
import Synchronization

/// The last few KiB a process wrote to stderr, kept for error reports (a failing start-up's
/// reason, a broken turn's log line). Older bytes are dropped; the pipe is always drained.
public final class StderrRing: Sendable {
    private let capacity: Int
    private let bytes = Mutex<[UInt8]>([])

    public init(capacity: Int = 4096) {
        self.capacity = capacity
    }

    public func append(_ buffer: ByteBuffer) {
        bytes.withLock { stored in
            stored.append(contentsOf: buffer.readableBytesView.suffix(capacity))
            if stored.count > capacity { stored.removeFirst(stored.count - capacity) }
        }
    }

    /// The last `count` non-empty lines, joined by " | ".
    public func lastLines(_ count: Int = 3) -> String {
        let text = bytes.withLock { String(decoding: $0, as: UTF8.self) }
        return text.split(whereSeparator: \.isNewline).suffix(count).joined(separator: " | ")
    }
}
