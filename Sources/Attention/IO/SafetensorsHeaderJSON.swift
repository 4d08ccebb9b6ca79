/// A JSON value as the safetensors header parser returns it.
///
/// Objects keep their members in file order, duplicates included, so that the
/// validator can reject repeated names; numbers keep their literal text, so that
/// integers convert to `Int` exactly or not at all.
enum HeaderJSON: Sendable {
    case object([(key: String, value: HeaderJSON)])
    case array([HeaderJSON])
    case string(String)
    case number(String)
    case bool(Bool)
    case null

    /// The value as an `Int`, or `nil` if it is not an integer literal that fits.
    var intValue: Int? {
        guard case let .number(text) = self, !text.contains(where: { ".eE".contains($0) }) else { return nil }
        return Int(text)
    }

    /// What kind of value this is, for messages ("a JSON array").
    var kindDescription: String {
        switch self {
        case .object: return "a JSON object"
        case .array: return "a JSON array"
        case .string: return "a JSON string"
        case .number: return "a JSON number"
        case .bool: return "a JSON boolean"
        case .null: return "null"
        }
    }

    /// A compact rendering for messages, cut to about 80 characters.
    var summary: String {
        let text = rendered(depth: 0)
        return text.count > 80 ? String(text.prefix(77)) + "…" : text
    }

    private func rendered(depth: Int) -> String {
        if depth > 3 { return "…" }
        switch self {
        case let .object(members):
            let shown = members.prefix(8).map { "\(String(reflecting: $0.key)): \($0.value.rendered(depth: depth + 1))" }
            return "{" + shown.joined(separator: ", ") + (members.count > 8 ? ", …" : "") + "}"
        case let .array(elements):
            let shown = elements.prefix(16).map { $0.rendered(depth: depth + 1) }
            return "[" + shown.joined(separator: ", ") + (elements.count > 16 ? ", …" : "") + "]"
        case let .string(text):
            return String(reflecting: text.count > 60 ? String(text.prefix(60)) + "…" : text)
        case let .number(text):
            return text
        case let .bool(value):
            return value ? "true" : "false"
        case .null:
            return "null"
        }
    }
}

/// A strict RFC 8259 JSON parser for safetensors headers.
///
/// It never traps on any input: nesting is limited to ``maximumDepth`` levels (the
/// header needs three), and every failure is a `SafetensorsError.invalidJSON`
/// with the byte offset into the header. The caller checks UTF-8 validity first.
struct HeaderJSONParser {
    /// The deepest nesting accepted; deeper input is rejected instead of
    /// exhausting the stack.
    static let maximumDepth = 32

    private let bytes: [UInt8]
    private var index = 0

    private init(bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// Parses one JSON value that may be surrounded by JSON whitespace (the
    /// format allows the header to be padded with trailing spaces).
    static func parse(_ bytes: [UInt8]) throws -> HeaderJSON {
        var parser = HeaderJSONParser(bytes: bytes)
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        if parser.index != bytes.count {
            throw parser.failure("expected the end of the header after the top-level value, got \(parser.describeCurrent())")
        }
        return value
    }

    /// The byte offset of the first invalid UTF-8 sequence, or `nil` if all valid.
    static func firstInvalidUTF8Offset(_ bytes: [UInt8]) -> Int? {
        var iterator = bytes.makeIterator()
        var parser = Unicode.UTF8.ForwardParser()
        var offset = 0
        while true {
            switch parser.parseScalar(from: &iterator) {
            case let .valid(scalar):
                offset += scalar.count
            case .emptyInput:
                return nil
            case .error:
                return offset
            }
        }
    }

    private mutating func parseValue(depth: Int) throws -> HeaderJSON {
        skipWhitespace()
        guard index < bytes.count else { throw failure("expected a value, got the end of the header") }
        switch bytes[index] {
        case UInt8(ascii: "{"):
            return try parseObject(depth: depth + 1)
        case UInt8(ascii: "["):
            return try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""):
            return .string(try parseString())
        case UInt8(ascii: "t"):
            try expectLiteral("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try expectLiteral("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try expectLiteral("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return .number(try parseNumber())
        default:
            throw failure("expected a value, got \(describeCurrent())")
        }
    }

    private mutating func parseObject(depth: Int) throws -> HeaderJSON {
        guard depth <= Self.maximumDepth else { throw failure("expected at most \(Self.maximumDepth) nested levels, got more") }
        index += 1  // "{"
        var members: [(key: String, value: HeaderJSON)] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                throw failure("expected a string key, got \(describeCurrent())")
            }
            let key = try parseString()
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else {
                throw failure("expected ':' after a key, got \(describeCurrent())")
            }
            index += 1
            let value = try parseValue(depth: depth)
            members.append((key, value))
            skipWhitespace()
            guard index < bytes.count else { throw failure("expected ',' or '}', got the end of the header") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
            } else if bytes[index] == UInt8(ascii: "}") {
                index += 1
                return .object(members)
            } else {
                throw failure("expected ',' or '}', got \(describeCurrent())")
            }
        }
    }

    private mutating func parseArray(depth: Int) throws -> HeaderJSON {
        guard depth <= Self.maximumDepth else { throw failure("expected at most \(Self.maximumDepth) nested levels, got more") }
        index += 1  // "["
        var elements: [HeaderJSON] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            return .array(elements)
        }
        while true {
            elements.append(try parseValue(depth: depth))
            skipWhitespace()
            guard index < bytes.count else { throw failure("expected ',' or ']', got the end of the header") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
            } else if bytes[index] == UInt8(ascii: "]") {
                index += 1
                return .array(elements)
            } else {
                throw failure("expected ',' or ']', got \(describeCurrent())")
            }
        }
    }

    /// Parses a string starting at its opening quote. The input is known to be
    /// valid UTF-8, and it is only split at ASCII bytes, so the pieces are too.
    private mutating func parseString() throws -> String {
        index += 1  // opening quote
        var utf8: [UInt8] = []
        while true {
            guard index < bytes.count else { throw failure("expected a closing '\"', got the end of the header") }
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                return String(decoding: utf8, as: UTF8.self)
            case UInt8(ascii: "\\"):
                index += 1
                try parseEscape(into: &utf8)
            case 0x00..<0x20:
                throw failure("expected an escaped control character in a string, got raw \(describeCurrent())")
            default:
                utf8.append(byte)
                index += 1
            }
        }
    }

    private mutating func parseEscape(into utf8: inout [UInt8]) throws {
        guard index < bytes.count else { throw failure("expected an escape character, got the end of the header") }
        let byte = bytes[index]
        index += 1
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(byte)
        case UInt8(ascii: "b"): utf8.append(0x08)
        case UInt8(ascii: "f"): utf8.append(0x0C)
        case UInt8(ascii: "n"): utf8.append(0x0A)
        case UInt8(ascii: "r"): utf8.append(0x0D)
        case UInt8(ascii: "t"): utf8.append(0x09)
        case UInt8(ascii: "u"):
            let first = try parseHex4()
            var scalarValue = UInt32(first)
            if (0xD800..<0xDC00).contains(first) {
                guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                    throw failure("expected a low surrogate escape after \\u\(hex(first)), got \(describeCurrent())")
                }
                index += 2
                let second = try parseHex4()
                guard (0xDC00..<0xE000).contains(second) else {
                    throw failure("expected a low surrogate after \\u\(hex(first)), got \\u\(hex(second))")
                }
                scalarValue = 0x10000 + ((UInt32(first) - 0xD800) << 10) + (UInt32(second) - 0xDC00)
            } else if (0xDC00..<0xE000).contains(first) {
                throw failure("expected a high surrogate before \\u\(hex(first)), got none")
            }
            guard let scalar = Unicode.Scalar(scalarValue) else {
                throw failure("expected a Unicode scalar, got \\u\(hex(first))")
            }
            utf8.append(contentsOf: String(Character(scalar)).utf8)
        default:
            index -= 1
            throw failure("expected one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u, got \\\(describeCurrent())")
        }
    }

    private mutating func parseHex4() throws -> UInt16 {
        var value: UInt16 = 0
        for _ in 0..<4 {
            guard index < bytes.count else { throw failure("expected 4 hex digits after \\u, got the end of the header") }
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw failure("expected a hex digit after \\u, got \(describeCurrent())")
            }
            value = value << 4 | UInt16(digit)
            index += 1
        }
        return value
    }

    /// Parses `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` and
    /// returns its text.
    private mutating func parseNumber() throws -> String {
        let start = index
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard index < bytes.count, isDigit(bytes[index]) else { throw failure("expected a digit, got \(describeCurrent())") }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
        } else {
            skipDigits()
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard index < bytes.count, isDigit(bytes[index]) else {
                throw failure("expected a digit after '.', got \(describeCurrent())")
            }
            skipDigits()
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count, isDigit(bytes[index]) else {
                throw failure("expected an exponent digit, got \(describeCurrent())")
            }
            skipDigits()
        }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    private mutating func expectLiteral(_ literal: StaticString) throws {
        let text = literal.withUTF8Buffer { Array($0) }
        guard bytes.count - index >= text.count, Array(bytes[index..<index + text.count]) == text else {
            throw failure("expected \(literal), got \(describeCurrent())")
        }
        index += text.count
    }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    private mutating func skipDigits() {
        while index < bytes.count, isDigit(bytes[index]) { index += 1 }
    }

    private func isDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }

    private func hex(_ value: UInt16) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: 4 - digits.count) + digits
    }

    /// The byte at the cursor, printable ASCII quoted, anything else in hex.
    private func describeCurrent() -> String {
        guard index < bytes.count else { return "the end of the header" }
        let byte = bytes[index]
        if (0x21..<0x7F).contains(byte) { return "'\(Character(Unicode.Scalar(byte)))'" }
        let digits = String(byte, radix: 16, uppercase: true)
        return "byte 0x" + (digits.count < 2 ? "0" : "") + digits
    }

    private func failure(_ reason: String) -> SafetensorsError {
        .invalidJSON(offset: index, reason: reason)
    }
}
