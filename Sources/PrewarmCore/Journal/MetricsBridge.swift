import CoreMetrics
import Prometheus

/// The swift-metrics factory `serve` bootstraps: what libraries record through the
/// swift-metrics API (Hummingbird's HTTP metrics) lands in the daemon's Prometheus registry,
/// beside `BrokerMetrics`' families, under Prometheus names with help texts.
///
/// swift-prometheus' own factory keeps the libraries' labels (`hb.requests` becomes the
/// counter `hb_requests`, without `_total`) and can give no help text, which
/// `promtool check metrics` refuses. Here the labels this daemon is known to record get a
/// name and a help of their own; any other is made a valid name, with `_total` on counters,
/// and a help text naming the label it was recorded under.
public struct MetricsBridge: MetricsFactory {
    let registry: PrometheusCollectorRegistry

    public init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
    }

    /// A family's Prometheus name and help text.
    struct Family: Equatable {
        var name: String
        var help: String
    }

    /// Hummingbird's `MetricsMiddleware`, on every route but the turns' (see `API`).
    static let known: [String: Family] = [
        "hb.requests": Family(
            name: "prewarm_http_requests_total", help: "HTTP requests to the API's routes other than turns, by route, method and status."
        ),
        "hb.request.errors": Family(
            name: "prewarm_http_request_errors_total", help: "HTTP requests to the API's routes other than turns answered with an error, by route, method and status."
        ),
        "http.server.request.duration": Family(
            name: "prewarm_http_request_duration_seconds", help: "From an HTTP request to the API's routes other than turns to the end of its answer."
        ),
        "http.server.active_requests": Family(
            name: "prewarm_http_active_requests", help: "HTTP requests to the API's routes other than turns being answered, by method."
        ),
    ]

    /// Hummingbird's dimensions, named as Prometheus users name them.
    static let labelNames = [
        "http.route": "route", "http.request.method": "method", "http.response.status_code": "status", "error.type": "status",
    ]

    static let durationBuckets: [Duration] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10].map {
        .microseconds(Int64($0 * 1_000_000))
    }
    static let valueBuckets: [Double] = [1, 5, 10, 50, 100, 500, 1000, 5000, 10000]

    /// The family of a swift-metrics label; `counter` adds `_total` to a name without it.
    static func family(_ label: String, counter: Bool = false) -> Family {
        if let family = known[label] { return family }
        var name = String(label.lowercased().map { $0.isASCII && ($0.isLetter || $0.isNumber) ? $0 : "_" })
        if name.first?.isNumber ?? true { name = "_" + name }
        if counter && !name.hasSuffix("_total") { name += "_total" }
        return Family(name: name, help: "Recorded through swift-metrics as \"\(label)\".")
    }

    static func labels(_ dimensions: [(String, String)]) -> [(String, String)] {
        dimensions.map { (labelNames[$0.0] ?? $0.0, $0.1) }
    }

    private func descriptor(_ family: Family) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: family.name, unitName: "", helpText: family.help)
    }

    private func counter(_ label: String, _ dimensions: [(String, String)]) -> Prometheus.Counter {
        registry.makeCounter(descriptor: descriptor(Self.family(label, counter: true)), labels: Self.labels(dimensions))
    }

    private func gauge(_ label: String, _ dimensions: [(String, String)]) -> Prometheus.Gauge {
        registry.makeGauge(descriptor: descriptor(Self.family(label)), labels: Self.labels(dimensions))
    }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        counter(label, dimensions)
    }

    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        counter(label, dimensions)
    }

    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else { return gauge(label, dimensions) }
        return registry.makeValueHistogram(descriptor: descriptor(Self.family(label)), labels: Self.labels(dimensions), buckets: Self.valueBuckets)
    }

    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        gauge(label, dimensions)
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(descriptor: descriptor(Self.family(label)), labels: Self.labels(dimensions), buckets: Self.durationBuckets)
    }

    public func destroyCounter(_ handler: any CounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    public func destroyRecorder(_ handler: any RecorderHandler) {
        switch handler {
        case let gauge as Prometheus.Gauge: registry.unregisterGauge(gauge)
        case let histogram as ValueHistogram: registry.unregisterValueHistogram(histogram)
        default: break
        }
    }

    public func destroyMeter(_ handler: any MeterHandler) {
        if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
    }

    public func destroyTimer(_ handler: any TimerHandler) {
        if let histogram = handler as? DurationHistogram { registry.unregisterDurationHistogram(histogram) }
    }
}
