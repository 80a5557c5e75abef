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

    func run() async throws {
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
