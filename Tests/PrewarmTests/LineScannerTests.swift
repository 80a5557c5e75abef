import NIOCore
import Testing

@testable import PrewarmCore

@Suite("Line scanner")
struct LineScannerTests {
    /// The end substring is found across chunk boundaries, and only on its own line.
    @Test func matchesAcrossChunks() {
        var scanner = LineScanner(ready: nil, end: "\"type\":\"result\"")
        var segments = scanner.scan(ByteBuffer(string: "{\"type\":\"assistant\"}\n{\"type\":\"res"))
        #expect(segments.count == 2)
        #expect(segments[0].completesLine && !segments[0].lineHasEnd)
        #expect(!segments[1].completesLine)
        segments = scanner.scan(ByteBuffer(string: "ult\"}\nafter\n"))
        #expect(segments.count == 2)
        #expect(segments[0].lineHasEnd)
        #expect(String(buffer: segments[0].bytes) == "ult\"}\n")
        #expect(!segments[1].lineHasEnd)
    }

    /// Bytes are passed through unchanged, whatever their lines.
    @Test func passesBytesThrough() {
        var scanner = LineScanner(ready: "ok", end: nil)
        let text = "a\nbb\n\nok ok\nrest"
        let segments = scanner.scan(ByteBuffer(string: text))
        #expect(segments.map { String(buffer: $0.bytes) }.joined() == text)
        #expect(segments.filter(\.lineHasReady).count == 1)
    }

    /// A needle with a repeated prefix is matched (KMP failure links).
    @Test func repeatedPrefix() {
        var scanner = LineScanner(ready: "aab", end: nil)
        #expect(scanner.scan(ByteBuffer(string: "aaab\n"))[0].lineHasReady)
    }
}
