import ConfigRenderer
import PolicyEngine
import Testing

/// The sampler count matters only to fleet-wide limits and budgets (issue 11): a policy set without them
/// renders without a count, and its config (and hash) does not change when samplers come and go.
@Suite struct SamplerCountTests {
    static let withoutLimits = """
        drop health when attr["http.route"] == "/healthz"
        keep errors when status == ERROR
        keep slow when duration >= 2s
        keep checkout when service == "checkout" and not attr["http.route"] == "/ping"
        keep baseline sample 10%
        """

    @Test(arguments: [
        "keep all limit 100 spans/s",
        "keep big when spans >= 10 limit 4000 bytes/s",
        #"keep search when service == "search" and attr["http.route"] == "/q" limit 50 spans/s"#,
        """
        budget checkout 1000 spans/s {
            keep checkout_errors when status == ERROR share 60%
            keep checkout_rest when service == "checkout" share 40%
        }
        """,
    ])
    func countIsNeededWhereALimitDividesIt(_ source: String) {
        let set = policySet(source)
        #expect(ConfigRenderer.dependsOnSamplerCount(set))
        guard
            case .failure(let problems) = ConfigRenderer.render(
                .sampling,
                policySet: set,
                fleet: Fleet(),
                membership: Membership(samplers: [])
            )
        else {
            Issue.record("rendered fleet-wide limits without a sampler count")
            return
        }
        #expect(problems.diagnostics.map(\.code) == [.noSamplers])
        #expect(problems.diagnostics.first?.message.contains("fleet-wide") == true)
    }

    @Test func noCountNeededWithoutLimits() throws {
        let set = policySet(Self.withoutLimits)
        #expect(!ConfigRenderer.dependsOnSamplerCount(set))
        let none = ConfigRenderer.render(
            .sampling,
            policySet: set,
            fleet: Fleet(),
            membership: Membership(samplers: [])
        )
        let config = try none.get()
        #expect(!config.yaml.contains("samplers:"))
        #expect(config.yaml.contains("# tier: sampling; collector v0.150 or newer\n"))
        // Any count gives the same bytes: a recount must not restart samplers for nothing.
        for count in [1, 3, 40] {
            let other = try ConfigRenderer.render(
                .sampling,
                policySet: set,
                fleet: Fleet(),
                membership: Membership(samplers: [], samplerCount: count)
            ).get()
            #expect(other.hash == config.hash)
        }
    }

    @Test func countChangesTheConfigWhereItDividesALimit() throws {
        let set = policySet(Self.withoutLimits + "\nkeep rest limit 900 spans/s\n")
        let three = try ConfigRenderer.render(
            .sampling,
            policySet: set,
            fleet: Fleet(),
            membership: Membership(samplers: [], samplerCount: 3)
        ).get()
        let four = try ConfigRenderer.render(
            .sampling,
            policySet: set,
            fleet: Fleet(),
            membership: Membership(samplers: [], samplerCount: 4)
        ).get()
        #expect(three.yaml.contains("; samplers: 3\n"))
        #expect(three.yaml.contains("spans_per_second: 301"))
        #expect(four.yaml.contains("spans_per_second: 226"))
        #expect(three.hash != four.hash)
    }

    @Test func loadBalancersWithoutAStaticRingDoNotDependOnTheSamplers() throws {
        var fleet = Fleet()
        fleet.resolver = .dns(DNSResolver(hostname: "samplers.observability", port: 4317))
        let a = try #require(render(.loadBalancing, PolicySet(), fleet: fleet, samplers: ["a:4317"]))
        let b = try #require(render(.loadBalancing, PolicySet(), fleet: fleet, samplers: ["a:4317", "b:4317"]))
        #expect(a.hash == b.hash)
        #expect(!a.yaml.contains("samplers:"))
        let staticA = try #require(render(.loadBalancing, PolicySet(), samplers: ["a:4317"]))
        #expect(staticA.yaml.contains("; samplers: 1\n"))
    }
}
