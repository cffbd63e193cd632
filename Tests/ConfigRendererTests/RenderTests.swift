import ConfigRenderer
import Foundation
import PolicyEngine
import Testing
import Yams

@Suite struct RenderTests {
    static let goldenDirectory = repositoryRoot.appendingPathComponent("Tests/ConfigRendererTests/Golden")
    static let exampleSamplers = [
        "sampler-2.observability:4317", "sampler-0.observability:4317", "sampler-1.observability:4317",
    ]

    @Test(arguments: Tier.allCases)
    func examplesMatchGolden(tier: Tier) throws {
        let (set, fleet) = try examples()
        let config = try #require(render(tier, set, fleet: fleet, samplers: Self.exampleSamplers))
        try expectGolden(config, Self.goldenDirectory.appendingPathComponent("\(tier.rawValue).yaml"))
    }

    @Test(arguments: Tier.allCases)
    func renderedConfigsParseAndWireOnlyDefinedComponents(tier: Tier) throws {
        let (set, fleet) = try examples()
        for fleetVariant in [fleet, Fleet()] {
            let config = try #require(render(tier, set, fleet: fleetVariant, samplers: Self.exampleSamplers))
            let root = try #require(try Yams.load(yaml: config.yaml) as? [String: Any])
            let service = try #require(root["service"] as? [String: Any])
            let pipelines = try #require(service["pipelines"] as? [String: Any])
            #expect(!pipelines.isEmpty)
            for (name, pipeline) in pipelines {
                let pipeline = try #require(pipeline as? [String: [String]], "pipeline \(name)")
                for kind in ["receivers", "processors", "exporters"] {
                    let defined = Set(((root[kind] as? [String: Any]) ?? [:]).keys)
                    for component in pipeline[kind] ?? [] {
                        #expect(defined.contains(component), "\(name).\(kind) uses undefined \(component)")
                    }
                }
                #expect(!(pipeline["receivers"] ?? []).isEmpty && !(pipeline["exporters"] ?? []).isEmpty)
            }
            // Every defined component is used.
            let used = Set(
                pipelines.values.compactMap { $0 as? [String: [String]] }.flatMap { $0.values.flatMap { $0 } }
            )
            for kind in ["receivers", "processors", "exporters"] {
                for component in ((root[kind] as? [String: Any]) ?? [:]).keys {
                    #expect(used.contains(component), "\(component) is defined but unused")
                }
            }
        }
    }

    @Test(arguments: Tier.allCases)
    func everyRenderedKeyIsInTheCollectorSchema(tier: Tier) throws {
        let (set, fleet) = try examples()
        var fleets = [fleet, Fleet()]
        var dns = fleet
        dns.resolver = .dns(
            DNSResolver(hostname: "samplers.observability", port: 4317, intervalMs: 5000, timeoutMs: 1000)
        )
        var k8s = fleet
        k8s.resolver = .k8s(
            KubernetesResolver(
                service: "samplers.observability",
                ports: [4317],
                timeoutMs: 60_000,
                returnHostnames: true
            )
        )
        var old = fleet
        old.collectorVersion = CollectorVersion(major: 0, minor: 160)
        old.telemetry.metricsPort = nil
        fleets += [dns, k8s, old]
        let everything = policySet(
            PolicyRenderingTests.cases.map(\.0).joined(separator: "\n")
                + "\nsampler {\n decision_wait 10s\n decision_wait_after_root 2s\n max_traces 100000\n expected_traces 10/s\n block_on_overflow true\n cache sampled 100000 unsampled 100000\n sample_on_first_match true\n drop_pending_on_shutdown true\n max_trace_size 1MiB\n ottl_error_mode silent\n}"
        )
        for policies in [set, everything] {
            for fleet in fleets {
                let config = try #require(render(tier, policies, fleet: fleet, samplers: Self.exampleSamplers))
                let root = try #require(try Yams.load(yaml: config.yaml))
                let shape = tier == .sampling ? CollectorSchema.samplingTier : CollectorSchema.loadBalancingTier
                let violations = CollectorSchema.violations(root, shape)
                #expect(violations.isEmpty, "\(violations)")
            }
        }
    }

    @Test func deterministicAcrossRunsAndFileOrder() throws {
        let directory = repositoryRoot.appendingPathComponent("policies")
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter {
            $0.hasSuffix(".policy")
        }
        let files = try names.map {
            SourceFile(
                path: "policies/\($0)",
                bytes: [UInt8](try Data(contentsOf: directory.appendingPathComponent($0)))
            )
        }
        let (_, fleet) = try examples()
        var hashes = Set<String>()
        var texts = Set<String>()
        for order in [files, files.reversed(), files.shuffled(), files.shuffled()] {
            let set = try #require(PolicyCompiler.compile(order).policySet)
            for samplers in [
                Self.exampleSamplers, Self.exampleSamplers.reversed(), Self.exampleSamplers + [Self.exampleSamplers[0]],
            ] {
                let config = try #require(render(.sampling, set, fleet: fleet, samplers: samplers))
                let lb = try #require(render(.loadBalancing, set, fleet: fleet, samplers: samplers))
                hashes.insert(config.hash + lb.hash)
                texts.insert(config.yaml + lb.yaml)
            }
        }
        #expect(hashes.count == 1)
        #expect(texts.count == 1)
    }

    @Test func hashIsSHA256OfTheBytes() throws {
        let config = try #require(render(.sampling, policySet("keep all")))
        #expect(config.hash.count == 64)
        #expect(config.hash.allSatisfy { $0.isHexDigit && !$0.isUppercase })
        let other = try #require(render(.sampling, policySet("keep errors when status == ERROR")))
        #expect(config.hash != other.hash)
    }

    @Test(arguments: [(1, 2000, 1500, 1_048_576), (3, 667, 500, 349_526), (7, 286, 215, 149_797)])
    func fleetWideFiguresAreDividedPerReplica(samplers: Int, spans: Int, budget: Int, bytes: Int) throws {
        let set = policySet(
            """
            keep capped limit 2000 spans/s
            keep bulk limit 1MiB/s
            budget b 1500 spans/s {
                keep b1 share 100%
            }
            """
        )
        let members = (0..<samplers).map { "s\($0):4317" }
        let config = try #require(render(.sampling, set, samplers: members))
        let policies = try renderedPolicies(config)
        let rate = (policies[0]["rate_limiting"] as? [String: Any])?["spans_per_second"] as? Int
        let byteRate = (policies[1]["bytes_limiting"] as? [String: Any])?["bytes_per_second"] as? Int
        let total = (policies[2]["composite"] as? [String: Any])?["max_total_spans_per_second"] as? Int
        // One more than the share: the collector keeps a trace only while the count stays strictly below it.
        #expect(rate == spans + 1)
        #expect(byteRate == bytes)
        #expect(total == budget)
        // Rounded up: the fleet never gets less than it asked for.
        #expect(spans * samplers >= 2000 && (spans - 1) * samplers < 2000)
        #expect(config.yaml.contains("# fleet-wide 2000 spans/s across \(samplers) sampler\(samplers == 1 ? "" : "s")"))
    }

    @Test func refusesFeaturesTheTargetLacks() {
        var fleet = Fleet()
        fleet.collectorVersion = CollectorVersion(major: 0, minor: 120)
        let set = policySet(
            "drop noise when service == \"noise\"\nkeep flagged when sampled_flag\nkeep fast when duration < 1s"
        )
        guard
            case .failure(let problems) = ConfigRenderer.render(
                .sampling,
                policySet: set,
                fleet: fleet,
                membership: Membership(samplers: ["a:4317"])
            )
        else {
            Issue.record("rendered features v0.120 lacks")
            return
        }
        let messages = problems.diagnostics.map(\.message)
        #expect(problems.diagnostics.allSatisfy { $0.code == .featureNeedsNewerCollector })
        #expect(
            messages.contains {
                $0.contains("`drop` policies need otelcol-contrib v0.127 or newer; the fleet targets v0.120")
            }
        )
        #expect(messages.contains { $0.contains("`trace_flags`") })
        #expect(messages.contains { $0.contains("`not` policies") })
        fleet.collectorVersion = CollectorVersion(major: 0, minor: 150)
        #expect(render(.sampling, set, fleet: fleet) != nil)
    }

    @Test func loadBalancingExporterTypeFollowsTheVersion() throws {
        var fleet = Fleet()
        fleet.collectorVersion = CollectorVersion(major: 0, minor: 152)
        #expect(try #require(render(.loadBalancing, PolicySet(), fleet: fleet)).yaml.contains("\n  loadbalancing:\n"))
        fleet.collectorVersion = CollectorVersion(major: 0, minor: 153)
        #expect(try #require(render(.loadBalancing, PolicySet(), fleet: fleet)).yaml.contains("\n  load_balancing:\n"))
        fleet.collectorVersion = CollectorVersion(major: 0, minor: 140)
        fleet.loadBalancingExporterType = "load_balancing"
        guard
            case .failure = ConfigRenderer.render(
                .loadBalancing,
                policySet: PolicySet(),
                fleet: fleet,
                membership: Membership(samplers: ["a:1"])
            )
        else {
            Issue.record("load_balancing accepted on v0.140")
            return
        }
    }

    @Test func staticRingIsSortedExactStrings() throws {
        let config = try #require(
            render(
                .loadBalancing,
                PolicySet(),
                samplers: ["10.0.0.2:4317", "10.0.0.10:4317", "host-b", "10.0.0.2:4317"]
            )
        )
        let root = try #require(try Yams.load(yaml: config.yaml) as? [String: Any])
        let exporter = try #require(((root["exporters"] as? [String: Any])?["loadbalancing"]) as? [String: Any])
        let hostnames =
            ((exporter["resolver"] as? [String: Any])?["static"] as? [String: Any])?["hostnames"] as? [String]
        #expect(hostnames == ["10.0.0.10:4317", "10.0.0.2:4317", "host-b"])
        #expect(exporter["routing_key"] as? String == "traceID")
    }

    @Test func missingMembershipIsAnError() {
        guard
            case .failure(let problems) = ConfigRenderer.render(
                .loadBalancing,
                policySet: PolicySet(),
                fleet: Fleet(),
                membership: Membership(samplers: [])
            )
        else {
            Issue.record("rendered a static ring with no samplers")
            return
        }
        #expect(problems.diagnostics.first?.code == .noSamplers)
        guard
            case .failure(let sampling) = ConfigRenderer.render(
                .sampling,
                policySet: policySet("keep all limit 100 spans/s"),
                fleet: Fleet(),
                membership: Membership(samplers: [])
            )
        else {
            Issue.record("rendered per-replica limits with no samplers")
            return
        }
        #expect(sampling.diagnostics.first?.code == .noSamplers)
        var dns = Fleet()
        dns.resolver = .dns(DNSResolver(hostname: "samplers"))
        #expect(render(.loadBalancing, PolicySet(), fleet: dns, samplers: []) != nil)
    }

    @Test func oldCollectorsGetTheMetricsAddress() throws {
        var fleet = Fleet()
        fleet.collectorVersion = CollectorVersion(major: 0, minor: 100)
        let config = try #require(render(.loadBalancing, PolicySet(), fleet: fleet))
        #expect(config.yaml.contains("      address: \"0.0.0.0:8888\"\n"))
        #expect(!config.yaml.contains("readers"))
    }

    @Test func secretsStayOutOfConfigs() throws {
        let (set, fleet) = try examples()
        let config = try #require(render(.sampling, set, fleet: fleet))
        #expect(config.yaml.contains("authorization: ${env:TEMPO_TOKEN}"))
    }

    @Test func dollarsInPolicyStringsSurviveTheCollectorsExpansion() throws {
        let config = try #require(
            render(
                .sampling,
                policySet(#"keep a when attr["x"] == "${env:HOME}" or ottl span "attributes[\"p\"] == \"$5\"""#)
            )
        )
        #expect(config.yaml.contains("$${env:HOME}"))
        #expect(config.yaml.contains(#"attributes[\"p\"] == \"$$5\""#))
        let anchored = try #require(render(.sampling, policySet(#"keep h when attr["r"] matches "/h""#)))
        #expect(anchored.yaml.contains(#"- "^(?:/h)$$""#))
    }

    @Test func diffShowsWhatChanged() throws {
        let before = try #require(render(.sampling, policySet("keep errors when status == ERROR\nkeep base sample 5%")))
        let after = try #require(render(.sampling, policySet("keep errors when status == ERROR\nkeep base sample 10%")))
        let diff = ConfigDiff.unified(old: before.yaml, new: after.yaml, oldName: "a", newName: "b")
        #expect(diff.hasPrefix("--- a\n+++ b\n@@ "))
        #expect(diff.contains("\n-          sampling_percentage: 5\n+          sampling_percentage: 10\n"))
        #expect(ConfigDiff.unified(old: before.yaml, new: before.yaml, oldName: "a", newName: "b").isEmpty)
    }
}
