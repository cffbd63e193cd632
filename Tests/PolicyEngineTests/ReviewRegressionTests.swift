import Testing

@testable import PolicyEngine

/// Cases found in review: each once compiled to something that did not mean what the language says.
@Suite struct ReviewRegressionTests {
    @Test(arguments: [
        #"/api\Z"#, #"\h+"#, "a{2000}", "a**", "a*+", "(?=x)", "(?<!x)y", "(?>x)", #"(a)\1"#, "(abc", "abc)", "[abc",
        #"\"#,
        "(?#c)x", #"\x4"#, "*a",
    ])
    func patternsGoRejectsAreErrors(pattern: String) {
        #expect(RE2Syntax.problem(in: pattern) != nil, "accepted \(pattern)")
    }

    @Test(arguments: [
        #"c\++"#, "[?+]x", "(?P<v>v[0-9]+)/x", "(?<v>x)", #"\\1x"#, "a*?", "a{2}?", "a{2,5}", "a{3,}", "{", "x{a}",
        #"\x7F\x{1F600}"#, #"\pL\p{Greek}\PN"#, #"[[:alpha:]_-]+"#, #"\Qa.b\E"#, "(?i)abc", "(?i:a)b", #"^\d+$"#,
        "[]a]",
        #"\Aab\z"#, "a|b|", "()",
    ])
    func patternsGoAcceptsAreAccepted(pattern: String) {
        #expect(
            RE2Syntax.problem(in: pattern) == nil,
            "rejected \(pattern): \(RE2Syntax.problem(in: pattern)?.message ?? "")"
        )
    }

    @Test func fractionalSharesAreRefused() {
        let result = compile(
            "budget b 1000 spans/s {\n    keep e when status == ERROR share 99.5%\n    keep r share 0.5%\n}"
        )
        #expect(result.diagnostics.filter { $0.code == .invalidPercentage }.count == 2)
    }

    @Test func neverMatchingRulesAreLeftOut() {
        let compiled = policies(
            "keep a when service == \"x\" sample 0%\nkeep b limit 0 spans/s\nkeep c when status == ERROR"
        )
        #expect(compiled.map(\.name) == ["c"])
        let budget = compile(
            "budget b 10 spans/s {\n    keep m when spans > 5 and spans < 2 share 100%\n}\nkeep c when status == ERROR"
        )
        #expect(budget.policySet?.policies.map(\.name) == ["c"])
    }

    @Test func repeatedTestsAreMergedAndWarnedOnce() {
        let result = compile(#"keep b when attr["c"] == 5 and attr["c"] == 5"#)
        #expect(result.diagnostics.isEmpty)
        #expect(
            result.policySet?.policies.first?.kind
                == .numericAttribute(NumericAttributeTest(key: "c", minimum: 5, maximum: 5))
        )
        let lists = compile(#"keep l when attr["c"] in [1, 2] and attr["c"] in [3, 4]"#)
        #expect(lists.diagnostics.filter { $0.code == .separateAttributeTests }.count == 1)
    }

    @Test func contradictionsAreNotAlsoAlwaysTrue() {
        let result = compile("keep a when spans in -5..-1")
        #expect(result.diagnostics.map(\.code) == [.neverMatches])
    }

    @Test func extremeIntegerBoundsAreRefused() {
        #expect(compile(#"keep f when attr["x"] > 9223372036854775807"#).diagnostics.first?.code == .valueOutOfRange)
        #expect(compile(#"keep f when attr["x"] < -9223372036854775808"#).diagnostics.first?.code == .valueOutOfRange)
    }

    @Test func upperDurationBoundsAreHonestAboutTheCollector() {
        #expect(compile("drop short when duration < 500ms").diagnostics.first?.code == .unreliableDurationDrop)
        #expect(
            compile("keep w when service == \"x\" and duration < 2s").diagnostics.map(\.code) == [
                .unreliableDurationBound
            ]
        )
        #expect(
            compile("keep w when service == \"x\" and duration in 1s..2s").diagnostics.map(\.code) == [.durationWindow]
        )
        #expect(compile("keep fast when duration < 2s").diagnostics.isEmpty)
        #expect(compile("keep slow when service == \"x\" and duration > 2s").diagnostics.isEmpty)
    }

    @Test func numericListsExplainTheirAlternatives() {
        let result = compile(#"keep l when attr["code"] in [502, 503] limit 100 spans/s"#)
        #expect(result.diagnostics.first?.code == .limitWithOr)
        #expect(result.diagnostics.first?.message.contains("a list of numbers") == true)
    }
}
