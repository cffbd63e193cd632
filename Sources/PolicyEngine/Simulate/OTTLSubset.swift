/// The part of OTTL the simulator evaluates: comparisons (`==`, `!=`, `<`, `<=`, `>`, `>=`) between paths
/// and literals, combined with `and`, `or`, `not` and parentheses, in the span and span-event contexts.
/// Anything else (converters, functions, math, unknown paths) is reported as not simulated, never guessed.
struct OTTLCondition: Sendable, Hashable {
    indirect enum Expression: Sendable, Hashable {
        case constant(Bool)
        case not(Expression)
        case and(Expression, Expression)
        case or(Expression, Expression)
        case compare(Operand, Comparison, Operand)
    }

    enum Comparison: String, Sendable, Hashable {
        case equal = "==", notEqual = "!=", less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="
    }

    enum Operand: Sendable, Hashable {
        case literal(OTTLValue)
        case path(Path)
    }

    /// A path and the keys indexing into it: `attributes["k"]`, `resource.attributes["k"]`, `name`, …
    struct Path: Sendable, Hashable {
        var field: Field
        var keys: [String]
    }

    enum Field: String, Sendable, Hashable {
        case name, kind, statusCode = "status.code", statusMessage = "status.message", attributes
        case resourceAttributes = "resource.attributes", scopeName = "instrumentation_scope.name"
        case scopeVersion = "instrumentation_scope.version", scopeAttributes = "instrumentation_scope.attributes"
        case startTime = "start_time_unix_nano", endTime = "end_time_unix_nano", traceState = "trace_state"
        case traceID = "trace_id.string", spanID = "span_id.string", parentSpanID = "parent_span_id.string"
        case eventTime = "time_unix_nano"
        // Span fields seen from an event.
        case spanName = "span.name", spanAttributes = "span.attributes", spanKind = "span.kind"
        case spanStatusCode = "span.status.code"
    }

    enum Context: Sendable, Hashable { case span, spanEvent }

    let expression: Expression

    /// Parses a condition; the error says what is outside the simulated subset.
    static func parse(_ text: String, context: Context) -> Result<OTTLCondition, OTTLUnsupported> {
        var parser = Parser(tokens: [], index: 0, context: context)
        switch Lexer.tokens(text) {
        case .failure(let error): return .failure(error)
        case .success(let tokens): parser.tokens = tokens
        }
        do {
            let expression = try parser.orExpression()
            guard parser.index == parser.tokens.count else {
                throw OTTLUnsupported(reason: "unexpected `\(parser.tokens[parser.index].text)`")
            }
            return .success(OTTLCondition(expression: expression))
        } catch let error as OTTLUnsupported {
            return .failure(error)
        } catch {
            return .failure(OTTLUnsupported(reason: "\(error)"))
        }
    }

    /// An evaluation that fails in the collector too (the policy errors under `propagate`).
    struct EvaluationError: Error, Sendable, Hashable {
        var message: String
    }

    /// Evaluates the condition for one span (and one of its events in the span-event context).
    func evaluate(span: TraceSpan, event: SpanEvent?, in trace: SimulatedTrace) throws(EvaluationError) -> Bool {
        try Self.evaluate(self.expression, span: span, event: event, trace: trace)
    }

    private static func evaluate(_ expression: Expression, span: TraceSpan, event: SpanEvent?, trace: SimulatedTrace)
        throws(EvaluationError) -> Bool
    {
        switch expression {
        case .constant(let value): return value
        case .not(let inner): return !(try self.evaluate(inner, span: span, event: event, trace: trace))
        case .and(let a, let b):
            guard try self.evaluate(a, span: span, event: event, trace: trace) else { return false }
            return try self.evaluate(b, span: span, event: event, trace: trace)
        case .or(let a, let b):
            if try self.evaluate(a, span: span, event: event, trace: trace) { return true }
            return try self.evaluate(b, span: span, event: event, trace: trace)
        case .compare(let left, let op, let right):
            let a = try self.value(left, span: span, event: event, trace: trace)
            let b = try self.value(right, span: span, event: event, trace: trace)
            return OTTLValue.compare(a, op, b)
        }
    }

    /// An 8-byte ID as OTTL's `.string` gives it: hex of the 8 bytes, zeros for an empty ID.
    private static func idString(_ bytes: [UInt8]) -> String {
        bytes.isEmpty ? String(repeating: "0", count: 16) : HexBytes.encode(bytes)
    }

    private static func value(_ operand: Operand, span: TraceSpan, event: SpanEvent?, trace: SimulatedTrace)
        throws(EvaluationError) -> OTTLValue
    {
        switch operand {
        case .literal(let value): return value
        case .path(let path):
            let resource = trace.resources.indices.contains(span.resource) ? trace.resources[span.resource] : [:]
            let scope = trace.scopes.indices.contains(span.scope) ? trace.scopes[span.scope] : InstrumentationScope()
            let base: OTTLValue
            switch path.field {
            case .name: base = .string(event?.name ?? span.name)
            case .spanName: base = .string(span.name)
            case .kind, .spanKind: base = .int(Int64(span.kind))
            case .statusCode, .spanStatusCode: base = .int(span.status.otlpCode)
            case .statusMessage: base = .string(span.statusMessage)
            case .attributes: base = .attribute(.map(event?.attributes ?? span.attributes))
            case .spanAttributes: base = .attribute(.map(span.attributes))
            case .resourceAttributes: base = .attribute(.map(resource))
            case .scopeName: base = .string(scope.name)
            case .scopeVersion: base = .string(scope.version)
            case .scopeAttributes: base = .attribute(.map(scope.attributes))
            case .startTime: base = .int(Int64(clamping: span.startNanos))
            case .endTime: base = .int(Int64(clamping: span.endNanos))
            case .eventTime: base = .int(Int64(clamping: event?.timeNanos ?? 0))
            case .traceState:
                if let key = path.keys.first {
                    // The getter parses the header (an invalid one is an error); a missing key reads as "".
                    guard let state = W3CTraceState.parse(span.traceState) else {
                        throw EvaluationError(message: "failed to parse tracestate `\(span.traceState)`")
                    }
                    return .string(state.value(for: key) ?? "")
                }
                base = .string(span.traceState)
            case .traceID: base = .string(trace.traceID.hex)
            case .spanID: base = .string(Self.idString(span.spanID))
            case .parentSpanID: base = .string(Self.idString(span.parentSpanID))
            }
            var current = base
            for key in path.keys {
                switch current {
                case .attribute(.map(let entries)):
                    guard let next = entries[key] else { return .nil }
                    current = .attribute(next)
                case .nil:
                    return .nil
                default:
                    // Indexing a string, number or list with a key fails in the collector.
                    throw EvaluationError(message: "`\(path.field.rawValue)` value does not support string indexing")
                }
            }
            return current.normalized
        }
    }

    // MARK: Lexer and parser

    struct Token: Sendable, Hashable {
        enum Kind: Sendable, Hashable { case identifier, string, number, symbol }
        var kind: Kind
        var text: String
    }

    enum Lexer {
        static func tokens(_ text: String) -> Result<[Token], OTTLUnsupported> {
            var tokens: [Token] = []
            let chars = Array(text.unicodeScalars)
            var i = 0
            while i < chars.count {
                let c = chars[i]
                if c == " " || c == "\t" || c == "\n" || c == "\r" {
                    i += 1
                } else if c == "\"" {
                    var value = String.UnicodeScalarView()
                    i += 1
                    var closed = false
                    while i < chars.count {
                        if chars[i] == "\\", i + 1 < chars.count {
                            value.append(chars[i + 1])
                            i += 2
                        } else if chars[i] == "\"" {
                            closed = true
                            i += 1
                            break
                        } else {
                            value.append(chars[i])
                            i += 1
                        }
                    }
                    guard closed else { return .failure(OTTLUnsupported(reason: "unterminated string")) }
                    tokens.append(Token(kind: .string, text: String(value)))
                } else if c.properties.isAlphabetic || c == "_" {
                    var value = String.UnicodeScalarView()
                    while i < chars.count,
                        chars[i].properties.isAlphabetic || chars[i] == "_" || ("0"..."9").contains(chars[i])
                    {
                        value.append(chars[i])
                        i += 1
                    }
                    tokens.append(Token(kind: .identifier, text: String(value)))
                } else if ("0"..."9").contains(c)
                    || (c == "-" && i + 1 < chars.count && ("0"..."9").contains(chars[i + 1]))
                {
                    var value = String.UnicodeScalarView([c])
                    i += 1
                    while i < chars.count,
                        ("0"..."9").contains(chars[i]) || chars[i] == "." || chars[i] == "e" || chars[i] == "E"
                    {
                        value.append(chars[i])
                        i += 1
                    }
                    tokens.append(Token(kind: .number, text: String(value)))
                } else {
                    let two = i + 1 < chars.count ? String(String.UnicodeScalarView([c, chars[i + 1]])) : ""
                    if ["==", "!=", "<=", ">="].contains(two) {
                        tokens.append(Token(kind: .symbol, text: two))
                        i += 2
                    } else if ["<", ">", "(", ")", "[", "]", "."].contains(String(c)) {
                        tokens.append(Token(kind: .symbol, text: String(c)))
                        i += 1
                    } else {
                        return .failure(
                            OTTLUnsupported(reason: "`\(c)` (math, functions and other operators are not simulated)")
                        )
                    }
                }
            }
            return .success(tokens)
        }
    }

    struct Parser {
        var tokens: [Token]
        var index: Int
        let context: Context

        private var next: Token? { self.index < self.tokens.count ? self.tokens[self.index] : nil }

        private mutating func take(_ text: String) -> Bool {
            if let token = self.next, token.text == text, token.kind != .string {
                self.index += 1
                return true
            }
            return false
        }

        mutating func orExpression() throws -> Expression {
            var left = try self.andExpression()
            while self.take("or") { left = .or(left, try self.andExpression()) }
            return left
        }

        mutating func andExpression() throws -> Expression {
            var left = try self.unary()
            while self.take("and") { left = .and(left, try self.unary()) }
            return left
        }

        mutating func unary() throws -> Expression {
            if self.take("not") { return .not(try self.unary()) }
            if self.take("(") {
                let inner = try self.orExpression()
                guard self.take(")") else { throw OTTLUnsupported(reason: "missing `)`") }
                return inner
            }
            let left = try self.operand()
            guard let token = self.next, token.kind == .symbol,
                let op = Comparison(rawValue: token.text)
            else {
                if case .literal(.bool(let value)) = left { return .constant(value) }
                throw OTTLUnsupported(reason: "a value on its own, not a comparison")
            }
            self.index += 1
            return .compare(left, op, try self.operand())
        }

        mutating func operand() throws -> Operand {
            guard let token = self.next else { throw OTTLUnsupported(reason: "the condition ends too early") }
            self.index += 1
            switch token.kind {
            case .string: return .literal(.string(token.text))
            case .number:
                if let int = Int64(token.text) { return .literal(.int(int)) }
                if let double = Double(token.text) { return .literal(.double(double)) }
                throw OTTLUnsupported(reason: "number `\(token.text)`")
            case .symbol: throw OTTLUnsupported(reason: "unexpected `\(token.text)`")
            case .identifier:
                switch token.text {
                case "true": return .literal(.bool(true))
                case "false": return .literal(.bool(false))
                case "nil": return .literal(.nil)
                default: break
                }
                if let value = OTTLValue.enumConstants[token.text] { return .literal(.int(value)) }
                if self.next?.text == "(" {
                    throw OTTLUnsupported(reason: "the function `\(token.text)` is not simulated")
                }
                var name = token.text
                while self.take(".") {
                    guard let part = self.next, part.kind == .identifier else {
                        throw OTTLUnsupported(reason: "a path ends with `.`")
                    }
                    self.index += 1
                    name += "." + part.text
                }
                var keys: [String] = []
                while self.take("[") {
                    guard let key = self.next, key.kind == .string else {
                        throw OTTLUnsupported(reason: "only string keys are simulated in `\(name)[…]`")
                    }
                    self.index += 1
                    guard self.take("]") else { throw OTTLUnsupported(reason: "missing `]`") }
                    keys.append(key.text)
                }
                guard let field = self.field(name) else {
                    throw OTTLUnsupported(reason: "the path `\(name)` is not simulated")
                }
                if !keys.isEmpty,
                    ![.attributes, .resourceAttributes, .scopeAttributes, .spanAttributes, .traceState].contains(field)
                {
                    throw OTTLUnsupported(reason: "`\(name)` cannot be indexed")
                }
                return .path(Path(field: field, keys: keys))
            }
        }

        private func field(_ name: String) -> Field? {
            guard let field = Field(rawValue: name) else { return nil }
            switch self.context {
            case .span:
                return [.eventTime, .spanName, .spanAttributes, .spanKind, .spanStatusCode].contains(field)
                    ? nil : field
            case .spanEvent:
                return [
                    .name, .attributes, .eventTime, .spanName, .spanAttributes, .spanKind, .spanStatusCode,
                    .resourceAttributes, .scopeName, .scopeVersion, .scopeAttributes, .traceID, .spanID,
                ]
                .contains(field) ? field : nil
            }
        }
    }
}

/// Why a condition is outside what the simulator evaluates.
public struct OTTLUnsupported: Error, Sendable, Hashable, CustomStringConvertible {
    /// The reason.
    public var reason: String
    public var description: String { self.reason }
}

/// An OTTL value as comparisons see it.
enum OTTLValue: Sendable, Hashable {
    case `nil`
    case string(String)
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case attribute(AttributeValue)

    static let enumConstants: [String: Int64] = [
        "SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2, "SPAN_KIND_CLIENT": 3,
        "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5, "STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1,
        "STATUS_CODE_ERROR": 2,
    ]

    /// Scalars out of attribute values, as OTTL's getters return them.
    var normalized: OTTLValue {
        guard case .attribute(let value) = self else { return self }
        switch value {
        case .string(let s): return .string(s)
        case .bool(let b): return .bool(b)
        case .int(let i): return .int(i)
        case .double(let d): return .double(d)
        default: return self
        }
    }

    /// OTTL's comparison rules: `nil` equals only `nil`; numbers compare across int and float; strings
    /// compare in byte order; booleans only for equality; values of different types are only unequal.
    static func compare(_ a: OTTLValue, _ op: OTTLCondition.Comparison, _ b: OTTLValue) -> Bool {
        switch (a, b) {
        case (.nil, .nil): return op == .equal || op == .lessOrEqual || op == .greaterOrEqual
        case (.nil, _), (_, .nil): return op == .notEqual
        case (.string(let x), .string(let y)):
            return self.order(Array(x.utf8).lexicographicallyPrecedes(Array(y.utf8)) ? -1 : x == y ? 0 : 1, op)
        case (.bool(let x), .bool(let y)):
            // pkg/ottl orders booleans with false before true.
            return self.order(x == y ? 0 : (!x && y) ? -1 : 1, op)
        case (.int(let x), .int(let y)): return self.order(x < y ? -1 : x == y ? 0 : 1, op)
        case (.int(let x), .double(let y)): return self.order(Double(x) < y ? -1 : Double(x) == y ? 0 : 1, op)
        case (.double(let x), .int(let y)): return self.order(x < Double(y) ? -1 : x == Double(y) ? 0 : 1, op)
        case (.double(let x), .double(let y)): return self.order(x < y ? -1 : x == y ? 0 : 1, op)
        case (.attribute(let x), .attribute(let y)):
            switch op {
            case .equal: return x == y
            case .notEqual: return x != y
            default: return false
            }
        default: return op == .notEqual
        }
    }

    private static func order(_ sign: Int, _ op: OTTLCondition.Comparison) -> Bool {
        switch op {
        case .equal: return sign == 0
        case .notEqual: return sign != 0
        case .less: return sign < 0
        case .lessOrEqual: return sign <= 0
        case .greater: return sign > 0
        case .greaterOrEqual: return sign >= 0
        }
    }
}

extension StatusCode {
    /// A bit per code, for sets of codes.
    var bit: UInt8 {
        switch self {
        case .unset: 1
        case .ok: 2
        case .error: 4
        }
    }

    /// The OTLP numeric code (UNSET 0, OK 1, ERROR 2).
    var otlpCode: Int64 {
        switch self {
        case .unset: 0
        case .ok: 1
        case .error: 2
        }
    }
}

/// A parsed W3C `tracestate` header (list-members `key=value`, comma-separated, at most 32).
struct W3CTraceState: Sendable, Hashable {
    var members: [(key: String, value: String)]

    static func == (lhs: W3CTraceState, rhs: W3CTraceState) -> Bool {
        lhs.members.map(\.key) == rhs.members.map(\.key) && lhs.members.map(\.value) == rhs.members.map(\.value)
    }
    func hash(into hasher: inout Hasher) { hasher.combine(self.members.map(\.key)) }

    func value(for key: String) -> String? { self.members.first { $0.key == key }?.value }

    /// Parses a header as otel-go's `ParseTraceState` does; `nil` when it is not valid (the collector then
    /// finds no value in it): members split at commas, empty ones skipped, the key trimmed of leading and
    /// the value of trailing spaces and tabs, keys `[a-z][_0-9a-z-*/]{0,255}` or
    /// `[a-z0-9][_0-9a-z-*/]{0,240}@[a-z][_0-9a-z-*/]{0,13}`, values of 1 to 256 printable characters other
    /// than `,` and `=` not ending in a space, no duplicate keys, at most 32 members.
    static func parse(_ text: String) -> W3CTraceState? {
        var members: [(key: String, value: String)] = []
        for raw in text.split(separator: ",", omittingEmptySubsequences: true) {
            guard let equals = raw.firstIndex(of: "=") else { return nil }
            var key = raw[..<equals]
            while let first = key.first, first == " " || first == "\t" { key = key.dropFirst() }
            var value = raw[raw.index(after: equals)...]
            while let last = value.last, last == " " || last == "\t" { value = value.dropLast() }
            guard self.validKey(Array(key.utf8)), self.validValue(Array(value.utf8)),
                !members.contains(where: { $0.key == key })
            else { return nil }
            members.append((String(key), String(value)))
            if members.count > 32 { return nil }
        }
        return W3CTraceState(members: members)
    }

    private static func validKey(_ key: [UInt8]) -> Bool {
        func part(_ bytes: ArraySlice<UInt8>, limit: Int, digitFirst: Bool) -> Bool {
            guard let first = bytes.first, bytes.count <= limit + 1 else { return false }
            let lower: ClosedRange<UInt8> = 0x61...0x7a
            let digits: ClosedRange<UInt8> = 0x30...0x39
            guard lower.contains(first) || (digitFirst && digits.contains(first)) else { return false }
            return bytes.dropFirst().allSatisfy {
                lower.contains($0) || digits.contains($0) || [0x5f, 0x2d, 0x2a, 0x2f].contains($0)
            }
        }
        if let at = key.firstIndex(of: 0x40) {
            return part(key[..<at], limit: 240, digitFirst: true)
                && part(key[(at + 1)...], limit: 13, digitFirst: false)
        }
        return part(key[...], limit: 255, digitFirst: false)
    }

    private static func validValue(_ bytes: [UInt8]) -> Bool {
        guard !bytes.isEmpty, bytes.count <= 256, bytes.last != 0x20 else { return false }
        return bytes.allSatisfy { (0x20...0x7e).contains($0) && $0 != 0x2c && $0 != 0x3d }
    }
}
