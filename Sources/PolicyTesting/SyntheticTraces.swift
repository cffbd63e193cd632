import Foundation
import PolicyEngine

/// Realistic synthetic traces for tests, benchmarks and trying rules out: a storefront with a handful of
/// services and routes, health checks, errors, a latency tail, big traces, customer tiers, partners,
/// synthetic and load-test traffic, retries and trace state. Deterministic for a seed.
public struct SyntheticTraces: Sendable {
    /// Traces start this far apart on average (ms), so limits see a realistic rate.
    public var meanGapMs: Double
    private var random: SplitMix64
    private var clock: UInt64
    private var serial: UInt64 = 0

    /// Creates a generator; `start` is the first trace's time (Unix ns).
    public init(seed: UInt64 = 1, start: UInt64 = 1_750_000_000 * 1_000_000_000, meanGapMs: Double = 1) {
        self.random = SplitMix64(seed: seed)
        self.clock = start
        self.meanGapMs = meanGapMs
    }

    static let routes: [(service: String, route: String, downstream: [String])] = [
        ("frontend", "/", ["catalog"]), ("frontend", "/product/{id}", ["catalog", "search"]),
        ("frontend", "/search", ["search"]), ("frontend", "/cart", ["checkout"]),
        ("frontend", "/checkout", ["checkout", "payments"]), ("frontend", "/api/partner/orders", ["checkout"]),
        ("frontend", "/api/export", ["exports"]), ("search", "/internal/reindex", ["catalog"]),
    ]

    /// The next trace.
    public mutating func next() -> SimulatedTrace {
        self.serial += 1
        self.clock += UInt64(self.exponential(mean: self.meanGapMs) * 1_000_000)
        let traceID = TraceID(high: self.random.next(), low: self.random.next())
        let start = self.clock
        let health = self.chance(0.10)
        var resources: [Attributes] = []
        func resource(_ service: String) -> Int {
            let attributes: Attributes = [
                "service.name": .string(service), "service.version": .string("1.\(service.count % 5).0"),
                "deployment.environment": .string("production"),
            ]
            if let index = resources.firstIndex(of: attributes) { return index }
            resources.append(attributes)
            return resources.count - 1
        }
        let traceState: String
        switch self.random.unit() {
        case ..<0.01: traceState = "tp=loadtest"
        case ..<0.012: traceState = "tp=debug"
        default: traceState = ""
        }
        if health {
            let route = self.chance(0.5) ? "/healthz" : "/readyz"
            let duration = UInt64(self.logNormal(median: 2, sigma: 0.4) * 1_000_000)
            let span = TraceSpan(
                spanID: self.spanID(),
                name: "GET \(route)",
                kind: 2,
                startNanos: start,
                endNanos: start + duration,
                status: .unset,
                attributes: ["http.route": .string(route), "http.response.status_code": .int(200)],
                traceState: traceState,
                flags: 0x01,
                resource: resource("frontend")
            )
            return SimulatedTrace(traceID: traceID, resources: resources, spans: [span])
        }
        let (service, route, downstream) = Self.routes[self.pick(Self.routes.count)]
        let failed = self.chance(0.02)
        // A latency tail: about 1 % of requests take seconds.
        let milliseconds =
            self.chance(0.01) ? 2_000 + self.random.unit() * 20_000 : self.logNormal(median: 80, sigma: 1.0)
        let rootDuration = UInt64(min(milliseconds, 60_000) * 1_000_000)
        var rootAttributes: Attributes = [
            "http.route": .string(route), "http.request.method": .string("GET"),
            "http.response.status_code": .int(
                failed ? [500, 502, 503][self.pick(3)] : (self.chance(0.03) ? 404 : 200)
            ),
        ]
        switch self.random.unit() {
        case ..<0.01: rootAttributes["customer.tier"] = .string("platinum")
        case ..<0.06: rootAttributes["customer.tier"] = .string("gold")
        default: rootAttributes["customer.tier"] = .string("free")
        }
        if route.hasPrefix("/api/partner") {
            rootAttributes["partner.id"] = .string(
                self.chance(0.5) ? "acme-\(self.pick(40))" : "globex-\(self.pick(9))"
            )
        }
        if !self.chance(0.03) { rootAttributes["tenant.id"] = .string("t-\(self.pick(500))") }
        if self.chance(0.02) { rootAttributes["synthetic"] = .bool(true) }
        if self.chance(0.001) { rootAttributes["debug.force_sample"] = .bool(true) }
        let rootID = self.spanID()
        var spans = [
            TraceSpan(
                spanID: rootID,
                name: "GET \(route)",
                kind: 2,
                startNanos: start,
                endNanos: start + rootDuration,
                status: failed ? .error : .unset,
                attributes: rootAttributes,
                traceState: traceState,
                flags: 0x01,
                resource: resource(service)
            )
        ]
        // Most traces have a handful of spans; a long tail has hundreds.
        let extra = self.chance(0.01) ? 200 + self.pick(200) : Int(self.logNormal(median: 6, sigma: 0.8))
        for index in 0..<extra {
            let target = downstream[index % downstream.count]
            let offset = UInt64(self.random.unit() * Double(rootDuration) * 0.8)
            let length = UInt64(Double(rootDuration - offset) * self.random.unit() * 0.9) + 1000
            var attributes: Attributes = ["rpc.method": .string("call\(index % 7)")]
            if target == "payments" {
                attributes["retry.count"] = .int(Int64(self.chance(0.05) ? 3 + self.pick(3) : self.pick(2)))
            }
            if target == "search" {
                attributes["http.route"] = .string(self.chance(0.1) ? "/internal/query" : "/query")
            }
            let errorHere = failed && index == extra - 1
            var events: [SpanEvent] = []
            if errorHere {
                events.append(
                    SpanEvent(
                        name: "exception",
                        timeNanos: start + offset,
                        attributes: ["exception.type": .string("Timeout")]
                    )
                )
            }
            spans.append(
                TraceSpan(
                    spanID: self.spanID(),
                    parentSpanID: rootID,
                    name: "\(target).call\(index % 7)",
                    kind: 3,
                    startNanos: start + offset,
                    endNanos: start + offset + length,
                    status: errorHere ? .error : .unset,
                    attributes: attributes,
                    traceState: traceState,
                    flags: 0x01,
                    events: events,
                    resource: resource(target)
                )
            )
        }
        return SimulatedTrace(traceID: traceID, resources: resources, spans: spans)
    }

    private mutating func spanID() -> [UInt8] {
        let value = self.random.next()
        return (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
    }

    private mutating func chance(_ probability: Double) -> Bool { self.random.unit() < probability }
    private mutating func pick(_ count: Int) -> Int { Int(self.random.next() % UInt64(count)) }
    private mutating func exponential(mean: Double) -> Double { -log(1 - self.random.unit()) * mean }
    private mutating func logNormal(median: Double, sigma: Double) -> Double {
        // Box–Muller.
        let u = max(self.random.unit(), 1e-12)
        let v = self.random.unit()
        return median * exp(sigma * sqrt(-2 * log(u)) * cos(2 * .pi * v))
    }
}

/// SplitMix64: a small, fast, seedable generator.
struct SplitMix64: Sendable {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func unit() -> Double { Double(self.next() >> 11) / Double(1 << 53) }
}

/// Writes traces as OTLP/JSON, one `ExportTraceServiceRequest` per line (the file exporter's layout).
public enum OTLPJSONWriter {
    /// One line holding the traces (each trace's spans grouped by resource), without the newline.
    public static func line(_ traces: [SimulatedTrace]) -> String {
        var out = "{\"resourceSpans\":["
        var firstResource = true
        for trace in traces {
            for (index, resource) in trace.resources.enumerated() {
                let spans = trace.spans.filter { $0.resource == index }
                if spans.isEmpty { continue }
                if !firstResource { out += "," }
                firstResource = false
                out += "{\"resource\":{\"attributes\":"
                self.attributes(resource, into: &out)
                out += "},\"scopeSpans\":[{\"scope\":{\"name\":\"tailplane.synthetic\"},\"spans\":["
                for (spanIndex, span) in spans.enumerated() {
                    if spanIndex > 0 { out += "," }
                    self.span(span, traceID: trace.traceID, into: &out)
                }
                out += "]}]}"
            }
        }
        out += "]}"
        return out
    }

    static func span(_ span: TraceSpan, traceID: TraceID, into out: inout String) {
        out += "{\"traceId\":\"\(traceID.hex)\",\"spanId\":\"\(HexBytes.encode(span.spanID))\""
        if !span.parentSpanID.isEmpty { out += ",\"parentSpanId\":\"\(HexBytes.encode(span.parentSpanID))\"" }
        if !span.traceState.isEmpty { out += ",\"traceState\":" + self.quoted(span.traceState) }
        if span.flags != 0 { out += ",\"flags\":\(span.flags)" }
        out += ",\"name\":" + self.quoted(span.name)
        out +=
            ",\"kind\":\(span.kind),\"startTimeUnixNano\":\"\(span.startNanos)\",\"endTimeUnixNano\":\"\(span.endNanos)\""
        if !span.attributes.isEmpty {
            out += ",\"attributes\":"
            self.attributes(span.attributes, into: &out)
        }
        if !span.events.isEmpty {
            out += ",\"events\":["
            for (index, event) in span.events.enumerated() {
                if index > 0 { out += "," }
                out +=
                    "{\"timeUnixNano\":\"\(event.timeNanos)\",\"name\":" + self.quoted(event.name) + ",\"attributes\":"
                self.attributes(event.attributes, into: &out)
                out += "}"
            }
            out += "]"
        }
        let code = span.status == .ok ? 1 : span.status == .error ? 2 : 0
        if code != 0 || !span.statusMessage.isEmpty {
            out += ",\"status\":{\"code\":\(code)"
            if !span.statusMessage.isEmpty { out += ",\"message\":" + self.quoted(span.statusMessage) }
            out += "}"
        }
        out += "}"
    }

    static func attributes(_ attributes: Attributes, into out: inout String) {
        out += "["
        for (index, key) in attributes.keys.sorted().enumerated() {
            if index > 0 { out += "," }
            out += "{\"key\":" + self.quoted(key) + ",\"value\":"
            self.value(attributes[key]!, into: &out)
            out += "}"
        }
        out += "]"
    }

    static func value(_ value: AttributeValue, into out: inout String) {
        switch value {
        case .string(let text): out += "{\"stringValue\":" + self.quoted(text) + "}"
        case .bool(let flag): out += "{\"boolValue\":\(flag)}"
        case .int(let number): out += "{\"intValue\":\"\(number)\"}"
        case .double(let number): out += "{\"doubleValue\":\(number.isFinite ? "\(number)" : "\"\(number)\"")}"
        case .bytes(let data): out += "{\"bytesValue\":\"\(Data(data).base64EncodedString())\"}"
        case .array(let values):
            out += "{\"arrayValue\":{\"values\":["
            for (index, item) in values.enumerated() {
                if index > 0 { out += "," }
                self.value(item, into: &out)
            }
            out += "]}}"
        case .map(let entries):
            out += "{\"kvlistValue\":{\"values\":"
            self.attributes(entries, into: &out)
            out += "}}"
        }
    }

    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
