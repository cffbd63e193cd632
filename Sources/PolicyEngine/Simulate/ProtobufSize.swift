/// The OTLP protobuf size of a trace (`ProtoMarshaler.TracesSize`, what `bytes_limiting` and
/// `maximum_trace_size_bytes` measure), computed field by field from the OTLP schema: one ResourceSpans per
/// resource, one ScopeSpans per scope within it, proto3 defaults omitted.
extension SimulatedTrace {
    /// The estimated protobuf size in bytes. Exact for a trace that arrived as one batch per resource and
    /// scope; a trace that arrived in more batches repeats its resource in each, which this does not count.
    public func estimatedProtobufSize() -> Int64 {
        // Assembled traces pair resource i with scope i (one per batch): sum per batch without hashing.
        if self.resources.count == self.scopes.count,
            self.spans.allSatisfy({ $0.resource == $0.scope && $0.resource < self.resources.count })
        {
            var sums = [Int](repeating: 0, count: self.resources.count)
            for span in self.spans {
                sums[span.resource] += Proto.lengthDelimited(
                    field: 2,
                    size: Proto.spanSize(span, traceID: self.traceID)
                )
            }
            var total = 0
            for (index, spans) in sums.enumerated() where spans > 0 {
                let scope = self.scopes[index]
                let scopeMessage =
                    Proto.string(field: 1, scope.name) + Proto.string(field: 2, scope.version)
                    + Proto.attributesSize(scope.attributes, field: 3)
                let scopeSpans = Proto.lengthDelimited(field: 1, size: scopeMessage) + spans
                let resourceSpans =
                    Proto.lengthDelimited(field: 1, size: Proto.attributesSize(self.resources[index], field: 1))
                    + Proto.lengthDelimited(field: 2, size: scopeSpans)
                total += Proto.lengthDelimited(field: 1, size: resourceSpans)
            }
            return Int64(total)
        }
        var groups: [Int: [Int: Int]] = [:]  // resource -> scope -> summed span message sizes
        for span in self.spans {
            let size = Proto.lengthDelimited(field: 2, size: Proto.spanSize(span, traceID: self.traceID))
            groups[span.resource, default: [:]][span.scope, default: 0] += size
        }
        var total = 0
        for (resourceIndex, scopes) in groups {
            var resourceSpans = 0
            let resource = self.resources.indices.contains(resourceIndex) ? self.resources[resourceIndex] : [:]
            let resourceMessage = Proto.attributesSize(resource, field: 1)
            resourceSpans += Proto.lengthDelimited(field: 1, size: resourceMessage)
            for (scopeIndex, spans) in scopes {
                let scope = self.scopes.indices.contains(scopeIndex) ? self.scopes[scopeIndex] : InstrumentationScope()
                let scopeMessage =
                    Proto.string(field: 1, scope.name) + Proto.string(field: 2, scope.version)
                    + Proto.attributesSize(scope.attributes, field: 3)
                let scopeSpans = Proto.lengthDelimited(field: 1, size: scopeMessage) + spans
                resourceSpans += Proto.lengthDelimited(field: 2, size: scopeSpans)
            }
            total += Proto.lengthDelimited(field: 1, size: resourceSpans)
        }
        return Int64(total)
    }
}

enum Proto {
    static func varintSize(_ value: UInt64) -> Int {
        var value = value
        var size = 1
        while value >= 0x80 {
            value >>= 7
            size += 1
        }
        return size
    }

    static func tagSize(_ field: Int) -> Int { self.varintSize(UInt64(field << 3)) }

    static func lengthDelimited(field: Int, size: Int) -> Int {
        self.tagSize(field) + self.varintSize(UInt64(size)) + size
    }

    static func string(field: Int, _ value: String) -> Int {
        value.isEmpty ? 0 : self.lengthDelimited(field: field, size: value.utf8.count)
    }

    static func bytes(field: Int, _ value: [UInt8]) -> Int {
        value.isEmpty ? 0 : self.lengthDelimited(field: field, size: value.count)
    }

    static func attributesSize(_ attributes: Attributes, field: Int) -> Int {
        attributes.reduce(0) { sum, entry in
            let keyValue =
                self.string(field: 1, entry.key) + self.lengthDelimited(field: 2, size: self.anyValueSize(entry.value))
            return sum + self.lengthDelimited(field: field, size: keyValue)
        }
    }

    static func anyValueSize(_ value: AttributeValue) -> Int {
        switch value {
        case .string(let text): return self.lengthDelimited(field: 1, size: text.utf8.count)
        case .bool(let flag): return self.tagSize(2) + self.varintSize(flag ? 1 : 0)
        case .int(let number): return self.tagSize(3) + self.varintSize(UInt64(bitPattern: number))
        case .double: return self.tagSize(4) + 8
        case .array(let values):
            let inner = values.reduce(0) { $0 + self.lengthDelimited(field: 1, size: self.anyValueSize($1)) }
            return self.lengthDelimited(field: 5, size: inner)
        case .map(let entries): return self.lengthDelimited(field: 6, size: self.attributesSize(entries, field: 1))
        case .bytes(let data): return self.lengthDelimited(field: 7, size: data.count)
        }
    }

    static func spanSize(_ span: TraceSpan, traceID: TraceID) -> Int {
        // pdata writes the IDs and the status of every span, empty or not.
        var size = self.lengthDelimited(field: 1, size: 16) + self.lengthDelimited(field: 2, size: 8)
        size += self.string(field: 3, span.traceState)
        size += self.lengthDelimited(field: 4, size: span.parentSpanID.isEmpty ? 0 : 8)
        size += self.string(field: 5, span.name)
        if span.kind != 0 { size += self.tagSize(6) + self.varintSize(UInt64(span.kind)) }
        if span.startNanos != 0 { size += self.tagSize(7) + 8 }
        if span.endNanos != 0 { size += self.tagSize(8) + 8 }
        size += self.attributesSize(span.attributes, field: 9)
        for event in span.events {
            var message = event.timeNanos != 0 ? self.tagSize(1) + 8 : 0
            message += self.string(field: 2, event.name) + self.attributesSize(event.attributes, field: 3)
            size += self.lengthDelimited(field: 11, size: message)
        }
        let code = span.status.otlpCode
        let status = self.string(field: 2, span.statusMessage) + (code != 0 ? self.tagSize(3) + 1 : 0)
        size += self.lengthDelimited(field: 15, size: status)
        if span.flags != 0 { size += self.tagSize(16) + 4 }
        return size
    }
}
