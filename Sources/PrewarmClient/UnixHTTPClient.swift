import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// A small HTTP/1.1 client over a Unix socket, on SwiftNIO's HTTP/1 codec: one request per
/// connection, the response streamed, trailers kept. The CLI and the tests use it.
/// (AsyncHTTPClient speaks `http+unix://` too, but drops trailers, which carry a turn's
/// outcome, and would double the build.)
public struct UnixHTTPClient: Sendable {
    public let socketPath: String

    public init(socketPath: String) {
        self.socketPath = socketPath
    }

    public struct Head: Sendable {
        public var status: Int
        public var headers: HTTPHeaders
    }

    public struct Response: Sendable {
        public var status: Int
        public var headers: HTTPHeaders
        public var body: ByteBuffer
        public var trailers: HTTPHeaders?

        public var bodyString: String { String(buffer: body) }
    }

    public enum ClientError: Error, CustomStringConvertible {
        case unreachable(path: String, reason: String)
        /// Something else than the daemon the caller expects listens on the socket.
        case untrusted(String)
        case closedEarly

        public var description: String {
            switch self {
            case .unreachable(let path, let reason): "cannot reach the daemon at \(path): \(reason); is `prewarm serve` running?"
            case .untrusted(let problem): problem
            case .closedEarly: "the daemon closed the connection before the response was complete"
            }
        }
    }

    /// Sends a request and collects the whole response.
    public func request(_ method: HTTPMethod, _ path: String, headers: [(String, String)] = [], body: ByteBuffer? = nil) async throws -> Response {
        var collected = ByteBuffer()
        var head: Head?
        let trailers = try await stream(method, path, headers: headers, body: body) { head = $0 } onBody: { chunk in
            var chunk = chunk
            collected.writeBuffer(&chunk)
        }
        guard let head else { throw ClientError.closedEarly }
        return Response(status: head.status, headers: head.headers, body: collected, trailers: trailers)
    }

    /// Sends a request and hands the response to the callbacks as it arrives; returns the
    /// trailers, if any.
    public func stream(
        _ method: HTTPMethod,
        _ path: String,
        headers: [(String, String)] = [],
        body: ByteBuffer? = nil,
        onHead: (Head) async throws -> Void,
        onBody: (ByteBuffer) async throws -> Void
    ) async throws -> HTTPHeaders? {
        let channel: NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(unixDomainSocketPath: socketPath) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw ClientError.unreachable(path: socketPath, reason: Self.describe(error))
        }
        if let problem = await DaemonPeer.problem(channel: channel.channel, path: socketPath, environment: ProcessInfo.processInfo.environment) {
            try? await channel.channel.close()
            throw ClientError.untrusted(problem)
        }
        return try await channel.executeThenClose { inbound, outbound in
            var requestHead = HTTPRequestHead(version: .http1_1, method: method, uri: path)
            requestHead.headers.add(name: "Host", value: "localhost")
            for (name, value) in headers { requestHead.headers.add(name: name, value: value) }
            if let body {
                requestHead.headers.add(name: "Content-Length", value: String(body.readableBytes))
            }
            requestHead.headers.add(name: "Connection", value: "close")
            // One write for the whole request: a server may answer (and close) as soon as it
            // has the head, and a separate write of the end would then fail.
            var parts: [HTTPClientRequestPart] = [.head(requestHead)]
            if let body { parts.append(.body(.byteBuffer(body))) }
            parts.append(.end(nil))
            do {
                try await outbound.write(contentsOf: parts)
            } catch {
                // Closed under us: the answer may already be in; read it before giving up.
            }
            var sawHead = false
            for try await part in inbound {
                switch part {
                case .head(let head):
                    sawHead = true
                    try await onHead(Head(status: Int(head.status.code), headers: head.headers))
                case .body(let chunk):
                    try await onBody(chunk)
                case .end(let trailers):
                    return trailers
                }
            }
            if !sawHead { throw ClientError.closedEarly }
            throw ClientError.closedEarly
        }
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? IOError { return "\(error.description)" }
        return "\(error)"
    }
}
