import Foundation
import Testing

/// `policyctl test`, `explain`, `estimate` and `generate` run as a user (or CI) runs them.
@Suite(.serialized) struct SimulateCommandTests {
    typealias CLI = PolicyctlTests

    @Test func exampleRuleTestsPassAndCoverEveryRule() throws {
        let run = try CLI.run(["test", "policies"])
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        #expect(run.stdout.contains(" passed, 0 failed"))
        #expect(!run.stdout.contains("rules no test sees deciding"))
    }

    @Test func aFailingTestShowsTheVotesAndExitsOne() throws {
        let directory = try CLI.temporaryDirectory([
            "rules.policy": "keep errors when status == ERROR\nkeep slow when duration >= 1s\n",
            "checks.yaml": """
            tests:
              - name: slow errors are kept by errors
                trace:
                  spans:
                    - {name: GET /, status: ERROR, duration: 2s}
                expect: {decision: keep, rule: slow}
            """,
        ])
        defer { try? FileManager.default.removeItem(at: directory) }
        let run = try CLI.run(["test", "rules.policy", "checks.yaml"], in: directory)
        #expect(run.status == 1)
        #expect(run.stdout.contains("FAIL  slow errors are kept by errors  checks.yaml:2"))
        #expect(run.stdout.contains("expected the decision by slow, got keep by errors"))
        #expect(run.stdout.contains("status in [ERROR]: saw ERROR×1"))
        #expect(run.stdout.contains("0 passed, 1 failed"))
        let json = try CLI.run(["test", "rules.policy", "checks.yaml", "--format", "json"], in: directory)
        #expect(json.status == 1)
        let report = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(report["failed"] as? Int == 1)

        // An invalid test file names its line and column.
        try "tests:\n  - name: x\n    trace: {spans: [{name: a}]}\n    expect: maybe\n".write(
            to: directory.appendingPathComponent("bad.yaml"),
            atomically: true,
            encoding: .utf8
        )
        let bad = try CLI.run(["test", "rules.policy", "bad.yaml"], in: directory)
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("bad.yaml:4:13: error: the decision is `keep` or `drop`, not `maybe`"))
    }

    @Test func generateExplainAndEstimate() throws {
        let directory = try CLI.temporaryDirectory([:])
        defer { try? FileManager.default.removeItem(at: directory) }
        let traces = directory.appendingPathComponent("traces.jsonl").path
        let generate = try CLI.run(["generate", "--traces", "3000", "--seed", "5", "-o", traces])
        #expect(generate.status == 0, "\(generate.stderr)")
        #expect(generate.stderr.contains("wrote 3000 traces"))

        let explain = try CLI.run(["explain", "policies", "--traces", traces, "--samplers", "3", "--output", "json"])
        #expect(explain.status == 0, "\(explain.stderr)")
        let lines = explain.stdout.split(separator: "\n")
        #expect(lines.count == 3000)
        let first = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        let id = try #require(first["trace_id"] as? String)
        #expect(id.count == 32)
        #expect(["keep", "drop"].contains(first["decision"] as? String))
        #expect((first["rules"] as? [[String: Any]])?.count == 18)
        #expect(lines[0].hasPrefix("{\"trace_id\":"))

        let one = try CLI.run(["explain", "policies", "--traces", traces, "--trace-id", id])
        #expect(one.status == 0)
        #expect(one.stdout.hasPrefix("trace \(id): "))
        #expect(one.stdout.contains("health_checks"))
        let missing = try CLI.run([
            "explain", "policies", "--traces", traces, "--trace-id", String(repeating: "0", count: 32),
        ])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("is not in the input"))

        // A change under review against the current rules, as a pull request comment.
        let changed = try RenderCommandTests.copyOfExamples()
        defer { try? FileManager.default.removeItem(at: changed) }
        let business = changed.appendingPathComponent("30-business.policy")
        let text = try String(contentsOf: business, encoding: .utf8)
        try text.replacingOccurrences(of: "keep baseline sample 5%", with: "keep baseline sample 20%")
            .write(to: business, atomically: true, encoding: .utf8)
        let estimate = try CLI.run([
            "estimate", changed.path, "--against", "policies", "--traces", traces, "--samplers", "3", "--format",
            "markdown",
        ])
        #expect(estimate.status == 0, "\(estimate.stderr)")
        #expect(estimate.stdout.contains("| baseline "))
        let kept = try #require(estimate.stdout.split(separator: "\n").first { $0.hasPrefix("- kept spans: ") })
        // 20 % instead of 5 % of the rest: kept spans go up.
        let numbers = kept.split(separator: " ").compactMap { Double($0) }
        #expect(numbers.count >= 2)
        #expect(numbers[1] > numbers[0])
        let json = try CLI.run(["estimate", "policies", "--traces", traces, "--format", "json"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect((object["after"] as? [String: Any])?["traces"] as? Int == 3000)
    }

    @Test func badTraceFilesAreLocated() throws {
        let directory = try CLI.temporaryDirectory([
            "bad.jsonl":
                "{\"resourceSpans\":[]}\n{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"nope\"}]}]}]}\n"
        ])
        defer { try? FileManager.default.removeItem(at: directory) }
        let run = try CLI.run(
            ["estimate", CLI.repositoryRoot.appendingPathComponent("policies").path, "--traces", "bad.jsonl"],
            in: directory
        )
        #expect(run.status == 2)
        #expect(
            run.stderr.contains(
                "bad.jsonl:2: resourceSpans[0].scopeSpans[0].spans[0].traceId: expected 32 hexadecimal digits"
            )
        )
        let skipped = try CLI.run(
            [
                "estimate", CLI.repositoryRoot.appendingPathComponent("policies").path, "--traces", "bad.jsonl",
                "--skip-invalid",
            ],
            in: directory
        )
        #expect(skipped.status == 0)
        #expect(skipped.stderr.contains("skipped 1 invalid document"))
    }
}
