/// An error a client or operator sees: a stable code, a message that says what went wrong
/// and how to fix it, and the underlying cause if any. Mapped to HTTP in one place
/// (`PrewarmError+HTTP` in the server).
public struct PrewarmError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Sendable {
            case routeNotFound = "route_not_found"
            case poolNotFound = "pool_not_found"
            case badJSON = "bad_json"
            case bodyTooLarge = "body_too_large"
            case forbidden
            case noCapacity = "no_capacity"
            case waitTimeout = "wait_timeout"
            case poolFailing = "pool_failing"
            case draining
            case startFailed = "start_failed"
            case memoryExhausted = "memory_exhausted"
            case claimRefused = "claim_refused"
            case rateLimited = "rate_limited"
            case badRequest = "bad_request"
            case headersTooLarge = "headers_too_large"
            case clientGone = "client_gone"
            case runNotServed = "run_not_served"
            case tooManyConnections = "too_many_connections"
            case unsafePath = "unsafe_path"
            case `internal`
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// 404: no such endpoint.
        public static let routeNotFound = Code(.routeNotFound)
        /// 404: no pool of that name.
        public static let poolNotFound = Code(.poolNotFound)
        /// 400: the body is not what the endpoint takes.
        public static let badJSON = Code(.badJSON)
        /// 413: the body is over the pool's `max_request_bytes`.
        public static let bodyTooLarge = Code(.bodyTooLarge)
        /// 403: the peer's uid is not allowed.
        public static let forbidden = Code(.forbidden)
        /// 429: no spare, and the pool may not wait or start one.
        public static let noCapacity = Code(.noCapacity)
        /// 429: waited `wait_timeout_ms` for a spare.
        public static let waitTimeout = Code(.waitTimeout)
        /// 503: start-ups keep failing.
        public static let poolFailing = Code(.poolFailing)
        /// 503: the daemon is shutting down.
        public static let draining = Code(.draining)
        /// 503: the process started for this turn (a cold start) failed.
        public static let startFailed = Code(.startFailed)
        /// 429: the turn's memory does not fit in the budget, or the cgroup is under pressure.
        public static let memoryExhausted = Code(.memoryExhausted)
        /// 409: the CLI refused to bind the spare to the turn's session (`reason` says why).
        public static let claimRefused = Code(.claimRefused)
        /// 429: the caller's uid used the pool's `max_turns_per_minute`.
        public static let rateLimited = Code(.rateLimited)
        /// 400: the request is not valid HTTP/1.1 (the connection is closed after the answer).
        public static let badRequest = Code(.badRequest)
        /// 431: the request's headers are over the limit (the connection is closed).
        public static let headersTooLarge = Code(.headersTooLarge)
        /// The client went away before its turn had a process; nobody is answered (journal only).
        public static let clientGone = Code(.clientGone)
        /// 503: the daemon does not serve this drop-in run (another uid, a directory it cannot
        /// see, no CLI to run): `prewarm-claude` runs the real CLI itself.
        public static let runNotServed = Code(.runNotServed)
        /// 429: the peer's uid holds `max_connections_per_uid` connections already (the
        /// connection is closed before any request is read).
        public static let tooManyConnections = Code(.tooManyConnections)
        /// 500: a directory that would hold a socket or a spare's files is not safe (another
        /// user owns it or can write to it, or it is a link); the daemon does not start.
        public static let unsafePath = Code(.unsafePath)
        /// 500: a bug or an operating-system failure.
        public static let `internal` = Code(.internal)

        public var description: String { base.rawValue }
    }

    public var code: Code
    public var message: String
    /// Seconds after which a retry may succeed (429s).
    public var retryAfter: Int?
    /// A machine-readable reason next to the message (a refused claim's reason token).
    public var reason: String?
    /// The request's field that was refused (`session.env.LD_PRELOAD`), for a 403.
    public var field: String?

    public init(_ code: Code, _ message: String, retryAfter: Int? = nil, reason: String? = nil, field: String? = nil) {
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
        self.reason = reason
        self.field = field
    }

    public var description: String { "\(code): \(message)" }
}
