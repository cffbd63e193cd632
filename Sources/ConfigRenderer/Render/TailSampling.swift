import Foundation
import PolicyEngine

extension RenderContext {
    /// The `tail_sampling` processor: settings from the `sampler` block, then every policy in order.
    mutating func tailSampling(_ policySet: PolicySet) -> YAMLNode {
        let settings = policySet.settings
        var map = MapBuilder()
        map.add("decision_wait", settings.decisionWaitMs.map(YAMLNode.duration))
        if let wait = settings.decisionWaitAfterRootMs {
            self.require(.decisionWaitAfterRoot, for: "`decision_wait_after_root`")
            map.add("decision_wait_after_root_received", .duration(wait))
        }
        map.add("num_traces", settings.maxTraces.map(YAMLNode.int))
        map.add("expected_new_traces_per_sec", settings.expectedNewTracesPerSecond.map(YAMLNode.int))
        if let block = settings.blockOnOverflow {
            self.require(.blockOnOverflow, for: "`block_on_overflow`")
            map.add("block_on_overflow", .bool(block))
        }
        if settings.sampledCacheSize != nil || settings.nonSampledCacheSize != nil {
            if settings.sampledCacheSize != nil { self.require(.sampledDecisionCache, for: "`cache sampled`") }
            if settings.nonSampledCacheSize != nil { self.require(.nonSampledDecisionCache, for: "`cache unsampled`") }
            var cache = MapBuilder()
            cache.add("sampled_cache_size", settings.sampledCacheSize.map(YAMLNode.int))
            cache.add("non_sampled_cache_size", settings.nonSampledCacheSize.map(YAMLNode.int))
            map.add("decision_cache", cache.node)
        }
        if let first = settings.sampleOnFirstMatch {
            self.require(.sampleOnFirstMatch, for: "`sample_on_first_match`")
            map.add("sample_on_first_match", .bool(first))
        }
        if let drop = settings.dropPendingTracesOnShutdown {
            self.require(.dropPendingOnShutdown, for: "`drop_pending_on_shutdown`")
            map.add("drop_pending_traces_on_shutdown", .bool(drop))
        }
        if let size = settings.maximumTraceSizeBytes {
            self.require(.maximumTraceSize, for: "`max_trace_size`")
            map.add("maximum_trace_size_bytes", .int(size))
        }
        map.add("policies", .list(policySet.policies.map { self.policy($0, path: $0.name) }))
        return map.node
    }

    private var replicas: Int { max(1, self.membership.samplerCount) }

    private func divided(_ fleetWide: Int64, unit: String) -> (YAMLNode, String) {
        let value = FleetShare.perReplica(fleetWide, replicas: self.replicas)
        return (
            .int(value),
            "fleet-wide \(fleetWide) \(unit) across \(self.replicas) sampler\(self.replicas == 1 ? "" : "s")"
        )
    }

    /// One policy: `name`, `type`, then its block named after the type.
    mutating func policy(_ policy: Policy, path: String) -> YAMLNode {
        var entries: [YAMLNode.Entry] = [
            .init("name", self.literal(policy.name)), .init("type", .string(policy.kind.typeName)),
        ]
        if let body = self.body(policy.kind, path: path) {
            entries.append(body)
        }
        return .map(entries)
    }

    private mutating func body(_ kind: PolicyKind, path: String) -> YAMLNode.Entry? {
        let type = kind.typeName
        switch kind {
        case .alwaysSample:
            return nil
        case .traceFlags:
            self.require(.traceFlagsPolicy, for: "`\(path)`")
            return .init(type, .map([]))
        case .latency(let bounds):
            var map = MapBuilder()
            if let maximum = bounds.maximumMs {
                self.require(.latencyUpperBound, for: "`\(path)`")
                guard maximum != 0 else {
                    self.problem(
                        .unrepresentable,
                        "`\(path)`: a latency upper bound of 0ms reads as \"no bound\" in the collector"
                    )
                    return nil
                }
                // With an upper bound the collector tests `threshold_ms < d <= upper_threshold_ms`.
                map.add("threshold_ms", .int((bounds.minimumMs ?? 0) - 1))
                map.add("upper_threshold_ms", .int(maximum))
            } else {
                map.add("threshold_ms", .int(bounds.minimumMs ?? 0))
            }
            return .init(type, map.node)
        case .numericAttribute(let test):
            guard test.minimum != 0, test.maximum != 0, test.minimum != nil || test.maximum != nil else {
                self.problem(
                    .unrepresentable,
                    "`\(path)`: numeric bounds of 0 (or none at all) read as \"unset\" in the collector"
                )
                return nil
            }
            if test.minimum == nil || test.maximum == nil { self.require(.numericSingleBound, for: "`\(path)`") }
            var map = MapBuilder()
            map.add("key", self.literal(test.key))
            map.add("min_value", test.minimum.map(YAMLNode.int))
            map.add("max_value", test.maximum.map(YAMLNode.int))
            if test.invert { map.add("invert_match", .bool(true)) }
            return .init(type, map.node)
        case .probabilistic(let sampling):
            var map = MapBuilder()
            map.add("hash_salt", sampling.salt.map(self.literal))
            map.add("sampling_percentage", .double(sampling.percentage))
            return .init(type, map.node)
        case .statusCode(let codes):
            return .init(type, .map([.init("status_codes", .strings(codes.map(\.rawValue)))]))
        case .stringAttribute(let test):
            var map = MapBuilder()
            map.add("key", self.literal(test.key))
            map.add("values", .list(test.values.map(self.literal)))
            if test.regex { map.add("enabled_regex_matching", .bool(true)) }
            if test.invert { map.add("invert_match", .bool(true)) }
            return .init(type, map.node)
        case .rateLimiting(let limit):
            var map = MapBuilder()
            let share = FleetShare.perReplica(limit.perSecond, replicas: self.replicas)
            let across =
                "fleet-wide \(limit.perSecond) spans/s across \(self.replicas) sampler\(self.replicas == 1 ? "" : "s")"
            if self.fleet.collectorVersion < CollectorFeature.rateLimitTokenBucket {
                // Before v0.153 the collector counts spans in a fixed one-second window and keeps a trace only
                // while `spans this second + trace spans < spans_per_second` (strictly less), so one more than
                // the share lets the share itself through.
                map.add("spans_per_second", .int(share + 1), comment: across + ", +1 for the collector's strict limit")
            } else {
                // From v0.153 it is a token bucket that admits exactly the rate (burst 2 × rate by default).
                map.add("spans_per_second", .int(share), comment: across)
            }
            if let burst = limit.burst {
                self.require(.rateLimitBurst, for: "`\(path)`")
                let (value, comment) = self.divided(burst, unit: "spans")
                map.add("burst_capacity", value, comment: comment)
            }
            return .init(type, map.node)
        case .bytesLimiting(let limit):
            self.require(.bytesLimitingPolicy, for: "`\(path)`")
            var map = MapBuilder()
            let (rate, comment) = self.divided(limit.perSecond, unit: "bytes/s")
            map.add("bytes_per_second", rate, comment: comment)
            if let burst = limit.burst {
                let (value, comment) = self.divided(burst, unit: "bytes")
                map.add("burst_capacity", value, comment: comment)
            }
            return .init(type, map.node)
        case .spanCount(let bounds):
            var map = MapBuilder()
            map.add("min_spans", .int(Int64(bounds.minimum)))
            if let maximum = bounds.maximum {
                self.require(.spanCountMaximum, for: "`\(path)`")
                guard maximum != 0 else {
                    self.problem(.unrepresentable, "`\(path)`: `max_spans: 0` reads as \"no maximum\" in the collector")
                    return nil
                }
                map.add("max_spans", .int(Int64(maximum)))
            }
            return .init(type, map.node)
        case .traceState(let test):
            return .init(
                type,
                .map([.init("key", self.literal(test.key)), .init("values", .list(test.values.map(self.literal)))])
            )
        case .booleanAttribute(let test):
            self.require(.booleanAttributePolicy, for: "`\(path)`")
            var map = MapBuilder()
            map.add("key", self.literal(test.key))
            map.add("value", .bool(test.value))
            if test.invert { map.add("invert_match", .bool(true)) }
            return .init(type, map.node)
        case .ottlCondition(let conditions):
            self.require(.ottlConditionPolicy, for: "`\(path)`")
            var map = MapBuilder()
            // Always written: the collector's default changed behind a feature gate (v0.153), and `not ottl …`
            // keeps opposite traces under the two modes.
            map.add("error_mode", .string((self.settings.ottlErrorMode ?? .defaultMode).rawValue))
            if !conditions.span.isEmpty { map.add("span", .list(conditions.span.map(self.literal))) }
            if !conditions.spanEvent.isEmpty { map.add("spanevent", .list(conditions.spanEvent.map(self.literal))) }
            return .init(type, map.node)
        case .and(let members):
            let list = members.map { self.policy($0, path: "\(path).\($0.name)") }
            return .init(type, .map([.init("and_sub_policy", .list(list))]))
        case .not(let member):
            self.require(.notPolicy, for: "`\(path)`")
            return .init(type, .map([.init("not_sub_policy", self.policy(member, path: "\(path).\(member.name)"))]))
        case .drop(let members):
            self.require(.dropPolicy, for: "`\(path)`")
            let list = members.map { self.policy($0, path: "\(path).\($0.name)") }
            return .init(type, .map([.init("drop_sub_policy", .list(list))]))
        case .composite(let budget):
            self.checkShares(budget, path: path)
            var map = MapBuilder()
            let (total, comment) = self.divided(budget.maxTotalSpansPerSecond, unit: "spans/s")
            map.add("max_total_spans_per_second", total, comment: comment)
            map.add("policy_order", .list(budget.members.map { self.literal($0.policy.name) }))
            map.add(
                "composite_sub_policy",
                .list(budget.members.map { self.policy($0.policy, path: "\(path).\($0.policy.name)") })
            )
            map.add(
                "rate_allocation",
                .list(
                    budget.members.map { member in
                        .map([
                            .init("policy", self.literal(member.policy.name)),
                            .init("percent", .int(Int64(member.percent))),
                        ])
                    }
                )
            )
            return .init(type, map.node)
        }
    }

    /// Traces smaller than this are assumed when a budget member says nothing about span counts.
    static let typicalTraceSpans: Int64 = 10

    /// Each sampler gives a budget member `int64(percent / 100 × max_total_spans_per_second)` spans per second
    /// and admits a trace only when it fits in what is left of that second. A member whose allocation
    /// rounds to 0 never keeps anything; one below the traces it is meant for keeps few or none of them.
    private mutating func checkShares(_ budget: CompositeBudget, path: String) {
        let total = FleetShare.perReplica(budget.maxTotalSpansPerSecond, replicas: self.replicas)
        let samplers = "\(self.replicas) sampler\(self.replicas == 1 ? "" : "s")"
        for member in budget.members {
            let allocated = FleetShare.allocation(percent: member.percent, replicaTotal: total)
            let needed = Self.smallestTrace(member.policy.kind) ?? Self.typicalTraceSpans
            let share = "share \(Int64(member.percent))%"
            let fleetWide = FleetShare.allocation(percent: member.percent, replicaTotal: budget.maxTotalSpansPerSecond)
            let whole = "\(path).\(member.policy.name)"
            if allocated < 1 {
                self.report(
                    .budgetShareTooSmall,
                    "`\(whole)`: \(share) of \(budget.maxTotalSpansPerSecond) spans/s is \(allocated) spans/s on each of \(samplers), so this member never keeps a trace",
                    at: member.shareOrigin ?? member.policy.origin,
                    suggestion:
                        "raise the budget to at least \(Self.budgetFor(1, percent: member.percent, replicas: self.replicas)) spans/s, or the share; or run fewer samplers",
                    severity: .error
                )
            } else if allocated < needed {
                self.report(
                    .budgetShareTooSmall,
                    "`\(whole)`: \(share) is \(allocated) spans/s on each of \(samplers) (\(fleetWide) fleet-wide); a trace of \(needed) spans never fits in that, so this member keeps few or no traces",
                    at: member.shareOrigin ?? member.policy.origin,
                    suggestion:
                        "raise the budget to at least \(Self.budgetFor(needed, percent: member.percent, replicas: self.replicas)) spans/s, or the share, so each sampler gives this member \(needed) spans/s",
                    severity: .warning
                )
            }
        }
    }

    /// The smallest fleet-wide budget that gives a member `perSampler` spans/s on each replica.
    private static func budgetFor(_ perSampler: Int64, percent: Double, replicas: Int) -> Int64 {
        // The collector truncates `percent / 100 × total`, so step up from the estimate until it is enough.
        var total = max(1, Int64((Double(perSampler) * 100 / percent).rounded(.down)))
        while FleetShare.allocation(percent: percent, replicaTotal: total) < perSampler { total += 1 }
        return total * Int64(max(1, replicas))
    }

    /// The smallest span count a member's test admits, when it says.
    private static func smallestTrace(_ kind: PolicyKind) -> Int64? {
        switch kind {
        case .spanCount(let bounds) where bounds.minimum > 1: Int64(bounds.minimum)
        case .and(let members): members.compactMap { Self.smallestTrace($0.kind) }.max()
        default: nil
        }
    }
}
