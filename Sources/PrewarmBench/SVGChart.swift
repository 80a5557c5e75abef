import Foundation

// Hand-written on purpose: no maintained Swift package renders SVG charts, so this file writes the SVG text itself.

/// One target's latencies, drawn as a cumulative distribution.
public struct LatencySeries: Sendable {
    public var name: String
    /// First-token latencies in milliseconds. May be empty. When drawn, values <= 0 are clamped to a
    /// small positive floor (0.001 ms) and non-finite values are left out.
    public var millisecondsValues: [Double]

    public init(name: String, values: [Double]) {
        self.name = name
        self.millisecondsValues = values
    }
}

/// An open-loop run's timeline: when each turn arrived (seconds since the run's start) and its
/// first-token latency, and the pool's idle spares over time.
public struct Timeline: Sendable {
    /// `milliseconds == nil` means the turn failed; it is drawn as a red x in a band above the plot.
    public var turns: [(at: Double, milliseconds: Double?, series: String)]
    /// Idle spares over time, drawn as a step line on a right-hand axis.
    public var idleSpares: [(at: Double, idle: Int)]

    public init(
        turns: [(at: Double, milliseconds: Double?, series: String)],
        idleSpares: [(at: Double, idle: Int)] = []
    ) {
        self.turns = turns
        self.idleSpares = idleSpares
    }
}

/// Renders benchmark latencies as a standalone SVG document (white background, Okabe-Ito colours,
/// only plain shapes, paths and text so that rsvg-convert and browsers draw it the same way).
/// The output is deterministic: the same input gives the same bytes.
public enum SVGChart {
    /// A log-scaled CDF of every series on one chart (x: latency in ms, log10 axis with 1-2-5 ticks
    /// labelled "1 ms", "10 ms", "100 ms", "1 s", "10 s"; y: fraction of turns 0-100%); and, when
    /// `timeline` is given, a second panel below: first-token latency over time (x: seconds, y: log
    /// ms, dots coloured per series) with the idle spares as a step line on a right-hand axis.
    public static func render(title: String, subtitle: String?, series: [LatencySeries], timeline: Timeline?) -> String {
        var renderer = ChartRenderer(title: title, subtitle: subtitle, series: series, timeline: timeline)
        return renderer.render()
    }
}

// MARK: - Style

private enum ChartStyle {
    static let width = 900.0
    static let fontFamily = "DejaVu Sans, Helvetica, Arial, sans-serif"
    /// Okabe-Ito, minus yellow (too faint on white), black last.
    static let palette = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000"]
    static let failure = "#D7191C"
    static let failureBand = "#FCEDED"
    static let spares = "#4A4A4A"
    static let text = "#222222"
    static let secondaryText = "#555555"
    static let mutedText = "#8A8A8A"
    static let majorGrid = "#E2E2E2"
    static let minorGrid = "#F1F1F1"
    static let axis = "#8C8C8C"
    static let reference = "#A0A0A0"
    static let floorMilliseconds = 0.001
    static let ceilingMilliseconds = 1.0e9
    /// At most this many CDF steps per series (two path points each).
    static let maxCDFSteps = 999

    static func color(_ index: Int) -> String { palette[index % palette.count] }
}

// MARK: - Numbers and text

private enum ChartFormat {
    /// Fixed-point decimal text, independent of locale; rounds half away from zero.
    static func fixed(_ value: Double, decimals: Int, trim: Bool) -> String {
        guard value.isFinite else { return "0" }
        var scale: Int64 = 1
        for _ in 0..<max(0, min(decimals, 9)) { scale *= 10 }
        let magnitude = (abs(value) * Double(scale)).rounded(.toNearestOrAwayFromZero)
        guard magnitude < 9.0e15 else { return value < 0 ? "-9000000000000000" : "9000000000000000" }
        let units = Int64(magnitude)
        var text = String(units / scale)
        if scale > 1 {
            var fraction = String(units % scale)
            let digits = String(scale).count - 1
            while fraction.count < digits { fraction = "0" + fraction }
            if trim { while fraction.hasSuffix("0") { fraction.removeLast() } }
            if !fraction.isEmpty { text += "." + fraction }
        }
        if value < 0 && units != 0 { text = "-" + text }
        return text
    }

    /// A coordinate: one decimal, trailing zeros dropped.
    static func c(_ value: Double) -> String { fixed(value, decimals: 1, trim: true) }

    /// A latency in ms as "0.312 ms", "1.52 ms", "48.1 ms", "5.2 s" (three significant figures).
    static func latency(_ milliseconds: Double) -> String {
        if milliseconds >= 999.5 {
            return significant(milliseconds / 1000) + " s"
        }
        return significant(milliseconds) + " ms"
    }

    private static func significant(_ value: Double) -> String {
        guard value > 0, value.isFinite else { return "0" }
        let exponent = Int(log10(value).rounded(.down))
        let decimals = min(4, max(0, 2 - exponent))
        return fixed(value, decimals: decimals, trim: true)
    }

    /// The label of the log tick `mantissa * 10^exponent` ms: "0.5 ms", "20 ms", "1 s", "50 s".
    static func logTick(mantissa: Int, exponent: Int) -> String {
        if exponent >= 3 { return decimal(mantissa: mantissa, exponent: exponent - 3) + " s" }
        return decimal(mantissa: mantissa, exponent: exponent) + " ms"
    }

    private static func decimal(mantissa: Int, exponent: Int) -> String {
        if exponent >= 0 { return String(mantissa) + String(repeating: "0", count: exponent) }
        return "0." + String(repeating: "0", count: -exponent - 1) + String(mantissa)
    }

    /// Escapes text for XML content and attributes; drops characters XML 1.0 does not allow.
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            case "\t", "\n", "\r": out += " "
            default:
                let value = scalar.value
                if value < 0x20 || value == 0xFFFE || value == 0xFFFF {
                    out.unicodeScalars.append("\u{FFFD}")
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }

    /// Approximate rendered width of `text` in DejaVu Sans at `size` px (used for layout only).
    static func width(_ text: String, size: Double) -> Double {
        var em = 0.0
        for scalar in text.unicodeScalars {
            switch scalar {
            case "i", "j", "l", "'", "|", "!", ".", ",", ":", ";": em += 0.29
            case " ", "f", "t", "r", "I", "(", ")", "[", "]", "/", "-": em += 0.38
            case "m", "w", "M", "W", "%": em += 0.95
            case "0"..."9": em += 0.64
            case "A"..."Z": em += 0.72
            case "a"..."z": em += 0.62
            default: em += scalar.value >= 0x2E80 ? 1.0 : 0.66
            }
        }
        return em * size
    }

    /// `text` shortened with an ellipsis so that it fits in `maxWidth`.
    static func truncate(_ text: String, size: Double, maxWidth: Double) -> String {
        guard width(text, size: size) > maxWidth + 0.01 else { return text }
        var characters = Array(text)
        while !characters.isEmpty && width(String(characters) + "…", size: size) > maxWidth {
            characters.removeLast()
        }
        return String(characters) + "…"
    }

    /// A 1-2-5 step giving about `target` intervals over `span`.
    static func niceStep(span: Double, target: Double) -> Double {
        let raw = max(span, 1e-9) / target
        let magnitude = pow(10, log10(raw).rounded(.down))
        let fraction = raw / magnitude
        let nice: Double = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10
        return nice * magnitude
    }

    /// Nearest-rank percentile index into `count` sorted values: ceil(percent/100 * count) - 1.
    static func nearestRankIndex(count: Int, percent: Int) -> Int {
        min(count - 1, max(0, (percent * count + 99) / 100 - 1))
    }

    static func clampLatency(_ value: Double) -> Double? {
        guard value.isFinite else { return nil }
        return min(max(value, ChartStyle.floorMilliseconds), ChartStyle.ceilingMilliseconds)
    }

    /// Decade exponents covering [minimum, maximum] with half a decade of padding each side.
    static func decadeRange(minimum: Double, maximum: Double) -> (low: Int, high: Int) {
        let low = Int((log10(minimum) - 0.5).rounded(.down))
        var high = Int((log10(maximum) + 0.5).rounded(.up))
        if high <= low { high = low + 1 }
        return (low, high)
    }

    /// Pixel-crisp position for a 1 px line.
    static func crisp(_ value: Double) -> Double { value.rounded(.down) + 0.5 }
}

// MARK: - SVG writer

private struct ChartSVGWriter {
    enum Anchor: String { case start, middle, end }

    private(set) var body = ""

    mutating func append(_ element: String) {
        body += element
        body += "\n"
    }

    mutating func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double,
                       stroke: String, width: Double = 1, dash: String? = nil) {
        var element = "<line x1=\"\(ChartFormat.c(x1))\" y1=\"\(ChartFormat.c(y1))\" x2=\"\(ChartFormat.c(x2))\" y2=\"\(ChartFormat.c(y2))\" stroke=\"\(stroke)\""
        if width != 1 { element += " stroke-width=\"\(ChartFormat.c(width))\"" }
        if let dash { element += " stroke-dasharray=\"\(dash)\"" }
        append(element + "/>")
    }

    mutating func rect(_ x: Double, _ y: Double, _ width: Double, _ height: Double, fill: String) {
        append("<rect x=\"\(ChartFormat.c(x))\" y=\"\(ChartFormat.c(y))\" width=\"\(ChartFormat.c(width))\" height=\"\(ChartFormat.c(height))\" fill=\"\(fill)\"/>")
    }

    mutating func circle(_ cx: Double, _ cy: Double, radius: Double, fill: String, stroke: String? = nil, strokeWidth: Double = 1) {
        var element = "<circle cx=\"\(ChartFormat.c(cx))\" cy=\"\(ChartFormat.c(cy))\" r=\"\(ChartFormat.fixed(radius, decimals: 2, trim: true))\" fill=\"\(fill)\""
        if let stroke { element += " stroke=\"\(stroke)\" stroke-width=\"\(ChartFormat.c(strokeWidth))\"" }
        append(element + "/>")
    }

    /// `attributes` is appended verbatim (callers pass only fixed, already-safe text).
    mutating func path(_ d: String, attributes: String) {
        append("<path d=\"\(d)\" \(attributes)/>")
    }

    mutating func text(_ content: String, x: Double, y: Double, size: Double, fill: String,
                       anchor: Anchor = .start, bold: Bool = false, italic: Bool = false, rotate: Double? = nil) {
        textMarkup(ChartFormat.escape(content), x: x, y: y, size: size, fill: fill,
                   anchor: anchor, bold: bold, italic: italic, rotate: rotate)
    }

    /// `markup` must already be escaped (it may contain <tspan> elements).
    mutating func textMarkup(_ markup: String, x: Double, y: Double, size: Double, fill: String,
                             anchor: Anchor = .start, bold: Bool = false, italic: Bool = false, rotate: Double? = nil) {
        var element = "<text x=\"\(ChartFormat.c(x))\" y=\"\(ChartFormat.c(y))\" font-size=\"\(ChartFormat.c(size))\" fill=\"\(fill)\""
        if anchor != .start { element += " text-anchor=\"\(anchor.rawValue)\"" }
        if bold { element += " font-weight=\"bold\"" }
        if italic { element += " font-style=\"italic\"" }
        if let rotate {
            element += " transform=\"rotate(\(ChartFormat.c(rotate)) \(ChartFormat.c(x)) \(ChartFormat.c(y)))\""
        }
        append(element + ">" + markup + "</text>")
    }

    func document(height: Double) -> String {
        let w = ChartFormat.c(ChartStyle.width)
        let h = ChartFormat.c(height.rounded(.up))
        return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            + "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(w)\" height=\"\(h)\" viewBox=\"0 0 \(w) \(h)\" font-family=\"\(ChartStyle.fontFamily)\">\n"
            + "<rect x=\"0\" y=\"0\" width=\"\(w)\" height=\"\(h)\" fill=\"#FFFFFF\"/>\n"
            + body
            + "</svg>\n"
    }
}

// MARK: - Scales

private struct ChartLogAxis {
    struct Tick {
        var position: Double
        var label: String?
        var major: Bool
    }

    var lowExponent: Int
    var highExponent: Int
    /// Pixel positions of 10^lowExponent and 10^highExponent.
    var start: Double
    var end: Double

    var pixelsPerDecade: Double { abs(end - start) / Double(highExponent - lowExponent) }

    func position(log value: Double) -> Double {
        start + (value - Double(lowExponent)) / Double(highExponent - lowExponent) * (end - start)
    }

    func position(_ milliseconds: Double) -> Double { position(log: log10(milliseconds)) }

    /// Decade ticks (labelled every 1, 2, 3, 5... decades so labels keep `labelSpacing` px apart) and,
    /// where there is room, 2x and 5x ticks (gridlines from `minorGridSpacing`, labels from `minorLabelSpacing`).
    func ticks(labelSpacing: Double, minorGridSpacing: Double, minorLabelSpacing: Double) -> [Tick] {
        let perDecade = pixelsPerDecade
        var stride = 100
        for candidate in [1, 2, 3, 5, 10, 20, 50, 100] where perDecade * Double(candidate) >= labelSpacing {
            stride = candidate
            break
        }
        let minorGrid = perDecade >= minorGridSpacing
        let minorLabels = stride == 1 && perDecade >= minorLabelSpacing
        var ticks: [Tick] = []
        for exponent in lowExponent...highExponent {
            let labelled = ((exponent % stride) + stride) % stride == 0
            ticks.append(Tick(position: position(log: Double(exponent)),
                              label: labelled ? ChartFormat.logTick(mantissa: 1, exponent: exponent) : nil,
                              major: true))
            guard exponent < highExponent, minorGrid else { continue }
            for mantissa in [2, 5] {
                ticks.append(Tick(position: position(log: Double(exponent) + log10(Double(mantissa))),
                                  label: minorLabels ? ChartFormat.logTick(mantissa: mantissa, exponent: exponent) : nil,
                                  major: false))
            }
        }
        return ticks
    }
}

// MARK: - Prepared data

private struct ChartSeries {
    var name: String
    var color: String
    var sorted: [Double]
    var p50Index: Int?
    var p99Index: Int?

    init(name: String, color: String, values: [Double]) {
        self.name = name
        self.color = color
        sorted = values.compactMap(ChartFormat.clampLatency).sorted()
        if !sorted.isEmpty {
            p50Index = ChartFormat.nearestRankIndex(count: sorted.count, percent: 50)
            p99Index = ChartFormat.nearestRankIndex(count: sorted.count, percent: 99)
        }
    }

    var p50: Double? { p50Index.map { sorted[$0] } }
    var p99: Double? { p99Index.map { sorted[$0] } }

    /// Indices of the CDF steps to draw: every index, or an even thinning that always keeps
    /// the min, the max and the exact p50/p99 points.
    func keptIndices() -> [Int] {
        let count = sorted.count
        guard count > ChartStyle.maxCDFSteps else { return Array(0..<count) }
        var keep = [Bool](repeating: false, count: count)
        let required = [0, count - 1, p50Index ?? 0, p99Index ?? 0]
        for index in required { keep[index] = true }
        let slots = ChartStyle.maxCDFSteps - required.count
        for slot in 0..<slots {
            let index = Int((Double(slot) * Double(count - 1) / Double(slots - 1)).rounded())
            keep[min(count - 1, max(0, index))] = true
        }
        return (0..<count).filter { keep[$0] }
    }
}

// MARK: - Renderer

private struct ChartRenderer {
    let title: String
    let subtitle: String?
    let series: [ChartSeries]
    let timeline: Timeline?
    var svg = ChartSVGWriter()

    let plotLeft: Double
    let plotRight: Double
    let cdfHeight = 300.0
    let timelineHeight = 240.0

    init(title: String, subtitle: String?, series: [LatencySeries], timeline: Timeline?) {
        self.title = title
        self.subtitle = subtitle
        self.series = series.enumerated().map { index, item in
            ChartSeries(name: item.name, color: ChartStyle.color(index), values: item.millisecondsValues)
        }
        self.timeline = timeline
        plotRight = timeline == nil ? 852 : 826
        // Room on the left for the widest timeline tick label plus the rotated axis title.
        var left = 80.0
        if let timeline {
            let range = Self.timelineRange(timeline, series: self.series)
            let axis = ChartLogAxis(lowExponent: range.low, highExponent: range.high, start: timelineHeight, end: 0)
            let widest = axis.ticks(labelSpacing: 18, minorGridSpacing: 36, minorLabelSpacing: 66)
                .compactMap { $0.label.map { ChartFormat.width($0, size: 11) } }.max() ?? 0
            left = max(left, (widest + 42).rounded(.up))
        }
        plotLeft = left
    }

    /// The log-ms decade range of the timeline panel: its successful turns, else the CDF's values, else 1 ms to 10 s.
    static func timelineRange(_ timeline: Timeline, series: [ChartSeries]) -> (low: Int, high: Int) {
        let latencies = timeline.turns.compactMap { turn in
            turn.at.isFinite ? turn.milliseconds.flatMap(ChartFormat.clampLatency) : nil
        }
        if let minimum = latencies.min(), let maximum = latencies.max() {
            return ChartFormat.decadeRange(minimum: minimum, maximum: maximum)
        }
        if let minimum = series.compactMap({ $0.sorted.first }).min(),
           let maximum = series.compactMap({ $0.sorted.last }).max() {
            return ChartFormat.decadeRange(minimum: minimum, maximum: maximum)
        }
        return (0, 4)
    }

    mutating func render() -> String {
        let plotTop = drawHeader()
        let cdfBottom = drawCDF(top: plotTop)
        var bottom = drawLegend(top: cdfBottom + 62)
        if let timeline {
            bottom = drawTimeline(timeline, top: bottom + 30)
        }
        return svg.document(height: bottom + 14)
    }

    // MARK: Header

    private mutating func drawHeader() -> Double {
        let maxWidth = ChartStyle.width - 48
        svg.text(ChartFormat.truncate(title, size: 19, maxWidth: maxWidth), x: 24, y: 34,
                 size: 19, fill: ChartStyle.text, bold: true)
        guard let subtitle, !subtitle.isEmpty else { return 62 }
        svg.text(ChartFormat.truncate(subtitle, size: 12.5, maxWidth: maxWidth), x: 24, y: 56,
                 size: 12.5, fill: ChartStyle.secondaryText)
        return 82
    }

    // MARK: CDF panel

    private mutating func drawCDF(top: Double) -> Double {
        let bottom = top + cdfHeight
        let left = plotLeft, right = plotRight
        let minimum = series.compactMap { $0.sorted.first }.min()
        let maximum = series.compactMap { $0.sorted.last }.max()
        let range: (low: Int, high: Int)
        if let minimum, let maximum {
            range = ChartFormat.decadeRange(minimum: minimum, maximum: maximum)
        } else {
            range = (0, 4)  // 1 ms to 10 s
        }
        let xAxis = ChartLogAxis(lowExponent: range.low, highExponent: range.high, start: left, end: right)
        let ticks = xAxis.ticks(labelSpacing: 64, minorGridSpacing: 40, minorLabelSpacing: 190)

        // Gridlines: minor x, then major x, then y every 10%.
        for tick in ticks where !tick.major {
            let x = ChartFormat.crisp(tick.position)
            svg.line(x, top, x, bottom, stroke: ChartStyle.minorGrid)
        }
        for tick in ticks where tick.major {
            let x = ChartFormat.crisp(tick.position)
            svg.line(x, top, x, bottom, stroke: ChartStyle.majorGrid)
        }
        for step in 0...10 {
            let y = ChartFormat.crisp(bottom - Double(step) / 10 * cdfHeight)
            if step > 0 { svg.line(left, y, right, y, stroke: ChartStyle.majorGrid) }
            svg.text("\(step * 10)%", x: left - 8, y: y + 4, size: 11, fill: ChartStyle.secondaryText, anchor: .end)
        }

        // Reference lines at p50 and p99.
        let populated = series.filter { !$0.sorted.isEmpty }
        for (fraction, label) in [(0.5, "p50"), (0.99, "p99")] where !populated.isEmpty {
            let y = bottom - fraction * cdfHeight
            svg.line(left, y, right, y, stroke: ChartStyle.reference, dash: "5 4")
            svg.text(label, x: right + 6, y: y + 3.5, size: 10, fill: ChartStyle.mutedText)
        }

        // Axes, tick marks and x labels.
        let axisY = ChartFormat.crisp(bottom)
        let axisX = ChartFormat.crisp(left)
        svg.line(left, axisY, right, axisY, stroke: ChartStyle.axis)
        svg.line(axisX, top, axisX, bottom, stroke: ChartStyle.axis)
        for tick in ticks {
            let x = ChartFormat.crisp(tick.position)
            svg.line(x, axisY, x, axisY + (tick.major ? 5 : 3), stroke: ChartStyle.axis)
            if let label = tick.label {
                svg.text(label, x: tick.position, y: bottom + 19, size: 11, fill: ChartStyle.secondaryText, anchor: .middle)
            }
        }
        svg.text("First-token latency (log scale)", x: (left + right) / 2, y: bottom + 42,
                 size: 12, fill: ChartStyle.text, anchor: .middle)
        svg.text("Share of turns at or below", x: left - 50, y: (top + bottom) / 2,
                 size: 12, fill: ChartStyle.text, anchor: .middle, rotate: -90)

        // Curves, then the p50/p99 markers on top.
        if populated.isEmpty {
            svg.text("no samples", x: (left + right) / 2, y: (top + bottom) / 2 + 5,
                     size: 15, fill: ChartStyle.mutedText, anchor: .middle, italic: true)
        }
        for item in populated {
            svg.path(cdfPath(item, xAxis: xAxis, bottom: bottom),
                     attributes: "fill=\"none\" stroke=\"\(item.color)\" stroke-width=\"2\" stroke-linejoin=\"round\"")
        }
        for item in populated {
            for (value, fraction) in [(item.p50, 0.5), (item.p99, 0.99)] {
                guard let value else { continue }
                svg.circle(xAxis.position(value), bottom - fraction * cdfHeight, radius: 3.2,
                           fill: item.color, stroke: "#FFFFFF", strokeWidth: 1.2)
            }
        }
        return bottom
    }

    private func cdfPath(_ item: ChartSeries, xAxis: ChartLogAxis, bottom: Double) -> String {
        let count = Double(item.sorted.count)
        var lastX = ChartFormat.c(xAxis.position(item.sorted[0]))
        var lastY = ChartFormat.c(bottom)
        var d = "M" + lastX + " " + lastY
        for index in item.keptIndices() {
            let x = ChartFormat.c(xAxis.position(item.sorted[index]))
            let y = ChartFormat.c(bottom - Double(index + 1) / count * cdfHeight)
            if x != lastX { d += "H" + x; lastX = x }
            if y != lastY { d += "V" + y; lastY = y }
        }
        return d
    }

    // MARK: Legend

    private mutating func drawLegend(top: Double) -> Double {
        guard !series.isEmpty else { return top - 14 }
        let size = 12.0
        let rowHeight = 21.0
        let columns = series.count >= 4 ? 2 : 1
        let rows = (series.count + columns - 1) / columns
        let columnWidth = (plotRight - plotLeft) / Double(columns)

        let p50Texts = series.map { $0.p50.map(ChartFormat.latency) ?? "" }
        let p99Texts = series.map { $0.p99.map(ChartFormat.latency) ?? "" }
        let countTexts = series.map { "n=\($0.sorted.count)" }
        let p50Width = p50Texts.map { ChartFormat.width("p50 " + $0, size: size) }.max() ?? 0
        let p99Width = p99Texts.map { ChartFormat.width("p99 " + $0, size: size) }.max() ?? 0
        let countWidth = countTexts.map { ChartFormat.width($0, size: size) }.max() ?? 0
        let nameWidest = series.map { ChartFormat.width($0.name, size: size) * 1.08 }.max() ?? 0

        let swatch = 30.0, gap = 18.0
        var showCount = true
        var nameBudget = columnWidth - swatch - gap - (p50Width + gap) - (p99Width + gap) - countWidth - 8
        if nameBudget < 90 {
            showCount = false
            nameBudget += countWidth + gap
        }
        let nameWidth = min(nameWidest, max(60, nameBudget))

        for (index, item) in series.enumerated() {
            let column = index / rows
            let row = index % rows
            let x = plotLeft + Double(column) * columnWidth
            let y = top + Double(row) * rowHeight
            svg.line(x, y - 4, x + 22, y - 4, stroke: item.color, width: 3)
            svg.text(ChartFormat.truncate(item.name, size: size, maxWidth: nameWidth / 1.08), x: x + swatch, y: y,
                     size: size, fill: ChartStyle.text, bold: true)
            let p50X = x + swatch + nameWidth + gap
            let p99X = p50X + p50Width + gap
            let countX = p99X + p99Width + gap
            guard item.p50 != nil else {
                svg.text("no samples", x: p50X, y: y, size: size, fill: ChartStyle.mutedText, italic: true)
                continue
            }
            let label = "<tspan fill=\"\(ChartStyle.mutedText)\">p50</tspan> "
            svg.textMarkup(label + ChartFormat.escape(p50Texts[index]), x: p50X, y: y, size: size, fill: ChartStyle.text)
            let label99 = "<tspan fill=\"\(ChartStyle.mutedText)\">p99</tspan> "
            svg.textMarkup(label99 + ChartFormat.escape(p99Texts[index]), x: p99X, y: y, size: size, fill: ChartStyle.text)
            if showCount {
                svg.text(countTexts[index], x: countX, y: y, size: size, fill: ChartStyle.mutedText)
            }
        }
        return top + Double(rows - 1) * rowHeight + 6
    }

    // MARK: Timeline panel

    private struct TimelineDot {
        var at: Double
        var milliseconds: Double?
        var seriesIndex: Int
    }

    private mutating func drawTimeline(_ timeline: Timeline, top: Double) -> Double {
        let left = plotLeft, right = plotRight

        // Series names in the order given, then any others in order of first appearance.
        var names = series.map(\.name)
        var colors = series.map(\.color)
        var dots: [TimelineDot] = []
        for turn in timeline.turns where turn.at.isFinite {
            var index = names.firstIndex(of: turn.series)
            if index == nil {
                names.append(turn.series)
                colors.append(ChartStyle.color(names.count - 1))
                index = names.count - 1
            }
            let milliseconds = turn.milliseconds.flatMap(ChartFormat.clampLatency)
            dots.append(TimelineDot(at: max(0, turn.at), milliseconds: milliseconds, seriesIndex: index ?? 0))
        }
        let spares = timeline.idleSpares
            .enumerated()
            .filter { $0.element.at.isFinite }
            .sorted { ($0.element.at, $0.offset) < ($1.element.at, $1.offset) }
            .map { (at: max(0, $0.element.at), idle: max(0, $0.element.idle)) }
        let failures = dots.filter { $0.milliseconds == nil }
        var present = [Bool](repeating: false, count: names.count)
        for dot in dots where dot.milliseconds != nil { present[dot.seriesIndex] = true }

        // Panel title and its legend.
        svg.text("First-token latency over time", x: 24, y: top + 14, size: 14, fill: ChartStyle.text, bold: true)
        var legendX = left
        var legendY = top + 38
        let hasLegend = present.contains(true) || !failures.isEmpty || !spares.isEmpty
        if !hasLegend { legendY = top + 16 }
        func place(_ width: Double) -> (Double, Double) {
            if legendX > left && legendX + width > right {
                legendX = left
                legendY += 19
            }
            defer { legendX += width + 22 }
            return (legendX, legendY)
        }
        for (index, name) in names.enumerated() where present[index] {
            let label = ChartFormat.truncate(name, size: 12, maxWidth: 260)
            let (x, y) = place(14 + ChartFormat.width(label, size: 12))
            svg.circle(x + 4, y - 4, radius: 4, fill: colors[index])
            svg.text(label, x: x + 14, y: y, size: 12, fill: ChartStyle.text)
        }
        if !failures.isEmpty {
            let label = "failed (\(failures.count))"
            let (x, y) = place(14 + ChartFormat.width(label, size: 12))
            svg.path("M\(ChartFormat.c(x))  \(ChartFormat.c(y - 8))l8 8m0 -8l-8 8",
                     attributes: "fill=\"none\" stroke=\"\(ChartStyle.failure)\" stroke-width=\"1.8\"")
            svg.text(label, x: x + 14, y: y, size: 12, fill: ChartStyle.text)
        }
        if !spares.isEmpty {
            let label = "idle spares (right axis)"
            let (x, y) = place(26 + ChartFormat.width(label, size: 12))
            svg.path("M\(ChartFormat.c(x)) \(ChartFormat.c(y - 2))h7v-7h7v4h6",
                     attributes: "fill=\"none\" stroke=\"\(ChartStyle.spares)\" stroke-width=\"1.6\"")
            svg.text(label, x: x + 26, y: y, size: 12, fill: ChartStyle.text)
        }

        let bandTop = legendY + 14
        let bandHeight = 16.0
        let plotTop = bandTop + bandHeight + 4
        let bottom = plotTop + timelineHeight

        // Scales.
        let range = Self.timelineRange(timeline, series: series)
        let yAxis = ChartLogAxis(lowExponent: range.low, highExponent: range.high, start: bottom, end: plotTop)
        let yTicks = yAxis.ticks(labelSpacing: 18, minorGridSpacing: 36, minorLabelSpacing: 66)

        let lastTime = max(dots.map(\.at).max() ?? 0, spares.last?.at ?? 0)
        let timeSpan = max(lastTime, 1)
        let timeStep = ChartFormat.niceStep(span: timeSpan, target: 7)
        let timeMax = max(timeStep, (timeSpan / timeStep).rounded(.up) * timeStep)
        func xOf(_ seconds: Double) -> Double { left + seconds / timeMax * (right - left) }
        let timeDecimals = max(0, -Int((log10(timeStep) + 1e-9).rounded(.down)))

        let maxIdle = spares.map(\.idle).max() ?? 0
        let idleStep = max(1, Int(ChartFormat.niceStep(span: Double(max(maxIdle, 1)), target: 5).rounded(.up)))
        let idleMax = (maxIdle / idleStep + 1) * idleStep
        func yOfIdle(_ idle: Int) -> Double { bottom - Double(idle) / Double(idleMax) * timelineHeight }

        // Gridlines.
        for tick in yTicks where !tick.major {
            let y = ChartFormat.crisp(tick.position)
            svg.line(left, y, right, y, stroke: ChartStyle.minorGrid)
        }
        for tick in yTicks where tick.major {
            let y = ChartFormat.crisp(tick.position)
            svg.line(left, y, right, y, stroke: ChartStyle.majorGrid)
        }
        var timeTicks: [Double] = []
        var tickIndex = 0
        while Double(tickIndex) * timeStep <= timeMax + timeStep * 1e-9 {
            timeTicks.append(Double(tickIndex) * timeStep)
            tickIndex += 1
        }
        for seconds in timeTicks.dropFirst() {
            let x = ChartFormat.crisp(xOf(seconds))
            svg.line(x, plotTop, x, bottom, stroke: ChartStyle.majorGrid)
        }

        // Failure band.
        if !failures.isEmpty {
            svg.rect(left, bandTop, right - left, bandHeight, fill: ChartStyle.failureBand)
            svg.text("failed", x: left - 8, y: bandTop + bandHeight / 2 + 4, size: 11, fill: ChartStyle.failure, anchor: .end)
        }

        // Axes and labels.
        let axisY = ChartFormat.crisp(bottom)
        let axisX = ChartFormat.crisp(left)
        svg.line(left, axisY, right, axisY, stroke: ChartStyle.axis)
        svg.line(axisX, plotTop, axisX, bottom, stroke: ChartStyle.axis)
        for tick in yTicks {
            let y = ChartFormat.crisp(tick.position)
            svg.line(axisX - (tick.major ? 5 : 3), y, axisX, y, stroke: ChartStyle.axis)
            if let label = tick.label {
                svg.text(label, x: left - 8, y: tick.position + 4, size: 11, fill: ChartStyle.secondaryText, anchor: .end)
            }
        }
        for seconds in timeTicks {
            let x = ChartFormat.crisp(xOf(seconds))
            svg.line(x, axisY, x, axisY + 5, stroke: ChartStyle.axis)
            svg.text(ChartFormat.fixed(seconds, decimals: timeDecimals, trim: true) + " s", x: xOf(seconds), y: bottom + 19,
                     size: 11, fill: ChartStyle.secondaryText, anchor: .middle)
        }
        svg.text("Time since the run started", x: (left + right) / 2, y: bottom + 42,
                 size: 12, fill: ChartStyle.text, anchor: .middle)
        let widestLabel = yTicks.compactMap { $0.label.map { ChartFormat.width($0, size: 11) } }.max() ?? 0
        svg.text("First-token latency (log scale)", x: left - 8 - widestLabel - 10, y: (plotTop + bottom) / 2,
                 size: 12, fill: ChartStyle.text, anchor: .middle, rotate: -90)
        if !spares.isEmpty {
            let rightX = ChartFormat.crisp(right)
            svg.line(rightX, plotTop, rightX, bottom, stroke: ChartStyle.axis)
            var idle = 0
            while idle <= idleMax {
                let y = ChartFormat.crisp(yOfIdle(idle))
                svg.line(rightX, y, rightX + 5, y, stroke: ChartStyle.axis)
                svg.text(String(idle), x: right + 8, y: yOfIdle(idle) + 4, size: 11, fill: ChartStyle.spares)
                idle += idleStep
            }
            svg.text("Idle spares", x: right + 40, y: (plotTop + bottom) / 2,
                     size: 12, fill: ChartStyle.spares, anchor: .middle, rotate: 90)
        }

        // Idle spares step line (under the dots).
        if let first = spares.first {
            var d = "M" + ChartFormat.c(xOf(first.at)) + " " + ChartFormat.c(yOfIdle(first.idle))
            var lastY = ChartFormat.c(yOfIdle(first.idle))
            for point in spares.dropFirst() {
                let y = ChartFormat.c(yOfIdle(point.idle))
                guard y != lastY else { continue }
                d += "H" + ChartFormat.c(xOf(point.at)) + "V" + y
                lastY = y
            }
            d += "H" + ChartFormat.c(xOf(lastTime))
            svg.path(d, attributes: "fill=\"none\" stroke=\"\(ChartStyle.spares)\" stroke-width=\"1.6\" stroke-opacity=\"0.85\" stroke-linejoin=\"round\"")
        }

        // Dots, one path per series (small arcs keep thousands of turns compact).
        if dots.isEmpty {
            svg.text("no turns", x: (left + right) / 2, y: (plotTop + bottom) / 2 + 5,
                     size: 15, fill: ChartStyle.mutedText, anchor: .middle, italic: true)
        }
        let radius = 2.4
        let r = ChartFormat.c(radius), diameter = ChartFormat.c(2 * radius)
        for (index, color) in colors.enumerated() where present[index] {
            var d = ""
            for dot in dots where dot.seriesIndex == index {
                guard let milliseconds = dot.milliseconds else { continue }
                d += "M" + ChartFormat.c(xOf(dot.at) - radius) + " " + ChartFormat.c(yAxis.position(milliseconds))
                d += "a\(r) \(r) 0 1 0 \(diameter) 0a\(r) \(r) 0 1 0 -\(diameter) 0"
            }
            svg.path(d, attributes: "fill=\"\(color)\" fill-opacity=\"0.72\" stroke=\"none\"")
        }
        if !failures.isEmpty {
            let centerY = bandTop + bandHeight / 2
            var d = ""
            for dot in failures {
                d += "M" + ChartFormat.c(xOf(dot.at) - 3.5) + " " + ChartFormat.c(centerY - 3.5) + "l7 7m0 -7l-7 7"
            }
            svg.path(d, attributes: "fill=\"none\" stroke=\"\(ChartStyle.failure)\" stroke-width=\"1.6\" stroke-linecap=\"round\"")
        }
        return bottom + 44
    }
}
