/// A JSON value read from bytes with its members in the order written and the byte range of
/// every value, so a line can be edited (a member dropped, an array element dropped) without
/// touching any other byte: JSONSerialization and JSONEncoder reorder keys and respell numbers.
///
/// Strict enough for the CLI's own output (RFC 8259); numbers are kept as their text.
indirect enum JSONText: Sendable, Equatable {
    case object([Member])
    case array([Element])
    case string(String)
    case number(String)
    case bool(Bool)
    case null

    struct Member: Sendable, Equatable {
        var key: String
        var value: JSONText
        /// From the key's opening quote to the end of the value.
        var range: Range<Int>
    }

    struct Element: Sendable, Equatable {
        var value: JSONText
        var range: Range<Int>
    }

    /// The value of `bytes` (whitespace around it allowed); nil if it is not exactly one JSON value.
    static func parse(_ bytes: [UInt8]) -> JSONText? {
        var reader = Reader(bytes: bytes)
        guard let value = reader.value() else { return nil }
        reader.skipSpace()
        return reader.index == bytes.count ? value : nil
    }

    subscript(key: String) -> JSONText? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.key == key }?.value
    }

    var string: String? {
        if case .string(let text) = self { return text }
        return nil
    }

    var bool: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    /// `bytes` (the text this value was read from) without the top-level member `key`, and the
    /// comma that separated it; unchanged if there is none.
    func removingMember(_ key: String, from bytes: [UInt8]) -> [UInt8] {
        guard case .object(let members) = self, let index = members.firstIndex(where: { $0.key == key }) else { return bytes }
        return Self.removing(at: index, ranges: members.map(\.range), from: bytes)
    }

    /// Removes the entry at `index` of a list whose entries span `ranges`, with one comma.
    static func removing(at index: Int, ranges: [Range<Int>], from bytes: [UInt8]) -> [UInt8] {
        let cut: Range<Int>
        if index > 0 {
            cut = ranges[index - 1].upperBound..<ranges[index].upperBound  // `,"key":value`
        } else if ranges.count > 1 {
            cut = ranges[0].lowerBound..<ranges[1].lowerBound  // `"key":value,`
        } else {
            cut = ranges[0]
        }
        var out = bytes
        out.removeSubrange(cut)
        return out
    }

    private struct Reader {
        let bytes: [UInt8]
        var index = 0
        var depth = 0

        mutating func skipSpace() {
            while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
        }

        mutating func value() -> JSONText? {
            skipSpace()
            guard index < bytes.count else { return nil }
            switch bytes[index] {
            case UInt8(ascii: "{"): return object()
            case UInt8(ascii: "["): return array()
            case UInt8(ascii: "\""): return string().map(JSONText.string)
            case UInt8(ascii: "t"): return literal("true", .bool(true))
            case UInt8(ascii: "f"): return literal("false", .bool(false))
            case UInt8(ascii: "n"): return literal("null", .null)
            default: return number()
            }
        }

        mutating func literal(_ word: String, _ value: JSONText) -> JSONText? {
            let text = Array(word.utf8)
            guard bytes.count - index >= text.count, bytes[index..<index + text.count].elementsEqual(text) else { return nil }
            index += text.count
            return value
        }

        mutating func number() -> JSONText? {
            let start = index
            while index < bytes.count, Self.numberBytes.contains(bytes[index]) { index += 1 }
            guard index > start else { return nil }
            return .number(String(decoding: bytes[start..<index], as: UTF8.self))
        }

        static let numberBytes = Set(Array("0123456789+-.eE".utf8))

        mutating func object() -> JSONText? {
            depth += 1
            defer { depth -= 1 }
            guard depth < 512 else { return nil }
            index += 1
            var members: [Member] = []
            skipSpace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                index += 1
                return .object([])
            }
            while true {
                skipSpace()
                let start = index
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\""), let key = string() else { return nil }
                skipSpace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return nil }
                index += 1
                guard let value = value() else { return nil }
                members.append(Member(key: key, value: value, range: start..<index))
                skipSpace()
                guard index < bytes.count else { return nil }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                } else if bytes[index] == UInt8(ascii: "}") {
                    index += 1
                    return .object(members)
                } else {
                    return nil
                }
            }
        }

        mutating func array() -> JSONText? {
            depth += 1
            defer { depth -= 1 }
            guard depth < 512 else { return nil }
            index += 1
            var elements: [Element] = []
            skipSpace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                index += 1
                return .array([])
            }
            while true {
                skipSpace()
                let start = index
                guard let value = value() else { return nil }
                elements.append(Element(value: value, range: start..<index))
                skipSpace()
                guard index < bytes.count else { return nil }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                } else if bytes[index] == UInt8(ascii: "]") {
                    index += 1
                    return .array(elements)
                } else {
                    return nil
                }
            }
        }

        /// A string starting at the opening quote; escapes decoded.
        mutating func string() -> String? {
            index += 1
            var scalars = String.UnicodeScalarView()
            var run = index  // start of the current unescaped run
            func flush(_ end: Int) { scalars.append(contentsOf: String(decoding: bytes[run..<end], as: UTF8.self).unicodeScalars) }
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") {
                    flush(index)
                    index += 1
                    return String(scalars)
                }
                if byte < 0x20 { return nil }
                guard byte == UInt8(ascii: "\\") else {
                    index += 1
                    continue
                }
                flush(index)
                index += 1
                guard index < bytes.count else { return nil }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""): scalars.append("\"")
                case UInt8(ascii: "\\"): scalars.append("\\")
                case UInt8(ascii: "/"): scalars.append("/")
                case UInt8(ascii: "b"): scalars.append("\u{08}")
                case UInt8(ascii: "f"): scalars.append("\u{0C}")
                case UInt8(ascii: "n"): scalars.append("\n")
                case UInt8(ascii: "r"): scalars.append("\r")
                case UInt8(ascii: "t"): scalars.append("\t")
                case UInt8(ascii: "u"):
                    guard var unit = hex4() else { return nil }
                    if (0xD800..<0xDC00).contains(unit), index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"),
                        bytes[index + 1] == UInt8(ascii: "u")
                    {
                        let save = index
                        index += 2
                        if let low = hex4(), (0xDC00..<0xE000).contains(low) {
                            unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            index = save
                        }
                    }
                    // A lone surrogate (JSON allows it; Swift strings do not) becomes U+FFFD.
                    scalars.append(Unicode.Scalar(unit) ?? "\u{FFFD}")
                default: return nil
                }
                run = index
            }
            return nil
        }

        mutating func hex4() -> UInt32? {
            guard bytes.count - index >= 4 else { return nil }
            var value: UInt32 = 0
            for byte in bytes[index..<index + 4] {
                guard let digit = Self.hexDigit(byte) else { return nil }
                value = value << 4 | digit
            }
            index += 4
            return value
        }

        static func hexDigit(_ byte: UInt8) -> UInt32? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt32(byte - UInt8(ascii: "A") + 10)
            default: nil
            }
        }
    }
}
