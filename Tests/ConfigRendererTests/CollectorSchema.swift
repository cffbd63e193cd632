/// The collector config keys the renderer may write, from the component schemas in
/// shared/reference/tailsampling.md §1–§2 and the core components' configs. An unknown key stops a
/// collector at start-up, so every rendered key is walked against this.
indirect enum Shape: Sendable {
    case scalar
    case map([String: Shape])
    /// Any key (component ids, header names), each with the same shape.
    case anyKey(Shape)
    case list(Shape)
    /// A tail_sampling policy at a nesting level.
    case policy(PolicyLevel)
}

enum PolicyLevel: Sendable {
    case topLevel, compositeMember, andMember, notMember
}

enum CollectorSchema {
    static let tls = Shape.map([
        "insecure": .scalar, "insecure_skip_verify": .scalar, "ca_file": .scalar, "cert_file": .scalar,
        "key_file": .scalar, "server_name_override": .scalar,
    ])
    static let retry = Shape.map([
        "enabled": .scalar, "initial_interval": .scalar, "max_interval": .scalar, "max_elapsed_time": .scalar,
    ])
    static let queue = Shape.map(["enabled": .scalar, "num_consumers": .scalar, "queue_size": .scalar])
    static let otlpExporter = Shape.map([
        "endpoint": .scalar, "tls": tls, "headers": .anyKey(.scalar), "compression": .scalar, "timeout": .scalar,
        "retry_on_failure": retry, "sending_queue": queue,
    ])
    static let receivers = Shape.map([
        "otlp": .map([
            "protocols": .map([
                "grpc": .map(["endpoint": .scalar, "max_recv_msg_size_mib": .scalar]),
                "http": .map(["endpoint": .scalar]),
            ])
        ])
    ])
    static let memoryLimiter = Shape.map([
        "check_interval": .scalar, "limit_percentage": .scalar, "spike_limit_percentage": .scalar,
    ])
    static let service = Shape.map([
        "telemetry": .map([
            "logs": .map(["level": .scalar]),
            "metrics": .map([
                "level": .scalar, "address": .scalar,
                "readers": .list(
                    .map(["pull": .map(["exporter": .map(["prometheus": .map(["host": .scalar, "port": .scalar])])])])
                ),
            ]),
        ]),
        "pipelines": .anyKey(
            .map(["receivers": .list(.scalar), "processors": .list(.scalar), "exporters": .list(.scalar)])
        ),
    ])
    static let loadBalancingExporter = Shape.map([
        "routing_key": .scalar,
        "protocol": .map([
            "otlp": .map([
                "timeout": .scalar, "tls": tls, "compression": .scalar, "retry_on_failure": retry,
                "sending_queue": queue,
                "headers": .anyKey(.scalar),
            ])
        ]),
        "resolver": .map([
            "static": .map(["hostnames": .list(.scalar)]),
            "dns": .map(["hostname": .scalar, "port": .scalar, "interval": .scalar, "timeout": .scalar]),
            "k8s": .map(["service": .scalar, "ports": .list(.scalar), "timeout": .scalar, "return_hostnames": .scalar]),
        ]),
        // v0.116 and later (PR #36094): the exporter's own queue and retries, in front of the ring.
        "sending_queue": queue, "retry_on_failure": retry, "timeout": .scalar,
    ])

    static let loadBalancingTier = Shape.map([
        "receivers": receivers,
        "processors": .map(["memory_limiter": memoryLimiter]),
        "exporters": .map(["loadbalancing": loadBalancingExporter, "load_balancing": loadBalancingExporter]),
        "service": service,
    ])

    static let samplingTier = Shape.map([
        "receivers": receivers,
        "processors": .map([
            "memory_limiter": memoryLimiter,
            "batch": .map(["timeout": .scalar, "send_batch_size": .scalar, "send_batch_max_size": .scalar]),
            "tail_sampling": .map([
                "decision_wait": .scalar, "decision_wait_after_root_received": .scalar, "num_traces": .scalar,
                "expected_new_traces_per_sec": .scalar, "block_on_overflow": .scalar,
                "decision_cache": .map(["sampled_cache_size": .scalar, "non_sampled_cache_size": .scalar]),
                "sample_on_first_match": .scalar, "drop_pending_traces_on_shutdown": .scalar,
                "maximum_trace_size_bytes": .scalar, "policies": .list(.policy(.topLevel)),
            ]),
        ]),
        "exporters": .anyKey(otlpExporter),
        "service": service,
    ])

    /// Keys of each policy type's block (tailsampling.md §1.3).
    static let policyBlocks: [String: [String: Shape]] = [
        "always_sample": [:],
        "latency": ["threshold_ms": .scalar, "upper_threshold_ms": .scalar],
        "numeric_attribute": ["key": .scalar, "min_value": .scalar, "max_value": .scalar, "invert_match": .scalar],
        "probabilistic": ["hash_salt": .scalar, "sampling_percentage": .scalar],
        "status_code": ["status_codes": .list(.scalar)],
        "string_attribute": [
            "key": .scalar, "values": .list(.scalar), "enabled_regex_matching": .scalar, "cache_max_size": .scalar,
            "invert_match": .scalar,
        ],
        "rate_limiting": ["spans_per_second": .scalar, "burst_capacity": .scalar],
        "bytes_limiting": ["bytes_per_second": .scalar, "burst_capacity": .scalar],
        "span_count": ["min_spans": .scalar, "max_spans": .scalar],
        "trace_state": ["key": .scalar, "values": .list(.scalar)],
        "trace_flags": [:],
        "boolean_attribute": ["key": .scalar, "value": .scalar, "invert_match": .scalar],
        "ottl_condition": ["error_mode": .scalar, "span": .list(.scalar), "spanevent": .list(.scalar)],
        "and": ["and_sub_policy": .list(.policy(.andMember))],
        "not": ["not_sub_policy": .policy(.notMember)],
        "drop": ["drop_sub_policy": .list(.policy(.andMember))],
        "composite": [
            "max_total_spans_per_second": .scalar, "policy_order": .list(.scalar),
            "composite_sub_policy": .list(.policy(.compositeMember)),
            "rate_allocation": .list(.map(["policy": .scalar, "percent": .scalar])),
        ],
    ]

    /// Types allowed at each level (tailsampling.md §1.2).
    static func allowedTypes(_ level: PolicyLevel) -> Set<String> {
        let shared: Set<String> = [
            "always_sample", "latency", "numeric_attribute", "probabilistic", "status_code", "string_attribute",
            "rate_limiting", "bytes_limiting", "span_count", "trace_state", "trace_flags", "boolean_attribute",
            "ottl_condition",
        ]
        switch level {
        case .topLevel: return shared.union(["and", "not", "drop", "composite"])
        case .compositeMember: return shared.union(["and"])
        case .andMember, .notMember: return shared
        }
    }

    /// Every path that does not fit the schema.
    static func violations(_ value: Any, _ shape: Shape, path: String = "") -> [String] {
        switch shape {
        case .scalar:
            return value is [String: Any] || value is [Any] ? ["\(path): expected a scalar"] : []
        case .list(let item):
            guard let list = value as? [Any] else { return ["\(path): expected a list"] }
            return list.enumerated().flatMap { self.violations($0.element, item, path: "\(path)[\($0.offset)]") }
        case .anyKey(let item):
            guard let map = value as? [String: Any] else { return ["\(path): expected a mapping"] }
            return map.flatMap { self.violations($0.value, item, path: "\(path).\($0.key)") }
        case .map(let keys):
            guard let map = value as? [String: Any] else { return ["\(path): expected a mapping"] }
            return map.flatMap { key, child -> [String] in
                guard let childShape = keys[key] ?? keys[key.split(separator: "/").first.map(String.init) ?? key] else {
                    return ["\(path).\(key): unknown key"]
                }
                return self.violations(child, childShape, path: "\(path).\(key)")
            }
        case .policy(let level):
            guard let map = value as? [String: Any], let type = map["type"] as? String, map["name"] is String else {
                return ["\(path): a policy needs `name` and `type`"]
            }
            guard self.allowedTypes(level).contains(type), let block = self.policyBlocks[type] else {
                return ["\(path): policy type `\(type)` is not allowed here"]
            }
            var problems: [String] = []
            for (key, child) in map where key != "name" && key != "type" {
                if key == type {
                    problems += self.violations(child, .map(block), path: "\(path).\(key)")
                } else {
                    problems.append("\(path).\(key): unknown key for a `\(type)` policy")
                }
            }
            return problems
        }
    }
}
