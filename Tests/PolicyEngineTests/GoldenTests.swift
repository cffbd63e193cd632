import Foundation
import Testing

@testable import PolicyEngine

/// `policies/` compiles to exactly the IR in `Golden/policies.ir.json`. Run with `UPDATE_GOLDEN=1` to
/// rewrite the golden file after an intended change, and review the diff.
@Suite struct GoldenTests {
    static let goldenURL = repositoryRoot.appendingPathComponent("Tests/PolicyEngineTests/Golden/policies.ir.json")

    static func encode(_ set: PolicySet) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(set), as: UTF8.self) + "\n"
    }

    @Test func examplesCompileCleanly() throws {
        let result = PolicyCompiler.compile(try examplePolicies())
        #expect(
            result.diagnostics.isEmpty,
            "\(result.diagnostics.map { "\($0.file):\($0.start.line) \($0.code.rawValue) \($0.message)" })"
        )
        let set = try #require(result.policySet)
        #expect(set.policies.count >= 12)
        let types = Set(Self.allTypes(set.policies))
        for required in [
            "drop", "and", "not", "composite", "probabilistic", "rate_limiting", "bytes_limiting", "latency",
            "span_count", "status_code", "string_attribute", "numeric_attribute", "boolean_attribute",
            "trace_state", "ottl_condition",
        ] {
            #expect(types.contains(required), "examples never use \(required)")
        }
    }

    @Test func examplesMatchGolden() throws {
        let set = try #require(PolicyCompiler.compile(try examplePolicies()).policySet)
        let actual = try Self.encode(set)
        if ProcessInfo.processInfo.environment["UPDATE_GOLDEN"] == "1" {
            try actual.write(to: Self.goldenURL, atomically: true, encoding: .utf8)
        }
        let expected = try String(contentsOf: Self.goldenURL, encoding: .utf8)
        #expect(
            actual == expected,
            "IR differs from Golden/policies.ir.json; rerun with UPDATE_GOLDEN=1 and review the diff"
        )
    }

    @Test func fileOrderDoesNotMatter() throws {
        let files = try examplePolicies()
        let expected = try Self.encode(try #require(PolicyCompiler.compile(files).policySet))
        var generator = SeededGenerator(state: 7)
        for _ in 0..<5 {
            let shuffled = files.shuffled(using: &generator)
            #expect(try Self.encode(try #require(PolicyCompiler.compile(shuffled).policySet)) == expected)
        }
    }

    static func allTypes(_ policies: [Policy]) -> [String] {
        policies.flatMap { policy -> [String] in
            switch policy.kind {
            case .and(let members), .drop(let members): [policy.kind.typeName] + allTypes(members)
            case .not(let member): [policy.kind.typeName] + allTypes([member])
            case .composite(let budget): [policy.kind.typeName] + allTypes(budget.members.map(\.policy))
            default: [policy.kind.typeName]
            }
        }
    }
}
