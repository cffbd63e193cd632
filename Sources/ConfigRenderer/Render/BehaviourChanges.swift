import PolicyEngine

/// Collector behaviour that changed between two releases while the config asking for it stayed the same.
/// Moving a tier's collector across such a change (up or down) changes what the policies or the fleet do
/// without a line of them changing, so the control plane refuses the move until the change is accepted by
/// its ``id``.
public struct BehaviourChange: Sendable, Hashable, Codable {
    /// Stable name, used to accept the change (`policyctl apply --accept-change ID`).
    public var id: String
    /// The tier whose collector behaves differently.
    public var tier: Tier
    /// The first release with the new behaviour.
    public var since: CollectorVersion
    /// The behaviour before that release.
    public var before: String
    /// The behaviour from that release on.
    public var after: String
    /// Where the change was made (contrib issue or pull request).
    public var evidence: String
    /// What in the policies or the fleet relies on the old or the new behaviour.
    public var affected: [String]
    /// What to do about it besides accepting it.
    public var suggestion: String

    /// The changes a tier's collector crosses moving from `from` to `to` (either way) that `policies` and
    /// `fleet` rely on, in release order.
    public static func crossed(
        tier: Tier,
        from: CollectorVersion,
        to: CollectorVersion,
        policies: PolicySet,
        fleet: Fleet
    ) -> [BehaviourChange] {
        let low = min(from, to)
        let high = max(from, to)
        // A change at release R is crossed when one side runs before R and the other R or later.
        func crosses(_ since: CollectorVersion) -> Bool { low < since && since <= high }
        var changes: [BehaviourChange] = []
        switch tier {
        case .sampling:
            let unburst = Self.rateLimitsWithoutBurst(policies.policies)
            if crosses(CollectorFeature.rateLimitTokenBucket), !unburst.isEmpty {
                changes.append(
                    BehaviourChange(
                        id: "rate-limit-token-bucket",
                        tier: .sampling,
                        since: CollectorFeature.rateLimitTokenBucket,
                        before:
                            "`rate_limiting` counts spans in fixed one-second windows: at most the limit per sampler each second",
                        after:
                            "`rate_limiting` is a token bucket holding 2 × the limit unless `burst_capacity` says otherwise: after a quiet spell up to twice the limit passes at once",
                        evidence: "contrib PR #48226",
                        affected: unburst,
                        suggestion:
                            "once the tier runs v0.153 or newer, state the burst the rule may take (`burst N` on the limit); until then accept the change"
                    )
                )
            }
        case .loadBalancing:
            let kubernetesTimeout = CollectorVersion(major: 0, minor: 147)
            if case .k8s(let resolver) = fleet.resolver, resolver.timeoutMs == nil, crosses(kubernetesTimeout) {
                changes.append(
                    BehaviourChange(
                        id: "k8s-resolver-timeout",
                        tier: .loadBalancing,
                        since: kubernetesTimeout,
                        before:
                            "the k8s resolver's EndpointSlice watch times out after 1 s, so every load balancer reopens it every second",
                        after: "it times out after 1 min: far fewer requests to the Kubernetes API server",
                        // Merged 2026-02-19; the first release is not pinned here (docs/fleet.md).
                        evidence: "contrib PR #46206, issue #46204",
                        affected: ["fleet.yaml `samplers.k8s` (service \(resolver.service)) sets no `timeout`"],
                        suggestion:
                            "set `samplers.k8s.timeout` in fleet.yaml to the value the load balancers should use"
                    )
                )
            }
        }
        return changes.sorted { ($0.since, $0.id) < ($1.since, $1.id) }
    }

    /// Rules with a span limit that states no burst, as `rule (file:line:col)`, every policy looked into.
    /// Members carry no rule or place of their own: they are the enclosing rule's.
    static func rateLimitsWithoutBurst(
        _ policies: [Policy],
        rule: String? = nil,
        origin: SourceReference? = nil
    ) -> [String] {
        var found: [String] = []
        for policy in policies {
            let name = policy.rule ?? rule ?? policy.name
            let at = policy.origin ?? origin
            let place = at.map { " (\($0.file):\($0.line):\($0.column))" } ?? ""
            switch policy.kind {
            case .rateLimiting(let limit) where limit.burst == nil:
                found.append("rule `\(name)`\(place)")
            case .and(let members), .drop(let members):
                found += Self.rateLimitsWithoutBurst(members, rule: name, origin: at)
            case .not(let member):
                found += Self.rateLimitsWithoutBurst([member], rule: name, origin: at)
            case .composite(let budget):
                found += Self.rateLimitsWithoutBurst(budget.members.map(\.policy), rule: name, origin: at)
            default:
                break
            }
        }
        var seen: Set<String> = []
        return found.filter { seen.insert($0).inserted }
    }
}
