import Foundation
import Testing

@testable import PolicyEngine

/// One example per diagnostic code, with `1️⃣` where the diagnostic must start.
let diagnosticExamples: [(DiagnosticCode, String)] = [
    (.unexpectedCharacter, "keep a when status == ERROR 1️⃣@"),
    (.unterminatedString, "keep a when service == 1️⃣\"abc"),
    (.nulByte, "keep a when 1️⃣\u{0}status == ERROR"),
    (.invalidNumber, "keep a when duration > 1️⃣1h30m"),
    (.emptyFile, "1️⃣"),
    (.singleEquals, "keep a when status 1️⃣= ERROR"),
    (.expectedDeclaration, "1️⃣kep a when status == ERROR"),
    (.expectedName, "keep 1️⃣when status == ERROR"),
    (.expectedExpression, "keep a when 1️⃣sample 10%"),
    (.expectedToken, "keep a when (status == ERROR1️⃣\n"),
    (.unexpectedToken, "keep a when status == ERROR 1️⃣)"),
    (.nestingTooDeep, "keep a when " + String(repeating: "(", count: 64) + "1️⃣(status == ERROR)"),
    (.reservedName, "keep 1️⃣and when status == ERROR"),
    (.duplicateClause, "keep a sample 10% 1️⃣sample 20%"),
    (.expectedValue, "keep a when status == 1️⃣)"),
    (.unknownField, "keep a when 1️⃣stauts == ERROR"),
    (.unsupportedOperator, "keep a when status 1️⃣> ERROR"),
    (.wrongValueType, "keep a when duration > 1️⃣\"500ms\""),
    (.unknownUnit, "keep a when duration > 1️⃣500mss"),
    (.unknownStatusCode, "keep a when status == 1️⃣error"),
    (.duplicateRuleName, "keep a when status == ERROR\nkeep 1️⃣a when spans > 5"),
    (.duplicateSamplerBlock, "sampler { max_traces 10 }\n1️⃣sampler { decision_wait 5s }"),
    (.unknownSetting, "sampler { 1️⃣num_traces 10 }"),
    (.invalidSettingValue, "sampler { ottl_error_mode 1️⃣loud }"),
    (.zeroNumericBound, "keep a when 1️⃣attr[\"x\"] >= 0"),
    (.unfaithfulNegation, "keep a when service == \"x\" and not 1️⃣status == ERROR"),
    (.limitWithOr, "keep a when status == ERROR or spans > 5 1️⃣limit 10 spans/s"),
    (.orInBudget, "budget b 10 spans/s {\n    keep c when 1️⃣status == ERROR or spans > 5 share 50%\n}"),
    (.missingShare, "budget b 10 spans/s {\n    keep 1️⃣c when status == ERROR\n}"),
    (
        .sharesOverBudget,
        "budget 1️⃣b 10 spans/s {\n    keep c when spans > 5 share 60%\n    keep d when spans > 2 share 60%\n}"
    ),
    (.misplacedShare, "keep a when status == ERROR 1️⃣share 10%"),
    (.invalidRegex, "keep a when service matches 1️⃣\"(abc\""),
    (.emptyStringValue, "keep a when service == 1️⃣\"\""),
    (.subMillisecondDuration, "keep a when duration > 1️⃣500us"),
    (
        .tooManyAlternatives,
        "keep a when 1️⃣(service == \"a\" or service == \"b\" or service == \"c\" or service == \"d\" or service == \"e\" or service == \"f\")"
            + " and (spans == 1 or spans == 2 or spans == 3 or spans == 4 or spans == 5 or spans == 6)"
    ),
    (.valueOutOfRange, "keep a when spans > 1️⃣99999999999999999999"),
    (.dropInBudget, "budget b 10 spans/s {\n    1️⃣drop c when status == OK\n}"),
    (.emptyList, "keep a when service in 1️⃣[]"),
    (.reversedRange, "keep a when spans in 1️⃣10..5"),
    (.emptyBudget, "1️⃣budget b 10 spans/s { }"),
    (.duplicateSetting, "sampler { max_traces 10 1️⃣max_traces 20 }"),
    (.invalidPercentage, "keep a sample 1️⃣-5%"),
    (.limitInBudget, "budget b 10 spans/s {\n    keep c 1️⃣limit 5 spans/s share 50%\n}"),
    (.unreliableDurationDrop, "drop short when 1️⃣duration < 500ms"),
    (.unreliableDurationBound, "keep w when service == \"x\" and 1️⃣duration < 2s"),
    (.duplicateCondition, "keep a when status == ERROR\nkeep 1️⃣b when status == ERROR"),
    (.shadowedByKeepAll, "keep all\nkeep 1️⃣b when status == ERROR"),
    (.neverMatches, "keep a when 1️⃣spans > 10 and spans < 5"),
    (.alwaysTrue, "keep a when service == \"x\" and 1️⃣spans >= 1"),
    (.dropNeverMatches, "drop a when 1️⃣spans > 10 and spans < 5"),
    (.percentageOver100, "keep a sample 1️⃣150%"),
    (
        .unreachableAllocation,
        "budget b 10 spans/s {\n    keep c share 50%\n    keep 1️⃣d when status == ERROR share 50%\n}"
    ),
    (.unusedBudget, "budget 1️⃣b 10 spans/s {\n    keep c when status == ERROR share 50%\n}"),
    (.dropEverything, "drop 1️⃣everything"),
    (.separateAttributeTests, "keep a when attr[\"c\"] >= 500 and 1️⃣attr[\"c\"] <= 599"),
    (.decisionWaitTooShort, "sampler { decision_wait 1️⃣500ms }"),
    (.decisionCacheTooSmall, "sampler { max_traces 1000 1️⃣cache sampled 10 }"),
    (.durationWindow, "keep w when service == \"x\" and 1️⃣duration in 1s..2s"),
]

/// Codes whose examples cannot be written as text with a marker; each has its own test below.
let specialCodes: Set<DiagnosticCode> = [.invalidUTF8, .tooManyErrors]

@Suite struct DiagnosticCodeTests {
    @Test(arguments: diagnosticExamples.map { ($0.0.rawValue, $0.1) })
    func reportsCodeAtMarker(code: String, source: String) {
        let (text, line, column) = marked(source)
        let result = compile(text)
        let matching = result.diagnostics.filter { $0.code.rawValue == code }
        #expect(
            !matching.isEmpty,
            "no \(code) in \(result.diagnostics.map { "\($0.code.rawValue)@\($0.start.line):\($0.start.column) \($0.message)" })"
        )
        #expect(
            matching.contains { $0.start.line == line && $0.start.column == column },
            "\(code) expected at \(line):\(column), got \(matching.map { "\($0.start.line):\($0.start.column)" })"
        )
        if let diagnostic = matching.first {
            #expect(diagnostic.severity == (code.hasPrefix("TP4") ? .warning : .error))
            let file = SourceFile(path: "test.policy", text: text)
            let rendered = DiagnosticFormatter.text(diagnostic, source: file)
            #expect(rendered.hasPrefix("test.policy:\(diagnostic.start.line):\(diagnostic.start.column): "))
            #expect(rendered.contains("[\(code)]"))
        }
    }

    @Test func everyCodeHasAnExample() {
        let covered = Set(diagnosticExamples.map(\.0)).union(specialCodes)
        let missing = DiagnosticCode.allCases.filter { !covered.contains($0) }
        #expect(missing.isEmpty, "codes without an example: \(missing.map(\.rawValue))")
    }

    @Test func everyCodeIsDocumented() throws {
        let docs = try String(contentsOf: repositoryRoot.appendingPathComponent("docs/diagnostics.md"), encoding: .utf8)
        for code in DiagnosticCode.allCases {
            #expect(docs.contains("## \(code.rawValue)"), "docs/diagnostics.md has no section for \(code.rawValue)")
        }
    }

    @Test func codesAreUnique() {
        #expect(Set(DiagnosticCode.allCases.map(\.rawValue)).count == DiagnosticCode.allCases.count)
    }

    @Test func invalidUTF8IsLocated() {
        var bytes = Array("keep a when service == \"".utf8)
        let column = bytes.count + 1
        bytes += [0xFF, 0xFE]
        bytes += Array("\"\nkeep b when status == ERROR\n".utf8)
        let file = SourceFile(path: "bad.policy", bytes: bytes)
        let result = PolicyCompiler.compile([file])
        let invalid = result.diagnostics.filter { $0.code == .invalidUTF8 }
        #expect(invalid.count == 2)
        #expect(invalid.first?.start == PolicyEngine.SourceLocation(line: 1, column: column))
        expectValidLocations(result.diagnostics, in: file)
    }

    @Test func errorFloodIsCapped() {
        let text = String(repeating: "@ ", count: 500)
        let result = compile(text)
        #expect(result.diagnostics.filter { $0.severity == .error }.count == DiagnosticSink.maximumErrorsPerFile + 1)
        #expect(result.diagnostics.last?.code == .tooManyErrors)
    }

    @Test func suggestionsNameTheFix() {
        let result = compile("keep a when stauts == ERROR")
        #expect(result.diagnostics.first?.suggestion == "did you mean `status`?")
        let status = compile("keep a when status == error")
        #expect(status.diagnostics.first?.suggestion?.contains("`ERROR`") == true)
        let setting = compile("sampler { num_traces 10 }")
        #expect(setting.diagnostics.first?.suggestion?.contains("`max_traces`") == true)
    }
}
