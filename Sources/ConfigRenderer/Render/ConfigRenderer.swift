import Crypto
import PolicyEngine

/// The two collector tiers.
public enum Tier: String, Sendable, Hashable, Codable, CaseIterable {
    /// Collectors running the load-balancing exporter, routing each trace to one sampler.
    case loadBalancing = "lb"
    /// Collectors running the `tail_sampling` processor.
    case sampling
}

/// One rendered collector config.
public struct RenderedConfig: Sendable, Hashable {
    /// Which tier it is for.
    public var tier: Tier
    /// The complete collector config, ready to start with.
    public var yaml: String
    /// SHA-256 of ``yaml`` in lower-case hex: the config's identity (and its OpAMP config hash).
    public var hash: String
    /// What the render warns about (for example a budget share that admits few traces per sampler).
    public var warnings: [FleetDiagnostic]

    init(tier: Tier, yaml: String, warnings: [FleetDiagnostic] = []) {
        self.tier = tier
        self.yaml = yaml
        self.warnings = warnings
        self.hash = SHA256.hash(data: Array(yaml.utf8)).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }
}

/// What a render needs besides the policies and the fleet: the current sampler membership.
public struct Membership: Sendable, Hashable {
    /// Ring entries of the samplers (exact strings); sorted and de-duplicated before use.
    public var samplers: [String]
    /// The number of sampler replicas that share fleet-wide limits; defaults to the number of samplers.
    public var samplerCount: Int

    /// Creates membership from the sampler list.
    public init(samplers: [String], samplerCount: Int? = nil) {
        let sorted = Array(Set(samplers)).sorted()
        self.samplers = sorted
        self.samplerCount = samplerCount ?? sorted.count
    }
}

/// Turns a compiled policy set and a fleet description into complete collector configs.
///
/// Pure and deterministic: the same inputs give byte-identical YAML and hash. Fleet-wide limits and
/// budgets are divided by the number of samplers (rounded up) with the fleet-wide figure kept in a
/// comment; features the fleet's collector version lacks are refused.
public enum ConfigRenderer {
    /// Renders one tier.
    /// - Returns: the config, or every problem found (features too new for the target, no samplers, …).
    public static func render(
        _ tier: Tier,
        policySet: PolicySet,
        fleet: Fleet,
        membership: Membership
    ) -> Result<RenderedConfig, FleetProblems> {
        var context = RenderContext(fleet: fleet, membership: membership, settings: policySet.settings)
        let root: YAMLNode
        switch tier {
        case .loadBalancing:
            root = context.loadBalancingConfig()
        case .sampling:
            root = context.samplingConfig(policySet)
        }
        guard context.problems.isEmpty else { return .failure(FleetProblems(diagnostics: context.problems)) }
        // The header names the sampler count only where the config depends on it, so a config that does not
        // keeps its hash (and its collectors keep running) when samplers come and go.
        let dependsOnCount: Bool
        switch tier {
        case .loadBalancing: dependsOnCount = fleet.resolver == .static
        case .sampling: dependsOnCount = self.dependsOnSamplerCount(policySet)
        }
        let samplers = dependsOnCount ? "; samplers: \(membership.samplerCount)" : ""
        let header = [
            "Rendered by Tailplane; do not edit by hand.",
            "tier: \(tier.rawValue); collector \(fleet.collectorVersion) or newer\(samplers)",
        ]
        return .success(
            RenderedConfig(tier: tier, yaml: YAMLWriter.write(root, header: header), warnings: context.warnings)
        )
    }

    /// Renders both tiers, reporting the problems of both.
    public static func renderAll(policySet: PolicySet, fleet: Fleet, membership: Membership) -> Result<
        [RenderedConfig], FleetProblems
    > {
        var configs: [RenderedConfig] = []
        var problems: [FleetDiagnostic] = []
        for tier in Tier.allCases {
            switch self.render(tier, policySet: policySet, fleet: fleet, membership: membership) {
            case .success(let config): configs.append(config)
            case .failure(let failure):
                problems.append(contentsOf: failure.diagnostics.filter { !problems.contains($0) })
            }
        }
        return problems.isEmpty ? .success(configs) : .failure(FleetProblems(diagnostics: problems))
    }

    /// Whether the sampling tier's config depends on the number of samplers: true when a policy (at any
    /// depth) has a fleet-wide figure the renderer divides among them (a span or byte limit, or a budget).
    public static func dependsOnSamplerCount(_ policySet: PolicySet) -> Bool {
        self.firstCountDependentPolicy(policySet) != nil
    }

    /// The name of the first top-level policy whose rendering divides a fleet-wide figure among samplers.
    static func firstCountDependentPolicy(_ policySet: PolicySet) -> String? {
        policySet.policies.first { self.dependsOnSamplerCount($0.kind) }?.name
    }

    private static func dependsOnSamplerCount(_ kind: PolicyKind) -> Bool {
        switch kind {
        case .rateLimiting, .bytesLimiting, .composite:
            true
        case .and(let members), .drop(let members):
            members.contains { self.dependsOnSamplerCount($0.kind) }
        case .not(let member):
            self.dependsOnSamplerCount(member.kind)
        case .alwaysSample, .latency, .numericAttribute, .probabilistic, .statusCode, .stringAttribute, .spanCount,
            .traceState, .traceFlags, .booleanAttribute, .ottlCondition:
            false
        }
    }
}
