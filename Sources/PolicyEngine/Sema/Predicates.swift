import Foundation

/// The fields a condition can test, and the spellings people bring from the collector's config.
enum Subjects {
    static let known = ["status", "duration", "spans", "service", "attr", "tracestate", "sampled_flag", "ottl"]
    static let aliases: [String: String] = [
        "latency": "duration",
        "span_count": "spans",
        "status_code": "status",
        "attribute": "attr",
        "attributes": "attr",
        "resource": "attr",
        "span": "attr",
        "trace_state": "tracestate",
        "trace_flags": "sampled_flag",
        "sampled": "sampled_flag",
        "service_name": "service",
        "ottl_condition": "ottl",
    ]
}

extension Checker {
    /// Converts a condition's syntax into logic over atoms; `nil` when it has errors (already reported).
    mutating func logic(of expression: Expression) -> Logic? {
        switch expression {
        case .missing:
            return nil
        case .parenthesized(let inner, _):
            return self.logic(of: inner)
        case .not(let inner, _):
            return self.logic(of: inner).map(Logic.not)
        case .and(let items, _):
            let converted = items.map { self.logic(of: $0) }
            guard converted.allSatisfy({ $0 != nil }) else { return nil }
            return .and(converted.map { $0! })
        case .or(let items, _):
            let converted = items.map { self.logic(of: $0) }
            guard converted.allSatisfy({ $0 != nil }) else { return nil }
            return .or(converted.map { $0! })
        case .predicate(let predicate):
            return self.logic(of: predicate)
        }
    }

    private mutating func logic(of predicate: Predicate) -> Logic? {
        let subject = predicate.subject.name
        guard Subjects.known.contains(subject) else {
            let suggestion: String
            if let alias = Subjects.aliases[subject] {
                suggestion =
                    alias == "attr"
                    ? "write `attr[\"key\"]`; it tests resource and span attributes alike"
                    : "write `\(alias)`"
            } else if let close = Spelling.closest(to: subject, in: Subjects.known) {
                suggestion = "did you mean `\(close)`?"
            } else {
                suggestion = "conditions test " + Subjects.known.map { "`\($0)`" }.joined(separator: ", ")
            }
            self.sink.emit(
                .unknownField,
                "unknown field `\(subject)`",
                at: predicate.subject.range,
                suggestion: suggestion
            )
            return nil
        }
        let takesKey = subject == "attr" || subject == "tracestate"
        if takesKey, predicate.key == nil {
            self.sink.emit(
                .expectedToken,
                "`\(subject)` needs a key",
                at: predicate.subject.range,
                suggestion: "write `\(subject)[\"key\"]`"
            )
            return nil
        }
        if !takesKey, let key = predicate.key {
            self.sink.emit(
                .unexpectedToken,
                "`\(subject)` does not take a key",
                at: key.range,
                suggestion: subject == "service" ? "write `attr[\"\(key.value)\"]` to test another attribute" : nil
            )
            return nil
        }
        if let key = predicate.key, key.value.isEmpty {
            self.sink.emit(
                .emptyStringValue,
                "attribute key is empty",
                at: key.range,
                suggestion: "write the attribute's name, e.g. `attr[\"http.route\"]`"
            )
            return nil
        }
        switch subject {
        case "sampled_flag":
            if let op = predicate.op {
                self.sink.emit(
                    .unsupportedOperator,
                    "`sampled_flag` is a condition on its own and takes no `\(op.rawValue)`",
                    at: predicate.opRange,
                    suggestion: "write `sampled_flag` or `not sampled_flag`"
                )
                return nil
            }
            return .literal(Literal(atom: .sampledFlag, negated: false, range: predicate.range))
        case "ottl":
            return self.ottl(predicate)
        default:
            break
        }
        guard let op = predicate.op else {
            self.sink.emit(
                .expectedExpression,
                "expected a comparison after `\(subject)\(predicate.key.map { "[\"\($0.value)\"]" } ?? "")`",
                at: SourceRange(start: predicate.range.end, end: predicate.range.end),
                suggestion: Self.example(for: subject)
            )
            return nil
        }
        guard let value = predicate.value else { return nil }
        switch subject {
        case "status": return self.status(predicate, op: op, value: value)
        case "duration": return self.traceBound(predicate, op: op, value: value, duration: true)
        case "spans": return self.traceBound(predicate, op: op, value: value, duration: false)
        case "service": return self.attribute(predicate, key: "service.name", op: op, value: value)
        case "attr": return self.attribute(predicate, key: predicate.key!.value, op: op, value: value)
        case "tracestate": return self.traceState(predicate, key: predicate.key!.value, op: op, value: value)
        default: return nil
        }
    }

    static func example(for subject: String) -> String {
        switch subject {
        case "status": "for example `status == ERROR`"
        case "duration": "for example `duration > 500ms`"
        case "spans": "for example `spans >= 200`"
        case "service": "for example `service == \"checkout\"`"
        case "tracestate": "for example `tracestate[\"vendor\"] == \"keep\"`"
        default: "for example `attr[\"http.route\"] == \"/checkout\"`"
        }
    }

    private mutating func unsupported(_ predicate: Predicate, _ op: ComparisonOperator, allowed: [String]) -> Logic? {
        self.sink.emit(
            .unsupportedOperator,
            "`\(predicate.subject.name)` cannot be compared with `\(op.rawValue)`",
            at: predicate.opRange,
            suggestion: "use " + allowed.map { "`\($0)`" }.joined(separator: ", ")
        )
        return nil
    }

    private func literal(_ atom: Atom, _ predicate: Predicate, negated: Bool = false) -> Logic {
        .literal(Literal(atom: atom, negated: negated, range: predicate.range))
    }

    // MARK: status

    private mutating func status(_ predicate: Predicate, op: ComparisonOperator, value: Value) -> Logic? {
        let codes: [StatusCode]
        switch op {
        case .equal, .notEqual:
            guard let code = self.statusCode(value) else { return nil }
            codes = [code]
        case .in, .notIn:
            guard case .list(let items, let range) = value else {
                var reader = ValueReader(sink: self.sink)
                reader.wrongType(value, expected: "a list of status codes", example: "[ERROR, UNSET]")
                self.sink = reader.sink
                return nil
            }
            if items.isEmpty {
                self.sink.emit(
                    .emptyList,
                    "empty list never matches",
                    at: range,
                    suggestion: "write `status in [ERROR]`"
                )
                return nil
            }
            var collected = Set<StatusCode>()
            var failed = false
            for item in items {
                if let code = self.statusCode(item) { collected.insert(code) } else { failed = true }
            }
            if failed { return nil }
            codes = collected.sorted()
        default:
            return self.unsupported(predicate, op, allowed: ["==", "!=", "in", "not in"])
        }
        if codes.count == StatusCode.allCases.count, op == .in {
            self.sink.emit(
                .alwaysTrue,
                "every span has one of OK, ERROR or UNSET, so this condition is always true",
                at: predicate.range,
                suggestion: "remove the condition"
            )
        }
        return self.literal(.status(codes), predicate, negated: op == .notEqual || op == .notIn)
    }

    private mutating func statusCode(_ value: Value) -> StatusCode? {
        switch value {
        case .identifier(let identifier):
            if let code = StatusCode(rawValue: identifier.name) { return code }
            let suggestion: String
            if let code = StatusCode(rawValue: identifier.name.uppercased()) {
                suggestion = "status codes are upper case: write `\(code.rawValue)`"
            } else if let close = Spelling.closest(to: identifier.name, in: StatusCode.allCases.map(\.rawValue)) {
                suggestion = "did you mean `\(close)`?"
            } else {
                suggestion = "status codes are `OK`, `ERROR` and `UNSET`"
            }
            self.sink.emit(
                .unknownStatusCode,
                "unknown status code `\(identifier.name)`",
                at: identifier.range,
                suggestion: suggestion
            )
            return nil
        case .string(let literal):
            let upper = literal.value.uppercased()
            self.sink.emit(
                .wrongValueType,
                "status codes are names, not strings",
                at: literal.range,
                suggestion: StatusCode(rawValue: upper) != nil
                    ? "write `\(upper)` without quotes" : "write `ERROR`, `OK` or `UNSET`"
            )
            return nil
        default:
            var reader = ValueReader(sink: self.sink)
            reader.wrongType(value, expected: "a status code", example: "ERROR")
            self.sink = reader.sink
            return nil
        }
    }

    // MARK: duration and spans

    private mutating func traceBound(_ predicate: Predicate, op: ComparisonOperator, value: Value, duration: Bool)
        -> Logic?
    {
        var reader = ValueReader(sink: self.sink)
        defer { self.sink = reader.sink }
        let name = duration ? "duration" : "spans"
        func read(_ value: Value) -> Int64? {
            if duration { return reader.durationMs(value, what: "`duration`") }
            if case .quantity(_, let unit, let range) = value {
                reader.sink.emit(
                    .wrongValueType,
                    "`spans` is a count and takes no unit `\(unit)`",
                    at: range,
                    suggestion: "write `spans >= 200`"
                )
                return nil
            }
            return reader.integer(value, what: "`spans`")
        }
        func atLeast(_ n: Int64) -> Atom { duration ? .durationAtLeast(n) : .spansAtLeast(n) }
        func atMost(_ n: Int64) -> Atom { duration ? .durationAtMost(n) : .spansAtMost(n) }
        let range = predicate.range
        switch op {
        case .greater, .greaterOrEqual, .less, .lessOrEqual, .equal, .notEqual:
            if case .range = value {
                reader.sink.emit(
                    .wrongValueType,
                    "a range goes with `in`",
                    at: value.range,
                    suggestion: "write `\(name) in \(Self.sourceText(value, self.file))`"
                )
                return nil
            }
            if duration, op == .equal || op == .notEqual {
                reader.sink.emit(
                    .unsupportedOperator,
                    "`duration` cannot be compared with `\(op.rawValue)`: an exact millisecond rarely matches",
                    at: predicate.opRange,
                    suggestion: "use `>`, `>=`, `<`, `<=` or `duration in 100ms..200ms`"
                )
                return nil
            }
            guard let n = read(value) else { return nil }
            let bumpedUp = n == Int64.max ? n : n + 1
            let bumpedDown = n == Int64.min ? n : n - 1
            switch op {
            case .greater: return .literal(Literal(atom: atLeast(bumpedUp), negated: false, range: range))
            case .greaterOrEqual: return .literal(Literal(atom: atLeast(n), negated: false, range: range))
            case .less: return .literal(Literal(atom: atMost(bumpedDown), negated: false, range: range))
            case .lessOrEqual: return .literal(Literal(atom: atMost(n), negated: false, range: range))
            case .equal:
                return .and([
                    .literal(Literal(atom: atLeast(n), negated: false, range: range)),
                    .literal(Literal(atom: atMost(n), negated: false, range: range)),
                ])
            default:
                return .or([
                    .literal(Literal(atom: atMost(bumpedDown), negated: false, range: range)),
                    .literal(Literal(atom: atLeast(bumpedUp), negated: false, range: range)),
                ])
            }
        case .in, .notIn:
            guard case .range(let lowerValue, let upperValue, let valueRange) = value else {
                reader.wrongType(
                    value,
                    expected: "a range for `\(name) in`",
                    example: duration ? "100ms..2s" : "10..200"
                )
                return nil
            }
            guard let lower = read(lowerValue), let upper = read(upperValue) else { return nil }
            if lower > upper {
                reader.sink.emit(
                    .reversedRange,
                    "range is empty: \(Self.sourceText(lowerValue, self.file)) is above \(Self.sourceText(upperValue, self.file))",
                    at: valueRange,
                    suggestion:
                        "write the smaller bound first: `\(Self.sourceText(upperValue, self.file))..\(Self.sourceText(lowerValue, self.file))`"
                )
                return nil
            }
            let inside = Logic.and([
                .literal(Literal(atom: atLeast(lower), negated: false, range: range)),
                .literal(Literal(atom: atMost(upper), negated: false, range: range)),
            ])
            return op == .in ? inside : .not(inside)
        default:
            return self.unsupported(
                predicate,
                op,
                allowed: duration ? [">", ">=", "<", "<=", "in"] : ["==", "!=", ">", ">=", "<", "<=", "in"]
            )
        }
    }

    static func sourceText(_ value: Value, _ file: SourceFile) -> String {
        file.text(value.range)
    }

    // MARK: attributes

    private mutating func attribute(_ predicate: Predicate, key: String, op: ComparisonOperator, value: Value) -> Logic?
    {
        let negated = op == .notEqual || op == .notIn || op == .notMatches
        switch op {
        case .matches, .notMatches:
            let patterns: [StringLiteral]
            switch value {
            case .string(let literal): patterns = [literal]
            case .list(let items, let range):
                if items.isEmpty {
                    self.sink.emit(
                        .emptyList,
                        "empty list never matches",
                        at: range,
                        suggestion: "write at least one pattern"
                    )
                    return nil
                }
                var collected: [StringLiteral] = []
                for item in items {
                    guard case .string(let literal) = item else {
                        var reader = ValueReader(sink: self.sink)
                        reader.wrongType(item, expected: "a regular expression in quotes", example: "\"/health.*\"")
                        self.sink = reader.sink
                        return nil
                    }
                    collected.append(literal)
                }
                patterns = collected
            default:
                var reader = ValueReader(sink: self.sink)
                reader.wrongType(value, expected: "a regular expression in quotes", example: "\"/healthz|/readyz\"")
                self.sink = reader.sink
                return nil
            }
            var anchored: [String] = []
            for pattern in patterns {
                guard self.validateRegex(pattern) else { return nil }
                anchored.append("^(?:\(pattern.value))$")
            }
            return self.literal(.stringAttribute(key: key, values: anchored, regex: true), predicate, negated: negated)
        case .equal, .notEqual:
            switch value {
            case .string(let literal):
                guard self.nonEmpty(literal) else { return nil }
                return self.literal(
                    .stringAttribute(key: key, values: [literal.value], regex: false),
                    predicate,
                    negated: negated
                )
            case .number:
                guard let n = self.attributeInteger(value) else { return nil }
                guard self.nonZeroBounds(min: n, max: n, at: value.range, key: key, op: op, n: n) else { return nil }
                return self.literal(.numericAttribute(key: key, minimum: n, maximum: n), predicate, negated: negated)
            case .identifier(let identifier) where identifier.name == "true" || identifier.name == "false":
                return self.literal(
                    .booleanAttribute(key: key, value: identifier.name == "true"),
                    predicate,
                    negated: negated
                )
            default:
                var reader = ValueReader(sink: self.sink)
                if case .identifier(let identifier) = value {
                    reader.sink.emit(
                        .wrongValueType,
                        "`\(identifier.name)` is not a value; strings go in quotes",
                        at: identifier.range,
                        suggestion: "write `\"\(identifier.name)\"`"
                    )
                } else {
                    reader.wrongType(
                        value,
                        expected: "a string, whole number or `true`/`false`",
                        example: "\"checkout\""
                    )
                }
                self.sink = reader.sink
                return nil
            }
        case .in, .notIn:
            switch value {
            case .list(let items, let range):
                if items.isEmpty {
                    self.sink.emit(
                        .emptyList,
                        "empty list never matches",
                        at: range,
                        suggestion: "write at least one value"
                    )
                    return nil
                }
                if items.allSatisfy({ if case .string = $0 { true } else { false } }) {
                    var values: [String] = []
                    for case .string(let literal) in items {
                        guard self.nonEmpty(literal) else { return nil }
                        if !values.contains(literal.value) { values.append(literal.value) }
                    }
                    return self.literal(
                        .stringAttribute(key: key, values: values, regex: false),
                        predicate,
                        negated: negated
                    )
                }
                if items.allSatisfy({ if case .number = $0 { true } else { false } }) {
                    var alternatives: [Logic] = []
                    for item in items {
                        guard let n = self.attributeInteger(item),
                            self.nonZeroBounds(min: n, max: n, at: item.range, key: key)
                        else {
                            return nil
                        }
                        alternatives.append(
                            .literal(
                                Literal(
                                    atom: .numericAttribute(key: key, minimum: n, maximum: n),
                                    negated: false,
                                    range: predicate.range
                                )
                            )
                        )
                    }
                    let any = Logic.or(alternatives)
                    return negated ? .not(any) : any
                }
                self.sink.emit(
                    .wrongValueType,
                    "a list must hold only strings or only whole numbers",
                    at: range,
                    suggestion: "write `[\"gold\", \"platinum\"]` or `[500, 503]`"
                )
                return nil
            case .range(let lowerValue, let upperValue, let range):
                guard let lower = self.attributeInteger(lowerValue), let upper = self.attributeInteger(upperValue)
                else { return nil }
                if lower > upper {
                    self.sink.emit(
                        .reversedRange,
                        "range is empty: \(lower) is above \(upper)",
                        at: range,
                        suggestion: "write `\(upper)..\(lower)`"
                    )
                    return nil
                }
                guard self.nonZeroBounds(min: lower, max: upper, at: range, key: key) else { return nil }
                return self.literal(
                    .numericAttribute(key: key, minimum: lower, maximum: upper),
                    predicate,
                    negated: negated
                )
            default:
                var reader = ValueReader(sink: self.sink)
                reader.wrongType(value, expected: "a list or a range after `in`", example: "[\"gold\", \"platinum\"]")
                self.sink = reader.sink
                return nil
            }
        case .greater, .greaterOrEqual, .less, .lessOrEqual:
            guard case .number = value else {
                var reader = ValueReader(sink: self.sink)
                reader.wrongType(value, expected: "a whole number to compare with `\(op.rawValue)`", example: "500")
                self.sink = reader.sink
                return nil
            }
            guard let n = self.attributeInteger(value) else { return nil }
            if (op == .greater && n == Int64.max) || (op == .less && n == Int64.min) {
                self.sink.emit(
                    .valueOutOfRange,
                    "no 64-bit integer is \(op == .greater ? "greater" : "less") than \(n), so this test never matches",
                    at: predicate.range,
                    suggestion: "remove the test"
                )
                return nil
            }
            var minimum: Int64?
            var maximum: Int64?
            switch op {
            case .greater: minimum = n == Int64.max ? n : n + 1
            case .greaterOrEqual: minimum = n
            case .less: maximum = n == Int64.min ? n : n - 1
            default: maximum = n
            }
            guard self.nonZeroBounds(min: minimum, max: maximum, at: predicate.range, key: key, op: op, n: n) else {
                return nil
            }
            return self.literal(.numericAttribute(key: key, minimum: minimum, maximum: maximum), predicate)
        }
    }

    private mutating func attributeInteger(_ value: Value) -> Int64? {
        var reader = ValueReader(sink: self.sink)
        defer { self.sink = reader.sink }
        return reader.integer(value, what: "a numeric attribute test")
    }

    private mutating func nonEmpty(_ literal: StringLiteral) -> Bool {
        guard literal.value.isEmpty else { return true }
        self.sink.emit(
            .emptyStringValue,
            "an empty string never matches: the collector ignores empty values",
            at: literal.range,
            suggestion: "to test for a missing attribute use `ottl span \"attributes[\\\"key\\\"] == nil\"`"
        )
        return false
    }

    /// The collector reads a numeric bound of 0 as "no bound", so 0 cannot be a bound.
    private mutating func nonZeroBounds(
        min: Int64?,
        max: Int64?,
        at range: SourceRange,
        key: String,
        op: ComparisonOperator? = nil,
        n: Int64 = 0
    ) -> Bool {
        guard min == 0 || max == 0 else { return true }
        let suggestion: String
        if let op {
            suggestion =
                "the collector reads a bound of 0 as \"no bound\"; write the test in OTTL instead: "
                + "`ottl span \"attributes[\\\"\(key)\\\"] \(op.rawValue) \(n)\"`"
        } else {
            suggestion =
                "the collector reads a bound of 0 as \"no bound\"; move the range off 0 (for example `1..599`) "
                + "or write the test as an `ottl span` condition"
        }
        self.sink.emit(
            .zeroNumericBound,
            "this test needs a bound of 0 on `\(key)`, which the collector cannot express",
            at: range,
            suggestion: suggestion
        )
        return false
    }

    // MARK: tracestate and OTTL

    private mutating func traceState(_ predicate: Predicate, key: String, op: ComparisonOperator, value: Value)
        -> Logic?
    {
        var values: [String] = []
        switch (op, value) {
        case (.equal, .string(let literal)), (.notEqual, .string(let literal)):
            guard self.nonEmpty(literal) else { return nil }
            values = [literal.value]
        case (.in, .list(let items, let range)), (.notIn, .list(let items, let range)):
            if items.isEmpty {
                self.sink.emit(
                    .emptyList,
                    "empty list never matches",
                    at: range,
                    suggestion: "write at least one value"
                )
                return nil
            }
            for item in items {
                guard case .string(let literal) = item else {
                    var reader = ValueReader(sink: self.sink)
                    reader.wrongType(item, expected: "a string", example: "\"keep\"")
                    self.sink = reader.sink
                    return nil
                }
                guard self.nonEmpty(literal) else { return nil }
                values.append(literal.value)
            }
        case (.equal, _), (.notEqual, _), (.in, _), (.notIn, _):
            var reader = ValueReader(sink: self.sink)
            reader.wrongType(
                value,
                expected: op == .in || op == .notIn ? "a list of strings" : "a string",
                example: "\"keep\""
            )
            self.sink = reader.sink
            return nil
        default:
            return self.unsupported(predicate, op, allowed: ["==", "!=", "in", "not in"])
        }
        for value in values where key.utf8.count + value.utf8.count >= 256 {
            self.sink.emit(
                .valueOutOfRange,
                "tracestate key and value together must be shorter than 256 bytes; the collector ignores longer pairs",
                at: predicate.range
            )
            return nil
        }
        return self.literal(.traceState(key: key, values: values), predicate, negated: op == .notEqual || op == .notIn)
    }

    private mutating func ottl(_ predicate: Predicate) -> Logic? {
        guard let qualifier = predicate.qualifier, qualifier.name == "span" || qualifier.name == "event" else {
            let at = predicate.qualifier?.range ?? predicate.subject.range
            self.sink.emit(
                .expectedToken,
                "`ottl` needs a context: `span` or `event`",
                at: at,
                suggestion: predicate.qualifier.flatMap { Spelling.closest(to: $0.name, in: ["span", "event"]) }.map {
                    "did you mean `\($0)`?"
                }
                    ?? "write `ottl span \"…\"` or `ottl event \"…\"`"
            )
            return nil
        }
        guard let argument = predicate.argument else { return nil }
        guard !argument.value.trimmingCharacters(in: .whitespaces).isEmpty else {
            self.sink.emit(
                .emptyStringValue,
                "OTTL condition is empty",
                at: argument.range,
                suggestion: "write a condition such as `attributes[\\\"retry\\\"] == true`"
            )
            return nil
        }
        if predicate.op != nil {
            self.sink.emit(
                .unsupportedOperator,
                "an `ottl` condition is complete on its own",
                at: predicate.opRange,
                suggestion: "put the comparison inside the OTTL string"
            )
            return nil
        }
        return self.literal(
            qualifier.name == "span" ? .ottlSpan(argument.value) : .ottlEvent(argument.value),
            predicate
        )
    }

    // MARK: regular expressions

    /// Checks a pattern against what Go's RE2 accepts.
    private mutating func validateRegex(_ literal: StringLiteral) -> Bool {
        let pattern = literal.value
        if pattern.isEmpty {
            self.sink.emit(
                .invalidRegex,
                "empty regular expression",
                at: literal.range,
                suggestion: "write a pattern such as `\"/health.*\"`"
            )
            return false
        }
        if let (message, suggestion) = RE2Syntax.problem(in: pattern) {
            self.sink.emit(
                .invalidRegex,
                "invalid regular expression: \(message)",
                at: literal.range,
                suggestion: suggestion
            )
            return false
        }
        return true
    }
}
