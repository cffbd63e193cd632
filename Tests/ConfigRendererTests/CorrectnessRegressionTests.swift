import ConfigRenderer
import PolicyEngine
import Testing
import Yams

/// Rules that once rendered to a config doing something other than what the policy says (issue 7). Each
/// failed on the code before its fix.
@Suite struct CorrectnessRegressionTests {
    private func diagnostics(_ text: String) -> [Diagnostic] {
        PolicyCompiler.compile([SourceFile(path: "t.policy", text: text)]).diagnostics
    }

    private func fleet(version minor: Int) -> Fleet {
        var fleet = Fleet()
        fleet.collectorVersion = CollectorVersion(major: 0, minor: minor)
        return fleet
    }

    // MARK: Upper-only duration bounds

    @Test(arguments: [
        ("keep fast when service == \"search\" and duration < 200ms", 40),
        ("keep fast when duration <= 2s sample 10%", 16),
        ("keep fast when service == \"s\" and duration > 0ms and duration < 200ms", 54),
        ("keep fast when duration < 2s limit 100 spans/s", 16),
        ("budget b 100 spans/s {\n    keep fast when duration < 2s share 100%\n}", 20),
    ])
    func upperOnlyDurationBoundsOutsideAPlainKeepAreErrors(source: String, column: Int) {
        let found = self.diagnostics(source)
        let error = found.first { $0.code == .unreliableDurationBound }
        #expect(error?.severity == .error, "\(found.map(\.code))")
        #expect(error?.start.column == column)
        #expect(error?.suggestion?.contains("as a rule of its own") == true)
        #expect(PolicyCompiler.compile([SourceFile(path: "t.policy", text: source)]).policySet == nil)
    }

    @Test func aPlainUpperBoundAndAWindowStillCompile() {
        #expect(self.diagnostics("keep fast when duration < 200ms").isEmpty)
        let window = self.diagnostics("keep mid when service == \"search\" and duration in 100ms..2s")
        #expect(window.map(\.code) == [.durationWindow])
        #expect(window.first?.severity == .warning)
    }

    // MARK: Budget shares per sampler

    @Test func aShareThatRoundsToZeroPerSamplerIsRefusedAtTheShare() throws {
        let set = policySet(
            "budget b 200 spans/s {\n    keep errors when status == ERROR share 95%\n    keep rest share 5%\n}"
        )
        let samplers = (0..<20).map { "s\($0):4317" }
        let result = ConfigRenderer.render(
            .sampling,
            policySet: set,
            fleet: Fleet(),
            membership: Membership(samplers: samplers)
        )
        guard case .failure(let problems) = result else {
            Issue.record("rendered a member that can never keep a trace")
            return
        }
        let problem = try #require(problems.diagnostics.first { $0.code == .budgetShareTooSmall })
        #expect(problem.file == "t.policy" && problem.line == 3 && problem.column == 21)
        #expect(problem.message.contains("20 samplers"))
        #expect(problem.suggestion?.contains("400 spans/s") == true)
        // 400 spans/s is exactly enough: 20 per sampler, 5% of it is 1.
        let raised = policySet(
            "budget b 400 spans/s {\n    keep errors when status == ERROR share 95%\n    keep rest share 5%\n}"
        )
        guard
            case .success = ConfigRenderer.render(
                .sampling,
                policySet: raised,
                fleet: Fleet(),
                membership: Membership(samplers: samplers)
            )
        else {
            Issue.record("the suggested budget does not render")
            return
        }
    }

    @Test func aShareBelowTheTracesItAdmitsIsAWarning() throws {
        let set = policySet(
            "budget b 120 spans/s {\n    keep big when spans > 50 share 50%\n    keep rest share 50%\n}"
        )
        let config = try #require(render(.sampling, set, samplers: ["a:4317", "b:4317"]))
        // 60 spans/s per sampler: `rest` gets 30 (fine), `big` gets 30 but admits only traces of 51+ spans.
        #expect(config.warnings.map(\.code) == [.budgetShareTooSmall])
        #expect(config.warnings.first?.severity == .warning)
        #expect(config.warnings.first?.message.contains("51 spans") == true)
        #expect(config.warnings.first?.line == 2)
    }

    // MARK: OTTL error mode

    @Test func ottlErrorModeIsAlwaysWritten() throws {
        let plain = try #require(
            render(.sampling, policySet("keep retried when ottl span \"attributes[\\\"retry\\\"] > 2\""))
        )
        let policy = try #require(try renderedPolicies(plain).first)
        #expect((policy["ottl_condition"] as? [String: Any])?["error_mode"] as? String == "propagate")
        let chosen = try #require(
            render(
                .sampling,
                policySet(
                    "sampler { ottl_error_mode ignore }\nkeep retried when ottl span \"attributes[\\\"retry\\\"] > 2\""
                )
            )
        )
        let ignoring = try #require(try renderedPolicies(chosen).first)
        #expect((ignoring["ottl_condition"] as? [String: Any])?["error_mode"] as? String == "ignore")
    }

    // MARK: Salts

    @Test func sampleRulesSampleIndependentlyByDefault() throws {
        let config = try #require(
            render(
                .sampling,
                policySet(
                    "keep vip when attr[\"tier\"] == \"gold\" sample 50%\nkeep baseline sample 5%\nkeep pinned sample 1% salt \"shared\""
                )
            )
        )
        let salts = try renderedPolicies(config).map { policy -> String? in
            let direct = policy["probabilistic"] as? [String: Any]
            let nested = (policy["and"] as? [String: Any])?["and_sub_policy"] as? [[String: Any]]
            let leaf = direct ?? nested?.compactMap { $0["probabilistic"] as? [String: Any] }.first
            return leaf?["hash_salt"] as? String
        }
        #expect(salts == ["vip", "baseline", "shared"])
    }

    // MARK: Span limits

    @Test func thePlusOneIsOnlyForTheFixedWindow() throws {
        let fixed = try #require(render(.sampling, policySet("keep capped limit 1000 spans/s")))
        let bucket = try #require(
            render(.sampling, policySet("keep capped limit 1000 spans/s burst 2000"), fleet: self.fleet(version: 153))
        )
        func rate(_ config: RenderedConfig) throws -> Int? {
            let policy = try #require(try renderedPolicies(config).first)
            return (policy["rate_limiting"] as? [String: Any])?["spans_per_second"] as? Int
        }
        #expect(try rate(fixed) == 335)
        #expect(try rate(bucket) == 334)
        #expect(!bucket.yaml.contains("+1"))
    }

    // MARK: Fleet literals

    @Test func fleetLiteralsAreDollarEscaped() throws {
        var fleet = Fleet()
        var backend = Backend(name: "tempo", protocol: .otlp, endpoint: "tempo$1:4317")
        backend.headers = ["x-scope-orgid": .literal("team$a"), "authorization": .environment("TOKEN")]
        backend.tls.caFile = "/etc/ca$.pem"
        fleet.backends = [backend]
        let config = try #require(render(.sampling, policySet("keep all"), fleet: fleet))
        #expect(config.yaml.contains("endpoint: tempo$$1:4317"))
        #expect(config.yaml.contains("x-scope-orgid: team$$a"))
        #expect(config.yaml.contains("authorization: ${env:TOKEN}"))
        #expect(config.yaml.contains("ca_file: /etc/ca$$.pem"))
        let lb = try #require(render(.loadBalancing, PolicySet(), fleet: fleet, samplers: ["s$1:4317"]))
        #expect(lb.yaml.contains("- s$$1:4317"))
    }

    // MARK: Load-balancing queue

    @Test func theLoadBalancerQueuesInFrontOfTheRingWhereTheTargetCan() throws {
        func exporter(_ minor: Int) throws -> [String: Any] {
            let config = try #require(render(.loadBalancing, PolicySet(), fleet: self.fleet(version: minor)))
            let root = try #require(try Yams.load(yaml: config.yaml) as? [String: Any])
            let exporters = try #require(root["exporters"] as? [String: Any])
            return try #require(exporters.values.first as? [String: Any])
        }
        let current = try exporter(150)
        let otlp = try #require((current["protocol"] as? [String: Any])?["otlp"] as? [String: Any])
        #expect(current["sending_queue"] != nil && current["retry_on_failure"] != nil)
        // Off per sampler even when the exporter's own queue is off: the collector keeps a per-sampler queue
        // unless told, and that queue is lost with its sampler.
        #expect((otlp["sending_queue"] as? [String: Any])?["enabled"] as? Bool == false)
        #expect((otlp["retry_on_failure"] as? [String: Any])?["enabled"] as? Bool == false)
        let old = try exporter(110)
        let oldOTLP = try #require((old["protocol"] as? [String: Any])?["otlp"] as? [String: Any])
        #expect(old["sending_queue"] == nil)
        #expect(oldOTLP["sending_queue"] != nil)
        #expect((oldOTLP["retry_on_failure"] as? [String: Any])?["enabled"] as? Bool == true)
    }
}
