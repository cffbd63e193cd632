import ConfigRenderer
import Foundation
import PolicyEngine
import Testing
import Yams

/// Component names and keys per target release (issue 11): each version gets exactly the names it documents,
/// so a fleet on the newest release starts without deprecation warnings and one on an older release still
/// loads. One golden file per tier and version, around each rename.
@Suite struct VersionedNamesTests {
    static let directory = repositoryRoot.appendingPathComponent("Tests/ConfigRendererTests/Golden/versions")
    static let versions = [143, 144, 152, 153, 156]
    static let policies = """
        keep errors when status == ERROR
        keep search when service == "search" limit 3000 spans/s
        keep base sample 5%
        """

    static func fleet(minor: Int) -> Fleet {
        var fleet = Fleet()
        fleet.collectorVersion = CollectorVersion(major: 0, minor: minor)
        var http = Backend(name: "archive", protocol: .otlphttp, endpoint: "https://archive.example:4318")
        http.compression = "zstd"
        fleet.backends.append(http)
        return fleet
    }

    static func cases() -> [(Tier, Int)] {
        Tier.allCases.flatMap { tier in Self.versions.map { (tier, $0) } }
    }

    @Test(arguments: Self.cases())
    func matchesGolden(tier: Tier, minor: Int) throws {
        let config = try #require(render(tier, policySet(Self.policies), fleet: Self.fleet(minor: minor)))
        try expectGolden(config, Self.directory.appendingPathComponent("\(tier.rawValue)-v0.\(minor).yaml"))
    }

    @Test(arguments: Self.versions)
    func exporterTypesFollowTheVersion(minor: Int) throws {
        let fleet = Self.fleet(minor: minor)
        let sampling = try #require(render(.sampling, policySet(Self.policies), fleet: fleet))
        let root = try #require(try Yams.load(yaml: sampling.yaml) as? [String: Any])
        let exporters = try #require(root["exporters"] as? [String: Any])
        let expected =
            minor >= 144 ? ["otlp_grpc/default", "otlp_http/archive"] : ["otlp/default", "otlphttp/archive"]
        #expect(exporters.keys.sorted() == expected)
        let pipeline = try #require(
            ((root["service"] as? [String: Any])?["pipelines"] as? [String: Any])?["traces"] as? [String: Any]
        )
        #expect(pipeline["exporters"] as? [String] == expected)
        // The receiver kept its name in every release.
        #expect((root["receivers"] as? [String: Any])?.keys.sorted() == ["otlp"])

        let lb = try #require(render(.loadBalancing, PolicySet(), fleet: fleet))
        let lbRoot = try #require(try Yams.load(yaml: lb.yaml) as? [String: Any])
        let lbExporters = try #require(lbRoot["exporters"] as? [String: Any])
        #expect(lbExporters.keys.sorted() == [minor >= 153 ? "load_balancing" : "loadbalancing"])
        // `protocol.otlp` is a key of the exporter, not a component type: unchanged.
        let exporter = try #require(lbExporters.values.first as? [String: Any])
        #expect((exporter["protocol"] as? [String: Any])?.keys.sorted() == ["otlp"])
    }

    @Test(arguments: Self.versions)
    func spanLimitsFollowTheLimiterOfTheVersion(minor: Int) throws {
        let sampling = try #require(render(.sampling, policySet(Self.policies), fleet: Self.fleet(minor: minor)))
        let policies = try renderedPolicies(sampling)
        let search = try #require(policies.first { $0["name"] as? String == "search" })
        let members = try #require((search["and"] as? [String: Any])?["and_sub_policy"] as? [[String: Any]])
        let limit = try #require(members.first { $0["type"] as? String == "rate_limiting" })
        let perSecond = (limit["rate_limiting"] as? [String: Any])?["spans_per_second"] as? Int
        // 3000 spans/s across 3 samplers: a fixed window with a strict test needs one more before v0.153; the
        // token bucket from v0.153 admits exactly the share.
        #expect(perSecond == (minor >= 153 ? 1000 : 1001))
    }

    @Test func fleetAcceptsTheCurrentProtocolNames() throws {
        let text = """
            collector:
              version: "0.156"
            backends:
              - name: tempo
                protocol: otlp_grpc
                endpoint: tempo:4317
              - name: archive
                protocol: otlp_http
                endpoint: https://archive:4318
            """
        let fleet = try FleetParser.parse(text).get()
        #expect(fleet.backends.map(\.protocol) == [.otlp, .otlphttp])
        #expect(
            fleet.backends.map { $0.exporterID(for: CollectorVersion(major: 0, minor: 143)) } == [
                "otlp/tempo", "otlphttp/archive",
            ]
        )
    }
}
