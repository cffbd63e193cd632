/// A trace as the tail-sampling processor sees it when it decides: every span received for one trace ID,
/// in the order they arrived, with their resources and scopes.
///
/// Resources and scopes are stored once and referenced by index from each span, as OTLP batches carry
/// them; the policies that read "resource or span" attributes test each distinct resource once, which
/// gives the same answer as testing every batch's copy.
public struct SimulatedTrace: Sendable, Hashable {
    /// The 16-byte trace ID.
    public var traceID: TraceID
    /// Resources of the batches the spans came in.
    public var resources: [Attributes]
    /// Instrumentation scopes of the spans.
    public var scopes: [InstrumentationScope]
    /// Spans in arrival order (the collector walks them in this order).
    public var spans: [TraceSpan]
    /// The trace's size in bytes as the collector measures it for `bytes_limiting` (the OTLP protobuf size
    /// of its spans); when the input does not say, ``estimatedProtobufSize()`` gives it.
    public var sizeBytes: Int64

    /// Creates a trace; `sizeBytes` defaults to the estimated protobuf size.
    public init(
        traceID: TraceID,
        resources: [Attributes] = [[:]],
        scopes: [InstrumentationScope] = [InstrumentationScope()],
        spans: [TraceSpan],
        sizeBytes: Int64? = nil
    ) {
        self.traceID = traceID
        self.resources = resources
        self.scopes = scopes
        self.spans = spans
        self.sizeBytes = 0
        self.sizeBytes = sizeBytes ?? self.estimatedProtobufSize()
    }
}

/// A 16-byte trace ID, held as two big-endian halves.
public struct TraceID: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Bytes 0 to 7, big-endian.
    public let high: UInt64
    /// Bytes 8 to 15, big-endian.
    public let low: UInt64

    /// Creates an ID from its halves.
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Creates an ID from 16 bytes (shorter input is left-padded with zeros, longer is cut to its last 16).
    public init(bytes: [UInt8]) {
        let padded =
            bytes.count >= 16 ? Array(bytes.suffix(16)) : [UInt8](repeating: 0, count: 16 - bytes.count) + bytes
        self.high = padded[0..<8].reduce(0) { $0 << 8 | UInt64($1) }
        self.low = padded[8..<16].reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// Parses 32 hexadecimal digits (either case).
    public init?(hex: some StringProtocol) {
        guard hex.utf8.count == 32, let bytes = HexBytes.decode(hex) else { return nil }
        self.init(bytes: bytes)
    }

    /// The 16 bytes.
    public var bytes: [UInt8] {
        (0..<16).map { index in
            let half = index < 8 ? self.high : self.low
            return UInt8(truncatingIfNeeded: half >> (8 * (7 - UInt64(index % 8))))
        }
    }

    /// Calls `body` with each of the 16 bytes in order, without allocating.
    @inline(__always)
    func forEachByte(_ body: (UInt8) -> Void) {
        var shift: UInt64 = 56
        while true {
            body(UInt8(truncatingIfNeeded: self.high >> shift))
            if shift == 0 { break }
            shift -= 8
        }
        shift = 56
        while true {
            body(UInt8(truncatingIfNeeded: self.low >> shift))
            if shift == 0 { break }
            shift -= 8
        }
    }

    /// Lower-case hexadecimal, as OTLP JSON writes trace IDs.
    public var hex: String { HexBytes.encode(self.bytes) }

    public var description: String { self.hex }

    public static func < (lhs: TraceID, rhs: TraceID) -> Bool { (lhs.high, lhs.low) < (rhs.high, rhs.low) }
}

/// An attribute value with OTLP's types.
public enum AttributeValue: Sendable, Hashable {
    case string(String)
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case bytes([UInt8])
    case array([AttributeValue])
    case map([String: AttributeValue])

    /// What the collector's `Value.Str()` returns: the string, or "" for any other type.
    var collectorStr: String {
        if case .string(let value) = self { return value }
        return ""
    }

    /// What `Value.Int()` returns: the integer, or 0 for any other type (a double reads as 0).
    var collectorInt: Int64 {
        if case .int(let value) = self { return value }
        return 0
    }

    /// What `Value.Bool()` returns: the boolean, or false for any other type.
    var collectorBool: Bool {
        if case .bool(let value) = self { return value }
        return false
    }

    /// A short rendering for explanations.
    public var display: String {
        switch self {
        case .string(let value): return "\"\(value)\""
        case .bool(let value): return String(value)
        case .int(let value): return String(value)
        case .double(let value): return String(value)
        case .bytes(let value): return "bytes(\(value.count))"
        case .array(let values): return "[" + values.map(\.display).joined(separator: ", ") + "]"
        case .map(let entries): return "{" + entries.keys.sorted().joined(separator: ", ") + "}"
        }
    }
}

/// Attributes by key.
public typealias Attributes = [String: AttributeValue]

/// An instrumentation scope.
public struct InstrumentationScope: Sendable, Hashable {
    /// Scope name.
    public var name: String
    /// Scope version.
    public var version: String
    /// Scope attributes (read only by OTTL conditions).
    public var attributes: Attributes

    /// Creates a scope.
    public init(name: String = "", version: String = "", attributes: Attributes = [:]) {
        self.name = name
        self.version = version
        self.attributes = attributes
    }
}

/// One span.
public struct TraceSpan: Sendable, Hashable {
    /// 8-byte span ID.
    public var spanID: [UInt8]
    /// Parent span ID; empty for a root span.
    public var parentSpanID: [UInt8]
    /// Span name.
    public var name: String
    /// OTLP span kind (0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    public var kind: Int32
    /// Start, Unix nanoseconds.
    public var startNanos: UInt64
    /// End, Unix nanoseconds.
    public var endNanos: UInt64
    /// Status code.
    public var status: StatusCode
    /// Status message.
    public var statusMessage: String
    /// Span attributes.
    public var attributes: Attributes
    /// W3C `tracestate` as received.
    public var traceState: String
    /// OTLP span flags; the low 8 bits are the W3C trace flags (0x01 sampled).
    public var flags: UInt32
    /// Span events.
    public var events: [SpanEvent]
    /// Index into ``SimulatedTrace/resources``.
    public var resource: Int
    /// Index into ``SimulatedTrace/scopes``.
    public var scope: Int

    /// Creates a span.
    public init(
        spanID: [UInt8] = [],
        parentSpanID: [UInt8] = [],
        name: String = "",
        kind: Int32 = 0,
        startNanos: UInt64,
        endNanos: UInt64,
        status: StatusCode = .unset,
        statusMessage: String = "",
        attributes: Attributes = [:],
        traceState: String = "",
        flags: UInt32 = 0,
        events: [SpanEvent] = [],
        resource: Int = 0,
        scope: Int = 0
    ) {
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.name = name
        self.kind = kind
        self.startNanos = startNanos
        self.endNanos = endNanos
        self.status = status
        self.statusMessage = statusMessage
        self.attributes = attributes
        self.traceState = traceState
        self.flags = flags
        self.events = events
        self.resource = resource
        self.scope = scope
    }

    /// True for a span without a parent.
    public var isRoot: Bool { self.parentSpanID.isEmpty || self.parentSpanID.allSatisfy { $0 == 0 } }
}

/// A span event.
public struct SpanEvent: Sendable, Hashable {
    /// Event name.
    public var name: String
    /// Time, Unix nanoseconds.
    public var timeNanos: UInt64
    /// Event attributes.
    public var attributes: Attributes

    /// Creates an event.
    public init(name: String, timeNanos: UInt64 = 0, attributes: Attributes = [:]) {
        self.name = name
        self.timeNanos = timeNanos
        self.attributes = attributes
    }
}

/// Hexadecimal encoding for IDs.
public enum HexBytes {
    /// Decodes hexadecimal digits (either case); `nil` for anything else or an odd count.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count / 2)
        var high: UInt8?
        for char in text.utf8 {
            let nibble: UInt8
            switch char {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = char - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = char - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): nibble = char - UInt8(ascii: "A") + 10
            default: return nil
            }
            if let value = high {
                bytes.append(value << 4 | nibble)
                high = nil
            } else {
                high = nibble
            }
        }
        return high == nil ? bytes : nil
    }

    /// Lower-case hexadecimal.
    public static func encode(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
