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

/// `end_type`: the end of a turn is the line whose top-level JSON type matches, not any line
/// that merely contains the text.
@Suite("End type")
struct EndTypeTests {
    func ends(_ chunks: [String]) -> [Bool] {
        var scanner = LineScanner(ready: nil, end: #""type":"result""#)
        var check = EndTypeCheck(type: "result")
        var found: [Bool] = []
        for chunk in chunks {
            for segment in scanner.scan(ByteBuffer(string: chunk)) {
                let end = check.confirm(segment)
                if segment.completesLine { found.append(end) }
            }
        }
        return found
    }

    @Test func topLevelTypeOnly() {
        let lines = [
            #"{"type":"assistant","message":{"content":[{"type":"text","text":"x"}]},"nested":{"type":"result"}}"# + "\n",
            #"{"type":"user","message":{"content":"{\"type\":\"result\"}"}}"# + "\n",
            #"{"subtype":"success","type":"result","result":"done"}"# + "\n",
        ]
        #expect(ends(lines) == [false, false, true])
    }

    @Test func splitAcrossChunks() {
        #expect(ends([#"{"type":"res"#, #"ult","x":1}"# + "\n"]) == [true])
        #expect(ends(["not json \"type\":\"result\"\n"]) == [false])
    }
}
