import Hummingbird
import NIOCore

/// The request context of the API: Hummingbird's core storage plus the connection's channel,
/// which the API needs for the peer's credentials and to see a client go away mid-turn
/// (Hummingbird does not cancel a handler when its client disconnects).
public struct PrewarmRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }
}
