import Foundation
import Logging

extension Pool {
    // MARK: - Auto sizing

    /// An auto pool's target changed: logged with its reason, journaled (metrics read the
    /// target and the predicted miss from the status at scrape time).
    func sizingChanged(_ change: PoolStateMachine.SizingChange) {
        var metadata: Logger.Metadata = [
            "pool.spares.from": "\(change.from)", "pool.spares.to": "\(change.to)", "sizing.cause": "\(change.cause.rawValue)",
            "reason": "\(change.reason)",
        ]
        if let miss = change.predictedMiss { metadata["sizing.predicted_miss"] = "\(miss)" }
        logger.info(change.to > change.from ? "spares target raised" : "spares target lowered", metadata: metadata)
        telemetry?.sizingChanged(
            SizingRecord(
                time: Date(), pool: name, fromSpares: change.from, toSpares: change.to, cause: change.cause.rawValue,
                predictedMiss: change.predictedMiss, reason: change.reason
            )
        )
    }
}
