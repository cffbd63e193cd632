import ConfigRenderer
import Foundation
import PolicyEngine
import Testing

/// The collector behaviour that changed between releases under the same config (issue 15's version gating):
/// which moves cross a change, and whether the policies or the fleet rely on it.
@Suite struct BehaviourChangeTests {
    static func version(_ minor: Int) -> CollectorVersion { CollectorVersion(major: 0, minor: minor) }

    @Test func aSpanLimitWithoutBurstReliesOnTheFixedWindowUntilV0153() throws {
        let set = policySet(
            """
            keep errors when status == ERROR
            keep search when service == "search" limit 3000 spans/s
            keep checkout when service == "checkout" limit 500 spans/s burst 1000
            """
        )
        // Up across v0.153, and back down: both cross it; the rule with a burst does not rely on the default.
        for (from, to) in [(150, 153), (152, 156), (156, 150)] {
            let changes = BehaviourChange.crossed(
                tier: .sampling,
                from: Self.version(from),
                to: Self.version(to),
                policies: set,
                fleet: Fleet()
            )
            #expect(changes.map(\.id) == ["rate-limit-token-bucket"], "v0.\(from) -> v0.\(to)")
            let affected = try #require(changes.first?.affected)
            #expect(affected.count == 1)
            #expect(affected.first?.contains("`search`") == true && affected.first?.contains("t.policy:2:") == true)
        }
        // Moves on one side of the release cross nothing; the load-balancing tier has no rate limits.
        for (from, to) in [(140, 152), (153, 156)] {
            #expect(
                BehaviourChange.crossed(
                    tier: .sampling,
                    from: Self.version(from),
                    to: Self.version(to),
                    policies: set,
                    fleet: Fleet()
                ).isEmpty
            )
        }
        #expect(
            BehaviourChange.crossed(
                tier: .loadBalancing,
                from: Self.version(150),
                to: Self.version(153),
                policies: set,
                fleet: Fleet()
            ).isEmpty
        )
        // A set with no span limit relies on nothing.
        let none = policySet("keep errors when status == ERROR\nkeep base sample 5%\n")
        #expect(
            BehaviourChange.crossed(
                tier: .sampling,
                from: Self.version(150),
                to: Self.version(153),
                policies: none,
                fleet: Fleet()
            ).isEmpty
        )
    }

    @Test func theKubernetesResolverTimeoutDefaultChangedInV0147() {
        var fleet = Fleet()
        fleet.resolver = .k8s(KubernetesResolver(service: "samplers.observability"))
        let crossed = BehaviourChange.crossed(
            tier: .loadBalancing,
            from: Self.version(145),
            to: Self.version(150),
            policies: PolicySet(),
            fleet: fleet
        )
        #expect(crossed.map(\.id) == ["k8s-resolver-timeout"])
        #expect(crossed.first?.affected.first?.contains("samplers.observability") == true)
        // A timeout set in fleet.yaml pins it; the static resolver has none.
        fleet.resolver = .k8s(KubernetesResolver(service: "samplers.observability", timeoutMs: 5000))
        #expect(
            BehaviourChange.crossed(
                tier: .loadBalancing,
                from: Self.version(145),
                to: Self.version(150),
                policies: PolicySet(),
                fleet: fleet
            ).isEmpty
        )
        #expect(
            BehaviourChange.crossed(
                tier: .loadBalancing,
                from: Self.version(145),
                to: Self.version(150),
                policies: PolicySet(),
                fleet: Fleet()
            ).isEmpty
        )
    }
}
