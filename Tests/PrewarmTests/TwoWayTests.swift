import Foundation
import PrewarmClient
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension LiveDaemons {
    /// Two-way turns (`Upgrade: prewarm-stream`) end to end, with a plain socket as a standard
    /// library client would use: 101 with the Prewarm headers, then raw bytes both ways.
    @Suite("Two-way turns", .serialized)
    struct TwoWayTests {
        static func request(pool: String, outcomeLine: Bool = true) -> String {
            "POST /v1/pools/\(pool)/turns HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: prewarm-stream\r\n"
                + (outcomeLine ? "Prewarm-Outcome-Line: 1\r\n" : "") + "Content-Length: 0\r\n\r\n"
        }

        static let userLine = #"{"type":"user","message":{"role":"user","content":"please PREWARM_TOOL_USE"},"parent_tool_use_id":null,"session_id":"default"}"#

        /// The fake agent asks for a tool permission mid-turn (`can_use_tool`); the client answers
        /// over the same connection and the turn completes; the daemon then closes it.
        @Test func permissionRequestAnsweredMidTurn() async throws {
            let daemon = try await TestDaemon(pools: DaemonTests.pool())
            let socket = try RawSocket(path: daemon.socket)
            try socket.send(Self.request(pool: "p"))
            let head = try #require(socket.readHead())
            #expect(head.hasPrefix("HTTP/1.1 101"), "\(head)")
            #expect(head.lowercased().contains("upgrade: prewarm-stream"))
            #expect(head.contains("Prewarm-Start: warm") && head.contains("Prewarm-Pid: "))
            try socket.send(Self.userLine + "\n")
            var types: [String] = []
            var outcome: [String: Any]?
            while let line = socket.readLine() {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { continue }
                let type = object["type"] as? String ?? "?"
                types.append(type)
                if type == "control_request", let request = object["request"] as? [String: Any], request["subtype"] as? String == "can_use_tool" {
                    let id = object["request_id"] as? String ?? ""
                    try socket.send(
                        #"{"type":"control_response","response":{"subtype":"success","request_id":"\#(id)","response":{"behavior":"allow","updatedInput":{"command":"echo prewarm"}}}}"#
                            + "\n"
                    )
                }
                if type == "result" { #expect((object["result"] as? String)?.contains("tool allowed") == true) }
                if type == "prewarm_outcome" { outcome = object }
            }
            #expect(types.contains("control_request"))
            #expect(types.firstIndex(of: "result").map { $0 < types.count - 1 } == true, "the outcome line follows the result: \(types)")
            #expect(outcome?["outcome"] as? String == "completed")
            #expect(try await daemon.pool("p").served == 1)
        }

        /// The client closing its write side closes the process's stdin: the fake agent exits and
        /// the turn ends as `exited`.
        @Test func halfCloseClosesStdin() async throws {
            let daemon = try await TestDaemon(pools: DaemonTests.pool())
            let socket = try RawSocket(path: daemon.socket)
            try socket.send(Self.request(pool: "p"))
            #expect(socket.readHead()?.hasPrefix("HTTP/1.1 101") == true)
            socket.shutdownWrite()
            var outcome: String?
            while let line = socket.readLine() {
                if let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], object["type"] as? String == "prewarm_outcome" {
                    outcome = object["outcome"] as? String
                }
            }
            #expect(outcome == "exited")
        }

        /// `prewarm turn --interactive`: the command's stdin and stdout are the stream.
        @Test func interactiveCommand() async throws {
            let daemon = try await TestDaemon(pools: DaemonTests.pool())
            let process = Process()
            process.executableURL = URL(fileURLWithPath: TestDaemon.prewarm)
            process.arguments = ["turn", "--interactive", "--socket", daemon.socket, "p"]
            let input = Pipe()
            let output = Pipe()
            process.standardInput = input
            process.standardOutput = output
            try process.run()
            input.fileHandleForWriting.write(Data((TestDaemon.userLine + "\n").utf8))
            try input.fileHandleForWriting.close()
            let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 0)
            #expect(printed.contains(#""type":"result""#))
            #expect(!printed.contains("prewarm_outcome"), "the outcome line is the command's, not printed")
        }

        /// A refused upgrade is answered like a refused turn: status, JSON error, then close.
        @Test func refusedUpgrade() async throws {
            let daemon = try await TestDaemon(pools: DaemonTests.pool(spares: 0, extra: #"when_empty = "reject""#))
            for (pool, status, code) in [("nope", "404", "pool_not_found"), ("p", "429", "no_capacity")] {
                let socket = try RawSocket(path: daemon.socket)
                try socket.send(Self.request(pool: pool))
                let head = try #require(socket.readHead())
                #expect(head.hasPrefix("HTTP/1.1 \(status)"), "\(head)")
                #expect(socket.readAll().contains(#""code":"\#(code)""#))
            }
            // The daemon serves on.
            #expect((try? await daemon.client.request(.GET, "/healthz"))?.status == 200)
        }
    }
}

/// A blocking Unix-socket client, as a script would use: lines over `UnixStreamSocket`.
final class RawSocket {
    private let socket: UnixStreamSocket
    private var buffer: [UInt8] = []

    init(path: String) throws {
        socket = try UnixStreamSocket(path: path)
    }

    func send(_ text: String) throws {
        guard socket.write(Array(text.utf8)) else { throw POSIXError(.EPIPE) }
    }

    func shutdownWrite() { socket.shutdownWrite() }

    func readHead() -> String? { socket.readHead() }

    /// The next line (without its newline); nil when the daemon closed the connection.
    func readLine() -> String? {
        while true {
            if let newline = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                return line
            }
            let chunk = socket.read()
            guard !chunk.isEmpty else { return nil }
            buffer += chunk
        }
    }

    func readAll() -> String {
        while case let chunk = socket.read(), !chunk.isEmpty { buffer += chunk }
        defer { buffer.removeAll() }
        return String(decoding: buffer, as: UTF8.self)
    }
}
