/// The checked intermediate representation of a policy set: the contract between the compiler,
/// ConfigRenderer and the decision simulator.
///
/// It mirrors the collector's `tail_sampling` policy tree (one ``Policy`` per rendered policy, with the
/// same nesting rules: `and`/`drop` hold only leaf policies, `composite` holds leaves and `and`,
/// `not` only appears at the top level), but every value is stated in the language's own terms so
/// nothing depends on the collector's quirks:
///
/// - bounds are explicit and inclusive (`nil` means "no bound"), never the collector's `0 = unset`;
/// - regular expressions are already anchored where the language says `matches` (full match);
/// - rate, byte and budget figures are **fleet-wide**; the renderer divides them by the number of
///   sampler replicas;
/// - rules keep their source order; the collector runs `drop` policies first whatever their position.
///
/// Encoded as JSON (`policyctl compile --emit ir`), each policy is `{"name", "type", "<type>": {…}}`.
public struct PolicySet: Sendable, Hashable, Codable {
    /// Processor-wide settings from the `sampler { … }` block; unset fields take the collector's defaults.
    public var settings: SamplerSettings
    /// Top-level policies in source order (files sorted by path, then declaration order).
    public var policies: [Policy]
    /// The source files compiled, sorted.
    public var sources: [String]

    /// Creates a policy set.
    public init(settings: SamplerSettings = SamplerSettings(), policies: [Policy] = [], sources: [String] = []) {
        self.settings = settings
        self.policies = policies
        self.sources = sources
    }
}

/// The `tail_sampling` processor's own settings. `nil` means "not set": the collector default applies.
public struct SamplerSettings: Sendable, Hashable, Codable {
    /// `decision_wait`, in milliseconds (collector default 30 s).
    public var decisionWaitMs: Int64?
    /// `decision_wait_after_root_received`, in milliseconds (needs collector v0.145+).
    public var decisionWaitAfterRootMs: Int64?
    /// `num_traces`: traces held in memory (collector default 50,000).
    public var maxTraces: Int64?
    /// `expected_new_traces_per_sec`.
    public var expectedNewTracesPerSecond: Int64?
    /// `block_on_overflow`.
    public var blockOnOverflow: Bool?
    /// `decision_cache.sampled_cache_size`.
    public var sampledCacheSize: Int64?
    /// `decision_cache.non_sampled_cache_size`.
    public var nonSampledCacheSize: Int64?
    /// `sample_on_first_match`.
    public var sampleOnFirstMatch: Bool?
    /// `drop_pending_traces_on_shutdown`.
    public var dropPendingTracesOnShutdown: Bool?
    /// `maximum_trace_size_bytes`.
    public var maximumTraceSizeBytes: Int64?
    /// `error_mode` written on every `ottl_condition` policy; ``OTTLErrorMode/defaultMode`` when not set.
    public var ottlErrorMode: OTTLErrorMode?

    /// Creates settings with nothing set.
    public init() {}
}

/// How an OTTL condition's evaluation error is handled.
public enum OTTLErrorMode: String, Sendable, Hashable, Codable, CaseIterable {
    /// The policy errors and casts no vote (collector default).
    case propagate
    /// The error is logged and the condition is false.
    case ignore
    /// The condition is false, nothing is logged.
    case silent

    /// What Tailplane writes when the policy set does not choose: `propagate`, the collector's default on
    /// every release unless the `defaultOTTLErrorModeIgnore` gate (v0.153) is on. Writing it always means a
    /// gate or a release cannot flip the meaning of a rule.
    public static let defaultMode: OTTLErrorMode = .propagate
}

/// A span status code as the collector names it.
public enum StatusCode: String, Sendable, Hashable, Codable, CaseIterable, Comparable {
    case ok = "OK"
    case error = "ERROR"
    case unset = "UNSET"

    public static func < (lhs: StatusCode, rhs: StatusCode) -> Bool {
        Self.allCases.firstIndex(of: lhs)! < Self.allCases.firstIndex(of: rhs)!
    }
}

/// One policy of the collector's tree.
public struct Policy: Sendable, Hashable, Codable {
    /// The policy name; unique among siblings. Top-level names are the rule name, or `rule/1`,
    /// `rule/2`, … when an `or` splits a rule into several top-level policies.
    public var name: String
    /// What the policy tests.
    public var kind: PolicyKind
    /// The source rule this policy was compiled from (top-level and composite members only).
    public var rule: String?
    /// Where that rule is.
    public var origin: SourceReference?

    /// Creates a policy.
    public init(name: String, kind: PolicyKind, rule: String? = nil, origin: SourceReference? = nil) {
        self.name = name
        self.kind = kind
        self.rule = rule
        self.origin = origin
    }
}

/// Latency bounds on the trace duration (latest end minus earliest start, truncated to whole ms).
public struct LatencyBounds: Sendable, Hashable, Codable {
    /// Inclusive lower bound in ms, or `nil`.
    public var minimumMs: Int64?
    /// Inclusive upper bound in ms, or `nil`. The collector tests an upper-bounded window on the running
    /// duration as it walks spans (see docs/dsl.md).
    public var maximumMs: Int64?

    /// Creates bounds.
    public init(minimumMs: Int64?, maximumMs: Int64?) {
        self.minimumMs = minimumMs
        self.maximumMs = maximumMs
    }
}

/// Inclusive integer bounds on an attribute; `nil` means unbounded. Never 0 (the collector reads 0 as unset).
public struct NumericAttributeTest: Sendable, Hashable, Codable {
    /// Attribute key (resource or span).
    public var key: String
    /// Inclusive minimum, never 0.
    public var minimum: Int64?
    /// Inclusive maximum, never 0.
    public var maximum: Int64?
    /// True: passes when no resource or span has a value in range (only inside `and`, `drop`, `composite`).
    public var invert: Bool

    /// Creates a test.
    public init(key: String, minimum: Int64?, maximum: Int64?, invert: Bool = false) {
        self.key = key
        self.minimum = minimum
        self.maximum = maximum
        self.invert = invert
    }
}

/// A string attribute test: exact values, or regular expressions (RE2, already anchored as needed).
public struct StringAttributeTest: Sendable, Hashable, Codable {
    /// Attribute key (resource or span).
    public var key: String
    /// Exact values, or patterns when ``regex`` is set. Never empty strings.
    public var values: [String]
    /// The values are RE2 patterns tested with the collector's unanchored search.
    public var regex: Bool
    /// True: passes when no resource or span matches (only inside `and`, `drop`, `composite`).
    public var invert: Bool

    /// Creates a test.
    public init(key: String, values: [String], regex: Bool, invert: Bool = false) {
        self.key = key
        self.values = values
        self.regex = regex
        self.invert = invert
    }
}

/// A boolean attribute test.
public struct BooleanAttributeTest: Sendable, Hashable, Codable {
    /// Attribute key.
    public var key: String
    /// The value that matches.
    public var value: Bool
    /// True: passes when no resource or span has the value (only inside `and`, `drop`, `composite`).
    public var invert: Bool

    /// Creates a test.
    public init(key: String, value: Bool, invert: Bool = false) {
        self.key = key
        self.value = value
        self.invert = invert
    }
}

/// Deterministic probabilistic sampling on the trace ID.
public struct ProbabilisticSampling: Sendable, Hashable, Codable {
    /// Percentage of traces kept, 0 to 100.
    public var percentage: Double
    /// `hash_salt`. The compiler sets the rule's name when the source gives no `salt`, so every rule samples
    /// independently; `nil` (only in hand-built IR) uses the collector's default salt.
    public var salt: String?

    /// Creates a sampler.
    public init(percentage: Double, salt: String?) {
        self.percentage = percentage
        self.salt = salt
    }
}

/// A fleet-wide limit. The renderer divides by the number of sampler replicas.
public struct RateLimit: Sendable, Hashable, Codable {
    /// Fleet-wide spans (or bytes) per second.
    public var perSecond: Int64
    /// Fleet-wide burst capacity, if given.
    public var burst: Int64?

    /// Creates a limit.
    public init(perSecond: Int64, burst: Int64? = nil) {
        self.perSecond = perSecond
        self.burst = burst
    }
}

/// Span count bounds, inclusive; `nil` maximum means unbounded.
public struct SpanCountBounds: Sendable, Hashable, Codable {
    /// Inclusive minimum (at least 0).
    public var minimum: Int32
    /// Inclusive maximum, or `nil`.
    public var maximum: Int32?

    /// Creates bounds.
    public init(minimum: Int32, maximum: Int32?) {
        self.minimum = minimum
        self.maximum = maximum
    }
}

/// A W3C tracestate test.
public struct TraceStateTest: Sendable, Hashable, Codable {
    /// The tracestate key.
    public var key: String
    /// Exact values.
    public var values: [String]

    /// Creates a test.
    public init(key: String, values: [String]) {
        self.key = key
        self.values = values
    }
}

/// OTTL conditions; all are ORed, as in the collector.
public struct OTTLConditions: Sendable, Hashable, Codable {
    /// Conditions in the span context.
    public var span: [String]
    /// Conditions in the span event context.
    public var spanEvent: [String]

    /// Creates conditions.
    public init(span: [String], spanEvent: [String]) {
        self.span = span
        self.spanEvent = spanEvent
    }
}

/// A `budget` block: the collector's `composite` policy.
public struct CompositeBudget: Sendable, Hashable, Codable {
    /// Fleet-wide `max_total_spans_per_second`.
    public var maxTotalSpansPerSecond: Int64
    /// Members in priority order (the collector evaluates them in list order).
    public var members: [Member]

    /// One member of a budget and its share.
    public struct Member: Sendable, Hashable, Codable {
        /// The member policy (a leaf or an `and`).
        public var policy: Policy
        /// Its share of the budget, in percent (more than 0).
        public var percent: Double
        /// Where the share is written (the renderer points at it when a share becomes too small per sampler).
        public var shareOrigin: SourceReference?

        /// Creates a member.
        public init(policy: Policy, percent: Double, shareOrigin: SourceReference? = nil) {
            self.policy = policy
            self.percent = percent
            self.shareOrigin = shareOrigin
        }
    }

    /// Creates a budget.
    public init(maxTotalSpansPerSecond: Int64, members: [Member]) {
        self.maxTotalSpansPerSecond = maxTotalSpansPerSecond
        self.members = members
    }
}

/// What a policy tests; one case per collector policy type.
public indirect enum PolicyKind: Sendable, Hashable {
    case alwaysSample
    case latency(LatencyBounds)
    case numericAttribute(NumericAttributeTest)
    case probabilistic(ProbabilisticSampling)
    case statusCode([StatusCode])
    case stringAttribute(StringAttributeTest)
    case rateLimiting(RateLimit)
    case bytesLimiting(RateLimit)
    case spanCount(SpanCountBounds)
    case traceState(TraceStateTest)
    case traceFlags
    case booleanAttribute(BooleanAttributeTest)
    case ottlCondition(OTTLConditions)
    /// All members must pass. Members are leaves.
    case and([Policy])
    /// Swaps Sampled and NotSampled of its member. Top level only.
    case not(Policy)
    /// Drops the trace when all members pass. Members are leaves. Evaluated before every other policy.
    case drop([Policy])
    case composite(CompositeBudget)

    /// The collector's `type` string.
    public var typeName: String {
        switch self {
        case .alwaysSample: "always_sample"
        case .latency: "latency"
        case .numericAttribute: "numeric_attribute"
        case .probabilistic: "probabilistic"
        case .statusCode: "status_code"
        case .stringAttribute: "string_attribute"
        case .rateLimiting: "rate_limiting"
        case .bytesLimiting: "bytes_limiting"
        case .spanCount: "span_count"
        case .traceState: "trace_state"
        case .traceFlags: "trace_flags"
        case .booleanAttribute: "boolean_attribute"
        case .ottlCondition: "ottl_condition"
        case .and: "and"
        case .not: "not"
        case .drop: "drop"
        case .composite: "composite"
        }
    }
}

extension Policy {
    private enum CodingKeys: String, CodingKey {
        case name, type, rule, origin
        case latency, numeric_attribute, probabilistic, status_code, string_attribute, rate_limiting
        case bytes_limiting, span_count, trace_state, boolean_attribute, ottl_condition
        case and, not, drop, composite
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(self.name, forKey: .name)
        try container.encode(self.kind.typeName, forKey: .type)
        try container.encodeIfPresent(self.rule, forKey: .rule)
        try container.encodeIfPresent(self.origin, forKey: .origin)
        switch self.kind {
        case .alwaysSample, .traceFlags: break
        case .latency(let value): try container.encode(value, forKey: .latency)
        case .numericAttribute(let value): try container.encode(value, forKey: .numeric_attribute)
        case .probabilistic(let value): try container.encode(value, forKey: .probabilistic)
        case .statusCode(let value): try container.encode(value, forKey: .status_code)
        case .stringAttribute(let value): try container.encode(value, forKey: .string_attribute)
        case .rateLimiting(let value): try container.encode(value, forKey: .rate_limiting)
        case .bytesLimiting(let value): try container.encode(value, forKey: .bytes_limiting)
        case .spanCount(let value): try container.encode(value, forKey: .span_count)
        case .traceState(let value): try container.encode(value, forKey: .trace_state)
        case .booleanAttribute(let value): try container.encode(value, forKey: .boolean_attribute)
        case .ottlCondition(let value): try container.encode(value, forKey: .ottl_condition)
        case .and(let value): try container.encode(value, forKey: .and)
        case .not(let value): try container.encode(value, forKey: .not)
        case .drop(let value): try container.encode(value, forKey: .drop)
        case .composite(let value): try container.encode(value, forKey: .composite)
        }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.name = try container.decode(String.self, forKey: .name)
        self.rule = try container.decodeIfPresent(String.self, forKey: .rule)
        self.origin = try container.decodeIfPresent(SourceReference.self, forKey: .origin)
        let type = try container.decode(String.self, forKey: .type)
        switch type {
        case "always_sample": self.kind = .alwaysSample
        case "trace_flags": self.kind = .traceFlags
        case "latency": self.kind = .latency(try container.decode(LatencyBounds.self, forKey: .latency))
        case "numeric_attribute":
            self.kind = .numericAttribute(try container.decode(NumericAttributeTest.self, forKey: .numeric_attribute))
        case "probabilistic":
            self.kind = .probabilistic(try container.decode(ProbabilisticSampling.self, forKey: .probabilistic))
        case "status_code": self.kind = .statusCode(try container.decode([StatusCode].self, forKey: .status_code))
        case "string_attribute":
            self.kind = .stringAttribute(try container.decode(StringAttributeTest.self, forKey: .string_attribute))
        case "rate_limiting": self.kind = .rateLimiting(try container.decode(RateLimit.self, forKey: .rate_limiting))
        case "bytes_limiting": self.kind = .bytesLimiting(try container.decode(RateLimit.self, forKey: .bytes_limiting))
        case "span_count": self.kind = .spanCount(try container.decode(SpanCountBounds.self, forKey: .span_count))
        case "trace_state": self.kind = .traceState(try container.decode(TraceStateTest.self, forKey: .trace_state))
        case "boolean_attribute":
            self.kind = .booleanAttribute(try container.decode(BooleanAttributeTest.self, forKey: .boolean_attribute))
        case "ottl_condition":
            self.kind = .ottlCondition(try container.decode(OTTLConditions.self, forKey: .ottl_condition))
        case "and": self.kind = .and(try container.decode([Policy].self, forKey: .and))
        case "not": self.kind = .not(try container.decode(Policy.self, forKey: .not))
        case "drop": self.kind = .drop(try container.decode([Policy].self, forKey: .drop))
        case "composite": self.kind = .composite(try container.decode(CompositeBudget.self, forKey: .composite))
        default:
            throw DecodingError.dataCorruptedError(
                forKey: .type,
                in: container,
                debugDescription: "unknown policy type `\(type)`"
            )
        }
    }
}

/// How the fleet-wide figures of the IR become each sampler replica's, as the renderer writes them and the
/// simulator enforces them: one definition for both.
public enum FleetShare {
    /// A fleet-wide figure divided among replicas, rounded up.
    public static func perReplica(_ fleetWide: Int64, replicas: Int) -> Int64 {
        let n = Int64(max(1, replicas))
        return fleetWide / n + (fleetWide % n == 0 ? 0 : 1)
    }

    /// A budget member's spans per second on one replica, as the collector computes it from the rendered
    /// whole `percent` and the replica's `max_total_spans_per_second`: `int64(percent / 100 × total)`.
    public static func allocation(percent: Double, replicaTotal: Int64) -> Int64 {
        Int64(Double(Int64(percent)) / 100 * Double(replicaTotal))
    }
}
