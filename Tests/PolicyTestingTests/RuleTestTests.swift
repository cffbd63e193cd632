import Foundation
import PolicyEngine
import PolicyTesting
import Testing

private func compiled(_ text: String) throws -> PolicySet {
    let result = PolicyCompiler.compile([SourceFile(path: "t.policy", text: text)])
    #expect(!result.hasErrors, "\(result.diagnostics.map(\.message))")
    return try #require(result.policySet)
}

@Suite struct RuleTestTests {
    static let policies = """
        drop health when attr["http.route"] == "/healthz"
        keep errors when status == ERROR
        keep slow when duration >= 2s
        keep capped when service == "bulk" limit 10 spans/s
        """

    @Test func passingAndFailingTests() throws {
        let file = try RuleTestFile.parse(
            """
            tests:
              - name: errors are kept
                trace:
                  service: api
                  spans:
                    - {name: GET /, status: ERROR}
                expect: {decision: keep, rule: errors}
              - name: wrong on purpose
                trace:
                  spans:
                    - {name: GET /healthz, duration: 3s, attributes: {http.route: /healthz}}
                expect: {decision: keep, rule: slow, votes: {health: not_sampled}}
              - name: a trace of 21 spans is over a 10 spans/s limit (its bucket holds 20)
                trace:
                  service: bulk
                  spans:
                    - {name: a, count: 21}
                expect: drop
              - name: several traces share the limit's bucket within one test
                traces:
                  - {service: bulk, spans: [{name: a, count: 10}]}
                  - {service: bulk, spans: [{name: a, count: 10}]}
                  - {service: bulk, spans: [{name: a, count: 10}]}
                expect: keep
            """,
            path: "t.yaml"
        )
        let results = RuleTestRunner.run(
            file,
            policySet: try compiled(Self.policies),
            options: SimulationOptions(collectorMinorVersion: 156)
        )
        #expect(results.map(\.passed) == [true, false, true, false])
        let wrong = results[1]
        #expect(wrong.line == 8)
        #expect(wrong.failures.contains("expected keep, got drop by health"))
        #expect(wrong.failures.contains("expected health to vote not_sampled, it voted dropped"))
        // The token bucket holds 2 × 10: two traces of 10 pass, the third does not.
        #expect(results[3].verdicts.map(\.decision) == [.keep, .keep, .drop])
    }

    @Test(arguments: [
        (
            "tests:\n  - name: x\n    trace: {spans: [{name: a}]}\n    expect: {decision: kept-ish}\n", 4, 24,
            "the decision is `keep` or `drop`"
        ),
        (
            "tests:\n  - name: x\n    trace: {spans: [{name: a, statsu: ERROR}]}\n    expect: keep\n", 3, 31,
            "did you mean `status`?"
        ),
        ("tests:\n  - name: x\n    trace: {spans: []}\n    expect: keep\n", 3, 20, "at least one span"),
        ("tests:\n  - name: x\n    trace: {spans: [{name: a}]}\n", 2, 5, "has no `expect`"),
        (
            "tests:\n  - name: x\n    trace: {id: 12, spans: [{name: a}]}\n    expect: keep\n", 3, 17,
            "32 hexadecimal digits"
        ),
        (
            "tests:\n  - name: x\n    trace: {spans: [{name: a, duration: soon}]}\n    expect: keep\n", 3, 41,
            "a duration such as"
        ),
        (
            "tests:\n  - name: x\n    expect: keep\n    trace: {spans: [{name: a}]}\n  - name: x\n    expect: drop\n    trace: {spans: [{name: a}]}\n",
            5, 5, "two tests are named `x`"
        ),
    ])
    func invalidFilesAreLocated(text: String, line: Int, column: Int, message: String) {
        #expect {
            _ = try RuleTestFile.parse(text, path: "bad.yaml")
        } throws: { error in
            guard let problem = error as? RuleTestFile.Problem else { return false }
            return problem.line == line && problem.column == column && problem.message.contains(message)
                && problem.description.hasPrefix("bad.yaml:\(line):\(column): error:")
        }
    }

    @Test func valuesKeepTheirYAMLTypes() throws {
        let file = try RuleTestFile.parse(
            """
            tests:
              - name: types
                trace:
                  spans:
                    - {name: a, attributes: {i: 500, d: 0.5, b: true, s: "500", l: [1, x], m: {k: v}}}
                expect: drop
            """,
            path: "t.yaml"
        )
        let attributes = try #require(file.tests.first?.traces.first?.spans.first?.attributes)
        #expect(attributes["i"] == .int(500))
        #expect(attributes["d"] == .double(0.5))
        #expect(attributes["b"] == .bool(true))
        #expect(attributes["s"] == .string("500"))
        #expect(attributes["l"] == .array([.int(1), .string("x")]))
        #expect(attributes["m"] == .map(["k": .string("v")]))
    }
}

@Suite struct EstimateTests {
    @Test func countsPerRuleAndComparesTwoSets() throws {
        let before = try compiled("keep errors when status == ERROR\n")
        let after = try compiled("keep errors when status == ERROR\nkeep big when spans >= 3\n")
        var estimator = Estimator([after, before], options: SimulationOptions())
        func trace(_ low: UInt64, spans: Int, error: Bool) -> SimulatedTrace {
            SimulatedTrace(
                traceID: TraceID(high: 1, low: low),
                spans: (0..<spans).map { index in
                    TraceSpan(startNanos: 1, endNanos: 2, status: error && index == 0 ? .error : .unset)
                }
            )
        }
        estimator.add(trace(1, spans: 1, error: true))
        estimator.add(trace(2, spans: 4, error: true))
        estimator.add(trace(3, spans: 5, error: false))
        estimator.add(trace(4, spans: 1, error: false))
        let (new, old) = (estimator.estimates[0], estimator.estimates[1])
        #expect(new.traces == 4)
        #expect(new.spans == 11)
        #expect(new.keptTraces == 3)
        #expect(new.keptSpans == 10)
        #expect(old.keptTraces == 2)
        #expect(old.keptSpans == 5)
        #expect(new.rules.map(\.rule) == ["errors", "big"])
        #expect(new.rules.map(\.matched) == [2, 2])  // the 4-span error trace matched both
        #expect(new.rules.map(\.decided) == [2, 1])
        let markdown = Reports.estimate(new, before: old, format: .markdown, source: "test")
        #expect(markdown.contains("| big (new) |"))
        #expect(markdown.contains("- kept spans: 45.5 % -> 90.9 % (+45.5 points)"))
        let json = Reports.estimate(new, before: old, format: .json, source: "test")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect((object["after"] as? [String: Any])?["keptTraces"] as? Int == 3)
        #expect((object["before"] as? [String: Any])?["keptTraces"] as? Int == 2)
    }
}
