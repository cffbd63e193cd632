import Testing

@testable import PolicyEngine

/// The parser reports every error in one run, in every file, and keeps going.
@Suite struct RecoveryTests {
    @Test func reportsEveryErrorInOneFile() {
        let text = """
            keep a when stauts == ERROR
            keep b when duration > 5xs
            keep c when status == ERROR
            keep d when (spans > 3
            kep e when status == OK
            keep f when attr["x"] in ["a" "b"]
            keep g when status == ERROR
            """
        let result = compile(text)
        let errors = result.diagnostics.filter { $0.severity == .error }
        let lines = Set(errors.map(\.start.line))
        #expect(lines.isSuperset(of: [1, 2, 4, 5, 6]), "\(errors.map { "\($0.start.line):\($0.code.rawValue)" })")
        #expect(!lines.contains(3) && !lines.contains(7))
    }

    @Test func reportsErrorsInEveryFile() {
        let result = PolicyCompiler.compile([
            SourceFile(path: "one.policy", text: "keep a when stauts == ERROR\n"),
            SourceFile(path: "two.policy", text: "keep b when status == error\n"),
            SourceFile(path: "three.policy", text: "keep c when status == ERROR\n"),
        ])
        #expect(Set(result.diagnostics.map(\.file)) == ["one.policy", "two.policy"])
        #expect(result.policySet == nil)
    }

    @Test func missingClosersPointAtTheEndOfTheLine() {
        let result = compile("keep v when attr[\"tier\"] in [\"gold\", \"platinum\"\nkeep w when status == ERROR\n")
        let closer = result.diagnostics.first { $0.code == .expectedToken }
        #expect(closer?.start == PolicyEngine.SourceLocation(line: 1, column: 48))
        #expect(result.diagnostics.filter { $0.severity == .error }.count == 1)
    }

    @Test func unclosedBlocksAreReported() {
        let result = compile("sampler {\n    decision_wait 30s\nkeep a when status == ERROR\n")
        #expect(
            result.diagnostics.contains {
                $0.code == .expectedToken && $0.message.contains("`sampler` block opened at line 1")
            }
        )
        let budget = compile("budget b 10 spans/s {\n    keep c share 100%\n")
        #expect(
            budget.diagnostics.contains { $0.code == .expectedToken && $0.message.contains("budget opened at line 1") }
        )
    }

    @Test func symbolicOperatorsAreReportedAndUnderstood() {
        let result = compile("keep a when status == ERROR && spans > 10")
        #expect(result.diagnostics.map(\.code) == [.unexpectedCharacter])
        #expect(result.diagnostics.first?.suggestion == "write `and`")
    }
}
