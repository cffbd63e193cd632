/// The oldest otelcol-contrib version that accepts each config feature the renderer can emit.
/// Sources: the contrib CHANGELOG entries and PR numbers noted per case (see docs/fleet.md, "Collector versions").
enum CollectorFeature: String, CaseIterable, Sendable {
    case dropPolicy = "`drop` policies"
    case numericSingleBound = "numeric attribute tests bounded on one side only"
    case notPolicy = "`not` policies"
    case traceFlagsPolicy = "`trace_flags` policies (`sampled_flag`)"
    case bytesLimitingPolicy = "`bytes_limiting` policies (byte limits)"
    case booleanAttributePolicy = "`boolean_attribute` policies"
    case ottlConditionPolicy = "`ottl_condition` policies"
    case latencyUpperBound = "latency windows (`upper_threshold_ms`)"
    case spanCountMaximum = "span count maximums (`max_spans`)"
    case rateLimitBurst = "`burst` on span limits (`burst_capacity`)"
    case sampledDecisionCache = "sampled decision caches"
    case nonSampledDecisionCache = "unsampled decision caches"
    case sampleOnFirstMatch = "`sample_on_first_match`"
    case blockOnOverflow = "`block_on_overflow`"
    case dropPendingOnShutdown = "`drop_pending_traces_on_shutdown`"
    case maximumTraceSize = "`maximum_trace_size_bytes`"
    case decisionWaitAfterRoot = "`decision_wait_after_root_received`"
    case loadBalancingTypeName = "the `load_balancing` exporter type name"
    case kubernetesReturnHostnames = "`resolver.k8s.return_hostnames`"
    case kubernetesTimeout = "`resolver.k8s.timeout`"

    /// The first release that accepts the feature. Where the changelog could not pin a release the later
    /// end of the known window is used, so the renderer errs towards refusing (docs/fleet.md lists which).
    var since: CollectorVersion {
        let minor: Int
        switch self {
        // Introduced in v0.126, but they only run before the other policies from v0.127 (PR #39655), which
        // the language promises.
        case .dropPolicy: minor = 127  // #39668, #39655
        // Before PR #41567 an unset bound read as 0, so `min_value: 400` alone matched nothing (#41562).
        case .numericSingleBound: minor = 132  // PR #41567, merged 2025-07-28: v0.131 or v0.132
        case .notPolicy: minor = 143  // PR #44378, window v0.141–v0.143
        case .traceFlagsPolicy: minor = 142  // PR #43867, window v0.139–v0.142
        case .bytesLimitingPolicy: minor = 137  // PR #42509, window v0.136–v0.137
        case .booleanAttributePolicy: minor = 73  // #17545
        case .ottlConditionPolicy: minor = 78  // #20294
        case .latencyUpperBound: minor = 89  // #26115
        case .spanCountMaximum: minor = 73  // #18215
        case .rateLimitBurst: minor = 153  // PR #48226, v0.152 or v0.153
        case .sampledDecisionCache: minor = 103  // #31583
        case .nonSampledDecisionCache: minor = 116  // PR #36040, window v0.113–v0.116
        case .sampleOnFirstMatch: minor = 127  // #36795
        case .blockOnOverflow: minor = 133  // PR #41546
        case .dropPendingOnShutdown: minor = 145  // not pinned; present in current releases
        case .maximumTraceSize: minor = 145  // PR #45286
        case .decisionWaitAfterRoot: minor = 145  // #43876
        case .loadBalancingTypeName: minor = 153  // PR #48533
        case .kubernetesReturnHostnames: minor = 116  // #18412
        case .kubernetesTimeout: minor = 98  // #31757
        }
        return CollectorVersion(major: 0, minor: minor)
    }

    /// The load-balancing exporter's own `sending_queue` and `retry_on_failure` (PR #36094, merged for
    /// v0.116; earlier releases queue only per sampler). Not a refusal: older targets get the per-sampler form.
    static let loadBalancingTopLevelQueue = CollectorVersion(major: 0, minor: 116)

    /// The OTLP exporters' current type names, `otlp_grpc` and `otlp_http` (core #14403, #14397, v0.144.0).
    /// From then on the old names `otlp` and `otlphttp` still load but log a deprecation warning at every
    /// start; before it the new names are unknown. Not a refusal: older targets get the old names.
    static let otlpExporterTypeNames = CollectorVersion(major: 0, minor: 144)

    /// `rate_limiting` became a token bucket (`golang.org/x/time/rate`, burst 2 × the rate unless
    /// `burst_capacity` says otherwise) in the same change that added `burst_capacity` (PR #48226); earlier
    /// releases count spans in a fixed one-second window with a strict `<` test.
    static let rateLimitTokenBucket = CollectorVersion(major: 0, minor: 153)

    /// Internal telemetry `readers` replaced `metrics.address` (readers on by default from v0.109).
    static let telemetryReaders = CollectorVersion(major: 0, minor: 109)
}
