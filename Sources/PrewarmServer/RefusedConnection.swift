import NIOCore
import PrewarmCore
import Synchronization

/// A connection refused at accept (a uid that may not use the socket, one over its
/// connection cap): its answer is written, the daemon's side of the stream shut, and what the
/// client sends is read and dropped until it closes, for at most `linger`. Closing at once
/// would lose the answer: a Unix socket closed with unread bytes resets its peer, whose read
/// then fails (ECONNRESET) before the answer is seen.
///
/// At most `maxLingering` refused connections linger at once (daemon-wide); past that, one is
/// closed as soon as its answer is written, so nobody holds descriptors by being refused.
final class RefusedConnection: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    static let linger: TimeAmount = .seconds(2)
    static let maxLingering = 64
    private static let lingering = Atomic<Int>(0)

    private let answer: ByteBuffer
    private var timer: Scheduled<Void>?
    private var counted = false

    init(answer: ByteBuffer) {
        self.answer = answer
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let (exchanged, _) = Self.lingering.wrappingAdd(1, ordering: .relaxed)
        counted = true
        guard exchanged < Self.maxLingering else {
            context.writeAndFlush(NIOAny(answer)).assumeIsolatedUnsafeUnchecked().whenComplete { _ in loopBound.value.close(promise: nil) }
            return
        }
        context.writeAndFlush(NIOAny(answer)).assumeIsolatedUnsafeUnchecked().whenComplete { _ in
            loopBound.value.close(mode: .output, promise: nil)
        }
        timer = context.eventLoop.scheduleTask(in: Self.linger) { loopBound.value.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Read and dropped: nothing of a refused peer is parsed.
    }

    func channelInactive(context: ChannelHandlerContext) {
        release()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        release()
    }

    private func release() {
        timer?.cancel()
        timer = nil
        if counted {
            counted = false
            Self.lingering.wrappingSubtract(1, ordering: .relaxed)
        }
    }
}
