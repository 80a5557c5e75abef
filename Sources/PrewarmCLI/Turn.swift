import ArgumentParser
import Foundation
import NIOCore
import PrewarmClient
import NIOHTTP1

struct Turn: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send stdin as one turn to POOL and stream the turn's output to stdout.",
        discussion: """
            Exit status: 0 completed; 1 the turn broke (process exited early, timeout, killed); \
            65 rejected as bad input (400, 413); 69 daemon unreachable or pool failing (503); \
            75 no capacity (429); 64 usage.
            """
    )

    @OptionGroup var options: CommonOptions

    @Argument(help: "The pool's name.")
    var pool: String

    @Option(name: .long, help: "An id for the turn (sent as X-Request-Id).")
    var requestId: String?

    @Flag(name: .long, help: "A two-way turn: stdin and stdout become the stream to and from the process (Upgrade: prewarm-stream), so mid-turn requests can be answered.")
    var interactive = false

    func run() async throws {
        if interactive {
            try runInteractive()
            return
        }
        let input = FileHandle.standardInput.readDataToEndOfFile()
        let client = UnixHTTPClient(socketPath: try options.socketPath())
        var headers = [("Content-Type", "application/x-ndjson")]
        if let requestId { headers.append(("X-Request-Id", requestId)) }
        var status = 0
        var errorBody = ByteBuffer()
        let trailers: HTTPHeaders?
        do {
            trailers = try await client.stream(
                .POST, "/v1/pools/\(pool)/turns", headers: headers, body: ByteBuffer(bytes: input)
            ) { head in
                status = head.status
            } onBody: { chunk in
                if status == 200 {
                    FileHandle.standardOutput.write(Data(chunk.readableBytesView))
                } else {
                    var chunk = chunk
                    errorBody.writeBuffer(&chunk)
                }
            }
        } catch let error as UnixHTTPClient.ClientError {
            throw ExitStatus.fail(ExitStatus.unavailable, error.description)
        } catch {
            throw ExitStatus.fail(ExitStatus.broken, "the turn broke: \(error)")
        }
        guard status == 200 else {
            throw ExitStatus.fail(ExitStatus.forHTTP(status), "HTTP \(status): \(Self.errorMessage(errorBody))")
        }
        let outcome = trailers?.first(name: "Prewarm-Outcome") ?? "unknown"
        guard outcome == "completed" else {
            let exit = trailers?.first(name: "Prewarm-Exit-Status").map { ", exit status \($0)" } ?? ""
            throw ExitStatus.fail(ExitStatus.broken, "the turn broke: outcome \(outcome)\(exit)")
        }
    }

    /// `--interactive`: the upgrade, then stdin to the process and the process to stdout,
    /// until the daemon closes the stream at the end of the turn.
    func runInteractive() throws {
        let path = try options.socketPath()
        let connection: UnixStreamSocket
        do {
            connection = try UnixStreamSocket(path: path)
        } catch {
            throw ExitStatus.fail(ExitStatus.unavailable, "\(error)")
        }
        var request = "POST /v1/pools/\(pool)/turns HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: prewarm-stream\r\n"
        request += "Prewarm-Outcome-Line: 1\r\nContent-Length: 0\r\n"
        if let requestId { request += "X-Request-Id: \(requestId)\r\n" }
        request += "\r\n"
        guard connection.write(Array(request.utf8)), let head = connection.readHead() else {
            throw ExitStatus.fail(ExitStatus.unavailable, "the daemon closed the connection before answering")
        }
        let status = head.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap { Int($0) } ?? 0
        guard status == 101 else {
            var body: [UInt8] = []
            while case let chunk = connection.read(), !chunk.isEmpty { body += chunk }
            throw ExitStatus.fail(ExitStatus.forHTTP(status), "HTTP \(status): \(Self.errorMessage(ByteBuffer(bytes: body)))")
        }
        // stdin -> the process, on a thread of its own; its end closes the process's stdin.
        let pump = Thread {
            while true {
                let data = FileHandle.standardInput.availableData
                if data.isEmpty || !connection.write(Array(data)) { break }
            }
            connection.shutdownWrite()
        }
        pump.start()
        // The process -> stdout; the last line is the daemon's outcome, kept for the exit status.
        var line: [UInt8] = []
        var outcome: [String: Any]?
        while case let chunk = connection.read(), !chunk.isEmpty {
            for byte in chunk {
                line.append(byte)
                guard byte == UInt8(ascii: "\n") else { continue }
                if let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any], object["type"] as? String == "prewarm_outcome" {
                    outcome = object
                } else {
                    FileHandle.standardOutput.write(Data(line))
                }
                line.removeAll(keepingCapacity: true)
            }
        }
        if !line.isEmpty { FileHandle.standardOutput.write(Data(line)) }
        let result = outcome?["outcome"] as? String ?? "unknown"
        guard result == "completed" else {
            let exit = (outcome?["exit_status"] as? Int).map { ", exit status \($0)" } ?? ""
            throw ExitStatus.fail(ExitStatus.broken, "the turn broke: outcome \(result)\(exit)")
        }
    }

    /// The `message` of a JSON error body, else the body as text.
    static func errorMessage(_ body: ByteBuffer) -> String {
        let data = Data(body.readableBytesView)
        if let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let error = object["error"] as? [String: Any], let code = error["code"] as? String, let message = error["message"] as? String
        {
            return "\(code): \(message)"
        }
        return String(decoding: data, as: UTF8.self)
    }
}
