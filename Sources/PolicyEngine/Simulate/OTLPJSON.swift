import Foundation

/// Decodes OTLP/JSON trace data (`ExportTraceServiceRequest` or `TracesData`, as OTLP/HTTP bodies and the
/// collector's file exporter write it) into span batches: hex trace and span IDs, 64-bit integers as strings
/// or numbers, enums as numbers (or their names), attribute values of every OTLP type.
public enum OTLPJSON {
    /// Why a document could not be decoded, and where in it.
    public struct DecodingError: Error, Sendable, Hashable, CustomStringConvertible {
        /// What is wrong.
        public var message: String
        public var description: String { self.message }
    }

    /// Decodes one JSON document.
    public static func decode(_ data: Data) throws(DecodingError) -> [SpanBatch] {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data, options: [])
        } catch {
            throw DecodingError(message: "not valid JSON: \(Self.reason(error))")
        }
        guard let root = object as? [String: Any] else {
            throw DecodingError(message: "expected an object with `resourceSpans`")
        }
        guard let resourceSpans = root["resourceSpans"] ?? root["resource_spans"] else {
            if root.isEmpty { return [] }
            throw DecodingError(message: "no `resourceSpans` (is this OTLP trace data?)")
        }
        guard let list = resourceSpans as? [Any] else { throw DecodingError(message: "`resourceSpans` is not a list") }
        var batches: [SpanBatch] = []
        for (r, item) in list.enumerated() {
            let path = "resourceSpans[\(r)]"
            guard let entry = item as? [String: Any] else { throw DecodingError(message: "\(path) is not an object") }
            let resource = try Self.attributes((entry["resource"] as? [String: Any])?["attributes"], path + ".resource")
            let scopes = entry["scopeSpans"] ?? entry["scope_spans"] ?? entry["instrumentationLibrarySpans"]
            guard let scopeList = (scopes ?? [Any]()) as? [Any] else {
                throw DecodingError(message: "\(path).scopeSpans is not a list")
            }
            for (s, scopeItem) in scopeList.enumerated() {
                let scopePath = "\(path).scopeSpans[\(s)]"
                guard let scopeEntry = scopeItem as? [String: Any] else {
                    throw DecodingError(message: "\(scopePath) is not an object")
                }
                let scopeObject = (scopeEntry["scope"] ?? scopeEntry["instrumentationLibrary"]) as? [String: Any] ?? [:]
                let scope = InstrumentationScope(
                    name: scopeObject["name"] as? String ?? "",
                    version: scopeObject["version"] as? String ?? "",
                    attributes: try Self.attributes(scopeObject["attributes"], scopePath + ".scope")
                )
                guard let spans = (scopeEntry["spans"] ?? [Any]()) as? [Any] else {
                    throw DecodingError(message: "\(scopePath).spans is not a list")
                }
                var decoded: [(TraceID, TraceSpan)] = []
                decoded.reserveCapacity(spans.count)
                for (i, spanItem) in spans.enumerated() {
                    decoded.append(try Self.span(spanItem, "\(scopePath).spans[\(i)]"))
                }
                if !decoded.isEmpty { batches.append(SpanBatch(resource: resource, scope: scope, spans: decoded)) }
            }
        }
        return batches
    }

    private static func span(_ item: Any, _ path: String) throws(DecodingError) -> (TraceID, TraceSpan) {
        guard let object = item as? [String: Any] else { throw DecodingError(message: "\(path) is not an object") }
        guard let traceHex = object["traceId"] as? String, let traceID = Self.traceID(traceHex) else {
            throw DecodingError(message: "\(path).traceId: expected 32 hexadecimal digits")
        }
        var span = TraceSpan(
            startNanos: try Self.unsigned(object["startTimeUnixNano"], "\(path).startTimeUnixNano"),
            endNanos: try Self.unsigned(object["endTimeUnixNano"], "\(path).endTimeUnixNano")
        )
        span.spanID = try Self.id(object["spanId"], "\(path).spanId")
        span.parentSpanID = try Self.id(object["parentSpanId"], "\(path).parentSpanId")
        span.name = object["name"] as? String ?? ""
        span.kind = Int32(try Self.enumValue(object["kind"], Self.kinds, "\(path).kind"))
        span.traceState = object["traceState"] as? String ?? ""
        span.flags = UInt32(truncatingIfNeeded: try Self.unsigned(object["flags"], "\(path).flags"))
        span.attributes = try Self.attributes(object["attributes"], path)
        if let status = object["status"] as? [String: Any] {
            switch try Self.enumValue(status["code"], Self.statusCodes, "\(path).status.code") {
            case 1: span.status = .ok
            case 2: span.status = .error
            default: span.status = .unset
            }
            span.statusMessage = status["message"] as? String ?? ""
        }
        if let events = object["events"] as? [Any] {
            for (e, eventItem) in events.enumerated() {
                let eventPath = "\(path).events[\(e)]"
                guard let event = eventItem as? [String: Any] else {
                    throw DecodingError(message: "\(eventPath) is not an object")
                }
                span.events.append(
                    SpanEvent(
                        name: event["name"] as? String ?? "",
                        timeNanos: try Self.unsigned(event["timeUnixNano"], "\(eventPath).timeUnixNano"),
                        attributes: try Self.attributes(event["attributes"], eventPath)
                    )
                )
            }
        }
        return (traceID, span)
    }

    /// OTLP span kinds by their enum names.
    public static let kinds = [
        "SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2, "SPAN_KIND_CLIENT": 3,
        "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5,
    ]
    static let statusCodes = ["STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2]

    private static func traceID(_ hex: String) -> TraceID? {
        // OTLP/JSON writes hex; some exporters write base64 (the protobuf JSON mapping of bytes).
        if let id = TraceID(hex: hex) { return id }
        if let data = Data(base64Encoded: hex), data.count == 16 { return TraceID(bytes: [UInt8](data)) }
        return nil
    }

    private static func id(_ value: Any?, _ path: String) throws(DecodingError) -> [UInt8] {
        guard let text = value as? String, !text.isEmpty else { return [] }
        if text.utf8.count == 16, let bytes = HexBytes.decode(text) { return bytes }
        if let data = Data(base64Encoded: text), data.count == 8 { return [UInt8](data) }
        throw DecodingError(message: "\(path): expected 16 hexadecimal digits")
    }

    private static func enumValue(_ value: Any?, _ names: [String: Int], _ path: String) throws(DecodingError) -> Int {
        switch value {
        case nil: return 0
        case let text as String:
            if let known = names[text] { return known }
            if let number = Int(text) { return number }
            throw DecodingError(message: "\(path): unknown value `\(text)`")
        case let number as NSNumber: return number.intValue
        default: throw DecodingError(message: "\(path): expected a number")
        }
    }

    private static func unsigned(_ value: Any?, _ path: String) throws(DecodingError) -> UInt64 {
        switch value {
        case nil: return 0
        case let text as String:
            guard let number = UInt64(text) else { throw DecodingError(message: "\(path): `\(text)` is not a number") }
            return number
        case let number as NSNumber:
            return number.uint64Value
        default:
            throw DecodingError(message: "\(path): expected a number")
        }
    }

    private static func attributes(_ value: Any?, _ path: String) throws(DecodingError) -> Attributes {
        guard let value else { return [:] }
        guard let list = value as? [Any] else { throw DecodingError(message: "\(path).attributes is not a list") }
        var attributes: Attributes = [:]
        attributes.reserveCapacity(list.count)
        for item in list {
            guard let entry = item as? [String: Any], let key = entry["key"] as? String else {
                throw DecodingError(message: "\(path).attributes: an entry without a `key`")
            }
            attributes[key] = try Self.anyValue(entry["value"], "\(path).attributes[\"\(key)\"]")
        }
        return attributes
    }

    private static func anyValue(_ value: Any?, _ path: String) throws(DecodingError) -> AttributeValue {
        guard let object = value as? [String: Any], let (kind, inner) = object.first else {
            return .string("")  // An empty AnyValue: the collector reads it as an empty value.
        }
        switch kind {
        case "stringValue":
            return .string(inner as? String ?? "")
        case "boolValue":
            guard let flag = inner as? Bool ?? (inner as? String).flatMap(Bool.init) else {
                throw DecodingError(message: "\(path): `boolValue` is not a boolean")
            }
            return .bool(flag)
        case "intValue":
            if let text = inner as? String, let number = Int64(text) { return .int(number) }
            if let number = inner as? NSNumber { return .int(number.int64Value) }
            throw DecodingError(message: "\(path): `intValue` is not an integer")
        case "doubleValue":
            if let number = inner as? NSNumber { return .double(number.doubleValue) }
            if let text = inner as? String, let number = Double(text) { return .double(number) }
            throw DecodingError(message: "\(path): `doubleValue` is not a number")
        case "bytesValue":
            guard let text = inner as? String, let data = Data(base64Encoded: text) else {
                throw DecodingError(message: "\(path): `bytesValue` is not base64")
            }
            return .bytes([UInt8](data))
        case "arrayValue":
            let values = ((inner as? [String: Any])?["values"] as? [Any]) ?? []
            var out: [AttributeValue] = []
            for (index, item) in values.enumerated() { out.append(try Self.anyValue(item, "\(path)[\(index)]")) }
            return .array(out)
        case "kvlistValue":
            return .map(try Self.attributes((inner as? [String: Any])?["values"], path))
        default:
            throw DecodingError(message: "\(path): unknown value type `\(kind)`")
        }
    }

    private static func reason(_ error: any Error) -> String {
        let nsError = error as NSError
        return (nsError.userInfo[NSDebugDescriptionErrorKey] as? String) ?? nsError.localizedDescription
    }
}
