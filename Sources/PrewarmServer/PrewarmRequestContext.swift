import Hummingbird
import NIOCore

/// The request context of the API: Hummingbird's core storage plus the connection's channel,
/// which the API needs for the peer's credentials and to see a client go away mid-turn
/// (Hummingbird does not cancel a handler when its client disconnects).
public struct PrewarmRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel
    /// Set when the request is an upgrade to a two-way stream, routed by the upgrader: where
    /// the turn's route leaves the admitted turn.
    public let stream: StreamSlot?

    public init(source: ApplicationRequestContextSource) {
        self.init(source: source, stream: nil)
    }

    init(source: ApplicationRequestContextSource, stream: StreamSlot?) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
        self.stream = stream
    }
}
