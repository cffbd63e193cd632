import Foundation

/// Decodes OTLP/JSON trace data (`ExportTraceServiceRequest` or `TracesData`, as OTLP/HTTP bodies and the
/// collector's file exporter write it) into span batches: hex trace and span IDs, 64-bit integers as strings
/// or numbers, enums as numbers (or their names), attribute values of every OTLP type, unknown fields
/// skipped. A single-pass reader over the bytes that builds spans directly: trace files run to gigabytes,
/// and a generic JSON tree (JSONSerialization) costs ten times as much.
public enum OTLPJSON {
    /// Why a document could not be decoded, and where in it.
    public struct DecodingError: Error, Sendable, Hashable, CustomStringConvertible {
        /// What is wrong.
        public var message: String
        public var description: String { self.message }
    }

    /// OTLP span kinds by their enum names.
    public static let kinds = [
        "SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2, "SPAN_KIND_CLIENT": 3,
        "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5,
    ]
    static let statusCodes = ["STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2]

    /// Decodes one JSON document.
    public static func decode(_ data: Data) throws(DecodingError) -> [SpanBatch] {
        let result: Result<[SpanBatch], DecodingError> = data.withUnsafeBytes { raw in
            do throws(DecodingError) {
                return .success(try self.decode(bytes: raw))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// Decodes one JSON document from memory the caller keeps alive for the call.
    public static func decode(bytes: UnsafeRawBufferPointer) throws(DecodingError) -> [SpanBatch] {
        var reader = Reader(bytes: bytes.bindMemory(to: UInt8.self))
        return try reader.document()
    }

    /// A reader over one document's bytes.
    struct Reader {
        let bytes: UnsafeBufferPointer<UInt8>
        var position = 0
        /// Where in the document the reader is, for messages: `resourceSpans[0].scopeSpans[1].spans[3]`
        /// (-1: not inside one). Kept as numbers: the text is only built for an error.
        var resourceIndex = -1
        var scopeIndex = -1
        var spanIndex = -1

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        // MARK: Schema

        mutating func document() throws(DecodingError) -> [SpanBatch] {
            var batches: [SpanBatch] = []
            var sawSpans = false
            var sawAnyKey = false
            // `null` stands for an absent message inside a document, but a document itself is an object.
            self.skipWhitespace()
            guard self.peek() == UInt8(ascii: "{") else {
                throw self.error("expected `{`: a trace file is a JSON object with `resourceSpans` (OTLP JSON)")
            }
            try self.object { reader, key throws(DecodingError) in
                sawAnyKey = true
                if key == "resourceSpans" || key == "resource_spans" {
                    sawSpans = true
                    var index = 0
                    try reader.array { reader throws(DecodingError) in
                        (reader.resourceIndex, reader.scopeIndex, reader.spanIndex) = (index, -1, -1)
                        try reader.resourceSpans(into: &batches)
                        index += 1
                    }
                } else {
                    try reader.skipValue()
                }
            }
            self.skipWhitespace()
            guard self.position == self.bytes.count else { throw self.error("unexpected data after the document") }
            if !sawSpans, sawAnyKey { throw DecodingError(message: "no `resourceSpans` (is this OTLP trace data?)") }
            return batches
        }

        mutating func resourceSpans(into batches: inout [SpanBatch]) throws(DecodingError) {
            var resource: Attributes = [:]
            var pending: [(InstrumentationScope, [(TraceID, TraceSpan)])] = []
            try self.object { reader, key throws(DecodingError) in
                switch key {
                case "resource":
                    try reader.object { reader, key throws(DecodingError) in
                        if key == "attributes" {
                            resource = try reader.attributes("resource.attributes")
                        } else {
                            try reader.skipValue()
                        }
                    }
                case "scopeSpans", "scope_spans", "instrumentationLibrarySpans":
                    var index = 0
                    try reader.array { reader throws(DecodingError) in
                        (reader.scopeIndex, reader.spanIndex) = (index, -1)
                        pending.append(try reader.scopeSpans())
                        index += 1
                    }
                    reader.scopeIndex = -1
                default:
                    try reader.skipValue()
                }
            }
            // The resource may come after its spans in the document.
            for (scope, spans) in pending where !spans.isEmpty {
                batches.append(SpanBatch(resource: resource, scope: scope, spans: spans))
            }
        }

        mutating func scopeSpans() throws(DecodingError) -> (InstrumentationScope, [(TraceID, TraceSpan)]) {
            var scope = InstrumentationScope()
            var spans: [(TraceID, TraceSpan)] = []
            try self.object { reader, key throws(DecodingError) in
                switch key {
                case "scope", "instrumentationLibrary":
                    try reader.object { reader, key throws(DecodingError) in
                        switch key {
                        case "name": scope.name = try reader.string()
                        case "version": scope.version = try reader.string()
                        case "attributes": scope.attributes = try reader.attributes("scope.attributes")
                        default: try reader.skipValue()
                        }
                    }
                case "spans":
                    var index = 0
                    try reader.array { reader throws(DecodingError) in
                        reader.spanIndex = index
                        spans.append(try reader.span())
                        index += 1
                    }
                    reader.spanIndex = -1
                default:
                    try reader.skipValue()
                }
            }
            return (scope, spans)
        }

        mutating func span() throws(DecodingError) -> (TraceID, TraceSpan) {
            var traceID: TraceID?
            var span = TraceSpan(startNanos: 0, endNanos: 0)
            try self.object { reader, key throws(DecodingError) in
                switch key {
                case "traceId":
                    let bytes = try reader.id("traceId", length: 16)
                    guard bytes.count == 16 else {
                        throw reader.fieldError("traceId", "expected 32 hexadecimal digits")
                    }
                    traceID = TraceID(bytes: bytes)
                case "spanId": span.spanID = try reader.id("spanId", length: 8)
                case "parentSpanId": span.parentSpanID = try reader.id("parentSpanId", length: 8)
                case "name": span.name = try reader.string()
                case "kind": span.kind = Int32(try reader.enumValue("kind", OTLPJSON.kinds))
                case "traceState": span.traceState = try reader.string()
                case "startTimeUnixNano": span.startNanos = try reader.unsigned("startTimeUnixNano")
                case "endTimeUnixNano": span.endNanos = try reader.unsigned("endTimeUnixNano")
                case "flags":
                    // fixed32: a wider value is refused, as protojson does, not cut to its low bits.
                    guard let flags = UInt32(exactly: try reader.unsigned("flags")) else {
                        throw reader.fieldError("flags", "expected a number that fits in 32 bits")
                    }
                    span.flags = flags
                case "attributes": span.attributes = try reader.attributes("attributes")
                case "status":
                    try reader.object { reader, key throws(DecodingError) in
                        switch key {
                        case "code":
                            switch try reader.enumValue("status.code", OTLPJSON.statusCodes) {
                            case 1: span.status = .ok
                            case 2: span.status = .error
                            default: span.status = .unset
                            }
                        case "message": span.statusMessage = try reader.string()
                        default: try reader.skipValue()
                        }
                    }
                case "events":
                    try reader.array { reader throws(DecodingError) in
                        var event = SpanEvent(name: "")
                        try reader.object { reader, key throws(DecodingError) in
                            switch key {
                            case "name": event.name = try reader.string()
                            case "timeUnixNano": event.timeNanos = try reader.unsigned("events.timeUnixNano")
                            case "attributes": event.attributes = try reader.attributes("events.attributes")
                            default: try reader.skipValue()
                            }
                        }
                        span.events.append(event)
                    }
                default:
                    try reader.skipValue()
                }
            }
            guard let traceID else { throw self.fieldError("traceId", "missing") }
            return (traceID, span)
        }

        mutating func attributes(_ field: String) throws(DecodingError) -> Attributes {
            var attributes: Attributes = [:]
            try self.array { reader throws(DecodingError) in
                var key: String?
                var value = AttributeValue.string("")
                try reader.object { reader, name throws(DecodingError) in
                    switch name {
                    case "key": key = try reader.string()
                    case "value": value = try reader.anyValue(field)
                    default: try reader.skipValue()
                    }
                }
                guard let key else { throw reader.fieldError(field, "an entry without a `key`") }
                attributes[key] = value
            }
            return attributes
        }

        mutating func anyValue(_ field: String) throws(DecodingError) -> AttributeValue {
            var value = AttributeValue.string("")  // An empty AnyValue reads as an empty value.
            try self.object { reader, kind throws(DecodingError) in
                switch kind {
                case "stringValue": value = .string(try reader.string())
                case "boolValue":
                    reader.skipWhitespace()
                    if reader.peek() == UInt8(ascii: "\"") {
                        let text = try reader.string()
                        guard let flag = Bool(text) else {
                            throw reader.fieldError(field, "`boolValue` is not a boolean")
                        }
                        value = .bool(flag)
                    } else {
                        value = .bool(try reader.literalBool())
                    }
                case "intValue":
                    let number = try reader.numberText(field)
                    guard let parsed = Int64(number) else {
                        throw reader.fieldError(field, "`intValue` is not an integer")
                    }
                    value = .int(parsed)
                case "doubleValue":
                    let number = try reader.numberText(field)
                    guard let parsed = Double(number) else {
                        throw reader.fieldError(field, "`doubleValue` is not a number")
                    }
                    value = .double(parsed)
                case "bytesValue":
                    guard let data = Data(base64Encoded: try reader.string()) else {
                        throw reader.fieldError(field, "`bytesValue` is not base64")
                    }
                    value = .bytes([UInt8](data))
                case "arrayValue":
                    var values: [AttributeValue] = []
                    try reader.object { reader, name throws(DecodingError) in
                        if name == "values" {
                            try reader.array { reader throws(DecodingError) in values.append(try reader.anyValue(field))
                            }
                        } else {
                            try reader.skipValue()
                        }
                    }
                    value = .array(values)
                case "kvlistValue":
                    var entries: Attributes = [:]
                    try reader.object { reader, name throws(DecodingError) in
                        if name == "values" { entries = try reader.attributes(field) } else { try reader.skipValue() }
                    }
                    value = .map(entries)
                default:
                    throw reader.fieldError(field, "unknown value type `\(kind)`")
                }
            }
            return value
        }

        /// A hex ID (or base64, the protobuf JSON mapping of bytes); empty for `""`.
        mutating func id(_ field: String, length: Int) throws(DecodingError) -> [UInt8] {
            self.skipWhitespace()
            guard let range = try self.rawString() else {
                throw self.fieldError(field, "expected \(length * 2) hexadecimal digits")
            }
            if range.isEmpty { return [] }
            var bytes: [UInt8] = []
            if range.count == length * 2 {
                bytes.reserveCapacity(length)
                var index = range.lowerBound
                while index < range.upperBound {
                    guard let high = Self.nibble(self.bytes[index]), let low = Self.nibble(self.bytes[index + 1]) else {
                        bytes = []
                        break
                    }
                    bytes.append(high << 4 | low)
                    index += 2
                }
                if bytes.count == length { return bytes }
            }
            let text = String(decoding: UnsafeBufferPointer(rebasing: self.bytes[range]), as: UTF8.self)
            if let data = Data(base64Encoded: text), data.count == length { return [UInt8](data) }
            throw self.fieldError(field, "expected \(length * 2) hexadecimal digits, not `\(text)`")
        }

        static func nibble(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
            default: nil
            }
        }

        /// An unsigned 64-bit number written as a string (the OTLP/JSON form) or a JSON number.
        mutating func unsigned(_ field: String) throws(DecodingError) -> UInt64 {
            let text = try self.numberText(field)
            guard let value = UInt64(text) else { throw self.fieldError(field, "`\(text)` is not a whole number") }
            return value
        }

        /// An enum as a number or its name.
        mutating func enumValue(_ field: String, _ names: [String: Int]) throws(DecodingError) -> Int {
            self.skipWhitespace()
            if self.peek() == UInt8(ascii: "\"") {
                let text = try self.string()
                if let known = names[text] { return known }
                if let number = Int32(text) { return Int(number) }
                throw self.fieldError(field, "unknown value `\(text)`")
            }
            let text = try self.numberText(field)
            // Enums are 32-bit in protobuf, and Go's protojson refuses anything wider.
            guard let number = Int32(text) else {
                throw self.fieldError(field, "expected a number that fits in 32 bits, not `\(text)`")
            }
            return Int(number)
        }

        /// The text of a number, quoted or not.
        mutating func numberText(_ field: String) throws(DecodingError) -> String {
            self.skipWhitespace()
            if self.peek() == UInt8(ascii: "\"") { return try self.string() }
            let start = self.position
            scan: while self.position < self.bytes.count {
                switch self.bytes[self.position] {
                case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "."),
                    UInt8(ascii: "e"), UInt8(ascii: "E"):
                    self.position += 1
                default: break scan
                }
            }
            let text = UnsafeBufferPointer(rebasing: self.bytes[start..<self.position])
            guard Self.isJSONNumber(text) else { throw self.fieldError(field, "expected a number") }
            return String(decoding: text, as: UTF8.self)
        }

        /// JSON's number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`. Go's encoding/json
        /// (the collector's) refuses anything else, `00.25`, `1.`, `+1` and `1e` among them, so this does too.
        static func isJSONNumber(_ text: UnsafeBufferPointer<UInt8>) -> Bool {
            var index = 0
            func digits() -> Int {
                let start = index
                while index < text.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(text[index]) { index += 1 }
                return index - start
            }
            if index < text.count, text[index] == UInt8(ascii: "-") { index += 1 }
            guard index < text.count else { return false }
            if text[index] == UInt8(ascii: "0") {
                index += 1
            } else if digits() == 0 {
                return false
            }
            if index < text.count, text[index] == UInt8(ascii: ".") {
                index += 1
                guard digits() > 0 else { return false }
            }
            if index < text.count, text[index] == UInt8(ascii: "e") || text[index] == UInt8(ascii: "E") {
                index += 1
                if index < text.count, text[index] == UInt8(ascii: "+") || text[index] == UInt8(ascii: "-") {
                    index += 1
                }
                guard digits() > 0 else { return false }
            }
            return index == text.count
        }

        // MARK: JSON

        mutating func skipWhitespace() {
            while self.position < self.bytes.count {
                switch self.bytes[self.position] {
                case 0x20, 0x0a, 0x0d, 0x09: self.position += 1
                default: return
                }
            }
        }

        func peek() -> UInt8? { self.position < self.bytes.count ? self.bytes[self.position] : nil }

        mutating func expect(_ byte: UInt8) throws(DecodingError) {
            self.skipWhitespace()
            guard self.peek() == byte else {
                throw self.error("expected `\(Character(Unicode.Scalar(byte)))`")
            }
            self.position += 1
        }

        /// Calls `body` for each member of an object with its key; the body must consume the value.
        mutating func object(_ body: (inout Reader, String) throws(DecodingError) -> Void) throws(DecodingError) {
            self.skipWhitespace()
            if self.matchLiteral("null") { return }
            try self.expect(UInt8(ascii: "{"))
            self.skipWhitespace()
            if self.peek() == UInt8(ascii: "}") {
                self.position += 1
                return
            }
            while true {
                let key = try self.string()
                try self.expect(UInt8(ascii: ":"))
                try body(&self, key)
                self.skipWhitespace()
                guard let next = self.peek() else { throw self.error("the document ends inside an object") }
                self.position += 1
                if next == UInt8(ascii: "}") { return }
                guard next == UInt8(ascii: ",") else { throw self.error("expected `,` or `}`", back: 1) }
            }
        }

        /// Calls `body` for each element of an array; the body must consume the element.
        mutating func array(_ body: (inout Reader) throws(DecodingError) -> Void) throws(DecodingError) {
            self.skipWhitespace()
            if self.matchLiteral("null") { return }
            try self.expect(UInt8(ascii: "["))
            self.skipWhitespace()
            if self.peek() == UInt8(ascii: "]") {
                self.position += 1
                return
            }
            while true {
                try body(&self)
                self.skipWhitespace()
                guard let next = self.peek() else { throw self.error("the document ends inside a list") }
                self.position += 1
                if next == UInt8(ascii: "]") { return }
                guard next == UInt8(ascii: ",") else { throw self.error("expected `,` or `]`", back: 1) }
            }
        }

        mutating func matchLiteral(_ literal: StaticString) -> Bool {
            let count = literal.utf8CodeUnitCount
            guard self.position + count <= self.bytes.count else { return false }
            let pointer = literal.utf8Start
            for offset in 0..<count where self.bytes[self.position + offset] != pointer[offset] { return false }
            self.position += count
            return true
        }

        mutating func literalBool() throws(DecodingError) -> Bool {
            if self.matchLiteral("true") { return true }
            if self.matchLiteral("false") { return false }
            throw self.error("expected true or false")
        }

        /// The byte range of a string's contents; `nil` (and the reader back at the quote) when the string has
        /// escapes, which ``string()`` decodes.
        mutating func rawString() throws(DecodingError) -> Range<Int>? {
            try self.expect(UInt8(ascii: "\""))
            let start = self.position
            guard let base = self.bytes.baseAddress,
                let found = memchr(base + start, Int32(UInt8(ascii: "\"")), self.bytes.count - start)
            else { throw self.error("the document ends inside a string") }
            let end = base.distance(to: found.assumingMemoryBound(to: UInt8.self))
            // A backslash before the quote means escapes (and perhaps an escaped quote): decode slowly.
            if memchr(base + start, Int32(UInt8(ascii: "\\")), end - start) != nil {
                self.position = start - 1
                return nil
            }
            for index in start..<end where self.bytes[index] < 0x20 {
                self.position = index
                throw self.error("a control character inside a string")
            }
            self.position = end + 1
            return start..<end
        }

        mutating func string() throws(DecodingError) -> String {
            self.skipWhitespace()
            guard let range = try self.rawString() else { return try self.escapedString() }
            return String(decoding: UnsafeBufferPointer(rebasing: self.bytes[range]), as: UTF8.self)
        }

        mutating func escapedString() throws(DecodingError) -> String {
            try self.expect(UInt8(ascii: "\""))
            var out: [UInt8] = []
            while self.position < self.bytes.count {
                let byte = self.bytes[self.position]
                self.position += 1
                switch byte {
                case UInt8(ascii: "\""):
                    return String(decoding: out, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    guard let escape = self.peek() else { break }
                    self.position += 1
                    switch escape {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escape)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0c)
                    case UInt8(ascii: "n"): out.append(0x0a)
                    case UInt8(ascii: "r"): out.append(0x0d)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        var scalar = try self.hex4()
                        if (0xD800..<0xDC00).contains(scalar) {
                            // A surrogate pair.
                            guard self.matchLiteral("\\u") else { throw self.error("an unpaired surrogate") }
                            let low = try self.hex4()
                            guard (0xDC00..<0xE000).contains(low) else { throw self.error("an unpaired surrogate") }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        }
                        guard let unicode = Unicode.Scalar(scalar) else { throw self.error("an invalid \\u escape") }
                        out.append(contentsOf: Array(String(Character(unicode)).utf8))
                    default:
                        throw self.error("an invalid escape `\\\(Character(Unicode.Scalar(escape)))`")
                    }
                default:
                    if byte < 0x20 { throw self.error("a control character inside a string") }
                    out.append(byte)
                }
            }
            throw self.error("the document ends inside a string")
        }

        mutating func hex4() throws(DecodingError) -> UInt32 {
            guard self.position + 4 <= self.bytes.count else { throw self.error("a short \\u escape") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                guard let nibble = Self.nibble(self.bytes[self.position]) else {
                    throw self.error("an invalid \\u escape")
                }
                value = value << 4 | UInt32(nibble)
                self.position += 1
            }
            return value
        }

        /// Skips any JSON value.
        mutating func skipValue() throws(DecodingError) {
            self.skipWhitespace()
            guard let byte = self.peek() else { throw self.error("expected a value") }
            switch byte {
            case UInt8(ascii: "{"): try self.object { reader, _ throws(DecodingError) in try reader.skipValue() }
            case UInt8(ascii: "["): try self.array { reader throws(DecodingError) in try reader.skipValue() }
            case UInt8(ascii: "\""): _ = try self.string()
            case UInt8(ascii: "t"), UInt8(ascii: "f"): _ = try self.literalBool()
            case UInt8(ascii: "n"):
                guard self.matchLiteral("null") else { throw self.error("expected a value") }
            default: _ = try self.numberText("value")
            }
        }

        func error(_ message: String, back: Int = 0) -> DecodingError {
            DecodingError(message: "invalid JSON at byte \(self.position - back + 1): \(message)")
        }

        func fieldError(_ field: String, _ message: String) -> DecodingError {
            var path: [String] = []
            if self.resourceIndex >= 0 { path.append("resourceSpans[\(self.resourceIndex)]") }
            if self.scopeIndex >= 0 { path.append("scopeSpans[\(self.scopeIndex)]") }
            if self.spanIndex >= 0 { path.append("spans[\(self.spanIndex)]") }
            return DecodingError(message: (path + [field]).joined(separator: ".") + ": " + message)
        }
    }
}
