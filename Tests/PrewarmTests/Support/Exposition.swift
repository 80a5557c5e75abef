import Foundation

/// A strict reader of the Prometheus text exposition format (0.0.4): every sample belongs to
/// a family declared by `# TYPE` before it, names and label names are valid, values are
/// numbers, label values are properly quoted, histograms have ascending `le` buckets ending
/// at `+Inf` whose count equals `_count`. Throws on the first violation.
struct Exposition {
    struct Sample: Equatable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    struct Violation: Error, CustomStringConvertible {
        var line: Int
        var message: String
        var description: String { "line \(line): \(message)" }
    }

    var types: [String: String] = [:]
    var samples: [Sample] = []

    init(_ text: String) throws {
        let namePattern = try NSRegularExpression(pattern: "^[a-zA-Z_:][a-zA-Z0-9_:]*$")
        func valid(_ name: String) -> Bool {
            namePattern.firstMatch(in: name, range: NSRange(name.startIndex..., in: name)) != nil
        }
        guard text.hasSuffix("\n") else { throw Violation(line: 0, message: "the text must end with a newline") }
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let number = index + 1
            if line.isEmpty { continue }
            if line.hasPrefix("#") {
                let parts = line.split(separator: " ", maxSplits: 3)
                if parts.count >= 2, parts[1] == "TYPE" {
                    guard parts.count == 4, valid(String(parts[2])),
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(String(parts[3]))
                    else { throw Violation(line: number, message: "bad TYPE line: \(line)") }
                    guard types[String(parts[2])] == nil else { throw Violation(line: number, message: "TYPE given twice for \(parts[2])") }
                    types[String(parts[2])] = String(parts[3])
                } else if parts.count >= 2, parts[1] == "HELP" {
                    guard parts.count >= 3, valid(String(parts[2])) else { throw Violation(line: number, message: "bad HELP line: \(line)") }
                }
                continue
            }
            var rest = Substring(line)
            let nameEnd = rest.firstIndex { $0 == "{" || $0 == " " } ?? rest.endIndex
            let name = String(rest[..<nameEnd])
            guard valid(name) else { throw Violation(line: number, message: "bad metric name \(name)") }
            rest = rest[nameEnd...]
            var labels: [String: String] = [:]
            if rest.hasPrefix("{") {
                rest = rest.dropFirst()
                while !rest.hasPrefix("}") {
                    guard let equals = rest.firstIndex(of: "=") else { throw Violation(line: number, message: "a label without =") }
                    let label = String(rest[..<equals])
                    guard valid(label), !label.contains(":") else { throw Violation(line: number, message: "bad label name \(label)") }
                    rest = rest[rest.index(after: equals)...]
                    guard rest.hasPrefix("\"") else { throw Violation(line: number, message: "label value not quoted") }
                    rest = rest.dropFirst()
                    var value = ""
                    while let character = rest.first, character != "\"" {
                        if character == "\\" {
                            rest = rest.dropFirst()
                            guard let escaped = rest.first, ["\\", "\"", "n"].contains(escaped) else {
                                throw Violation(line: number, message: "bad escape in a label value")
                            }
                            value.append(escaped == "n" ? "\n" : escaped)
                        } else {
                            value.append(character)
                        }
                        rest = rest.dropFirst()
                    }
                    guard rest.hasPrefix("\"") else { throw Violation(line: number, message: "unterminated label value") }
                    rest = rest.dropFirst()
                    labels[label] = value
                    if rest.hasPrefix(",") { rest = rest.dropFirst() }
                }
                rest = rest.dropFirst()
            }
            let fields = rest.split(separator: " ")
            guard (1...2).contains(fields.count) else { throw Violation(line: number, message: "expected a value (and a timestamp)") }
            let text = String(fields[0])
            guard let value = Double(text) ?? ["+Inf": .infinity, "-Inf": -.infinity, "NaN": .nan][text] else {
                throw Violation(line: number, message: "bad value \(text)")
            }
            let family = types[name] != nil ? name : ["_bucket", "_sum", "_count"].compactMap { suffix in
                name.hasSuffix(suffix) ? String(name.dropLast(suffix.count)) : nil
            }.first { types[$0] == "histogram" || types[$0] == "summary" }
            guard family != nil else { throw Violation(line: number, message: "\(name) has no TYPE before it") }
            samples.append(Sample(name: name, labels: labels, value: value))
        }
        try checkHistograms()
    }

    private func checkHistograms() throws {
        for (family, type) in types where type == "histogram" {
            var series: [[String: String]: [(Double, Double)]] = [:]
            for sample in samples where sample.name == family + "_bucket" {
                guard let le = sample.labels["le"], let bound = Double(le) ?? (le == "+Inf" ? .infinity : nil) else {
                    throw Violation(line: 0, message: "\(family) bucket without a numeric le")
                }
                var key = sample.labels
                key["le"] = nil
                series[key, default: []].append((bound, sample.value))
            }
            for (key, buckets) in series {
                guard buckets.map(\.0) == buckets.map(\.0).sorted(), buckets.last?.0 == .infinity else {
                    throw Violation(line: 0, message: "\(family)\(key): buckets not ascending or no +Inf")
                }
                guard buckets.map(\.1) == buckets.map(\.1).sorted() else {
                    throw Violation(line: 0, message: "\(family)\(key): bucket counts not cumulative")
                }
                let count = samples.first { $0.name == family + "_count" && $0.labels == key }?.value
                guard count == buckets.last?.1 else { throw Violation(line: 0, message: "\(family)\(key): +Inf bucket != _count") }
            }
        }
    }

    /// The value of the sample with that name and exactly these labels.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }

    /// The sum over the samples with that name whose labels include `matching`.
    func sum(_ name: String, matching: [String: String] = [:]) -> Double {
        samples.filter { sample in sample.name == name && matching.allSatisfy { sample.labels[$0.key] == $0.value } }.reduce(0) { $0 + $1.value }
    }
}
