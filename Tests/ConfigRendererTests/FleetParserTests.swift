import ConfigRenderer
import Foundation
import Testing
import Yams

@Suite struct FleetParserTests {
    private func problems(_ yaml: String) -> [FleetDiagnostic] {
        if case .failure(let failure) = FleetParser.parse(yaml, path: "fleet.yaml") { return failure.diagnostics }
        return []
    }

    @Test func emptyFileIsTheDefaultFleet() throws {
        #expect(try FleetParser.parse("").get() == Fleet())
        #expect(try FleetParser.parse("# nothing\n").get() == Fleet())
    }

    @Test func exampleFleetParses() throws {
        let (_, fleet) = try examples()
        #expect(fleet.collectorVersion == CollectorVersion(major: 0, minor: 150))
        #expect(fleet.backends.map { $0.exporterID(for: fleet.collectorVersion) } == ["otlp_grpc/tempo"])
        #expect(fleet.backends[0].headers["authorization"] == .environment("TEMPO_TOKEN"))
        #expect(fleet.backends[0].headers["x-scope-orgid"] == .literal("prod"))
        #expect(fleet.rollout.stages == [.canary(1), .percent(25), .percent(100)])
        #expect(fleet.rollout.bakeTimeMs == 300_000)
        #expect(fleet.samplerEndpoint.expand(["host.name": "sampler-0"]) == "sampler-0:4317")
        #expect(fleet.samplingTier.matches(["service.name": "otelcol-sampler"]))
        #expect(!fleet.loadBalancingTier.matches(["service.name": "otelcol-sampler"]))
    }

    @Test func rolloutTimeoutAndDrainAreRead() throws {
        let fleet = try FleetParser.parse("rollout:\n  stage_timeout: 15m\n  drain: false\n").get()
        #expect(fleet.rollout.stageTimeoutMs == 900_000)
        #expect(fleet.rollout.drain == false)
        #expect(Fleet().rollout.drain && Fleet().rollout.stageTimeoutMs == nil)
        let tooShort = self.problems("rollout:\n  stage_timeout: 10ms\n")
        #expect(tooShort.map(\.code) == [.invalidRollout])
        #expect(tooShort.first?.line == 2)
    }

    @Test func durationsTooLongForMillisecondsAreRefusedNotTrapped() throws {
        // fuzz-fleet-render: seconds beyond Int64 milliseconds trapped the parser (Fuzz/fleet-render/corpus/
        // finding-duration-overflow replays the exact input).
        let found = self.problems("load_balancing:\n  timeout: 4099276460824344804s\n")
        #expect(found.first?.code == .invalidValue)
        #expect(found.first?.message.contains("longer than ten years") == true)
        #expect(self.problems("rollout:\n  bake_time: 9223372036854775807h\n").first?.code == .invalidValue)
        let input = try String(
            contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().appendingPathComponent(
                    "Fuzz/fleet-render/corpus/finding-duration-overflow"
                ),
            encoding: .isoLatin1
        )
        if case .success = FleetParser.parse(input) { Issue.record("the fuzzer's input parsed") }
        // What is still fine.
        #expect(self.problems("load_balancing:\n  timeout: 30s\n").isEmpty)
    }

    @Test func unknownKeysAreLocatedWithSuggestions() {
        let found = self.problems("collector:\n  version: \"0.140\"\nbackend:\n  - name: x\n")
        #expect(found.count == 1)
        #expect(found.first?.code == .unknownKey)
        #expect(found.first?.line == 3 && found.first?.column == 1)
        #expect(found.first?.suggestion == "did you mean `backends`?")
        #expect(
            found.first?.description.hasPrefix("fleet.yaml:3:1: error: unknown key `backend` in `fleet` [TP5002]")
                == true
        )
    }

    @Test func everyProblemIsReported() {
        let found = self.problems(
            """
            collector: {version: "zero"}
            samplers: {endpoint: "static-host:4317", resolver: dsn}
            telemetry: {logs_level: loud}
            rollout:
              stages: [{percent: 50}, {percent: 25}]
            """
        )
        let codes = found.map(\.code)
        #expect(codes.contains(.invalidValue))
        #expect(codes.contains(.invalidTemplate))
        #expect(codes.contains(.invalidRollout))
        #expect(found.contains { $0.suggestion == "did you mean `dns`?" })
        #expect(found.count >= 5)
    }

    @Test func credentialsMustComeFromTheEnvironment() {
        let found = self.problems(
            """
            backends:
              - name: vendor
                protocol: otlphttp
                endpoint: https://ingest.example.com
                headers:
                  api-key: abc123
            """
        )
        #expect(found.map(\.code) == [.inlineSecret])
        #expect(found.first?.line == 6)
        #expect(found.first?.suggestion?.contains("{env: API_KEY}") == true)
    }

    @Test func endpointsMatchTheirProtocol() {
        #expect(
            self.problems("backends:\n  - {name: a, protocol: otlphttp, endpoint: \"ingest:4318\"}\n").first?.code
                == .invalidValue
        )
        #expect(
            self.problems("backends:\n  - {name: a, protocol: otlp, endpoint: \"https://ingest\"}\n").first?.code
                == .invalidValue
        )
        #expect(
            self.problems("backends:\n  - {name: a, endpoint: \"x:1\"}\n  - {name: a, endpoint: \"y:1\"}\n").first?.code
                == .duplicateBackend
        )
    }

    @Test func resolvers() throws {
        let dns = try FleetParser.parse(
            "samplers:\n  resolver: dns\n  dns: {hostname: samplers.obs, port: 4317, interval: 5s}\n"
        ).get()
        #expect(dns.resolver == .dns(DNSResolver(hostname: "samplers.obs", port: 4317, intervalMs: 5000)))
        let k8s = try FleetParser.parse(
            "samplers:\n  resolver: k8s\n  k8s: {service: samplers.obs, ports: [4317, 4318], return_hostnames: true}\n"
        ).get()
        #expect(
            k8s.resolver
                == .k8s(KubernetesResolver(service: "samplers.obs", ports: [4317, 4318], returnHostnames: true))
        )
        #expect(self.problems("samplers:\n  resolver: dns\n").first?.code == .missingKey)
    }

    @Test func invalidYAMLIsLocated() {
        let found = self.problems("collector:\n  version: [0.1\nbackends: x\n")
        #expect(found.first?.code == .invalidYAML)
        #expect((found.first?.line ?? 0) >= 2)
    }

    @Test func collectorVersions() {
        #expect(CollectorVersion("0.130") == CollectorVersion(major: 0, minor: 130))
        #expect(CollectorVersion("v0.153.1") == CollectorVersion(major: 0, minor: 153))
        #expect(CollectorVersion("0.x") == nil)
        #expect(CollectorVersion("") == nil)
        #expect(CollectorVersion(major: 0, minor: 99) < CollectorVersion(major: 0, minor: 100))
    }

    @Test func schemaWalkerCatchesUnknownKeys() throws {
        let bad = try #require(
            try Yams.load(
                yaml:
                    "processors:\n  tail_sampling:\n    policies:\n      - {name: a, type: latency, latency: {threshold: 5}}\n      - {name: b, type: not, not: {not_sub_policy: {name: c, type: and, and: {and_sub_policy: []}}}}\n  batch: {flush: 1s}\n"
            )
        )
        let violations = CollectorSchema.violations(bad, CollectorSchema.samplingTier)
        #expect(violations.contains { $0.contains("latency.threshold: unknown key") })
        #expect(violations.contains { $0.contains("policy type `and` is not allowed here") })
        #expect(violations.contains { $0.contains("batch.flush: unknown key") })
    }
}
