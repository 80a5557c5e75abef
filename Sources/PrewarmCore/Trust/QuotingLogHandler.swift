import Logging

/// swift-log's `StreamLogHandler` writes metadata as `key=value` with the value as it is: a
/// value holding a space or `=` (a client's header, a path, an error) could pass for fields
/// the daemon never set. This wraps it and quotes such values (`key="a b"`, with `"`, `\` and
/// control characters escaped), so every `key=value` in a line is one the daemon wrote.
public struct QuotingLogHandler: LogHandler {
    private var inner: StreamLogHandler
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?

    public var logLevel: Logger.Level {
        get { inner.logLevel }
        set { inner.logLevel = newValue }
    }

    public init(_ inner: StreamLogHandler) {
        var inner = inner
        metadata = inner.metadata
        metadataProvider = inner.metadataProvider
        inner.metadata = [:]
        inner.metadataProvider = nil
        self.inner = inner
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, provided in provided } }
        if let explicit = event.metadata { merged.merge(explicit) { _, explicit in explicit } }
        var event = event
        event.metadata = merged.mapValues(Self.quoted)
        inner.log(event: event)
    }

    static func quoted(_ value: Logger.MetadataValue) -> Logger.MetadataValue {
        switch value {
        case .string(let text): .string(quote(text))
        case .stringConvertible(let convertible): .string(quote(convertible.description))
        case .array(let values): .array(values.map(quoted))
        case .dictionary(let values): .dictionary(values.mapValues(quoted))
        }
    }

    /// `text` as it is when it is one plain word, else in double quotes with `"`, `\` and
    /// control characters escaped.
    public static func quote(_ text: String) -> String {
        let plain = !text.isEmpty && text.unicodeScalars.allSatisfy { scalar in
            scalar.value > 0x20 && scalar.value != 0x7F && scalar != "=" && scalar != "\"" && scalar != "\\" && !(0x80...0x9F).contains(scalar.value)
                && scalar.properties.generalCategory != .lineSeparator && scalar.properties.generalCategory != .paragraphSeparator
                && scalar.properties.generalCategory != .spaceSeparator
        }
        if plain { return text }
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F || (0x80...0x9F).contains(scalar.value) {
                    out += "\\u{" + String(scalar.value, radix: 16) + "}"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
