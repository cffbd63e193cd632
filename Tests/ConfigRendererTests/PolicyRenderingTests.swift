import ConfigRenderer
import PolicyEngine
import Testing

/// One golden snippet per policy type: the exact YAML a rule becomes.
@Suite struct PolicyRenderingTests {
    static let cases: [(String, String)] = [
        ("keep all", "- name: all\n  type: always_sample"),
        (
            "keep slow when duration > 500ms",
            "- name: slow\n  type: latency\n  latency:\n    threshold_ms: 501"
        ),
        (
            "keep window when duration in 1s..30s",
            "- name: window\n  type: latency\n  latency:\n    threshold_ms: 999\n    upper_threshold_ms: 30000"
        ),
        (
            "keep codes when attr[\"http.status\"] in 500..599",
            "- name: codes\n  type: numeric_attribute\n  numeric_attribute:\n    key: http.status\n    min_value: 500\n    max_value: 599"
        ),
        (
            "keep base sample 2.5% salt \"tier-2\"",
            "- name: base\n  type: probabilistic\n  probabilistic:\n    hash_salt: tier-2\n    sampling_percentage: 2.5"
        ),
        (
            "keep errors when status in [ERROR, UNSET]",
            "- name: errors\n  type: status_code\n  status_code:\n    status_codes:\n      - ERROR\n      - UNSET"
        ),
        (
            "keep health when attr[\"http.route\"] matches \"/health\"",
            "- name: health\n  type: string_attribute\n  string_attribute:\n    key: http.route\n    values:\n      - \"^(?:/health)$$\"\n    enabled_regex_matching: true"
        ),
        (
            "keep vip when attr[\"tier\"] in [\"gold\", \"platinum\"]",
            "- name: vip\n  type: string_attribute\n  string_attribute:\n    key: tier\n    values:\n      - gold\n      - platinum"
        ),
        (
            "keep capped limit 1000 spans/s",
            "- name: capped\n  type: rate_limiting\n  rate_limiting:\n    spans_per_second: 335  # fleet-wide 1000 spans/s across 3 samplers, +1 for the collector's strict limit"
        ),
        (
            "keep bulk limit 3MiB/s burst 6MiB",
            "- name: bulk\n  type: bytes_limiting\n  bytes_limiting:\n    bytes_per_second: 1048576  # fleet-wide 3145728 bytes/s across 3 samplers\n    burst_capacity: 2097152  # fleet-wide 6291456 bytes across 3 samplers"
        ),
        (
            "keep big when spans in 10..200",
            "- name: big\n  type: span_count\n  span_count:\n    min_spans: 10\n    max_spans: 200"
        ),
        (
            "keep debug when tracestate[\"tp\"] == \"debug\"",
            "- name: debug\n  type: trace_state\n  trace_state:\n    key: tp\n    values:\n      - debug"
        ),
        ("keep flagged when sampled_flag", "- name: flagged\n  type: trace_flags\n  trace_flags: {}"),
        (
            "keep synthetic when attr[\"synthetic\"] == true",
            "- name: synthetic\n  type: boolean_attribute\n  boolean_attribute:\n    key: synthetic\n    value: true"
        ),
        (
            "keep retries when ottl span \"attributes[\\\"retry\\\"] > 2\"",
            "- name: retries\n  type: ottl_condition\n  ottl_condition:\n    error_mode: propagate\n    span:\n      - \"attributes[\\\"retry\\\"] > 2\""
        ),
        (
            "keep e when status == ERROR and service != \"checkout\"",
            "- name: e\n  type: and\n  and:\n    and_sub_policy:\n      - name: status_code\n        type: status_code\n        status_code:\n          status_codes:\n            - ERROR\n      - name: string_attribute\n        type: string_attribute\n        string_attribute:\n          key: service.name\n          values:\n            - checkout\n          invert_match: true"
        ),
        (
            "keep fast when duration < 2s",
            "- name: fast\n  type: not\n  not:\n    not_sub_policy:\n      name: latency\n      type: latency\n      latency:\n        threshold_ms: 2000"
        ),
        (
            "drop noise when service == \"noise\"",
            "- name: noise\n  type: drop\n  drop:\n    drop_sub_policy:\n      - name: string_attribute\n        type: string_attribute\n        string_attribute:\n          key: service.name\n          values:\n            - noise"
        ),
        (
            "budget b 700 spans/s {\n keep b1 when status == ERROR share 70%\n keep b2 share 30%\n}",
            "- name: b\n  type: composite\n  composite:\n    max_total_spans_per_second: 234  # fleet-wide 700 spans/s across 3 samplers\n    policy_order:\n      - b1\n      - b2\n    composite_sub_policy:\n      - name: b1\n        type: status_code\n        status_code:\n          status_codes:\n            - ERROR\n      - name: b2\n        type: always_sample\n    rate_allocation:\n      - policy: b1\n        percent: 70\n      - policy: b2\n        percent: 30"
        ),
    ]

    @Test(arguments: cases)
    func rendersPolicyType(source: String, expected: String) throws {
        let config = try #require(render(.sampling, policySet(source)))
        let indented = expected.split(separator: "\n", omittingEmptySubsequences: false).map { "      " + $0 }.joined(
            separator: "\n"
        )
        #expect(config.yaml.contains("    policies:\n" + indented + "\n"), "got:\n\(config.yaml)")
    }

    @Test func everyPolicyTypeIsCovered() {
        let covered = Set(Self.cases.map { policySet($0.0).policies.first?.kind.typeName ?? "" })
        let all: Set<String> = [
            "always_sample", "latency", "numeric_attribute", "probabilistic", "status_code", "string_attribute",
            "rate_limiting", "bytes_limiting", "span_count", "trace_state", "trace_flags", "boolean_attribute",
            "ottl_condition", "and", "not", "drop", "composite",
        ]
        #expect(covered == all)
    }

    @Test func ottlErrorModeComesFromTheSamplerBlock() throws {
        let config = try #require(
            render(
                .sampling,
                policySet("sampler { ottl_error_mode ignore }\nkeep r when ottl event \"name == \\\"x\\\"\"")
            )
        )
        #expect(
            config.yaml.contains(
                "ottl_condition:\n          error_mode: ignore\n          spanevent:\n            - \"name == \\\"x\\\"\""
            )
        )
    }

    @Test func samplerSettingsUseCollectorKeys() throws {
        let set = policySet(
            """
            sampler {
                decision_wait 10s
                decision_wait_after_root 2s
                max_traces 100000
                expected_traces 500/s
                block_on_overflow true
                cache sampled 1000000 unsampled 2000000
                sample_on_first_match true
                drop_pending_on_shutdown true
                max_trace_size 4MiB
            }
            keep all
            """
        )
        let config = try #require(render(.sampling, set))
        for line in [
            "decision_wait: 10s", "decision_wait_after_root_received: 2s", "num_traces: 100000",
            "expected_new_traces_per_sec: 500", "block_on_overflow: true", "sampled_cache_size: 1000000",
            "non_sampled_cache_size: 2000000", "sample_on_first_match: true", "drop_pending_traces_on_shutdown: true",
            "maximum_trace_size_bytes: 4194304",
        ] {
            #expect(config.yaml.contains("    " + line + "\n"), "missing \(line)")
        }
    }
}
