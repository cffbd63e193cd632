import Foundation

/// Reads typed values (durations, sizes, percentages, counts, rates) out of syntax values,
/// reporting anything that does not fit.
struct ValueReader {
    var sink: DiagnosticSink

    static let durationUnits: [String: Double] = ["ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000]
    static let subMillisecondUnits: Set<String> = ["us", "µs", "ns"]
    static let sizeUnits: [String: Int64] = [
        "B": 1, "KB": 1000, "MB": 1_000_000, "GB": 1_000_000_000,
        "KiB": 1024, "MiB": 1_048_576, "GiB": 1_073_741_824,
    ]

    /// Parses the numeric text of a literal (underscores allowed as separators).
    static func number(_ text: String) -> Double? {
        let cleaned = text.replacingOccurrences(of: "_", with: "")
        guard !cleaned.isEmpty, !cleaned.hasSuffix("."), !cleaned.hasPrefix(".") else { return nil }
        return Double(cleaned)
    }

    static func integer(_ text: String) -> Int64? {
        let cleaned = text.replacingOccurrences(of: "_", with: "")
        return Int64(cleaned)
    }

    /// A whole number (no unit).
    mutating func integer(_ value: Value, what: String, minimum: Int64 = Int64.min) -> Int64? {
        guard case .number(let text, let range) = value else {
            self.wrongType(value, expected: "a whole number for \(what)", example: "200000")
            return nil
        }
        guard let number = Self.integer(text) else {
            if text.contains(".") {
                self.sink.emit(.wrongValueType, "\(what) must be a whole number, not `\(text)`", at: range)
            } else {
                self.sink.emit(
                    .valueOutOfRange,
                    "`\(text)` is too large for \(what)",
                    at: range,
                    suggestion: "the largest value is \(Int64.max)"
                )
            }
            return nil
        }
        if number < minimum {
            self.sink.emit(.valueOutOfRange, "\(what) must be at least \(minimum), not \(number)", at: range)
            return nil
        }
        return number
    }

    /// A duration in whole milliseconds.
    mutating func durationMs(_ value: Value, what: String) -> Int64? {
        guard case .quantity(let numberText, let unit, let range) = value else {
            if case .number(let text, let range) = value {
                self.sink.emit(
                    .unknownUnit,
                    "\(what) needs a unit",
                    at: range,
                    suggestion: "write `\(text)ms` or `\(text)s`"
                )
                return nil
            }
            self.wrongType(value, expected: "a duration for \(what)", example: "500ms")
            return nil
        }
        if Self.subMillisecondUnits.contains(unit) {
            self.sink.emit(
                .subMillisecondDuration,
                "sub-millisecond durations cannot be tested: the collector measures trace duration in whole milliseconds",
                at: range,
                suggestion: "use `ms`, `s`, `m` or `h`"
            )
            return nil
        }
        guard let factor = Self.durationUnits[unit] else {
            self.unknownUnit(unit, range: range, candidates: Array(Self.durationUnits.keys), kind: "duration")
            return nil
        }
        guard let number = Self.number(numberText) else {
            self.sink.emit(.invalidNumber, "`\(numberText)` is not a number", at: range)
            return nil
        }
        let milliseconds = number * factor
        guard milliseconds.magnitude < 9.0e15 else {
            self.sink.emit(.valueOutOfRange, "duration `\(numberText)\(unit)` is too large", at: range)
            return nil
        }
        guard milliseconds.rounded() == milliseconds else {
            self.sink.emit(
                .subMillisecondDuration,
                "`\(numberText)\(unit)` is not a whole number of milliseconds; the collector measures in whole milliseconds",
                at: range,
                suggestion: "write `\(Int64(milliseconds.rounded(.down)))ms` or `\(Int64(milliseconds.rounded(.up)))ms`"
            )
            return nil
        }
        return Int64(milliseconds)
    }

    /// A percentage such as `10%` or `0.5%` (not range-checked beyond being non-negative).
    mutating func percentage(_ value: Value, what: String) -> Double? {
        guard case .quantity(let numberText, let unit, let range) = value, unit == "%" else {
            if case .number(let text, let range) = value {
                self.sink.emit(.unknownUnit, "\(what) needs `%`", at: range, suggestion: "write `\(text)%`")
                return nil
            }
            self.wrongType(value, expected: "a percentage for \(what)", example: "10%")
            return nil
        }
        guard let number = Self.number(numberText), number.isFinite else {
            self.sink.emit(.invalidNumber, "`\(numberText)` is not a number", at: range)
            return nil
        }
        if number < 0 {
            self.sink.emit(.invalidPercentage, "\(what) cannot be negative", at: range)
            return nil
        }
        return number
    }

    /// A size in bytes: `64MiB`, `1GB`, or a plain number of bytes.
    mutating func sizeBytes(_ value: Value, what: String) -> Int64? {
        switch value {
        case .number:
            return self.integer(value, what: what, minimum: 0)
        case .quantity(let numberText, let unit, let range):
            guard let factor = Self.sizeUnits[unit] else {
                self.unknownUnit(unit, range: range, candidates: Array(Self.sizeUnits.keys), kind: "size")
                return nil
            }
            guard let number = Self.number(numberText), number >= 0 else {
                self.sink.emit(.invalidNumber, "`\(numberText)` is not a size", at: range)
                return nil
            }
            let bytes = number * Double(factor)
            guard bytes < 9.0e18 else {
                self.sink.emit(.valueOutOfRange, "size `\(numberText)\(unit)` is too large", at: range)
                return nil
            }
            return Int64(bytes.rounded(.up))
        default:
            self.wrongType(value, expected: "a size for \(what)", example: "8MiB")
            return nil
        }
    }

    mutating func bool(_ value: Value, what: String) -> Bool? {
        if case .identifier(let identifier) = value {
            if identifier.name == "true" { return true }
            if identifier.name == "false" { return false }
            if let close = Spelling.closest(to: identifier.name, in: ["true", "false"]) {
                self.sink.emit(
                    .wrongValueType,
                    "\(what) takes `true` or `false`, not `\(identifier.name)`",
                    at: identifier.range,
                    suggestion: "did you mean `\(close)`?"
                )
                return nil
            }
        }
        self.wrongType(value, expected: "`true` or `false` for \(what)", example: "true")
        return nil
    }

    mutating func wrongType(_ value: Value, expected: String, example: String) {
        self.sink.emit(
            .wrongValueType,
            "expected \(expected), found \(Self.describe(value))",
            at: value.range,
            suggestion: "for example `\(example)`"
        )
    }

    mutating func unknownUnit(_ unit: String, range: SourceRange, candidates: [String], kind: String) {
        let suggestion: String
        if let close = Spelling.closest(to: unit, in: candidates) {
            suggestion = "did you mean `\(close)`?"
        } else {
            suggestion = "\(kind) units are " + candidates.sorted().map { "`\($0)`" }.joined(separator: ", ")
        }
        self.sink.emit(.unknownUnit, "unknown \(kind) unit `\(unit)`", at: range, suggestion: suggestion)
    }

    static func describe(_ value: Value) -> String {
        switch value {
        case .string(let literal): "the string \"\(literal.value.prefix(40))\""
        case .number(let text, _): "the number `\(text)`"
        case .quantity(let number, let unit, _): "`\(number)\(unit)`"
        case .identifier(let identifier): "`\(identifier.name)`"
        case .list: "a list"
        case .range: "a range"
        case .rate: "a rate"
        }
    }
}
