import Foundation
import NIOCore
import NIOHTTP1
import PrewarmCore

/// Makes every malformed request the client's problem, answered and closed: sits right
/// behind NIO's HTTP/1 decoder, in front of the upgrade handler and Hummingbird.
///
/// - A parse error (garbage, a bad request line, conflicting Content-Length and
///   Transfer-Encoding, a bad chunk size...) is answered 400 `bad_request`, an oversized
///   header block 431 `headers_too_large`, both with the API's JSON error and
///   `Connection: close`, and the connection is closed. (NIO's own
///   `HTTPServerProtocolErrorHandler` does the same with an empty body.)
/// - A request line over `maxURILength`, or an HTTP version other than 1.0 and 1.1, is
///   refused the same way.
/// - A connection that sends no complete request head within `idleTimeout` of its opening
///   is closed; after the first head, Hummingbird's `HTTPConnectionStateHandler` times out
///   idle connections between requests (a turn in progress is never timed out).
///
/// Removed from the pipeline when a connection becomes a two-way stream.
final class HTTPRequestGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// The longest request target served.
    static let maxURILength = 8192
    /// Header limits of the decoder: a header block over these is 431.
    static let decoderLimits: NIOHTTPDecoderLimitConfiguration = {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = 16 * 1024
        limits.maxHeaderListSize = 64 * 1024
        limits.maxHeaderFieldCount = 256
        return limits
    }()

    /// The decoder's limits for the daemon's own uid's connections: a drop-in run's
    /// description (`POST /v1/runs`, `Prewarm-Run`) carries a command line and environment as
    /// large as `execve` takes (one argument up to 128 KiB, all of them up to ARG_MAX), in
    /// JSON and base64: four times ARG_MAX. Every other request of such a connection is
    /// still held to `decoderLimits`, by this guard.
    static let runLimits: NIOHTTPDecoderLimitConfiguration = {
        var limits = decoderLimits
        limits.maxHeaderFieldSize = maxRunHead
        limits.maxHeaderListSize = maxRunHead
        return limits
    }()

    /// Four times ARG_MAX (at least 1 MiB), and the rest of a head.
    static let maxRunHead: Int = max(1 << 20, 4 * Int(sysconf(Int32(_SC_ARG_MAX)))) + 64 * 1024

    private let idleTimeout: TimeAmount?
    /// The decoder takes `runLimits`: heads of other requests are checked here.
    private let runHeads: Bool
    private var responding = false
    private var refused = false
    private var firstHeadTimer: Scheduled<Void>?

    init(idleTimeout: TimeAmount?, runHeads: Bool = false) {
        self.idleTimeout = idleTimeout
        self.runHeads = runHeads
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { armFirstHeadTimer(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        armFirstHeadTimer(context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        firstHeadTimer?.cancel()
        firstHeadTimer = nil
    }

    private func armFirstHeadTimer(_ context: ChannelHandlerContext) {
        guard let idleTimeout, firstHeadTimer == nil else { return }
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        firstHeadTimer = context.eventLoop.scheduleTask(in: idleTimeout) {
            // No complete request head within the idle timeout (slowloris, a silent client).
            loopBound.value.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        if case .head(let head) = unwrapInboundIn(data) {
            firstHeadTimer?.cancel()
            if head.version != .http1_1 && head.version != .http1_0 {
                refuse(context, PrewarmError(.badRequest, "HTTP/\(head.version.major).\(head.version.minor) is not served; speak HTTP/1.1"))
                return
            }
            if runHeads, !(head.method == .POST && head.uri == "/v1/runs"), !Self.withinLimits(head) {
                // Only a run's head may be larger: every other request keeps the usual limits,
                // refused as the decoder would have refused it.
                refuse(context, Self.refusal(for: .headerOverflow))
                return
            }
            if head.uri.utf8.count > Self.maxURILength {
                refuse(context, PrewarmError(.badRequest, "the request target is over \(Self.maxURILength) bytes; see README.md for the API"))
                return
            }
        }
        context.fireChannelRead(data)
    }

    /// Whether a head is within `decoderLimits` (each field, all of them, their count).
    static func withinLimits(_ head: HTTPRequestHead) -> Bool {
        guard head.headers.count <= decoderLimits.maxHeaderFieldCount else { return false }
        var total = head.uri.utf8.count
        for (name, value) in head.headers {
            let size = name.utf8.count + value.utf8.count
            guard size <= decoderLimits.maxHeaderFieldSize else { return false }
            total += size + 4
        }
        return total <= decoderLimits.maxHeaderListSize
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? HTTPParserError, !refused {
            refuse(context, Self.refusal(for: error))
        }
        context.fireErrorCaught(error)
    }

    /// The API error a parse error becomes.
    static func refusal(for error: HTTPParserError) -> PrewarmError {
        switch error {
        case .headerOverflow:
            PrewarmError(
                .headersTooLarge,
                "the request line and headers are over \(decoderLimits.maxHeaderListSize >> 10) KiB, or over \(decoderLimits.maxHeaderFieldCount) fields; send fewer or smaller headers"
            )
        case .unexpectedContentLength:
            PrewarmError(.badRequest, "the request has both Content-Length and Transfer-Encoding; send one of them")
        case .invalidChunkSize:
            PrewarmError(.badRequest, "the request's chunked body has an invalid chunk size")
        default:
            PrewarmError(.badRequest, "the request is not valid HTTP/1.1 (\(error)); see README.md for the API")
        }
    }

    /// Answers (unless a response is under way) and closes the connection.
    private func refuse(_ context: ChannelHandlerContext, _ error: PrewarmError) {
        refused = true
        firstHeadTimer?.cancel()
        guard !responding else {
            context.close(promise: nil)
            return
        }
        let body = ByteBuffer(bytes: error.jsonBody)
        let headers = HTTPHeaders([
            ("Content-Type", "application/json"), ("Content-Length", String(body.readableBytes)), ("Connection", "close"),
        ])
        let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: error.status.code), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolatedUnsafeUnchecked().whenComplete { _ in
            context.close(promise: nil)
        }
        responding = true
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !refused else {
            // The connection is being refused: whatever else the application writes is dropped.
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        switch unwrapOutboundIn(data) {
        case .head(let head) where head.status.code >= 200:
            responding = true
        case .end:
            responding = false
        default:
            break
        }
        context.write(data, promise: promise)
    }
}
