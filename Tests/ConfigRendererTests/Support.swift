import ConfigRenderer
import Foundation
import PolicyEngine
import Testing
import Yams

let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// Compiles policy text that must be free of errors.
func policySet(_ text: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) -> PolicySet {
    let result = PolicyCompiler.compile([SourceFile(path: "t.policy", text: text)])
    #expect(
        !result.hasErrors,
        "\(result.diagnostics.map { "\($0.code.rawValue) \($0.message)" })",
        sourceLocation: sourceLocation
    )
    return result.policySet ?? PolicySet()
}

/// Renders a tier that must render.
func render(
    _ tier: Tier,
    _ set: PolicySet,
    fleet: Fleet = Fleet(),
    samplers: [String] = ["sampler-a:4317", "sampler-b:4317", "sampler-c:4317"],
    sourceLocation: Testing.SourceLocation = #_sourceLocation
) -> RenderedConfig? {
    switch ConfigRenderer.render(tier, policySet: set, fleet: fleet, membership: Membership(samplers: samplers)) {
    case .success(let config): return config
    case .failure(let problems):
        Issue.record("render failed: \(problems)", sourceLocation: sourceLocation)
        return nil
    }
}

/// The `tail_sampling.policies` list of a rendered sampling config, parsed back with Yams.
func renderedPolicies(_ config: RenderedConfig) throws -> [[String: Any]] {
    let root = try #require(try Yams.load(yaml: config.yaml) as? [String: Any])
    let processors = try #require(root["processors"] as? [String: Any])
    let tailSampling = try #require(processors["tail_sampling"] as? [String: Any])
    return try #require(tailSampling["policies"] as? [[String: Any]])
}

/// The example policy set and fleet.
func examples() throws -> (PolicySet, Fleet) {
    let directory = repositoryRoot.appendingPathComponent("policies")
    let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".policy") }
    let files = try names.map { name in
        SourceFile(
            path: "policies/\(name)",
            bytes: [UInt8](try Data(contentsOf: directory.appendingPathComponent(name)))
        )
    }
    let set = try #require(PolicyCompiler.compile(files).policySet)
    let fleetText = try String(contentsOf: directory.appendingPathComponent("fleet.yaml"), encoding: .utf8)
    let fleet = try FleetParser.parse(fleetText).get()
    return (set, fleet)
}

/// Compares a rendered config with a golden file; `UPDATE_GOLDEN=1` rewrites the file first.
func expectGolden(_ config: RenderedConfig, _ url: URL, sourceLocation: Testing.SourceLocation = #_sourceLocation)
    throws
{
    if ProcessInfo.processInfo.environment["UPDATE_GOLDEN"] == "1" {
        try FileManager.default.createDirectory(
            at: url.deletingLastPathComponent(),
            withIntermediateDirectories: true
        )
        try config.yaml.write(to: url, atomically: true, encoding: .utf8)
    }
    let expected = try String(contentsOf: url, encoding: .utf8)
    let name = url.pathComponents.suffix(2).joined(separator: "/")
    #expect(
        config.yaml == expected,
        "differs from \(name); rerun with UPDATE_GOLDEN=1 and review:\n\(ConfigDiff.unified(old: expected, new: config.yaml, oldName: "golden", newName: "rendered"))",
        sourceLocation: sourceLocation
    )
}
