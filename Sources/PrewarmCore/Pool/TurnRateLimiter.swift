/// `max_turns_per_minute`: a sliding minute of admitted turns per caller uid.
struct TurnRateLimiter: Sendable {
    private var recent: [UInt32: [ContinuousClock.Instant]] = [:]

    /// Admits a turn of `caller` at `now` (and counts it), or says when to retry.
    mutating func admit(caller: UInt32, limit: Int, now: ContinuousClock.Instant) -> (limit: Int, retryAfter: Int)? {
        var times = recent[caller] ?? []
        while let first = times.first, first.duration(to: now) >= .seconds(60) { times.removeFirst() }
        defer { recent[caller] = times.isEmpty ? nil : times }
        guard times.count < limit else {
            let left = now.duration(to: times[0] + .seconds(60))
            return (limit, max(1, Int((left.milliseconds / 1000).rounded(.up))))
        }
        times.append(now)
        return nil
    }
}
